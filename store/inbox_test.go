package store_test

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/shadowgate/shadowgate/store"
)

func putCmd(s *store.Store, c *store.Command) error {
	return s.Update(func(tx *store.Tx) error { _, err := tx.PutCommand(c); return err })
}

// justAfter is an expiry cutoff just past the store's uptime at which tid
// finished: it expires tid and what finished before it, nothing after.
func justAfter(t *testing.T, s *store.Store, tid string) time.Duration {
	t.Helper()
	var c *store.Command
	if err := s.View(func(tx *store.Tx) (err error) { c, err = tx.GetCommand(tid); return err }); err != nil {
		t.Fatal(err)
	}
	if !c.Done() || c.FinishedUptime <= 0 {
		t.Fatalf("%s: finished at uptime %s (%s)", tid, c.FinishedUptime, c.Status)
	}
	return c.FinishedUptime + 1
}

// The inbox counts its commands and bytes in the transactions that change
// it, and refuses what would go over its quota with ErrInboxFull.
func TestInboxQuota(t *testing.T) {
	s := open(t, store.Options{InboxMaxItems: 5, InboxMaxBytes: 64 << 10})
	now := time.Now()
	for i := range 5 {
		if err := putCmd(s, &store.Command{TID: fmt.Sprint("q", i), Cmd: "GO", Received: now}); err != nil {
			t.Fatal(err)
		}
	}
	st := s.InboxStats()
	if st.Items != 5 || st.Bytes <= 0 || st.MaxItems != 5 {
		t.Fatalf("stats %+v", st)
	}
	err := putCmd(s, &store.Command{TID: "q5", Cmd: "GO"})
	if !errors.Is(err, store.ErrInboxFull) || !strings.Contains(err.Error(), "store.inbox.max_items") {
		t.Fatalf("sixth command: %v", err)
	}
	// A duplicate is still answered when full.
	s.Update(func(tx *store.Tx) error {
		if _, err := tx.PutCommand(&store.Command{TID: "q0"}); !errors.Is(err, store.ErrDuplicateTID) {
			t.Errorf("duplicate when full: %v", err)
		}
		return nil
	})
	// A refusal is counted, and kept within the headroom.
	refuse := func(tid string) bool {
		var kept bool
		if err := s.Update(func(tx *store.Tx) (err error) {
			kept, err = tx.PutRefused(&store.Command{TID: tid, Status: store.StatusFailure, LastAck: json.RawMessage(`{}`), Finished: now})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return kept
	}
	if !refuse("r1") || refuse("r2") {
		t.Fatal("want the first refusal kept in the headroom (one item over 5), the second not")
	}
	if st := s.InboxStats(); st.Refused != 2 || st.Items != 6 {
		t.Fatalf("after refusals: %+v", st)
	}
	// Updating and expiring keep the counters exact.
	s.Update(func(tx *store.Tx) error {
		_, err := tx.UpdateCommand("q1", func(c *store.Command) error {
			c.Status, c.Finished, c.LastAck = store.StatusSuccess, now.Add(-2*time.Hour), json.RawMessage(`{"tid":"q1","status":"SUCCESS"}`)
			return nil
		})
		return err
	})
	// Expiry goes by the order of finishing (the store's uptime), not by
	// the wall-clock Finished: r1 finished first.
	var n int
	cut := justAfter(t, s, "r1")
	s.Update(func(tx *store.Tx) (err error) { n, err = tx.ExpireCommands(cut); return err })
	if n != 1 {
		t.Fatalf("expired %d", n)
	}
	want, s := recount(t, s)
	if st := s.InboxStats(); st.Items != want.Items || st.Bytes != want.Bytes || st.Items != 5 {
		t.Fatalf("counters %+v, the records say %+v", st, want)
	}
	if err := putCmd(s, &store.Command{TID: "q6", Cmd: "GO"}); !errors.Is(err, store.ErrInboxFull) {
		t.Fatalf("still full (5 stored): %v", err)
	}
	cut = justAfter(t, s, "q1")
	s.Update(func(tx *store.Tx) (err error) { _, err = tx.ExpireCommands(cut); return err })
	if err := putCmd(s, &store.Command{TID: "q6", Cmd: "GO"}); err != nil {
		t.Fatalf("room again after expiry: %v", err)
	}

	// The byte limit too.
	s2 := open(t, store.Options{InboxMaxBytes: 4096})
	big := json.RawMessage(`"` + strings.Repeat("x", 1500) + `"`)
	var errFull error
	for i := 0; i < 10 && errFull == nil; i++ {
		errFull = putCmd(s2, &store.Command{TID: fmt.Sprint("b", i), Request: big})
	}
	if !errors.Is(errFull, store.ErrInboxFull) || !strings.Contains(errFull.Error(), "store.inbox.max_bytes") {
		t.Fatalf("byte quota: %v", errFull)
	}
	if st := s2.InboxStats(); st.Bytes > 4096 {
		t.Fatalf("over the byte quota: %+v", st)
	}
}

type inboxCount struct{ Items, Bytes int64 }

// recount closes s, counts its inbox with bbolt itself, and opens it again.
func recount(t *testing.T, s *store.Store) (inboxCount, *store.Store) {
	t.Helper()
	var c inboxCount
	path := s.Path()
	s.Close()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("inbox")).ForEach(func(k, v []byte) error {
			c.Items, c.Bytes = c.Items+1, c.Bytes+int64(len(k)+len(v))
			return nil
		})
	})
	db.Close()
	s2, err := store.Open(path, store.Options{InboxMaxItems: 5, InboxMaxBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s2.Close() })
	return c, s2
}

