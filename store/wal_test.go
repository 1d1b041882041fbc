package store_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/shadowgate/shadowgate/store"
)

// crashCopy is what a crash leaves of the store at path: its file and its
// write-ahead log as they are on disk now, the store still open (a process
// killed keeps every write it made; the page cache has them). It returns
// the copy's path.
func crashCopy(t *testing.T, path string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "crashed.db")
	for _, suffix := range []string{"", "-wal"} {
		b, err := os.ReadFile(path + suffix)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst+suffix, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func shadowKey(i int) store.ShadowKey { return store.ShadowKey{Thing: "gw", Name: fmt.Sprint(i)} }

func putShadows(t *testing.T, s *store.Store, from, to int, doc string) {
	t.Helper()
	for i := from; i < to; i++ {
		if _, err := s.PutShadow(shadowKey(i), []byte(fmt.Sprintf(`{"%s":%d}`, doc, i))); err != nil {
			t.Fatal(err)
		}
	}
}

// wantShadows checks that shadows [from, to) hold doc's values and that no
// shadow from to on exists.
func wantShadows(t *testing.T, s *store.Store, from, to int, doc string) {
	t.Helper()
	for i := from; i < to; i++ {
		got, err := s.GetShadow(shadowKey(i))
		if want := fmt.Sprintf(`{"%s":%d}`, doc, i); err != nil || string(got) != want {
			t.Fatalf("shadow %d: %s %v, want %s", i, got, err, want)
		}
	}
	if got, err := s.GetShadow(shadowKey(to)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("shadow %d: %s %v, want none", to, got, err)
	}
}

func openPath(t *testing.T, path string) *store.Store {
	t.Helper()
	s, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// Every commit is durable the moment it returns, though the bbolt file has
// not taken it yet: a crash then loses nothing, across checkpoints of a
// full log too (thousands of records, several rounds of the log).
func TestWALCrashKeepsEveryCommit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := openPath(t, path)
	putShadows(t, s, 0, 10, "a")
	wantShadows(t, openPath(t, crashCopy(t, path)), 0, 10, "a")

	// About 2 KB a record: several times the log's size.
	big := string(make([]byte, 2000))
	for i := 0; i < 2000; i++ {
		if _, err := s.PutShadow(store.ShadowKey{Thing: "big", Name: fmt.Sprint(i % 50)}, []byte(fmt.Sprintf(`{"n":%d,"pad":%q}`, i, big))); err != nil {
			t.Fatal(err)
		}
	}
	putShadows(t, s, 0, 20, "b")
	c := openPath(t, crashCopy(t, path))
	wantShadows(t, c, 0, 20, "b")
	got, err := c.GetShadow(store.ShadowKey{Thing: "big", Name: "49"})
	if err != nil || len(got) < 2000 || string(got[:9]) != `{"n":1999` {
		t.Fatalf("last big document after the crash: %.20s %v", got, err)
	}
}

// A power cut can leave the last record half written (its flush had not
// returned: nobody was told it was durable). The store opens with every
// record before it, whatever the torn one holds.
func TestWALTornLastRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := openPath(t, path)
	putShadows(t, s, 0, 5, "a")
	before := walEnd(t, path)
	putShadows(t, s, 5, 6, "a")
	after := walEnd(t, path)
	if after <= before {
		t.Fatalf("the last commit wrote no record (%d → %d)", before, after)
	}
	for _, tear := range []string{"zeros", "garbage", "truncated"} {
		t.Run(tear, func(t *testing.T) {
			crashed := crashCopy(t, path)
			wal, err := os.ReadFile(crashed + "-wal")
			if err != nil {
				t.Fatal(err)
			}
			switch tear {
			case "zeros": // the block never reached the card
				clear(wal[before:after])
			case "garbage": // half the record reached it
				for i := before + (after-before)/2; i < after; i++ {
					wal[i] = 0xA5
				}
			case "truncated": // the log's end with it
				wal = wal[:before+(after-before)/2]
			}
			os.WriteFile(crashed+"-wal", wal, 0o600)
			c := openPath(t, crashed)
			wantShadows(t, c, 0, 5, "a")
			// It goes on from there, and a second crash keeps the new
			// records, not the torn one's remains.
			putShadows(t, c, 5, 7, "c")
			wantShadows(t, openPath(t, crashCopy(t, crashed)), 5, 7, "c")
		})
	}
}

