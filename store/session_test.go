package store_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/shadowgate/shadowgate/store"
)

// Session numbers only grow: across reopening the file, with a clock that
// is at 1970 (a Pi without its time yet) or goes back, and they jump to the
// clock's seconds when it is ahead, so that a store started over still
// outranks its old sessions once the clock is right.
func TestNextSessionOnlyGrows(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	epoch := time.Unix(0, 0)
	var got []uint64
	next := func(now time.Time) {
		t.Helper()
		n, err := s.NextSession(now)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, n)
	}
	next(epoch)
	next(epoch)
	s.Close()
	if s, err = store.Open(path, store.Options{}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	next(epoch)
	next(time.Unix(1_700_000_000, 0)) // the clock is set
	next(time.Unix(1_600_000_000, 0)) // and goes back
	next(time.Unix(1_700_000_000, 0)) // the same second again
	want := []uint64{1, 2, 3, 1_700_000_000, 1_700_000_001, 1_700_000_002}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("sessions %v, want %v", got, want)
		}
	}

	// A store moved aside and started over: the clock puts it ahead.
	fresh, err := store.Open(filepath.Join(t.TempDir(), "state.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if n, err := fresh.NextSession(time.Unix(1_700_000_100, 0)); err != nil || n <= got[len(got)-1] {
		t.Fatalf("a new store's first session with the clock set: %d %v, want > %d", n, err, got[len(got)-1])
	}
}
