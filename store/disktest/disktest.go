// Package disktest is a disk that fails writes on demand, for tests of what
// a dying SD card does to a store: real I/O errors from the kernel, not a
// fake file.
package disktest

import (
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"unsafe"
)

// Disk is an ext4 file system on a loop device whose backing file
// lives on a small tmpfs: blocks the backing file lacks (holes punched into
// it) cannot be written once the tmpfs is full, and the kernel reports the
// write-back as an I/O error to whoever flushes them, as a dying SD card
// does. Freeing the tmpfs makes the disk whole again.
type Disk struct {
	Dir string // where the ext4 file system is mounted

	t       *testing.T
	outer   string // the tmpfs
	image   string // the backing file, on the tmpfs
	filler  string // the file that fills the tmpfs
	loopDev string
}

// New mounts one for the test, unmounted when it ends (after what the
// test started on it stopped: cleanups run last registered first), or
// skips the test, saying why, where it cannot (not root, no loop devices,
// no mkfs.ext4).
func New(t *testing.T) *Disk {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("a loop-mounted file system needs root")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skip("no loop devices: ", err)
	}
	for _, tool := range []string{"losetup", "mkfs.ext4", "mount", "umount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is missing (Debian: mount, e2fsprogs)", tool)
		}
	}
	dir := t.TempDir()
	d := &Disk{t: t, outer: filepath.Join(dir, "tmpfs"), Dir: filepath.Join(dir, "ext4")}
	d.image, d.filler = filepath.Join(d.outer, "disk.img"), filepath.Join(d.outer, "filler")
	for _, p := range []string{d.outer, d.Dir} {
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	d.run("mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", d.outer)
	t.Cleanup(func() { exec.Command("umount", d.outer).Run() })
	f, err := os.Create(d.image)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(32 << 20) // sparse: the tmpfs holds only what the file system writes
	f.Close()
	// Another test process may take the same free device at the same
	// moment; losetup then fails with EBUSY, and finds another.
	for attempt := 1; ; attempt++ {
		out, err := exec.Command("losetup", "--find", "--show", d.image).CombinedOutput()
		if err == nil {
			d.loopDev = strings.TrimSpace(string(out))
			break
		}
		if attempt == 5 || !strings.Contains(string(out), "busy") {
			t.Fatalf("losetup --find --show %s: %v\n%s", d.image, err, out)
		}
	}
	t.Cleanup(func() { exec.Command("losetup", "-d", d.loopDev).Run() })
	d.run("mkfs.ext4", "-q", "-F", "-b", "4096", "-E", "lazy_itable_init=0,lazy_journal_init=0", d.loopDev)
	d.run("mount", "-t", "ext4", d.loopDev, d.Dir)
	t.Cleanup(func() { exec.Command("umount", d.Dir).Run() })
	return d
}

func (d *Disk) run(name string, args ...string) string {
	d.t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		d.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Fail makes the blocks of file (inside the ext4) unwritable: they are
// punched out of the backing file, and the tmpfs is filled to the last
// page, so that writing them back needs room the tmpfs does not have. A
// write that lands while the holes are punched and the tmpfs not yet full
// (a daemon writing meanwhile) takes a page back; so the holes are checked
// once the tmpfs is full, and punched and filled again until they hold.
func (d *Disk) Fail(file string) {
	d.t.Helper()
	img, err := os.OpenFile(d.image, os.O_RDWR, 0)
	if err != nil {
		d.t.Fatal(err)
	}
	defer img.Close()
	f, err := os.OpenFile(d.filler, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		d.t.Fatal(err)
	}
	defer f.Close()
	ext := extents(d.t, file)
	for attempt := 1; ; attempt++ {
		for _, e := range ext {
			const punch = 0x02 | 0x01 // FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
			if err := syscall.Fallocate(int(img.Fd()), punch, int64(e[0]), int64(e[1])); err != nil {
				d.t.Fatal("punch a hole into the disk image: ", err)
			}
		}
		fill(d.t, f)
		if holes(d.t, img, ext) {
			return
		}
		if attempt == 100 {
			d.t.Fatal("writes keep landing in the holes punched under ", file)
		}
	}
}

// fill appends to f until its file system has not a byte left.
func fill(t *testing.T, f *os.File) {
	for _, n := range []int{64 << 10, 4096, 1} { // then the last partial block, then bytes
		b := make([]byte, n)
		for {
			if _, err := f.Write(b); err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					t.Fatal("fill the tmpfs: ", err)
				}
				break
			}
		}
	}
}

// holes says whether the ranges of img hold no data (SEEK_DATA finds none).
func holes(t *testing.T, img *os.File, ranges [][2]uint64) bool {
	const seekData = 3
	for _, r := range ranges {
		at, err := img.Seek(int64(r[0]), seekData)
		switch {
		case errors.Is(err, syscall.ENXIO): // no data after it at all
		case err != nil:
			t.Fatal("SEEK_DATA in the disk image: ", err)
		case at < int64(r[0]+r[1]):
			return false
		}
	}
	return true
}

// Heal frees the tmpfs: the disk writes again.
func (d *Disk) Heal() {
	d.t.Helper()
	if err := os.Remove(d.filler); err != nil {
		d.t.Fatal(err)
	}
}

// extents are the physical byte ranges (offset, length) of file on its
// device, from the FIEMAP ioctl.
func extents(t *testing.T, file string) [][2]uint64 {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const (
		fsIocFiemap = 0xC020660B
		headerSize  = 32
		extentSize  = 56
		maxExtents  = 64
		flagSync    = 0x1 // FIEMAP_FLAG_SYNC: flush first, so every block is placed
	)
	buf := make([]byte, headerSize+maxExtents*extentSize)
	binary.LittleEndian.PutUint64(buf[0:], 0)          // fm_start
	binary.LittleEndian.PutUint64(buf[8:], ^uint64(0)) // fm_length: all of it
	binary.LittleEndian.PutUint32(buf[16:], flagSync)
	binary.LittleEndian.PutUint32(buf[24:], maxExtents) // fm_extent_count
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), fsIocFiemap, uintptr(unsafe.Pointer(&buf[0]))); errno != 0 {
		t.Fatal("FIEMAP: ", errno)
	}
	n := binary.LittleEndian.Uint32(buf[20:]) // fm_mapped_extents
	if n == 0 {
		t.Fatalf("FIEMAP: %s has no blocks", file)
	}
	var out [][2]uint64
	for i := range n {
		e := buf[headerSize+int(i)*extentSize:]
		out = append(out, [2]uint64{binary.LittleEndian.Uint64(e[8:]), binary.LittleEndian.Uint64(e[16:])}) // fe_physical, fe_length
	}
	return out
}
