// Package resident gives back, once start-up is over, the memory only
// start-up needed, and tells how much memory the process holds.
//
// A Go program's start runs code and reads tables across its whole
// executable (runtime and package initialisation, the configuration's
// parsing, the store's check), and Linux maps 64 KB around every page
// fault in a file mapping (fault-around): a daemon that runs a few hundred
// kilobytes of code when idle keeps nearly all of its 10 MB binary
// resident, and in its cgroup's memory (systemctl status). Release asks the
// kernel to reclaim the executable's pages this process alone maps
// (madvise MADV_PAGEOUT, Linux 5.4 and later): they leave the process and,
// where the kernel can reclaim them, the page cache; what runs later is
// mapped again, a page-cache folio at a time (4 KB, or more on a file
// system that reads into large folios), and read back from the disk if it
// left. It also returns the heap's start-up garbage to the kernel.
package resident

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// madvPageout is MADV_PAGEOUT, the same on every Linux architecture
// (asm-generic/mman-common.h).
const madvPageout = 21

// Memory is what a process holds now, from /proc/self/status.
type Memory struct {
	Resident int64 `json:"resident_bytes"` // VmRSS: the three below
	Anon     int64 `json:"anon_bytes"`     // RssAnon: the heap, stacks, the runtime's
	File     int64 `json:"file_bytes"`     // RssFile: mapped files, nearly all the binary
	// Shmem (RssShmem) are mapped files that live in memory (tmpfs): a
	// binary run from there stays resident, as the file itself is memory.
	Shmem int64 `json:"shmem_bytes,omitempty"`
}

// Stats are Memory now and what Release gave back.
type Stats struct {
	Memory
	// Released is when start-up's memory was given back (zero: not yet),
	// Before and After the Memory just before and just after it.
	Released time.Time `json:"released,omitzero"`
	Before   Memory    `json:"before,omitzero"`
	After    Memory    `json:"after,omitzero"`
	// Unreleased says why the executable's pages could not be given back
	// (an old kernel without MADV_PAGEOUT); the heap's still were.
	Unreleased string `json:"unreleased,omitempty"`
}

// Releaser gives start-up's memory back once and remembers what it did.
// The zero value is ready to use.
type Releaser struct {
	// When start-up is over is its user's to say (the daemon's: its first
	// session this long without a message, Quiet, or at the latest AtMost
	// after it is ready); zero: the user's defaults.
	Quiet, AtMost time.Duration

	mu  sync.Mutex
	st  Stats
	err error // the release's
}

// Release gives back start-up's memory: the heap's garbage, and the pages
// of the executable that only this process maps. It returns the memory
// before and after; only its first call acts, later ones return what the
// first did.
func (r *Releaser) Release() (before, after Memory, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.st.Released.IsZero() {
		r.st.Before, _ = Read()
		debug.FreeOSMemory()
		if r.err = pageOutExecutable(); r.err != nil {
			r.st.Unreleased = r.err.Error()
		}
		r.st.Released = time.Now()
		r.st.After, _ = Read()
	}
	return r.st.Before, r.st.After, r.err
}

// Stats returns the memory now and what Release did (nothing, on a nil
// Releaser).
func (r *Releaser) Stats() Stats {
	var st Stats
	if r != nil {
		r.mu.Lock()
		st = r.st
		r.mu.Unlock()
	}
	st.Memory, _ = Read()
	return st
}

// Read reads the process's resident memory from /proc/self/status.
func Read() (Memory, error) {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return Memory{}, fmt.Errorf("read resident memory: %w", err)
	}
	return parseStatus(data), nil
}

