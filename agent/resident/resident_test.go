package resident

import (
	"errors"
	"os"
	"runtime"
	"syscall"
	"testing"
)

func TestParseStatus(t *testing.T) {
	status := []byte("Name:\tshadowgated\nVmHWM:\t   15000 kB\nVmRSS:\t    7032 kB\nRssAnon:\t    4600 kB\nRssFile:\t    2400 kB\nRssShmem:\t       32 kB\nThreads:\t6\n")
	got := parseStatus(status)
	want := Memory{Resident: 7032 << 10, Anon: 4600 << 10, File: 2400 << 10, Shmem: 32 << 10}
	if got != want {
		t.Errorf("parseStatus = %+v, want %+v", got, want)
	}
	if got := parseStatus([]byte("VmRSS:\tlots kB\nRssAnon: 12\n")); got != (Memory{}) {
		t.Errorf("unreadable sizes gave %+v, want zeros", got)
	}
}

func TestExecutableRanges(t *testing.T) {
	// /usr/bin/shadowgated is 8:2 (dev 0x802) inode 4242; upgraded while it
	// runs, so "(deleted)". Its written data (rw-p) and a library on
	// another device with the same inode number are not the executable's
	// read-only pages.
	maps := []byte(`00400000-008fc000 r-xp 00000000 08:02 4242       /usr/bin/shadowgated (deleted)
008fc000-00e25000 r--p 004fc000 08:02 4242       /usr/bin/shadowgated (deleted)
00e25000-00e86000 rw-p 00a25000 08:02 4242       /usr/bin/shadowgated (deleted)
00e86000-02eca000 rw-p 00000000 00:00 0
7f43028d8000-7f4302a2e000 r-xp 00026000 fe:00 4242  /usr/lib/libc.so.6
7ffed6a37000-7ffed6a58000 rw-p 00000000 00:00 0                          [stack]
`)
	x := exe{dev: mkdev(8, 2), ino: 4242, path: "/usr/bin/shadowgated (deleted)"}
	want := []addrRange{{0x400000, 0x8fc000}, {0x8fc000, 0xe25000}}
	same := func(got []addrRange) bool { return len(got) == len(want) && got[0] == want[0] && got[1] == want[1] }
	if got, err := executableRanges(maps, x); err != nil || !same(got) {
		t.Errorf("ranges = %x, %v; want %x", got, err, want)
	}
	// Over overlayfs stat gives the overlay's device and inode, the maps
	// the file's beneath: the path finds it.
	if got, err := executableRanges(maps, exe{dev: mkdev(0, 0x2a), ino: 77, path: x.path}); err != nil || !same(got) {
		t.Errorf("by path: ranges = %x, %v; want %x", got, err, want)
	}
	// And a path the maps spell otherwise: the device and inode find it.
	if got, err := executableRanges(maps, exe{dev: x.dev, ino: x.ino, path: "/elsewhere"}); err != nil || !same(got) {
		t.Errorf("by inode: ranges = %x, %v; want %x", got, err, want)
	}
	if _, err := executableRanges(maps, exe{dev: mkdev(8, 3), ino: 4242, path: "/usr/bin/other"}); err == nil {
		t.Error("no mapping of the executable: no error")
	}
	if _, err := executableRanges([]byte("zz-00400000 r-xp 00000000 08:02 4242 /x\n"), exe{dev: mkdev(8, 2), ino: 4242}); err == nil {
		t.Error("an unreadable mapping: no error")
	}
}

// TestFindExecutable: this test's own executable is found in its maps,
// by its device and inode alone, and by its path alone.
func TestFindExecutable(t *testing.T) {
	if _, err := findExecutable(); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/self/exe", &st); err != nil {
		t.Fatal(err)
	}
	path, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	// qemu-user shows the guest's mappings in maps, but stat reaches the
	// host's file: there only the path matches.
	if os.Getenv("SHADOWGATE_TEST_EMULATOR") == "" {
		if _, err := executableRanges(maps, exe{dev: uint64(st.Dev), ino: uint64(st.Ino)}); err != nil {
			t.Errorf("by device and inode: %v", err)
		}
	}
	if _, err := executableRanges(maps, exe{path: path}); err != nil {
		t.Errorf("by path: %v", err)
	}
}

// TestReleasePagesOutTheExecutable: this test binary's pages leave the
// process (RssFile falls) and a second Release does nothing.
func TestReleasePagesOutTheExecutable(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("Linux only")
	}
	if os.Getenv("SHADOWGATE_TEST_EMULATOR") != "" {
		t.Skip("an emulator's madvise does not reach the host's pages")
	}
	var r Releaser
	if st := r.Stats(); !st.Released.IsZero() || st.Resident == 0 {
		t.Fatalf("before Release: %+v", st)
	}
	before, after, err := r.Release()
	if errors.Is(err, ErrNoPageout) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if before.File == 0 || after.File >= before.File {
		t.Errorf("mapped files: %d bytes before, %d after", before.File, after.File)
	}
	st := r.Stats()
	if st.Released.IsZero() || st.Before != before || st.After != after || st.Unreleased != "" {
		t.Errorf("Stats after Release = %+v", st)
	}
	if b2, a2, err := r.Release(); err != nil || b2 != before || a2 != after {
		t.Errorf("second Release acted: %+v %+v %v", b2, a2, err)
	}
	var nilR *Releaser
	if st := nilR.Stats(); st.Resident == 0 || !st.Released.IsZero() {
		t.Errorf("a nil Releaser's Stats = %+v", st)
	}
}