// walEnd is the end of the records in the log at path+"-wal": the first
// of its zero bytes after which only zeros follow. (Records are followed by
// the log's zeros until the log has gone round once.)
func walEnd(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path + "-wal")
	if err != nil {
		t.Fatal(err)
	}
	end := len(b)
	for end > 0 && b[end-1] == 0 {
		end--
	}
	return end
}

// After a checkpoint the log starts over at its beginning, over the older
// round's records. Those are never replayed: not after a clean stop, and
// not after a crash in the new round, where they follow its records.
func TestWALOlderRoundNotReplayed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	putShadows(t, s, 0, 50, "old")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openPath(t, path)
	// The new round rewrites the first ten: replaying the older round's
	// records after it would set them back.
	putShadows(t, s, 0, 10, "new")
	c := openPath(t, crashCopy(t, path))
	for i := 0; i < 50; i++ {
		if i < 10 {
			if got, err := c.GetShadow(shadowKey(i)); err != nil || string(got) != fmt.Sprintf(`{"new":%d}`, i) {
				t.Fatalf("shadow %d: %s %v", i, got, err)
			}
			continue
		}
		if got, err := c.GetShadow(shadowKey(i)); err != nil || string(got) != fmt.Sprintf(`{"old":%d}`, i) {
			t.Fatalf("shadow %d: %s %v", i, got, err)
		}
	}
}

// A damaged store moved aside, as the daemon's refusal says, leaves its
// log behind: a new store at the same path never takes its records.
func TestWALOfAnotherStoreNotReplayed(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.db")
	s := openPath(t, path)
	putShadows(t, s, 0, 10, "old")
	crashed := crashCopy(t, path)
	if err := os.Rename(crashed, crashed+".broken"); err != nil {
		t.Fatal(err)
	}
	fresh := openPath(t, crashed)
	wantShadows(t, fresh, 0, 0, "old")
}

// A write that fails after it changed something is undone, durably, and
// the writers that shared its commit keep theirs.
func TestWALFailedWriteUndone(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := openPath(t, path)
	putShadows(t, s, 0, 3, "a")
	boom := errors.New("boom")
	wait := s.Submit(func(tx *store.Tx) error {
		if _, err := tx.PutShadow(shadowKey(0), []byte(`{"undone":true}`)); err != nil {
			return err
		}
		return boom
	})
	ok := s.Submit(func(tx *store.Tx) error {
		_, err := tx.PutShadow(shadowKey(3), []byte(`{"a":3}`))
		return err
	})
	if err := wait(); !errors.Is(err, boom) {
		t.Fatalf("the failing write: %v", err)
	}
	if err := ok(); err != nil {
		t.Fatal(err)
	}
	wantShadows(t, s, 0, 4, "a")
	wantShadows(t, openPath(t, crashCopy(t, path)), 0, 4, "a")
}

// A read transaction cannot change the store.
func TestViewIsReadOnly(t *testing.T) {
	s := open(t, store.Options{})
	err := s.View(func(tx *store.Tx) error {
		_, err := tx.PutShadow(shadowKey(0), []byte(`{}`))
		return err
	})
	if err == nil {
		t.Fatal("a View wrote")
	}
	wantShadows(t, s, 0, 0, "a")
}

