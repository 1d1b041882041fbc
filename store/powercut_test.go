package store_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shadowgate/shadowgate/store"
)

// TestPowerCut cuts the power under a child process committing to a store,
// six times, and checks that every commit the child was told is durable
// survived each cut, and that the store opens and passes its own checks.
//
// A power cut loses every write the disk had not been told to flush: what
// sat in the page cache is gone. kill -9 is not one: the process dies, but
// the kernel keeps everything it wrote and writes it out later, so a store
// that forgot an fsync passes TestCrashKill9. Here the store lives on
// LazyFS, a FUSE file system that keeps written data in a cache of its own
// until an fsync, and drops every unsynced byte on "lazyfs::clear-cache".
// A cut is: kill -9 the child, clear LazyFS's cache, unmount, then open the
// store from the backing directory, which holds what a disk would.
//
// The child also appends a line to a control file after each commit,
// never flushed: the cut must lose those lines, or LazyFS did not drop
// anything and the main check proves nothing.
//
// It needs LazyFS (SHADOWGATE_LAZYFS, or lazyfs on PATH), root and
// /dev/fuse, and skips without them; README.md, "Power cuts", says how to
// build LazyFS.
func TestPowerCut(t *testing.T) {
	if testing.Short() {
		t.Skip("power-cut test")
	}
	fs := newLazyFS(t)
	path := filepath.Join(fs.mnt, "state.db")
	seed := uint64(time.Now().UnixNano())
	r := rand.New(rand.NewPCG(seed, seed))
	const rounds = 6
	durable, lost, written := 0, 0, 0 // commits reported; control lines lost, written
	for round := 1; round <= rounds; round++ {
		fs.mount(t)
		target := durable + 100 + r.IntN(900)
		c := helper(t, "powercut", path)
		lines := c.lines()
		first := durable
		got := func(l string) {
			n, err := strconv.Atoi(strings.TrimPrefix(l, "E "))
			if err != nil || n != durable+1 {
				t.Fatalf("round %d: helper printed %q after commit %d", round, l, durable)
			}
			durable = n
		}
		timeout := time.After(5 * time.Second)
	run:
		for durable < target {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("round %d: helper exited after commit %d", round, durable)
				}
				got(l)
			case <-timeout:
				break run // a slow machine: cut where it is
			}
		}
		// The cut. Every line printed before the kill is a durable commit.
		c.cmd.Process.Kill()
		for l := range lines {
			got(l)
		}
		c.cmd.Wait()
		if durable == first {
			t.Fatalf("round %d: no commit in 5 s", round)
		}
		n := durable - first
		// Through the mount, after kill -9, the control file has every line.
		if seen := controlLines(t, filepath.Join(fs.mnt, "control")); seen < n {
			t.Fatalf("round %d: after kill -9 the mount shows %d control lines of %d written", round, seen, n)
		}
		fs.clearCache(t)
		if err := fs.unmount(); err != nil {
			t.Fatal(err)
		}
		kept := controlLines(t, filepath.Join(fs.root, "control"))
		if kept >= n {
			t.Fatalf("round %d: the control file, never flushed, kept all %d lines across the cut: LazyFS did not drop unsynced writes, so this test proves nothing", round, n)
		}
		lost, written = lost+n-kept, written+n
		survivors := checkPowerCut(t, filepath.Join(fs.root, "state.db"), durable)
		t.Logf("round %d: cut after %d commits (%d this round), %d in the store; the control lost %d of %d lines",
			round, durable, n, survivors, n-kept, n)
		durable = survivors // the next round goes on from what is there
	}
	t.Logf("%d rounds (seed %d): every durable commit survived; the control lost %d of %d unsynced lines", rounds, seed, lost, written)
}

