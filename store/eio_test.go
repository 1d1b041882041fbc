package store_test

import (
	"errors"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/shadowgate/shadowgate/store"
	"github.com/shadowgate/shadowgate/store/disktest"
)

// A commit whose log record the disk cannot write fails with the disk's
// error, and nothing of it is seen or kept; the store goes on, and once
// the disk writes again the next commit is durable, with every earlier one.
func TestWALWriteErrorFromTheDisk(t *testing.T) {
	d := disktest.New(t)
	path := filepath.Join(d.Dir, "state.db")
	s, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	putShadows(t, s, 0, 3, "a")

	d.Fail(path + "-wal")
	_, err = s.PutShadow(shadowKey(3), []byte(`{"a":3}`))
	if !errors.Is(err, syscall.EIO) && !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("a commit the disk cannot write: %v, want the disk's error", err)
	}
	t.Log("the disk's error: ", err)
	wantShadows(t, s, 0, 3, "a") // shadow 3 is not there: its commit failed
	// Nor after a restart that reads the log back from the page cache,
	// which still holds the record the disk did not take: the writer was
	// told it failed.
	wantShadows(t, openPath(t, crashCopy(t, path)), 0, 3, "a")
	if _, err := s.PutShadow(shadowKey(1), []byte(`{"undone":1}`)); err == nil {
		t.Fatal("a commit succeeded on a disk that cannot write")
	}
	wantShadows(t, s, 0, 3, "a")

	d.Heal()
	putShadows(t, s, 3, 5, "a")
	wantShadows(t, s, 0, 5, "a")
	// What a crash leaves now, and what a clean restart reads.
	wantShadows(t, openPath(t, crashCopy(t, path)), 0, 5, "a")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wantShadows(t, openPath(t, path), 0, 5, "a")
}

// A disk that refuses writes does not stop the session numbers: each is
// still above every one before it, and says it was not recorded.
func TestNextSessionOnAFailingDisk(t *testing.T) {
	d := disktest.New(t)
	path := filepath.Join(d.Dir, "state.db")
	s := openPath(t, path)
	epoch := time.Unix(0, 0)
	first, err := s.NextSession(epoch)
	if err != nil {
		t.Fatal(err)
	}
	d.Fail(path + "-wal")
	var got []uint64
	for range 2 {
		n, err := s.NextSession(epoch)
		if !errors.Is(err, store.ErrSessionUnrecorded) {
			t.Fatalf("on a failing disk: %d, %v; want ErrSessionUnrecorded", n, err)
		}
		got = append(got, n)
	}
	d.Heal()
	n, err := s.NextSession(epoch)
	if err != nil {
		t.Fatal(err)
	}
	got = append([]uint64{first}, append(got, n)...)
	for i := 1; i < len(got); i++ {
		if got[i] <= got[i-1] {
			t.Fatalf("sessions %v: want each above the one before", got)
		}
	}
}
