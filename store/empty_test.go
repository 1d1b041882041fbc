package store_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shadowgate/shadowgate/store"
)

// A zero-length state.db is what ext4 with delayed allocation leaves after a
// power cut: the history, the exactly-once inbox and the outbox are gone. It
// is refused like a truncated file, never silently started over.
func TestZeroLengthFileRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := store.Open(path, store.Options{})
	if !errors.Is(err, store.ErrCorrupt) {
		t.Fatalf("want ErrCorrupt, got %v", err)
	}
	for _, want := range []string{path, "empty", "move it aside", "mv " + path + " " + path + ".broken"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error lacks %q: %v", want, err)
		}
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != 0 {
		t.Fatalf("the empty file was changed: %v %v", fi, err)
	}
	// A missing file is a first start: created, no complaint.
	fresh := filepath.Join(t.TempDir(), "new.db")
	s, err := store.Open(fresh, store.Options{})
	if err != nil {
		t.Fatalf("a first start: %v", err)
	}
	s.Close()
	if s, err = store.Open(fresh, store.Options{}); err != nil {
		t.Fatalf("reopen: %v", err)
	}
	s.Close()
}