// The expiry pass reads the inbox in short reads (a read holds up writers
// now): every finished command past the cut is found across the reads'
// boundaries, and none that is not.
func TestExpiredCommandsAcrossReads(t *testing.T) {
	s := open(t, store.Options{})
	const n = 2500
	if err := s.Update(func(tx *store.Tx) error {
		for i := 0; i < n; i++ {
			c := &store.Command{TID: fmt.Sprintf("c%05d", i), Cmd: "GO", Status: store.StatusSuccess, LastAck: []byte(`{}`)}
			if i%3 == 0 {
				c.Status = store.StatusRunning
			}
			if _, err := tx.PutCommand(c); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	tids, err := s.ExpiredCommands(s.Uptime() + 1)
	if err != nil {
		t.Fatal(err)
	}
	if want := n - (n+2)/3; len(tids) != want {
		t.Fatalf("found %d expired, want %d", len(tids), want)
	}
	seen := map[string]bool{}
	for _, tid := range tids {
		if seen[tid] {
			t.Fatalf("%s found twice", tid)
		}
		seen[tid] = true
	}
}

// A group's record keeps only the last operation on each key: what a
// replay makes of it is what the group left, put over put, delete over
// put, put over delete, and the last sequence number.
func TestWALRecordKeepsLastOperation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := openPath(t, path)
	if err := s.Update(func(tx *store.Tx) error { return tx.PutJobRun("back", []byte(`"old"`)) }); err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	if err := s.Update(func(tx *store.Tx) error {
		steps := []func() error{
			func() error { _, err := tx.PutShadow(shadowKey(0), []byte(`{"a":-1}`)); return err },
			func() error { _, err := tx.PutShadow(shadowKey(0), []byte(`{"a":0}`)); return err },
			func() error { _, err := tx.PutShadow(shadowKey(1), []byte(`{"a":1}`)); return err },
			func() error { return tx.PutJobRun("gone", []byte(`"x"`)) },
			func() error { return tx.DeleteJobRun("gone") },
			func() error { return tx.DeleteJobRun("back") },
			func() error { return tx.PutJobRun("back", []byte(`"new"`)) },
		}
		for _, step := range steps {
			if err := step(); err != nil {
				return err
			}
		}
		for i := 0; i < 3; i++ {
			seq, err := tx.NextJobSeq()
			if err != nil {
				return err
			}
			seqs = append(seqs, seq)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	c := openPath(t, crashCopy(t, path))
	wantShadows(t, c, 0, 2, "a")
	c.View(func(tx *store.Tx) error {
		if v, err := tx.GetJobRun("gone"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("a record put and deleted came back: %s %v", v, err)
		}
		if v, err := tx.GetJobRun("back"); err != nil || string(v) != `"new"` {
			t.Errorf("a record deleted and put again: %s %v", v, err)
		}
		return nil
	})
	var next uint64
	c.Update(func(tx *store.Tx) (err error) { next, err = tx.NextJobSeq(); return err })
	if next != seqs[2]+1 {
		t.Fatalf("sequence after the crash: %d, want %d", next, seqs[2]+1)
	}
}

// A schema 7 file keeps a job's targets in its record: the migration
// moves them to job_targets, and the record keeps every other field.
func TestJobTargetsSplitFromVersion7(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	s, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	setSchema(t, path, 7, func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket([]byte("job_targets")); err != nil {
			return err
		}
		if err := tx.Bucket([]byte("meta")).Delete([]byte("wal/id")); err != nil {
			return err
		}
		return tx.Bucket([]byte("jobs")).Put([]byte("j1"), []byte(`{"jobId":"j1","status":"IN_PROGRESS","targets":["arn:a","arn:b"]}`))
	})
	os.Remove(path + "-wal")
	s = openPath(t, path)
	s.View(func(tx *store.Tx) error {
		if v := tx.SchemaVersion(); v != store.SchemaVersion {
			t.Errorf("schema %d", v)
		}
		if b, err := tx.GetJob("j1"); err != nil || string(b) != `{"jobId":"j1","status":"IN_PROGRESS"}` {
			t.Errorf("job record after the migration: %s %v", b, err)
		}
		if b, err := tx.GetJobTargets("j1"); err != nil || string(b) != `["arn:a","arn:b"]` {
			t.Errorf("job targets after the migration: %s %v", b, err)
		}
		return nil
	})
	// The migration is in the file, not only in the log: a crash right
	// after the start keeps it.
	c := openPath(t, crashCopy(t, path))
	c.View(func(tx *store.Tx) error {
		if b, err := tx.GetJobTargets("j1"); err != nil || string(b) != `["arn:a","arn:b"]` {
			t.Errorf("job targets after a crash: %s %v", b, err)
		}
		return nil
	})
}