// checkPowerCut opens the store at path (Open verifies the file, and bbolt
// checks it) and checks that it holds commands p1 … pN, each intact, with
// N the last commit reported durable or one more (committed, killed before
// it printed). It returns N.
func checkPowerCut(t *testing.T, path string, durable int) int {
	t.Helper()
	s, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatalf("open after the power cut: %v", err)
	}
	defer s.Close()
	var cmds []*store.Command
	if err := s.View(func(tx *store.Tx) (err error) {
		cmds, err = tx.Commands(1 << 30)
		return err
	}); err != nil {
		t.Fatalf("read commands after the power cut: %v", err)
	}
	have := map[int]*store.Command{}
	for _, c := range cmds {
		n, err := strconv.Atoi(strings.TrimPrefix(c.TID, "p"))
		if err != nil {
			t.Fatalf("command %q after the power cut", c.TID)
		}
		have[n] = c
	}
	var missing []int
	for n := 1; n <= durable; n++ {
		c := have[n]
		switch {
		case c == nil:
			missing = append(missing, n)
		case string(c.Request) != string(powercutRequest(n)):
			t.Errorf("command p%d reads back damaged: %.60s…", n, c.Request)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("the power cut lost %d of %d durable commits: %v", len(missing), durable, missing[:min(len(missing), 20)])
	}
	if len(cmds) > durable+1 || len(cmds) == durable+1 && have[durable+1] == nil {
		t.Fatalf("after the power cut: %d commands, %d reported durable (at most one more may have committed unreported)", len(cmds), durable)
	}
	return len(cmds)
}

// powercutRequest is command n's request: 2 KB, so that the log (1 MiB)
// fills and the store checkpoints into its bbolt file every 500 commits or
// so, and the cuts (100 to 1000 commits apart) land at any point between
// two checkpoints.
func powercutRequest(n int) json.RawMessage {
	return json.RawMessage(fmt.Sprintf(`{"n":%d,"pad":"%s"}`, n, strings.Repeat(string(rune('a'+n%26)), 2000)))
}

// powercutWorkload is TestPowerCut's child: it stores commands p1, p2, …
// (going on after the newest in the store), each in a commit of its own,
// and after each commit appends its number to the control file, which it
// never flushes, then prints "E n": a printed line is a durable commit.
func powercutWorkload(s *store.Store, control string) {
	n := 0
	err := s.View(func(tx *store.Tx) error {
		cs, err := tx.Commands(1)
		if err == nil && len(cs) > 0 {
			n, err = strconv.Atoi(strings.TrimPrefix(cs[0].TID, "p"))
		}
		return err
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper powercut: newest command:", err)
		os.Exit(4)
	}
	f, err := os.OpenFile(control, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper powercut:", err)
		os.Exit(4)
	}
	for {
		n++
		err := s.Update(func(tx *store.Tx) error {
			_, err := tx.PutCommand(&store.Command{TID: fmt.Sprint("p", n), Cmd: "GO", Request: powercutRequest(n)})
			return err
		})
		if err != nil {
			fmt.Fprintf(os.Stderr, "helper powercut: commit %d: %v\n", n, err)
			os.Exit(4)
		}
		if _, err := fmt.Fprintf(f, "%d\n", n); err != nil {
			fmt.Fprintln(os.Stderr, "helper powercut: control file:", err)
			os.Exit(4)
		}
		fmt.Printf("E %d\n", n)
	}
}

// controlLines counts the whole lines of the control file at path.
func controlLines(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read the control file: %v", err)
	}
	return strings.Count(string(b), "\n")
}

// lazyFS is a LazyFS mount at mnt over the backing directory root, with
// its fault FIFO (cmd) and the FIFO it reports finished faults on (done).
type lazyFS struct {
	bin, dir, mnt, root string
	cmd, done           *os.File
	doneLines           *bufio.Reader
	proc                *exec.Cmd     // while mounted
	exited              chan struct{} // closed when proc has exited
}

