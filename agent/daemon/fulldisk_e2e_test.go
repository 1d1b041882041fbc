package daemon_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shadowgate/shadowgate/agent/command"
	"github.com/shadowgate/shadowgate/agent/ctl"
	"github.com/shadowgate/shadowgate/agent/daemon"
	"github.com/shadowgate/shadowgate/agent/shadow"
	"github.com/shadowgate/shadowgate/store"
	"github.com/shadowgate/shadowgate/store/disktest"
)

// smallDisk mounts a tmpfs of size at a new directory for the test and
// unmounts it when the test ends (after the processes using it stopped:
// cleanups run last registered first). It skips the test, saying why, when
// mounting is not permitted.
func smallDisk(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Skipf("needs a small tmpfs of its own (mount -t tmpfs -o size=%s, as root): %v", size, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// fillDisk writes filler files into dir until the file system is full. free
// removes them again a little at a time, the small ones first, so that the
// store meets a disk with room for a page or two, then none again, while
// space returns.
func fillDisk(t *testing.T, dir string) (free func()) {
	t.Helper()
	var files []string
	for _, chunk := range []int{64 << 10, 4 << 10, 512} {
		buf := make([]byte, chunk)
		for i := 0; ; i++ {
			name := filepath.Join(dir, fmt.Sprintf("filler-%d-%d", chunk, i))
			f, err := os.Create(name)
			if err != nil {
				break // no inode or no space left: full
			}
			files = append(files, name)
			_, err = f.Write(buf)
			f.Close()
			if err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					t.Fatalf("fill %s: %v", dir, err)
				}
				break
			}
		}
	}
	return func() {
		for i := len(files) - 1; i >= 0; i-- {
			os.Remove(files[i])
			time.Sleep(20 * time.Millisecond) // a load pattern, not a wait for anything
		}
	}
}

// stopProcess stops a gateway with SIGTERM, as systemd does, and fails the
// test if it does not stop in time.
func stopProcess(t *testing.T, p *gatewayProcess) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		p.cmd.Process.Kill()
		<-done
		t.Fatalf("shadowgated did not stop within a minute of SIGTERM; output:\n%s", p.output())
	}
}

// The issue 25 sequence: SET_SPEED F1…F10 while the state file's disk is
// full, then space returns. Whatever the full disk makes fail, every command
// ends with exactly one final ack, commands on the motor run in the order
// sent, and a command that failed never runs later, also after restarts.
// What fails on a full disk depends on which pages bbolt can reuse, so the
// sequence runs in three rounds. Modes: the shadowgated process with a
// restart after the rounds, the same with a restart in each round while the
// disk is still full, and the daemon in the test's process (for the race
// detector; no restarts).
//
// The log variants fail the disk under the store's write-ahead log (real
// I/O errors from the kernel, see store/disktest): on a merely full disk
// the log, made at full size, goes on taking every commit.
func TestFullDiskCommands(t *testing.T) {
	modes := []string{"space returns", "restart while full", "in process"}
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) { fullDiskSequence(t, mode, false) })
	}
	t.Run("log fails", func(t *testing.T) {
		for _, mode := range modes {
			t.Run(mode, func(t *testing.T) { fullDiskSequence(t, mode, true) })
		}
	})
}

