package store_test

import (
	"bytes"
	"fmt"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/shadowgate/shadowgate/store"
)

// RecentCommands returns what Commands returns (newest first), and reads a
// large inbox in little memory: the n newest are decoded, not all of them.
func TestRecentCommandsPages(t *testing.T) {
	s, err := store.Open(filepath.Join(t.TempDir(), "s.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	big := append(append([]byte(`{"pad":"`), bytes.Repeat([]byte("x"), 64<<10)...), `"}`...)
	const total = 300
	for i := 0; i < total; i++ {
		err := s.Update(func(tx *store.Tx) error {
			_, err := tx.PutCommand(&store.Command{TID: fmt.Sprintf("t%03d-%d", (i*7919)%total, i), Cmd: "X", Request: big, Received: time.Now()})
			if err == nil && i%3 == 0 {
				_, err = tx.UpdateCommand(fmt.Sprintf("t%03d-%d", (i*7919)%total, i), func(c *store.Command) error { c.Status = store.StatusSuccess; return nil })
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []int{1, 7, 50, total, total + 10} {
		var want, got []*store.Command
		s.View(func(tx *store.Tx) (err error) {
			if want, err = tx.Commands(n); err != nil {
				return err
			}
			got, err = tx.RecentCommands(n)
			return err
		})
		if len(got) != len(want) {
			t.Fatalf("n=%d: %d commands, want %d", n, len(got), len(want))
		}
		for i := range want {
			if got[i].TID != want[i].TID || got[i].Seq != want[i].Seq || got[i].Status != want[i].Status {
				t.Fatalf("n=%d, #%d: %s/%d, want %s/%d", n, i, got[i].TID, got[i].Seq, want[i].TID, want[i].Seq)
			}
		}
	}
	// Paging 10 of 300 requests of 64 KiB each must not decode them all
	// (Commands allocates every request: about 20 MB here).
	recent := measure(func() { s.View(func(tx *store.Tx) error { _, err := tx.RecentCommands(10); return err }) })
	whole := measure(func() { s.View(func(tx *store.Tx) error { _, err := tx.Commands(10); return err }) })
	t.Logf("allocated for 10 of %d commands of 64 KiB: RecentCommands %d bytes, Commands %d bytes", total, recent, whole)
	if recent > 4<<20 {
		t.Fatalf("RecentCommands(10) allocated %d bytes for 10 commands", recent)
	}
}

func measure(fn func()) uint64 {
	var a, b runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&a)
	fn()
	runtime.ReadMemStats(&b)
	return b.TotalAlloc - a.TotalAlloc
}