// newLazyFS finds LazyFS, or skips, and writes its configuration. The
// file system is unmounted when the test ends.
func newLazyFS(t *testing.T) *lazyFS {
	const how = `README.md, "Power cuts", says how to build LazyFS and run this test`
	bin := os.Getenv("SHADOWGATE_LAZYFS")
	if bin != "" {
		if fi, err := os.Stat(bin); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			t.Fatalf("SHADOWGATE_LAZYFS=%s is not an executable LazyFS binary (%v); %s", bin, err, how)
		}
	} else {
		var err error
		if bin, err = exec.LookPath("lazyfs"); err != nil {
			t.Skipf("power-cut test needs LazyFS: set SHADOWGATE_LAZYFS to the lazyfs binary or put lazyfs on PATH; %s", how)
		}
	}
	if os.Geteuid() != 0 {
		t.Skipf("power-cut test needs root to mount LazyFS (FUSE); %s", how)
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("power-cut test needs /dev/fuse for LazyFS (%v); %s", err, how)
	}
	dir := t.TempDir()
	fs := &lazyFS{bin: bin, dir: dir, mnt: filepath.Join(dir, "mnt"), root: filepath.Join(dir, "root")}
	for _, d := range []string{fs.mnt, fs.root} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// The FIFOs are opened read-write: neither open waits for LazyFS, a
	// command waits in the pipe until LazyFS reads it, and the done FIFO
	// never reads as ended (it always has a writer).
	var err error
	fifo := func(name string) *os.File {
		p := filepath.Join(dir, name)
		if err := syscall.Mkfifo(p, 0o600); err != nil {
			t.Fatalf("make LazyFS FIFO %s: %v", p, err)
		}
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatalf("open LazyFS FIFO: %v", err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	fs.cmd, fs.done = fifo("faults.fifo"), fifo("done.fifo")
	fs.doneLines = bufio.NewReader(fs.done)
	config := fmt.Sprintf(`[faults]
fifo_path=%q
fifo_path_completed=%q
[cache]
apply_eviction=false
[cache.simple]
custom_size="128mb"
blocks_per_page=1
[filesystem]
log_all_operations=false
logfile=""
`, fs.cmd.Name(), fs.done.Name())
	if err = os.WriteFile(filepath.Join(dir, "lazyfs.toml"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := fs.unmount(); err != nil {
			t.Errorf("power-cut test cleanup: %v", err)
		}
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "lazyfs.log"))
			t.Logf("LazyFS's log ends:\n%s", b[max(0, len(b)-4096):])
		}
	})
	return fs
}

// mount starts LazyFS and waits for its mount to appear.
func (fs *lazyFS) mount(t *testing.T) {
	t.Helper()
	logPath := filepath.Join(fs.dir, "lazyfs.log")
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(fs.bin, fs.mnt, "--config-path", filepath.Join(fs.dir, "lazyfs.toml"),
		"-o", "modules=subdir", "-o", "subdir="+fs.root, "-f")
	cmd.Dir, cmd.Stdout, cmd.Stderr = fs.dir, logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start LazyFS: %v", err)
	}
	fs.proc, fs.exited = cmd, make(chan struct{})
	go func() { cmd.Wait(); close(fs.exited) }()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	timeout := time.After(30 * time.Second)
	for !mounted(t, fs.mnt) {
		select {
		case <-fs.exited:
			fs.proc = nil
			b, _ := os.ReadFile(logPath)
			t.Fatalf("LazyFS exited before it mounted %s (%v):\n%s", fs.mnt, cmd.ProcessState, b)
		case <-timeout:
			t.Fatalf("LazyFS did not mount %s within 30 s", fs.mnt)
		case <-tick.C:
		}
	}
}

// mounted reports whether a FUSE file system is mounted at dir.
func mounted(t *testing.T, dir string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && f[4] == dir && strings.Contains(l, " - fuse") {
			return true
		}
	}
	return false
}

// clearCache has LazyFS drop every write not yet flushed, and waits until
// it has.
func (fs *lazyFS) clearCache(t *testing.T) {
	t.Helper()
	if _, err := fs.cmd.WriteString("lazyfs::clear-cache\n"); err != nil {
		t.Fatalf("send clear-cache to LazyFS: %v", err)
	}
	fs.done.SetReadDeadline(time.Now().Add(30 * time.Second))
	l, err := fs.doneLines.ReadString('\n')
	if err != nil || l != "finished::clear-cache\n" {
		t.Fatalf("LazyFS did not report the cache cleared: %q, %v", l, err)
	}
}

// unmount unmounts LazyFS, if mounted, and waits for it to exit.
func (fs *lazyFS) unmount() error {
	if fs.proc == nil {
		return nil
	}
	defer func() { fs.proc = nil }()
	var err error
	if uerr := syscall.Unmount(fs.mnt, 0); uerr != nil {
		err = fmt.Errorf("unmount LazyFS at %s: %w", fs.mnt, uerr)
		syscall.Unmount(fs.mnt, syscall.MNT_DETACH)
	}
	// LazyFS aborts on its way out (its fault thread is never joined):
	// its exit status says nothing.
	select {
	case <-fs.exited:
	case <-time.After(10 * time.Second):
		fs.proc.Process.Kill()
		<-fs.exited
		err = errors.Join(err, errors.New("LazyFS did not exit within 10 s of its unmount; killed"))
	}
	return err
}
