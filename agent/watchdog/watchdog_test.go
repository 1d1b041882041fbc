package watchdog_test

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shadowgate/shadowgate/agent/watchdog"
)

// notifySocket serves $NOTIFY_SOCKET as systemd does and collects messages.
type notifySocket struct {
	mu   sync.Mutex
	msgs []string
}

func (n *notifySocket) count(prefix string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := 0
	for _, m := range n.msgs {
		if strings.HasPrefix(m, prefix) {
			c++
		}
	}
	return c
}

func serveNotify(t *testing.T) *notifySocket {
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("NOTIFY_SOCKET", path)
	n := &notifySocket{}
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				return
			}
			n.mu.Lock()
			n.msgs = append(n.msgs, string(buf[:k]))
			n.mu.Unlock()
		}
	}()
	t.Cleanup(func() { conn.Close() })
	return n
}

func TestPingsStopWhileALoopIsStuck(t *testing.T) {
	n := serveNotify(t)
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
				t.Fatalf("timed out waiting for %s (got %v)", what, n.msgs)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	wait("READY=1", func() bool { return n.count("READY=1") == 1 })
	wait("pings", func() bool { return n.count("WATCHDOG=1") >= 3 })
	wait("status", func() bool { return n.count("STATUS=connected") >= 1 })

	loop.Begin() // and never ends: stuck after 150ms
	time.Sleep(300 * time.Millisecond)
	if len(w.Stuck()) != 1 || !strings.Contains(w.Stuck()[0], "actuator lamp") {
		t.Fatalf("stuck: %v", w.Stuck())
	}
	before := n.count("WATCHDOG=1")
	time.Sleep(400 * time.Millisecond)
	if after := n.count("WATCHDOG=1"); after != before {
		t.Fatalf("pings went on while a loop was stuck: %d → %d", before, after)
	}
	loop.End()
	wait("pings resume", func() bool { return n.count("WATCHDOG=1") > before })
	w.Stopping()
	wait("STOPPING=1", func() bool { return n.count("STOPPING=1") == 1 })
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
