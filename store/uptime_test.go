package store_test

import (
	"encoding/binary"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/shadowgate/shadowgate/store"
)

func finish(t *testing.T, s *store.Store, tid string, wall time.Time) {
	t.Helper()
	if err := putCmd(s, &store.Command{TID: tid, Cmd: "GO", Status: store.StatusSuccess, LastAck: json.RawMessage(`{}`), Finished: wall}); err != nil {
		t.Fatal(err)
	}
}

func count(t *testing.T, s *store.Store) int64 { t.Helper(); return s.InboxStats().Items }

// A finished command's record expires by the store's uptime, whatever the
// wall clock said when it finished or says now: a Pi that finished one at
// "1970" and one at "2076" keeps both for the whole retention.
func TestExpiryIgnoresTheWallClock(t *testing.T) {
	s := open(t, store.Options{})
	finish(t, s, "booted-at-1970", time.Unix(12, 0))
	finish(t, s, "fifty-years-on", time.Now().AddDate(50, 0, 0))
	retention := time.Hour
	var n int
	s.Update(func(tx *store.Tx) (err error) { n, err = tx.ExpireCommands(s.Uptime() - retention); return err })
	if n != 0 || count(t, s) != 2 {
		t.Fatalf("within the retention, %d expired", n)
	}
	cut := justAfter(t, s, "fifty-years-on")
	s.Update(func(tx *store.Tx) (err error) { n, err = tx.ExpireCommands(cut); return err })
	if n != 2 || count(t, s) != 0 {
		t.Fatalf("past both, %d expired", n)
	}
}

// The uptime goes on across restarts, and a crash never sets it behind a
// record: it is saved with every command that finishes.
func TestUptimeSurvivesRestartsAndCrashes(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.db")
	s, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	finish(t, s, "a", time.Now())
	up := justAfter(t, s, "a") - 1
	// A crash now: the files as they are on disk, without Close.
	crashed := crashCopy(t, path)
	atClose := s.Uptime()
	s.Close()

	s, err = store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if u := s.Uptime(); u < atClose {
		t.Fatalf("after a clean stop the uptime went back: %s < %s", u, atClose)
	}
	s.Close()
	c, err := store.Open(crashed, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if u := c.Uptime(); u < up {
		t.Fatalf("after a crash the uptime %s is behind a record finished at %s", u, up)
	}
	var n int
	c.Update(func(tx *store.Tx) (err error) { n, err = tx.ExpireCommands(c.Uptime() - time.Hour); return err })
	if n != 0 {
		t.Fatal("expired after a crash")
	}
}

// A schema 4 file (inbox_done keyed by wall-clock nanoseconds) is keyed by
// uptime 0: its records are kept one full retention from the upgrade on.
func TestInboxDoneMigratesFromVersion4(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	s, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	finish(t, s, "old", time.Now().Add(-time.Hour))
	s.Close()
	setSchema(t, path, 4, func(tx *bolt.Tx) error {
		// Schema 4 filed each finished command in inbox_done by the
		// wall-clock time it finished (schema 7 has no such index).
		done, _ := tx.CreateBucketIfNotExists([]byte("inbox_done"))
		var keys [][]byte
		done.ForEach(func(k, _ []byte) error { keys = append(keys, append([]byte(nil), k...)); return nil })
		if len(keys) == 0 {
			keys = append(keys, append(make([]byte, 8), "old"...))
		}
		for _, k := range keys {
			done.Delete(k)
			done.Put(append(binary.BigEndian.AppendUint64(nil, uint64(time.Now().Add(-time.Hour).UnixNano())), k[8:]...), nil)
		}
		return tx.Bucket([]byte("meta")).Delete([]byte("clock/uptime"))
	})
	s, err = store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var n int
	s.Update(func(tx *store.Tx) (err error) { n, err = tx.ExpireCommands(s.Uptime() - time.Hour); return err })
	if n != 0 || count(t, s) != 1 {
		t.Fatalf("expired %d at once after the migration", n)
	}
	s.Update(func(tx *store.Tx) (err error) { n, err = tx.ExpireCommands(1); return err })
	if n != 1 {
		t.Fatalf("the migrated record is not filed at uptime 0: %d expired past it", n)
	}
	s.View(func(tx *store.Tx) error {
		if v := tx.SchemaVersion(); v != store.SchemaVersion {
			t.Errorf("schema %d", v)
		}
		return nil
	})
}

// A schema 6 file (finished commands also filed in inbox_done by uptime)
// keeps every command and ack: each finished one expires by the uptime its
// index key said, and the index is gone. A command finishing afterwards
// writes no index.
func TestInboxDoneDroppedFromVersion6(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	s, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	finish(t, s, "early", time.Now())
	finish(t, s, "late", time.Now())
	if err := putCmd(s, &store.Command{TID: "queued", Cmd: "GO", Request: json.RawMessage(`{"cmd":"GO","tid":"queued"}`)}); err != nil {
		t.Fatal(err)
	}
	before := map[string]*store.Command{}
	s.View(func(tx *store.Tx) error {
		for _, tid := range []string{"early", "late", "queued"} {
			before[tid], _ = tx.GetCommand(tid)
		}
		return nil
	})
	stats := s.InboxStats()
	s.Close()
	// Schema 6's index: "early" at uptime 0, "late" at an hour.
	setSchema(t, path, 6, func(tx *bolt.Tx) error {
		done, err := tx.CreateBucketIfNotExists([]byte("inbox_done"))
		if err != nil {
			return err
		}
		if err := done.Put(append(binary.BigEndian.AppendUint64(nil, 0), "early"...), nil); err != nil {
			return err
		}
		return done.Put(append(binary.BigEndian.AppendUint64(nil, uint64(time.Hour)), "late"...), nil)
	})
	s, err = store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.View(func(tx *store.Tx) error {
		if v := tx.SchemaVersion(); v != store.SchemaVersion {
			t.Errorf("schema %d", v)
		}
		for tid, old := range before {
			c, err := tx.GetCommand(tid)
			if err != nil {
				t.Fatalf("%s after the migration: %v", tid, err)
			}
			if c.Status != old.Status || string(c.LastAck) != string(old.LastAck) || string(c.Request) != string(old.Request) || c.Seq != old.Seq {
				t.Errorf("%s changed: %+v, was %+v", tid, c, old)
			}
		}
		return nil
	})
	if st := s.InboxStats(); st.Items != stats.Items {
		t.Errorf("inbox counts %d items after the migration, %d before", st.Items, stats.Items)
	}
	var n int
	s.Update(func(tx *store.Tx) (err error) { n, err = tx.ExpireCommands(time.Minute); return err })
	if n != 1 {
		t.Fatalf("%d expired before a minute of uptime; want 1 (early, filed at 0)", n)
	}
	s.Update(func(tx *store.Tx) (err error) { n, err = tx.ExpireCommands(2 * time.Hour); return err })
	if n != 1 || count(t, s) != 1 {
		t.Fatalf("%d expired before two hours, %d left; want late gone and the queued one kept", n, count(t, s))
	}
	finish(t, s, "after", time.Now())
	s.Close()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.View(func(tx *bolt.Tx) error {
		if tx.Bucket([]byte("inbox_done")) != nil {
			t.Error("inbox_done is still there")
		}
		return nil
	})
}
