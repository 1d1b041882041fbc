package daemon_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shadowgate/shadowgate/agent/watchdog/watchdogtest"
)

func TestSystemdNotifyWatchdogReloadStop(t *testing.T) {
	dir := t.TempDir()
	// A broker nobody listens on: READY must not wait for the cloud.
	_, cfgPath := gatewayConfig(t, "gw-sd", "tcp://127.0.0.1:1", dir, "cloud_wins")
	g := startNotified(t, cfgPath)
	cmd, n := g.cmd, g.notify
	waitFor(t, "READY=1 with the broker unreachable", func() bool { return n.Count("READY=1") == 1 })
	waitFor(t, "watchdog pings", func() bool { return n.Count("WATCHDOG=1") >= 3 })
	waitFor(t, "an offline status line", func() bool { return n.Count("STATUS=offline") >= 1 })

	cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, "RELOADING=1 then READY=1", func() bool { return n.Count("RELOADING=1") == 1 && n.Count("READY=1") == 2 })

	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- g.wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("did not stop within 20s of SIGTERM")
	}
	if n.Count("STOPPING=1") != 1 {
		t.Fatalf("no STOPPING=1: %v", n.Messages())
	}
}

func TestInvalidConfigExits78(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(p, []byte("gateway: {thing: gw}\nactuators: {a: {driver: nope}}\n"), 0o600)
	cmd := exec.Command(gatewayBin, "--config", p)
	out, err := cmd.CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 78 {
		t.Fatalf("exit %v, want 78\n%s", err, out)
	}
	if !strings.Contains(string(out), p+":2: actuators.a.driver: unknown driver \"nope\"") || !strings.Contains(string(out), "not starting") {
		t.Fatalf("output:\n%s", out)
	}
}

type syncWriter struct {
	mu sync.Mutex
	w  *strings.Builder
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.String()
}

// notifiedGateway is shadowgated run as systemd runs it: a notify socket
// and a 400 ms watchdog. It is killed when the test ends, and its output
// and notify messages are logged if the test failed.
type notifiedGateway struct {
	cmd    *exec.Cmd
	notify *watchdogtest.Socket
	out    syncWriter

	waitOnce sync.Once
	waitErr  error
}

func startNotified(t *testing.T, cfgPath string) *notifiedGateway {
	t.Helper()
	g := &notifiedGateway{notify: watchdogtest.Listen(t), out: syncWriter{w: &strings.Builder{}}}
	g.cmd = exec.Command(gatewayBin, "--config", cfgPath)
	g.cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+g.notify.Path, "WATCHDOG_USEC=400000", "WATCHDOG_PID=")
	g.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	g.cmd.Stderr = &g.out
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		g.cmd.Process.Kill()
		g.wait()
		if t.Failed() {
			t.Logf("shadowgated output:\n%s\nnotify messages: %q", g.out.String(), g.notify.Messages())
		}
	})
	return g
}

// wait waits for the process to exit (once; later calls return the same).
func (g *notifiedGateway) wait() error {
	g.waitOnce.Do(func() { g.waitErr = g.cmd.Wait() })
	return g.waitErr
}