// A schema 2 file opens with its inbox counted, and the requests of its
// finished commands (stored verbatim before) dropped.
func TestInboxMigrationCountsAndShrinks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	pad := json.RawMessage(`{"cmd":"GO","pad":"` + strings.Repeat("p", 100000) + `"}`)
	putCmd(s, &store.Command{TID: "done", Request: pad, Status: store.StatusSuccess, LastAck: json.RawMessage(`{"tid":"done"}`), Finished: time.Now()})
	putCmd(s, &store.Command{TID: "queued", Request: json.RawMessage(`{"cmd":"GO"}`)})
	s.Close()
	// Make it a schema 2 file: no counters.
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error {
		m := tx.Bucket([]byte("meta"))
		m.Delete([]byte("inbox/items"))
		m.Delete([]byte("inbox/bytes"))
		return m.Put([]byte("schema"), binary.BigEndian.AppendUint64(nil, 2))
	})
	db.Close()

	s, err = store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	st := s.InboxStats()
	if st.Items != 2 || st.Bytes <= 0 || st.Bytes > 2000 {
		t.Fatalf("migrated counters %+v", st)
	}
	s.View(func(tx *store.Tx) error {
		d, _ := tx.GetCommand("done")
		q, _ := tx.GetCommand("queued")
		if d.Request != nil || string(d.LastAck) != `{"tid":"done"}` || string(q.Request) != `{"cmd":"GO"}` {
			t.Errorf("after migration: done %+v, queued %+v", d, q)
		}
		return nil
	})
}

// A command's start is kept beside its place in the arrival order, not by
// rewriting its record in the (large) inbox: one small bucket's leaf, not
// the inbox's leaf and branches, with every command. It survives a
// restart, shows in the command, and goes into the record with the final
// status.
func TestStartKeptInArrivalOrder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	s, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tid := range []string{"a", "b"} {
		if err := putCmd(s, &store.Command{TID: tid, Cmd: "GO", Request: json.RawMessage(`{}`), Status: store.StatusRunning}); err != nil {
			t.Fatal(err)
		}
	}
	at := time.Unix(1700000000, 123456789)
	var first, again bool
	if err := s.Update(func(tx *store.Tx) (err error) { first, err = tx.MarkStarted("b", at); return err }); err != nil || !first {
		t.Fatalf("first start: recorded %v, %v", first, err)
	}
	if err := s.Update(func(tx *store.Tx) (err error) { again, err = tx.MarkStarted("b", at.Add(time.Hour)); return err }); err != nil || again {
		t.Fatalf("second start: recorded %v, %v", again, err)
	}
	s.Close()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket([]byte("inbox")).Get([]byte("b")); strings.Contains(string(v), "started") {
			t.Errorf("the start was written into the record: %s", v)
		}
		return nil
	})
	db.Close()
	s, err = store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.View(func(tx *store.Tx) error {
		u, err := tx.Unfinished()
		if err != nil || len(u) != 2 || u[0].TID != "a" || !u[0].Started.IsZero() || u[1].TID != "b" || !u[1].Started.Equal(at) {
			t.Fatalf("unfinished after a restart: %+v, %v", u, err)
		}
		return nil
	})
	if err := s.Update(func(tx *store.Tx) error {
		_, err := tx.UpdateCommand("b", func(c *store.Command) error { c.Status = store.StatusSuccess; return nil })
		return err
	}); err != nil {
		t.Fatal(err)
	}
	s.View(func(tx *store.Tx) error {
		c, err := tx.GetCommand("b")
		if err != nil || !c.Started.Equal(at) {
			t.Errorf("finished: %+v, %v; want its start in the record", c, err)
		}
		if u, _ := tx.Unfinished(); len(u) != 1 || u[0].TID != "a" {
			t.Errorf("unfinished: %+v", u)
		}
		return nil
	})
	// A finished command is not started again (a cancel came first).
	if err := s.Update(func(tx *store.Tx) error { _, err := tx.MarkStarted("b", at); return err }); !errors.Is(err, store.ErrCommandFinished) {
		t.Errorf("start a finished command: %v, want ErrCommandFinished", err)
	}
}

// An update that changes nothing writes nothing; one that changes a field
// is written, and read back.
func TestUpdateCommandUnchangedNotWritten(t *testing.T) {
	s := open(t, store.Options{})
	if err := putCmd(s, &store.Command{TID: "u", Cmd: "GO", Request: json.RawMessage(`{"a":1}`), Received: time.Unix(1700000000, 0), Status: store.StatusRunning}); err != nil {
		t.Fatal(err)
	}
	update := func(fn func(c *store.Command)) {
		t.Helper()
		if err := s.Update(func(tx *store.Tx) error {
			_, err := tx.UpdateCommand("u", func(c *store.Command) error { fn(c); return nil })
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	before := s.WriteStats().Commits
	update(func(c *store.Command) { c.Request = json.RawMessage(`{"a":1}`) }) // the same bytes, a new slice
	if n := s.WriteStats().Commits; n != before {
		t.Fatalf("an unchanged command was written again (%d commits)", n-before)
	}
	update(func(c *store.Command) { c.Approval = "pending" })
	if n := s.WriteStats().Commits; n != before+1 {
		t.Fatalf("a changed command: %d commits, want 1", n-before)
	}
	s.View(func(tx *store.Tx) error {
		if c, err := tx.GetCommand("u"); err != nil || c.Approval != "pending" {
			t.Fatalf("read back: %+v, %v", c, err)
		}
		return nil
	})
}
