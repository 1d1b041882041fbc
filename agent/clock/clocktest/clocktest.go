// Package clocktest gives a real shadowgated process a wrong system clock,
// as a Raspberry Pi without a real-time clock has one: a file says how far
// the system clock is off and whether the kernel calls it synchronized.
// shadowgated reads the file named by the environment variable Env (tests
// only); the test rewrites it to step the clock.
package clocktest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	gosync "sync"
	"time"

	"github.com/shadowgate/shadowgate/agent/clock"
)

// Env names the clock file for shadowgated.
const Env = "SHADOWGATE_TEST_CLOCK"

// Setting is the file's content.
type Setting struct {
	// Offset is added to the real time: "-48h" boots two days behind.
	Offset time.Duration `json:"offset_ns"`
	// Synced is what the kernel says of the clock.
	Synced bool `json:"synced"`
}

// Write sets the clock file (atomically: a reader sees the old setting or
// the new one).
func Write(path string, s Setting) error {
	b, _ := json.Marshal(s)
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write clock file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write clock file: %w", err)
	}
	return nil
}

// file reads the setting on every call, keeping the last good one.
type file struct {
	path string
	mu   gosync.Mutex
	last Setting
}

func (f *file) read() Setting {
	f.mu.Lock()
	defer f.mu.Unlock()
	if b, err := os.ReadFile(f.path); err == nil {
		var s Setting
		if json.Unmarshal(b, &s) == nil {
			f.last = s
		}
	}
	return f.last
}

// Options are clock options whose system clock and kernel state come from
// the file at path.
func Options(path string) clock.Options {
	f := &file{path: path}
	return clock.Options{
		System: func() time.Time { return time.Now().Add(f.read().Offset) },
		Kernel: func() (clock.KernelState, error) {
			return clock.KernelState{Synced: f.read().Synced, MaxError: 10 * time.Millisecond, Via: "clocktest"}, nil
		},
	}
}
