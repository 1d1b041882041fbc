package watchdog_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shadowgate/shadowgate/agent/watchdog"
	"github.com/shadowgate/shadowgate/agent/watchdog/watchdogtest"
)

func TestPingsStopWhileALoopIsStuck(t *testing.T) {
	n := watchdogtest.Listen(t)
	t.Setenv("NOTIFY_SOCKET", n.Path)
	w := watchdog.New(nil)
	loop := w.Track("actuator lamp", 150*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w.Ready("starting")
	go w.Run(ctx, 100*time.Millisecond, func() string { return "connected" })

	wait := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s (got %v)", what, n.Messages())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	wait("READY=1", func() bool { return n.Count("READY=1") == 1 })
	wait("pings", func() bool { return n.Count("WATCHDOG=1") >= 3 })
	wait("status", func() bool { return n.Count("STATUS=connected") >= 1 })

	loop.Begin() // and never ends: stuck after 150ms
	time.Sleep(300 * time.Millisecond)
	if len(w.Stuck()) != 1 || !strings.Contains(w.Stuck()[0], "actuator lamp") {
		t.Fatalf("stuck: %v", w.Stuck())
	}
	before := n.Count("WATCHDOG=1")
	time.Sleep(400 * time.Millisecond)
	if after := n.Count("WATCHDOG=1"); after != before {
		t.Fatalf("pings went on while a loop was stuck: %d → %d", before, after)
	}
	loop.End()
	wait("pings resume", func() bool { return n.Count("WATCHDOG=1") > before })
	w.Stopping()
	wait("STOPPING=1", func() bool { return n.Count("STOPPING=1") == 1 })
}

func TestNoSystemdNoPings(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "")
	w := watchdog.New(nil)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	w.Ready("x") // no socket: a no-op, not an error
	w.Run(ctx, 0, nil)
}

// RELOADING=1 carries MONOTONIC_USEC, the CLOCK_MONOTONIC time of the
// message, as systemd 253+ requires (sd_notify(3)).
func TestReloadingCarriesMonotonicUsec(t *testing.T) {
	n := watchdogtest.Listen(t)
	t.Setenv("NOTIFY_SOCKET", n.Path)
	w := watchdog.New(nil)
	var before, after unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &before)
	w.Reloading()
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &after)
	deadline := time.Now().Add(5 * time.Second)
	for n.Count("RELOADING=1") == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no RELOADING=1: %v", n.Messages())
		}
		time.Sleep(10 * time.Millisecond)
	}
	msg := n.Messages()[0]
	var usec int64 = -1
	for _, line := range strings.Split(msg, "\n") {
		if v, ok := strings.CutPrefix(line, "MONOTONIC_USEC="); ok {
			usec, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	if usec < before.Nano()/1000 || usec > after.Nano()/1000 {
		t.Fatalf("MONOTONIC_USEC %d not within [%d, %d] in %q", usec, before.Nano()/1000, after.Nano()/1000, msg)
	}
}
