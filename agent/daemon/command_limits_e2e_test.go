package daemon_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/shadowgate/shadowgate/agent/command"
	"github.com/shadowgate/shadowgate/agent/config"
	"github.com/shadowgate/shadowgate/agent/daemon"
	"github.com/shadowgate/shadowgate/store"
)

func padded(tid string, speed, pad int) string {
	return fmt.Sprintf(`{"cmd":"SET_SPEED","tid":%q,"status":"REQUEST","args":{"speed":%d},"pad":"%s"}`, tid, speed, strings.Repeat("x", pad))
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// A request padded with a large unknown field cannot fill the disk: over
// 128 KB it is refused (FAILURE, with the reason, when its tid can be read;
// counted when not), and under it only what the command needs is stored.
func TestLargeRequestsDoNotFillTheDisk(t *testing.T) {
	c := newCloud(t)
	dir := t.TempDir()
	cfg, _ := gatewayConfig(t, "gw-big", c.broker.URL(), dir, "cloud_wins")
	d := gateway(t, cfg)
	waitFor(t, "link up", d.Link.Connected)
	db := filepath.Join(dir, "state.db")
	c.send(t, "gw-big", req("SET_SPEED", "warm", `{"speed":1}`))
	c.waitAck(t, "gw-big", "warm", command.StatusSuccess)
	before := fileSize(t, db)

	for i, tid := range []string{"big-1", "big-2"} {
		c.send(t, "gw-big", padded(tid, 10+i, 1<<20))
		a := c.waitAck(t, "gw-big", tid, command.StatusFailure)
		if want := fmt.Sprintf("the limit is %d bytes", command.MaxRequestBytes); !strings.Contains(a.Reason, want) {
			t.Fatalf("%s: reason %q lacks %q", tid, a.Reason, want)
		}
	}
	// Under the limit it runs, stored without the padding.
	c.send(t, "gw-big", padded("pad-100k", 42, 100<<10))
	c.waitAck(t, "gw-big", "pad-100k", command.StatusSuccess)
	c.send(t, "gw-big", `{"cmd":"SET_SPEED","status":"REQUEST","pad":"`+strings.Repeat("y", 1<<20)+`"}`)
	waitFor(t, "the big request without a tid counted", func() bool {
		st := d.Commands.Stats()
		return st.Malformed == 1 && st.TooLarge == 3
	})
	var h []*store.Change
	d.Store.View(func(tx *store.Tx) (err error) { h, err = tx.History("gate_motor", 10); return err })
	for _, ch := range h {
		if strings.HasPrefix(ch.TID, "big-") {
			t.Fatalf("the motor ran %s", ch.TID)
		}
	}
	d.Store.View(func(tx *store.Tx) error {
		for _, tid := range []string{"big-1", "big-2", "pad-100k"} {
			cm, err := tx.GetCommand(tid)
			if err != nil {
				t.Fatalf("%s: %v", tid, err)
			}
			if n := len(cm.Request) + len(cm.LastAck) + len(cm.Cmd); n > 1024 {
				t.Errorf("%s: %d bytes stored (request %.80s…)", tid, n, cm.Request)
			}
		}
		return nil
	})
	if grown := fileSize(t, db) - before; grown > 128<<10 {
		t.Fatalf("state.db grew by %d bytes (from %d) for three padded requests", grown, before)
	}
	t.Logf("state.db: %d bytes before, %d after", before, fileSize(t, db))
}

// gatewayWithYAML runs an in-process gateway whose config is the test
// config with old replaced by new.
func gatewayWithYAML(t *testing.T, thing, brokerURL, dir, old, new string) (*daemon.Daemon, *config.Config) {
	t.Helper()
	_, path := gatewayConfig(t, thing, brokerURL, dir, "cloud_wins")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), old) {
		t.Fatalf("test config lacks %q", old)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(string(b), old, new, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := daemon.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	return gateway(t, cfg), cfg
}

// The inbox has a quota: a request that does not fit is refused visibly
// (FAILURE with the reason, counted, in shadowctl status), never dropped,
// and never runs.
func TestInboxQuotaRefusesVisibly(t *testing.T) {
	c := newCloud(t)
	dir := t.TempDir()
	db := filepath.Join(dir, "state.db")
	d, cfg := gatewayWithYAML(t, "gw-quota", c.broker.URL(), dir, "store: {path: "+db+"}", "store: {path: "+db+", inbox: {max_items: 5}}")
	waitFor(t, "link up", d.Link.Connected)
	for i := 1; i <= 5; i++ {
		tid := fmt.Sprintf("q%d", i)
		c.send(t, "gw-quota", req("SET_SPEED", tid, fmt.Sprintf(`{"speed":%d}`, i)))
		c.waitAck(t, "gw-quota", tid, command.StatusSuccess)
	}
	c.send(t, "gw-quota", req("SET_SPEED", "q6", `{"speed":66}`))
	a := c.waitAck(t, "gw-quota", "q6", command.StatusFailure)
	if want := "inbox is full: 5 commands stored, the limit is 5 (store.inbox.max_items)"; a.Reason != want {
		t.Fatalf("reason %q, want %q", a.Reason, want)
	}
	// Sent again, it gets the same answer.
	c.send(t, "gw-quota", req("SET_SPEED", "q6", `{"speed":66}`))
	waitFor(t, "the resent q6 answered", func() bool { return len(c.rawAcks("gw-quota", "q6")) == 2 })
	if r := c.rawAcks("gw-quota", "q6"); r[0] != r[1] {
		t.Fatalf("resent q6 answered differently:\n%s\n%s", r[0], r[1])
	}
	if st := d.Commands.Stats().Inbox; st.Refused != 1 || st.Items != 6 || st.MaxItems != 5 {
		t.Fatalf("inbox stats %+v", st)
	}
	if s := read(t, d, "gate_motor")["speed"]; fmt.Sprint(s) != "5" {
		t.Fatalf("motor speed %v, want 5: the refused command ran", s)
	}
	shadowctl(t, "status", "--socket", cfg.API.Socket).must(t, 0, "inbox", "6 of 5 commands", "1 refused")
}

// A tid whose stored record is damaged is answered FAILURE and not run:
// whether it ran before is unknown. The intake goes on with the next.
func TestDamagedInboxRecordIsNotRun(t *testing.T) {
	c := newCloud(t)
	dir := t.TempDir()
	cfg, _ := gatewayConfig(t, "gw-dmg", c.broker.URL(), dir, "cloud_wins")
	st, err := store.Open(cfg.Store.Path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	db, err := bolt.Open(cfg.Store.Path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("inbox")).Put([]byte("dmg-1"), []byte("{not json")) })
	db.Close()
	d := gateway(t, cfg)
	waitFor(t, "link up", d.Link.Connected)
	c.send(t, "gw-dmg", req("SET_SPEED", "dmg-1", `{"speed":7}`))
	c.send(t, "gw-dmg", req("SET_SPEED", "dmg-2", `{"speed":8}`))
	a := c.waitAck(t, "gw-dmg", "dmg-1", command.StatusFailure)
	if !strings.Contains(a.Reason, "record of this tid is damaged") {
		t.Fatalf("reason %q", a.Reason)
	}
	c.waitAck(t, "gw-dmg", "dmg-2", command.StatusSuccess)
	if s := read(t, d, "gate_motor")["speed"]; fmt.Sprint(s) != "8" {
		t.Fatalf("speed %v", s)
	}
	var h []*store.Change
	d.Store.View(func(tx *store.Tx) (err error) { h, err = tx.History("gate_motor", 10); return err })
	if len(h) != 1 || h[0].TID != "dmg-2" {
		t.Fatalf("history %+v", h)
	}
}
