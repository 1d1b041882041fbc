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
	n := watchdogtest.Listen(t)
	dir := t.TempDir()
	// A broker nobody listens on: READY must not wait for the cloud.
	_, cfgPath := gatewayConfig(t, "gw-sd", "tcp://127.0.0.1:1", dir, "cloud_wins")
	cmd := exec.Command(gatewayBin, "--config", cfgPath)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+n.Path, "WATCHDOG_USEC=400000", "WATCHDOG_PID=")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var out strings.Builder
	cmd.Stderr = &syncWriter{w: &out}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	waitFor(t, "READY=1 with the broker unreachable", func() bool { return n.Count("READY=1") == 1 })
	waitFor(t, "watchdog pings", func() bool { return n.Count("WATCHDOG=1") >= 3 })
	waitFor(t, "an offline status line", func() bool { return n.Count("STATUS=offline") >= 1 })

	cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, "RELOADING=1 then READY=1", func() bool { return n.Count("RELOADING=1") == 1 && n.Count("READY=1") == 2 })

	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, out.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("did not stop within 20s of SIGTERM\n%s", out.String())
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