// parseStatus takes VmRSS, RssAnon and RssFile (in kB) from a
// /proc/PID/status.
func parseStatus(data []byte) (m Memory) {
	for line := range bytes.Lines(data) {
		name, rest, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		var dst *int64
		switch string(name) {
		case "VmRSS":
			dst = &m.Resident
		case "RssAnon":
			dst = &m.Anon
		case "RssFile":
			dst = &m.File
		case "RssShmem":
			dst = &m.Shmem
		default:
			continue
		}
		f := strings.Fields(string(rest))
		if len(f) == 2 && f[1] == "kB" {
			if kb, err := strconv.ParseInt(f[0], 10, 64); err == nil {
				*dst = kb << 10
			}
		}
	}
	return m
}

// ErrNoPageout: the kernel has no MADV_PAGEOUT (before Linux 5.4); only
// the heap is given back.
var ErrNoPageout = errors.New("the kernel cannot page out on request (MADV_PAGEOUT needs Linux 5.4)")

// pageOutExecutable asks the kernel to reclaim the read-only mappings of
// the executable (its code and read-only data; the data it wrote is its
// own memory, not the file's).
func pageOutExecutable() error {
	rs, err := findExecutable()
	if err != nil {
		return fmt.Errorf("page out the executable: %w", err)
	}
	for _, r := range rs {
		if _, _, e := syscall.Syscall(syscall.SYS_MADVISE, r.start, r.end-r.start, madvPageout); e != 0 {
			if e == syscall.EINVAL {
				return ErrNoPageout
			}
			return fmt.Errorf("page out the executable: madvise: %w", e)
		}
	}
	return nil
}

// findExecutable returns the executable's read-only mappings.
func findExecutable() ([]addrRange, error) {
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/self/exe", &st); err != nil {
		return nil, err
	}
	path, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return nil, err
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return nil, err
	}
	return executableRanges(maps, exe{dev: uint64(st.Dev), ino: uint64(st.Ino), path: path})
}

type addrRange struct{ start, end uintptr }

// exe names the executable two ways, as a mapping may show either: its
// device and inode (stat) and its path (readlink /proc/self/exe, with
// " (deleted)" when an upgrade replaced it while it runs). Over overlayfs
// (containers) a mapping shows the device and inode of the file beneath,
// stat the overlay's; the path is the same.
type exe struct {
	dev, ino uint64
	path     string
}

// executableRanges returns the read-only mappings of the executable in a
// /proc/PID/maps ("start-end perms offset major:minor inode path").
func executableRanges(maps []byte, x exe) ([]addrRange, error) {
	var out []addrRange
	for line := range strings.Lines(string(maps)) {
		f := strings.SplitN(strings.TrimSpace(line), " ", 6)
		if len(f) < 6 || strings.Contains(f[1], "w") {
			continue
		}
		if strings.TrimSpace(f[5]) != x.path && !sameFile(f[3], f[4], x) {
			continue
		}
		start, end, ok := strings.Cut(f[0], "-")
		if !ok {
			return nil, fmt.Errorf("unreadable mapping %q", strings.TrimSpace(line))
		}
		s, err1 := strconv.ParseUint(start, 16, 64)
		e, err2 := strconv.ParseUint(end, 16, 64)
		if err1 != nil || err2 != nil || e <= s {
			return nil, fmt.Errorf("unreadable mapping %q", strings.TrimSpace(line))
		}
		out = append(out, addrRange{uintptr(s), uintptr(e)})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no read-only mapping of the executable %s in /proc/self/maps", x.path)
	}
	return out, nil
}

// sameFile: a mapping's "major:minor" and inode are the executable's.
func sameFile(devField, inoField string, x exe) bool {
	major, minor, ok := strings.Cut(devField, ":")
	if !ok || inoField != strconv.FormatUint(x.ino, 10) {
		return false
	}
	ma, err1 := strconv.ParseUint(major, 16, 32)
	mi, err2 := strconv.ParseUint(minor, 16, 32)
	return err1 == nil && err2 == nil && mkdev(ma, mi) == x.dev
}

// mkdev is the kernel's new_encode_dev, as stat reports a device number.
func mkdev(major, minor uint64) uint64 {
	return (minor & 0xff) | (major << 8) | ((minor &^ 0xff) << 12)
}
