package store_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/shadowgate/shadowgate/store"
)

func open(t testing.TB, opts store.Options) *store.Store {
	t.Helper()
	s, err := store.Open(filepath.Join(t.TempDir(), "state.db"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestShadows(t *testing.T) {
	s := open(t, store.Options{})
	k := store.ShadowKey{Thing: "gw", Name: "doors"}
	if _, err := s.GetShadow(k); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("want ErrNotFound, got %v", err)
	}
	if w, err := s.PutShadow(k, []byte(`{"v":1}`)); err != nil || !w {
		t.Fatalf("first put: %v %v", w, err)
	}
	if w, _ := s.PutShadow(k, []byte(`{"v":1}`)); w {
		t.Fatal("an unchanged document was written again")
	}
	got, err := s.GetShadow(k)
	if err != nil || string(got) != `{"v":1}` {
		t.Fatalf("get: %s %v", got, err)
	}
	var keys []store.ShadowKey
	s.View(func(tx *store.Tx) error {
		return tx.Shadows(func(k store.ShadowKey, _ []byte) error { keys = append(keys, k); return nil })
	})
	if len(keys) != 1 || keys[0] != k {
		t.Fatalf("list: %v", keys)
	}
}

func TestOutboxOrderAndRemove(t *testing.T) {
	s := open(t, store.Options{})
	var seqs []uint64
	for i := 0; i < 50; i++ {
		seq, err := s.Enqueue(store.OutItem{Kind: store.KindAck, Topic: "commands/gw/ack", Payload: []byte(strconv.Itoa(i)), QoS: 1})
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, seq)
	}
	items, _ := s.Peek(100)
	if len(items) != 50 {
		t.Fatalf("peek %d", len(items))
	}
	for i, it := range items {
		if string(it.Payload) != strconv.Itoa(i) || it.Seq != seqs[i] || it.Topic != "commands/gw/ack" || it.QoS != 1 || it.Kind != store.KindAck {
			t.Fatalf("item %d: %+v", i, it)
		}
	}
	for _, seq := range seqs[:10] {
		if err := s.Remove(seq); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Remove(seqs[0]); err != nil {
		t.Fatalf("removing a removed item: %v", err)
	}
	items, _ = s.Peek(1)
	if string(items[0].Payload) != "10" {
		t.Fatalf("oldest after removes: %s", items[0].Payload)
	}
	if st := s.OutboxStats(); st.Items != 40 {
		t.Fatalf("stats %+v", st)
	}
}

func TestOutboxCoalescing(t *testing.T) {
	s := open(t, store.Options{})
	s.Enqueue(store.OutItem{Kind: store.KindReport, Topic: "t/update", Key: "gw//lamp", Payload: []byte("1")})
	s.Enqueue(store.OutItem{Kind: store.KindAck, Topic: "c/ack", Payload: []byte("ack")})
	s.Enqueue(store.OutItem{Kind: store.KindReport, Topic: "t/update", Key: "gw//lamp", Payload: []byte("2")})
	s.Enqueue(store.OutItem{Kind: store.KindReport, Topic: "t/update", Key: "gw//door", Payload: []byte("d")})
	items, _ := s.Peek(10)
	var got []string
	for _, it := range items {
		got = append(got, string(it.Payload))
	}
	if strings.Join(got, ",") != "ack,2,d" {
		t.Fatalf("coalesced queue = %v, want ack,2,d", got)
	}
	if st := s.OutboxStats(); st.Items != 3 || st.Dropped != 0 {
		t.Fatalf("stats %+v", st)
	}
	if _, err := s.Enqueue(store.OutItem{Kind: store.KindAck, Topic: "c/ack", Key: "x"}); err == nil {
		t.Fatal("a coalescable ack was accepted")
	}
}

func TestOutboxQuotaDropsReportsBeforeAcks(t *testing.T) {
	dir := t.TempDir()
	s, err := store.Open(filepath.Join(dir, "s.db"), store.Options{OutboxMaxItems: 5})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		s.Enqueue(store.OutItem{Kind: store.KindAck, Topic: "ack", Payload: []byte(fmt.Sprint("a", i))})
		s.Enqueue(store.OutItem{Kind: store.KindReport, Topic: "rep", Key: fmt.Sprint("k", i), Payload: []byte(fmt.Sprint("r", i))})
	}
	// 6 enqueued into 5: the oldest report (r0) went.
	for i := 3; i < 6; i++ {
		s.Enqueue(store.OutItem{Kind: store.KindAck, Topic: "ack", Payload: []byte(fmt.Sprint("a", i))})
	}
	// 3 more acks: r1, r2 dropped, then the oldest ack a0.
	items, _ := s.Peek(10)
	var got []string
	for _, it := range items {
		got = append(got, string(it.Payload))
	}
	if strings.Join(got, ",") != "a1,a2,a3,a4,a5" {
		t.Fatalf("queue = %v", got)
	}
	if st := s.OutboxStats(); st.Dropped != 4 || st.Items != 5 {
		t.Fatalf("stats %+v", st)
	}
	s.Close()
	// The drop count and depth survive a restart.
	s, err = store.Open(filepath.Join(dir, "s.db"), store.Options{OutboxMaxItems: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if st := s.OutboxStats(); st.Dropped != 4 || st.Items != 5 {
		t.Fatalf("stats after reopen %+v", st)
	}
}

func TestOutboxByteQuota(t *testing.T) {
	s := open(t, store.Options{OutboxMaxBytes: 4096})
	big := bytes.Repeat([]byte("x"), 1000)
	for i := 0; i < 10; i++ {
		if _, err := s.Enqueue(store.OutItem{Kind: store.KindReport, Topic: "r", Payload: big}); err != nil {
			t.Fatal(err)
		}
	}
	if st := s.OutboxStats(); st.Bytes > 4096 || st.Dropped == 0 {
		t.Fatalf("byte quota not kept: %+v", st)
	}
	if _, err := s.Enqueue(store.OutItem{Kind: store.KindReport, Topic: "r", Payload: make([]byte, 5000)}); err == nil {
		t.Fatal("an item larger than the quota was accepted")
	}
}

// A random mix of enqueues, coalescing enqueues and removes never reorders
// or duplicates anything: the queue always equals a plain model of it.
func TestOutboxMatchesModel(t *testing.T) {
	s := open(t, store.Options{})
	r := rand.New(rand.NewPCG(1, 2))
	type entry struct {
		seq uint64
		key string
		val string
	}
	var model []entry
	for step := 0; step < 400; step++ {
		switch n := r.IntN(10); {
		case n < 4:
			val := fmt.Sprint("v", step)
			seq, err := s.Enqueue(store.OutItem{Kind: store.KindAck, Topic: "a", Payload: []byte(val)})
			if err != nil {
				t.Fatal(err)
			}
			model = append(model, entry{seq, "", val})
		case n < 7:
			key := fmt.Sprint("k", r.IntN(4))
			val := fmt.Sprint("v", step)
			seq, err := s.Enqueue(store.OutItem{Kind: store.KindReport, Topic: "r", Key: key, Payload: []byte(val)})
			if err != nil {
				t.Fatal(err)
			}
			for i, e := range model {
				if e.key == key {
					model = append(model[:i], model[i+1:]...)
					break
				}
			}
			model = append(model, entry{seq, key, val})
		default:
			if len(model) == 0 {
				continue
			}
			i := r.IntN(len(model))
			if err := s.Remove(model[i].seq); err != nil {
				t.Fatal(err)
			}
			model = append(model[:i], model[i+1:]...)
		}
		items, _ := s.Peek(1000)
		if len(items) != len(model) {
			t.Fatalf("step %d: %d items, model %d", step, len(items), len(model))
		}
		for i := range items {
			if items[i].Seq != model[i].seq || string(items[i].Payload) != model[i].val {
				t.Fatalf("step %d item %d: %+v vs %+v", step, i, items[i], model[i])
			}
			if i > 0 && items[i].Seq <= items[i-1].Seq {
				t.Fatalf("out of order at %d", i)
			}
		}
		if st := s.OutboxStats(); st.Items != int64(len(model)) {
			t.Fatalf("step %d: stats %+v, model %d", step, st, len(model))
		}
	}
}

func TestInbox(t *testing.T) {
	s := open(t, store.Options{})
	now := time.Now()
	for i, tid := range []string{"t1", "t2", "t3"} {
		err := s.Update(func(tx *store.Tx) error {
			_, err := tx.PutCommand(&store.Command{TID: tid, Cmd: "GO", Request: json.RawMessage(`{}`), Received: now.Add(time.Duration(i))})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// A duplicate returns the stored one and ErrDuplicateTID.
	s.Update(func(tx *store.Tx) error {
		_, err := tx.UpdateCommand("t1", func(c *store.Command) error {
			c.Status, c.LastAck = store.StatusSuccess, json.RawMessage(`{"tid":"t1","status":"SUCCESS"}`)
			c.Finished = now.Add(-2 * time.Hour)
			return nil
		})
		return err
	})
	err := s.Update(func(tx *store.Tx) error {
		old, err := tx.PutCommand(&store.Command{TID: "t1", Cmd: "OTHER"})
		if !errors.Is(err, store.ErrDuplicateTID) || old.Cmd != "GO" || string(old.LastAck) != `{"tid":"t1","status":"SUCCESS"}` {
			t.Fatalf("duplicate: %+v %v", old, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	s.View(func(tx *store.Tx) error {
		un, _ := tx.Unfinished()
		if len(un) != 2 || un[0].TID != "t2" || un[1].TID != "t3" {
			t.Fatalf("unfinished: %v", un)
		}
		return nil
	})
	cut := justAfter(t, s, "t1")
	s.Update(func(tx *store.Tx) error {
		n, err := tx.ExpireCommands(cut)
		if n != 1 || err != nil {
			t.Fatalf("expired %d %v", n, err)
		}
		if _, err := tx.GetCommand("t1"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("expired command still there: %v", err)
		}
		return nil
	})
}

func TestHistoryRing(t *testing.T) {
	s := open(t, store.Options{HistoryDepth: 3})
	var ids []uint64
	for i := 0; i < 5; i++ {
		s.Update(func(tx *store.Tx) error {
			id, err := tx.RecordChange(&store.Change{Actuator: "lamp", Before: map[string]any{"on": i%2 == 0}, After: map[string]any{"on": i%2 != 0}, Source: store.SourceDelta, Time: time.Now()})
			ids = append(ids, id)
			return err
		})
		s.Update(func(tx *store.Tx) error {
			_, err := tx.RecordChange(&store.Change{Actuator: "door", Before: map[string]any{}, After: map[string]any{}, Source: store.SourceLocal})
			return err
		})
	}
	s.View(func(tx *store.Tx) error {
		h, err := tx.History("lamp", 10)
		if err != nil || len(h) != 3 || h[0].ID != ids[4] || h[2].ID != ids[2] {
			t.Fatalf("history %v %v", h, err)
		}
		if _, err := tx.GetChange(ids[0]); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("dropped entry still found: %v", err)
		}
		c, err := tx.GetChange(ids[3])
		if err != nil || c.Actuator != "lamp" {
			t.Fatalf("get %v %v", c, err)
		}
		if h, _ := tx.History("nobody", 5); len(h) != 0 {
			t.Fatal("history of an unknown actuator")
		}
		return nil
	})
}

func TestHistoryByteQuota(t *testing.T) {
	s := open(t, store.Options{HistoryMaxBytes: 64 << 10})
	big := strings.Repeat("x", 2000)
	for i := 0; i < 100; i++ {
		if err := s.Update(func(tx *store.Tx) error {
			_, err := tx.RecordChange(&store.Change{Actuator: fmt.Sprint("a", i%7), Before: map[string]any{"s": big}, After: map[string]any{"s": big}})
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	total := 0
	s.View(func(tx *store.Tx) error {
		for i := 0; i < 7; i++ {
			h, _ := tx.History(fmt.Sprint("a", i), 1000)
			total += len(h)
		}
		return nil
	})
	if total == 0 || total*4000 > 70<<10 {
		t.Fatalf("history holds %d entries of ~4KB under a 64KiB quota", total)
	}
}

func TestJournal(t *testing.T) {
	s := open(t, store.Options{})
	s.Update(func(tx *store.Tx) error {
		return tx.PutJournal(&store.JournalEntry{Group: "g1", Before: map[string]map[string]any{"lamp": {"on": true}}})
	})
	s.View(func(tx *store.Tx) error {
		j, err := tx.Journal()
		if err != nil || len(j) != 1 || j[0].Before["lamp"]["on"] != true {
			t.Fatalf("journal %v %v", j, err)
		}
		return nil
	})
	s.Update(func(tx *store.Tx) error { return tx.DeleteJournal("g1") })
	s.View(func(tx *store.Tx) error {
		if j, _ := tx.Journal(); len(j) != 0 {
			t.Fatalf("journal not emptied: %v", j)
		}
		return nil
	})
}

func TestTransactionIsAtomic(t *testing.T) {
	s := open(t, store.Options{})
	boom := errors.New("boom")
	err := s.Update(func(tx *store.Tx) error {
		tx.PutCommand(&store.Command{TID: "x"})
		tx.Enqueue(store.OutItem{Kind: store.KindAck, Topic: "a"})
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatal(err)
	}
	if st := s.OutboxStats(); st.Items != 0 {
		t.Fatalf("a failed transaction changed the counters: %+v", st)
	}
	if items, _ := s.Peek(5); len(items) != 0 {
		t.Fatal("a failed transaction left an item")
	}
}

func TestCorruptFile(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string][]byte{
		"garbage":   bytes.Repeat([]byte("not a bolt file "), 1024),
		"truncated": nil, // filled below
	} {
		path := filepath.Join(dir, name+".db")
		if name == "truncated" {
			s, err := store.Open(path, store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 200; i++ {
				s.Enqueue(store.OutItem{Kind: store.KindAck, Topic: "a", Payload: bytes.Repeat([]byte("p"), 500)})
			}
			s.Close()
			b, _ := os.ReadFile(path)
			content = b[:len(b)/3]
		}
		os.WriteFile(path, content, 0o600)
		_, err := store.Open(path, store.Options{})
		if !errors.Is(err, store.ErrCorrupt) {
			t.Fatalf("%s: want ErrCorrupt, got %v", name, err)
		}
		if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "move it aside") {
			t.Fatalf("%s: error does not say which file and what to do: %v", name, err)
		}
		if b, _ := os.ReadFile(path); !bytes.Equal(b, content) {
			t.Fatalf("%s: the damaged file was changed", name)
		}
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	s, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	// Raise the stored schema version with a child helper that writes raw.
	setSchema(t, path, store.SchemaVersion+1)
	_, err = store.Open(path, store.Options{})
	if !errors.Is(err, store.ErrNewerSchema) {
		t.Fatalf("want ErrNewerSchema, got %v", err)
	}
}

func TestLockedByAnotherProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	child := helper(t, "hold", path)
	out := bufio.NewReader(child.stdout)
	if line, _ := out.ReadString('\n'); strings.TrimSpace(line) != "held" {
		t.Fatalf("helper: %q", line)
	}
	_, err := store.Open(path, store.Options{LockTimeout: 200 * time.Millisecond})
	if !errors.Is(err, store.ErrLocked) || !strings.Contains(err.Error(), "another shadowgated") {
		t.Fatalf("want ErrLocked, got %v", err)
	}
	child.kill()
	s, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatalf("after the holder died: %v", err)
	}
	s.Close()
}

type child struct {
	cmd    *exec.Cmd
	stdout interface{ Read([]byte) (int, error) }
}

func (c *child) kill() { c.cmd.Process.Kill(); c.cmd.Wait() }

// lines returns the child's stdout line by line, closed when it ends.
func (c *child) lines() <-chan string {
	lines := make(chan string, 1<<16)
	go func() {
		sc := bufio.NewScanner(c.stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	return lines
}

func helper(t *testing.T, mode, path string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	// Under user-mode emulation (make test-arm) the test binary is not
	// one this machine runs by itself: the helper runs under the emulator
	// too.
	if emu := os.Getenv("SHADOWGATE_TEST_EMULATOR"); emu != "" {
		cmd = exec.Command(emu, os.Args[0], "-test.run=^TestHelperProcess$")
	}
	cmd.Env = append(os.Environ(), "STORE_HELPER="+mode, "STORE_PATH="+path)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, stdout: out}
	t.Cleanup(c.kill)
	return c
}

// Concurrent writers share commits; a failing writer gets its own error and
// takes nobody else's write with it.
func TestGroupCommit(t *testing.T) {
	s := open(t, store.Options{})
	boom := errors.New("boom")
	var wg sync.WaitGroup
	errs := make([]error, 64)
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.Update(func(tx *store.Tx) error {
				if _, err := tx.Enqueue(store.OutItem{Kind: store.KindAck, Topic: "a", Payload: []byte(strconv.Itoa(i))}); err != nil {
					return err
				}
				if i%8 == 0 {
					return boom
				}
				return nil
			})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if (i%8 == 0) != errors.Is(err, boom) {
			t.Fatalf("writer %d: %v", i, err)
		}
	}
	items, _ := s.Peek(100)
	if len(items) != 56 || s.OutboxStats().Items != 56 {
		t.Fatalf("%d items (stats %+v), want 56", len(items), s.OutboxStats())
	}
	for _, it := range items {
		if n, _ := strconv.Atoi(string(it.Payload)); n%8 == 0 {
			t.Fatalf("a failed writer's item was committed: %s", it.Payload)
		}
	}
}

// A schema 1 file (a history bucket per actuator and an id index) opens with
// its history intact, the same ids, and new ids after the old ones.
func TestMigrateSchema1History(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v1.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	u64 := func(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range []string{"meta", "shadows", "outbox", "outbox_keys", "inbox", "inbox_order", "inbox_done", "history", "history_ids", "journal"} {
			if _, err := tx.CreateBucket([]byte(b)); err != nil {
				return err
			}
		}
		tx.Bucket([]byte("meta")).Put([]byte("schema"), u64(1))
		hist := tx.Bucket([]byte("history"))
		for id, act := range map[uint64]string{3: "lamp", 5: "lamp", 4: "lamp2"} {
			ab, _ := hist.CreateBucketIfNotExists([]byte(act))
			v, _ := json.Marshal(store.Change{ID: id, Actuator: act, Before: map[string]any{"on": false}, After: map[string]any{"on": true}, Source: store.SourceLocal})
			ab.Put(u64(id), v)
			tx.Bucket([]byte("history_ids")).Put(u64(id), []byte(act))
		}
		return hist.SetSequence(5)
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	s, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var next uint64
	s.Update(func(tx *store.Tx) (err error) {
		next, err = tx.RecordChange(&store.Change{Actuator: "lamp", Before: map[string]any{"on": true}, After: map[string]any{"on": false}})
		return err
	})
	s.View(func(tx *store.Tx) error {
		if v := tx.SchemaVersion(); v != store.SchemaVersion {
			t.Errorf("schema %d after migration", v)
		}
		h, err := tx.History("lamp", 10)
		if err != nil || len(h) != 3 || h[0].ID != next || h[1].ID != 5 || h[2].ID != 3 {
			t.Errorf("lamp history after migration: %v %v", h, err)
		}
		if next != 6 {
			t.Errorf("new id %d, want 6 (after the migrated ones)", next)
		}
		if c, err := tx.GetChange(4); err != nil || c.Actuator != "lamp2" {
			t.Errorf("get migrated change 4: %v %v", c, err)
		}
		return nil
	})
}

// Actuators whose names are prefixes of each other keep separate histories.
func TestHistoryPrefixNames(t *testing.T) {
	s := open(t, store.Options{HistoryDepth: 2})
	for i := 0; i < 3; i++ {
		for _, a := range []string{"lamp", "lamp2", "lam", "lamp-"} {
			if err := s.Update(func(tx *store.Tx) error {
				_, err := tx.RecordChange(&store.Change{Actuator: a, After: map[string]any{"i": i}})
				return err
			}); err != nil {
				t.Fatal(err)
			}
		}
	}
	s.View(func(tx *store.Tx) error {
		for _, a := range []string{"lamp", "lamp2", "lam", "lamp-"} {
			h, err := tx.History(a, 10)
			if err != nil || len(h) != 2 || h[0].Actuator != a || h[1].Actuator != a || h[0].ID <= h[1].ID {
				t.Errorf("history of %s: %v %v", a, h, err)
			}
		}
		if h, _ := tx.History("la", 10); len(h) != 0 {
			t.Errorf("history of la: %v", h)
		}
		return nil
	})
}

// Recording a change rewrites a few pages, not a page per bucket on the
// way: SD cards wear by the page. With a full history (10 actuators at depth
// 100) a change costs leaf, branch, root and meta, plus the leaf of the
// entry that ages out and now and then a split: about 20 KB. The first
// layout (a bucket per actuator and an id index) wrote about 44 KB.
func TestHistoryWritesFewPages(t *testing.T) {
	s := open(t, store.Options{})
	record := func(i int) {
		if err := s.Update(func(tx *store.Tx) error {
			_, err := tx.RecordChange(&store.Change{Actuator: fmt.Sprint("light", i%10), Before: map[string]any{"on": i%2 == 0}, After: map[string]any{"on": i%2 != 0}, Source: store.SourceDelta, ShadowVersion: int64(i), Time: time.Now()})
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 1000; i++ {
		record(i)
	}
	before := s.WriteStats()
	for i := 0; i < 100; i++ {
		record(i)
	}
	after := s.WriteStats()
	if n := after.Commits - before.Commits; n != 100 {
		t.Fatalf("%d commits for 100 changes", n)
	}
	perChange := (after.Bytes - before.Bytes) / 100
	t.Logf("%d bytes written per recorded change", perChange)
	if perChange > 24<<10 {
		t.Fatalf("recording a change writes %d bytes; want at most 24 KiB", perChange)
	}
}

// Submit returns before the commit; writes become durable in the order they
// were submitted, whoever waits first, and a write nobody waited for yet
// goes with the next commit.
func TestSubmitOrder(t *testing.T) {
	s := open(t, store.Options{})
	enqueue := func(p string) func(tx *store.Tx) error {
		return func(tx *store.Tx) error {
			_, err := tx.Enqueue(store.OutItem{Kind: store.KindAck, Topic: "t", Payload: []byte(p), QoS: 1})
			return err
		}
	}
	first := s.Submit(enqueue("a"))
	second := s.Submit(enqueue("b"))
	if err := second(); err != nil {
		t.Fatal(err)
	}
	// a was submitted before b, so b's commit took it along.
	if items, _ := s.Peek(10); len(items) != 2 || string(items[0].Payload) != "a" || string(items[1].Payload) != "b" {
		t.Fatalf("after waiting for the second write: %v", items)
	}
	if err := first(); err != nil {
		t.Fatal(err)
	}
	later := s.Submit(enqueue("c"))
	if err := s.Update(enqueue("d")); err != nil {
		t.Fatal(err)
	}
	if items, _ := s.Peek(10); len(items) != 4 || string(items[2].Payload) != "c" || string(items[3].Payload) != "d" {
		t.Fatalf("a submitted write did not go with the next commit: %v", items)
	}
	if err := later(); err != nil {
		t.Fatal(err)
	}
}

// A small commit writes one block of the write-ahead log (4 KB), not the
// bbolt pages it changed: those reach the file at the next checkpoint,
// once however often they changed. A checkpoint writes no free-list page
// (bbolt's NoFreelistSync; the list is rebuilt at open from the verified
// file), and pages freed before a restart are used again after it.
func TestCommitWritesNoFreelistPage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	s, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	before := s.WriteStats()
	seq, err := s.Enqueue(store.OutItem{Kind: store.KindAck, Topic: "a", Payload: []byte("x"), QoS: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(seq); err != nil {
		t.Fatal(err)
	}
	after := s.WriteStats()
	if got, want := after.Bytes-before.Bytes, int64(2*4096); got != want || after.Commits-before.Commits != 2 {
		t.Fatalf("two small commits wrote %d bytes in %d commits; want %d (a block of the log each)", got, after.Commits-before.Commits, want)
	}
	for round := 0; round < 3; round++ {
		for i := 0; i < 200; i++ {
			if err := s.Update(func(tx *store.Tx) error {
				_, err := tx.RecordChange(&store.Change{Actuator: "a", After: map[string]any{"n": i}, Source: store.SourceLocal, Time: time.Now()})
				return err
			}); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		fi, _ := os.Stat(path)
		if s, err = store.Open(path, store.Options{}); err != nil {
			t.Fatalf("reopen: %v", err)
		}
		t.Logf("round %d: file %d KB", round, fi.Size()/1024)
		if round > 0 && fi.Size() > 1<<20 {
			t.Fatalf("the file grows across restarts (%d bytes): freed pages are not used again", fi.Size())
		}
	}
	s.Close()
}

// A write submitted with SubmitWithin waits for company: it lands with the
// next commit another writer leads, costing no commit of its own, and
// alone only when none came within its bound. A leader does not commit on
// its own, right after its own commit, writes nobody waits for yet.
func TestSubmitWithinSharesCommits(t *testing.T) {
	s := open(t, store.Options{})
	enqueue := func(p string) func(tx *store.Tx) error {
		return func(tx *store.Tx) error {
			_, err := tx.Enqueue(store.OutItem{Kind: store.KindAck, Topic: "t", Payload: []byte(p), QoS: 1})
			return err
		}
	}
	w0 := s.WriteStats()
	lazy := s.SubmitWithin(time.Hour, enqueue("lazy"))
	done := make(chan error, 1)
	go func() { done <- lazy() }()
	if err := s.Update(enqueue("urgent")); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := s.WriteStats().Commits - w0.Commits; n != 1 {
		t.Fatalf("%d commits for a write waiting for company and the one it waited for; want 1", n)
	}
	if items, _ := s.Peek(10); len(items) != 2 || string(items[0].Payload) != "lazy" {
		t.Fatalf("the order of submission is lost: %v", items)
	}

	// Nobody else writes: it lands alone, once its bound has passed.
	w1 := s.WriteStats()
	if err := s.SubmitWithin(time.Millisecond, enqueue("alone"))(); err != nil {
		t.Fatal(err)
	}
	if n := s.WriteStats().Commits - w1.Commits; n != 1 {
		t.Fatalf("%d commits for a lone write waiting for company; want 1", n)
	}

	// A write waiting for company, submitted during a commit, goes with
	// the next one, not in a commit of its own that the leader makes at
	// once.
	w2 := s.WriteStats()
	var later func() error
	if err := s.Update(func(tx *store.Tx) error {
		if later == nil {
			later = s.SubmitWithin(time.Hour, enqueue("later"))
		}
		return enqueue("first")(tx)
	}); err != nil {
		t.Fatal(err)
	}
	if n := s.WriteStats().Commits - w2.Commits; n != 1 {
		t.Fatalf("the leader made %d commits; want 1 (its own)", n)
	}
	go later()
	if err := s.Update(enqueue("next")); err != nil {
		t.Fatal(err)
	}
	if items, _ := s.Peek(10); len(items) != 6 || string(items[4].Payload) != "later" || string(items[5].Payload) != "next" {
		t.Fatalf("a write waiting for company did not land with the next commit: %v", items)
	}
}