func fullDiskSequence(t *testing.T, mode string, logFails bool) {
	c := newCloud(t)
	var dir string
	var fill func() (free func())
	if logFails {
		d := disktest.New(t)
		dir = d.Dir
		fill = func() func() { d.Fail(filepath.Join(dir, "state.db-wal")); return d.Heal }
	} else {
		dir = smallDisk(t, "2m")
		fill = func() func() { return fillDisk(t, dir) }
	}
	const thing = "gw-full"
	cfg, cfgPath := gatewayConfig(t, thing, c.broker.URL(), dir, "cloud_wins")
	dbPath := filepath.Join(dir, "state.db")
	var p *gatewayProcess
	var d *daemon.Daemon
	if mode == "in process" {
		d = gateway(t, cfg)
	} else {
		p = startProcess(t, cfgPath)
	}
	c.waitShadow(t, thing, "", "gateway up", func(g *shadow.GetAccepted) bool { return g.State.Reported["gate_motor"] != nil })
	c.send(t, thing, req("SET_SPEED", "F0", `{"speed":1}`))
	c.waitAck(t, thing, "F0", command.StatusSuccess)

	order := []string{"F0"}
	var tids []string
	for round := 1; round <= 3; round++ {
		free := fill()
		var sent []string
		for i := 1; i <= 10; i++ {
			tid := fmt.Sprintf("R%dF%d", round, i)
			sent = append(sent, tid)
			c.send(t, thing, req("SET_SPEED", tid, fmt.Sprintf(`{"speed":%d}`, 30*(round-1)+3*i)))
		}
		// Until the gateway has seen the last one (accepted, refused or not
		// yet written: its tid is in the log either way).
		if d != nil {
			want := int64(1 + 10*round)
			waitFor(t, sent[9]+" received on the full disk", func() bool { return d.Commands.Stats().Received >= want })
		} else {
			last := regexp.MustCompile(`tid=` + sent[9] + `\b`)
			waitFor(t, sent[9]+" handled on the full disk", func() bool { return last.MatchString(p.output()) })
		}
		if mode == "restart while full" {
			stopProcess(t, p)
			p = startProcess(t, cfgPath)
			waitFor(t, "the gateway restarted on the full disk", func() bool {
				return strings.Contains(p.output(), "shadowgated running") || strings.Contains(p.output(), "no space left")
			})
		}
		free()
		waitFor(t, "a final ack for each of round "+fmt.Sprint(round)+" after space returned", func() bool {
			for _, tid := range sent {
				if !hasFinal(c.acks(thing, tid)) {
					return false
				}
			}
			return true
		})
		order = append(order, sent...)
		tids = append(tids, sent...)
	}
	// A restart must not run any of them again.
	if p != nil {
		stopProcess(t, p)
		p = startProcess(t, cfgPath)
	}
	c.send(t, thing, req("SET_SPEED", "M", `{"speed":99}`))
	c.waitAck(t, thing, "M", command.StatusSuccess)
	order = append(order, "M")

	final := map[string]command.Ack{}
	for _, tid := range tids {
		acks := c.acks(thing, tid)
		raw := c.rawAcks(thing, tid)
		var finals []string
		for i, a := range acks {
			if a.Status == command.StatusSuccess || a.Status == command.StatusFailure {
				finals = append(finals, raw[i])
				final[tid] = a
			}
		}
		// The outbox may send an ack again when the broker's PUBACK was not
		// recorded (QoS 1); it is the same ack, byte for byte.
		if len(slices.Compact(slices.Clone(finals))) != 1 {
			t.Errorf("%s: want exactly one final ack, got %q", tid, finals)
		}
		if a := acks[len(acks)-1]; a.Status == command.StatusRunning {
			t.Errorf("%s: last ack is RUNNING after its final: %+v", tid, acks)
		}
	}

	var st *store.Store
	if d != nil {
		st = d.Store
	} else {
		stopProcess(t, p)
		var err error
		if st, err = store.Open(dbPath, store.Options{}); err != nil {
			t.Fatal(err)
		}
		defer st.Close()
	}
	var h []*store.Change
	st.View(func(tx *store.Tx) (err error) { h, err = tx.History("gate_motor", 1000); return err })
	slices.Reverse(h) // oldest first
	var ran []string
	for _, ch := range h {
		if ch.TID != "" {
			ran = append(ran, ch.TID)
		}
	}
	t.Logf("motor history (commands, oldest first): %v", ran)
	for _, tid := range tids {
		t.Logf("%s: %s %s", tid, final[tid].Status, final[tid].Reason)
	}
	pos := -1
	for _, tid := range ran {
		i := slices.Index(order, tid)
		if i <= pos {
			t.Fatalf("commands ran out of order or twice: %v", ran)
		}
		pos = i
	}
	for _, tid := range tids {
		switch a := final[tid]; {
		case a.Status == command.StatusSuccess && !slices.Contains(ran, tid):
			t.Errorf("%s: SUCCESS but the motor never ran it", tid)
		case a.Status == command.StatusFailure && a.Reason != command.ReasonInterrupted && slices.Contains(ran, tid):
			// (interrupted: it had started when the gateway stopped, and
			// its result could not be written; it may have run, once.)
			t.Errorf("%s: FAILURE (%s) but the motor ran it", tid, a.Reason)
		}
	}
	if ran[len(ran)-1] != "M" {
		t.Fatalf("the marker is not the last change: %v", ran)
	}
}

func hasFinal(acks []command.Ack) bool {
	for _, a := range acks {
		if a.Status == command.StatusSuccess || a.Status == command.StatusFailure {
			return true
		}
	}
	return false
}

// A disk that refuses writes shows in `shadowctl status` and the systemd
// status line, with the disk's error and since when, while the gateway
// stays up and connected; both clear once the disk takes a commit again.
func TestDiskRefusingWritesShown(t *testing.T) {
	c := newCloud(t)
	disk := disktest.New(t)
	const thing = "gw-refused"
	_, cfgPath := gatewayConfig(t, thing, c.broker.URL(), disk.Dir, "cloud_wins")
	sock := filepath.Join(disk.Dir, "api.sock")
	n := startNotified(t, cfgPath).notify
	c.waitShadow(t, thing, "", "gateway up", func(g *shadow.GetAccepted) bool { return g.State.Reported["gate_motor"] != nil })

	disk.Fail(filepath.Join(disk.Dir, "state.db-wal"))
	c.send(t, thing, req("SET_SPEED", "D1", `{"speed":7}`))
	waitFor(t, "the refusal in the status line", func() bool {
		return n.Count("STATUS=connected to") >= 1 && n.Count("the disk refuses writes since") >= 1
	})
	if st := daemonStatus(t, sock); st.StoreWrites.Refused == "" || st.StoreWrites.RefusedSince.IsZero() || st.StoreWrites.Refusals == 0 || !st.Connected {
		t.Fatalf("shadowctl status --json on a refusing disk: %+v, connected %v", st.StoreWrites, st.Connected)
	}
	var out, errOut strings.Builder
	if code := ctl.Main(context.Background(), []string{"status", "--socket", sock}, &out, &errOut); code != 0 ||
		!regexp.MustCompile(`(?m)^disk +refuses writes since .+ commits refused\): .*no space left on device`).MatchString(out.String()) {
		t.Fatalf("shadowctl status on a refusing disk: exit %d\n%s%s", code, out.String(), errOut.String())
	}

	disk.Heal()
	c.waitAck(t, thing, "D1", command.StatusSuccess)
	if st := daemonStatus(t, sock); st.StoreWrites.Refused != "" || st.StoreWrites.Refusals == 0 {
		t.Fatalf("shadowctl status --json once the disk writes again: %+v", st.StoreWrites)
	}
	seen := n.Count("STATUS=")
	waitFor(t, "a status line without the refusal", func() bool {
		var lines []string
		for _, m := range n.Messages() {
			if strings.Contains(m, "STATUS=") {
				lines = append(lines, m)
			}
		}
		return len(lines) > seen && !strings.Contains(lines[len(lines)-1], "refuses")
	})
}
