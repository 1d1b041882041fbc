package store

import (
	"errors"
	"path/filepath"
	"testing"
)

// TestHistoryCountFollowsTheEntries: RecordChange counts an actuator's
// entries instead of scanning them (histCount). The count must be the
// entries really in the open transaction after every kind of write: a
// change, a change whose group failed and was undone, a deleted change, a
// checkpoint, and a reopen. A count left too high by an undone write would
// let the history grow past its depth; one too low would trim it early.
func TestHistoryCountFollowsTheEntries(t *testing.T) {
	const depth = 16 // batches of 2
	path := filepath.Join(t.TempDir(), "h.db")
	s, err := Open(path, Options{HistoryDepth: depth})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	errUndo := errors.New("undo")
	check := func(i int) {
		t.Helper()
		s.txmu.Lock()
		defer s.txmu.Unlock()
		ids := (&Tx{s: s, tx: s.wtx, readOnly: true}).historyIDs("lamp")
		if n, ok := s.histCount["lamp"]; ok && n != len(ids) {
			t.Fatalf("step %d: counted %d entries, %d stored", i, n, len(ids))
		}
		if len(ids) > depth+depth/8 {
			t.Fatalf("step %d: %d entries stored, depth %d", i, len(ids), depth)
		}
	}
	record := func(tx *Tx) (uint64, error) {
		return tx.RecordChange(&Change{Actuator: "lamp", Before: map[string]any{"on": false}, After: map[string]any{"on": true}, Source: SourceDelta})
	}
	var last uint64
	for i := range 300 {
		switch {
		case i%7 == 3: // recorded, then its writer fails: the group is undone
			err := s.Update(func(tx *Tx) error {
				if _, err := record(tx); err != nil {
					return err
				}
				return errUndo
			})
			if !errors.Is(err, errUndo) {
				t.Fatalf("step %d: %v", i, err)
			}
		case i%11 == 5 && last != 0: // a change that did not happen after all
			if err := s.Update(func(tx *Tx) error { return tx.DeleteChange(last) }); err != nil {
				t.Fatal(err)
			}
			last = 0
		case i%97 == 50: // a checkpoint, then a reopen
			s.txmu.Lock()
			err := s.doCheckpoint()
			s.txmu.Unlock()
			if err != nil {
				t.Fatal(err)
			}
			check(i)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if s, err = Open(path, Options{HistoryDepth: depth}); err != nil {
				t.Fatal(err)
			}
		default:
			if err := s.Update(func(tx *Tx) (err error) { last, err = record(tx); return err }); err != nil {
				t.Fatal(err)
			}
		}
		check(i)
	}
	var n int
	s.View(func(tx *Tx) error {
		h, err := tx.History("lamp", 100)
		n = len(h)
		return err
	})
	if n != depth {
		t.Fatalf("readers see %d entries, want the depth, %d", n, depth)
	}
}
