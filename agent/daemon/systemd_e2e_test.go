package daemon_test

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// notifyListener is what systemd listens on for sd_notify.
type notifyListener struct {
	path string
	mu   sync.Mutex
	msgs []string
}

func listenNotify(t *testing.T) *notifyListener {
	n := &notifyListener{path: filepath.Join(t.TempDir(), "notify.sock")}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
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
	return n
}

func (n *notifyListener) has(s string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := 0
	for _, m := range n.msgs {
		if strings.Contains(m, s) {
			c++
		}
	}
	return c
}

func TestSystemdNotifyWatchdogReloadStop(t *testing.T) {
	n := listenNotify(t)
	dir := t.TempDir()
	// A broker nobody listens on: READY must not wait for the cloud.
	_, cfgPath := gatewayConfig(t, "gw-sd", "tcp://127.0.0.1:1", dir, "cloud_wins")
	cmd := exec.Command(gatewayBin, "--config", cfgPath)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+n.path, "WATCHDOG_USEC=400000", "WATCHDOG_PID=")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var out strings.Builder
	cmd.Stderr = &syncWriter{w: &out}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	waitFor(t, "READY=1 with the broker unreachable", func() bool { return n.has("READY=1") == 1 })
	waitFor(t, "watchdog pings", func() bool { return n.has("WATCHDOG=1") >= 3 })
	waitFor(t, "an offline status line", func() bool { return n.has("STATUS=offline") >= 1 })

	cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, "RELOADING=1 then READY=1", func() bool { return n.has("RELOADING=1") == 1 && n.has("READY=1") == 2 })

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
	if n.has("STOPPING=1") != 1 {
		t.Fatalf("no STOPPING=1: %v", n.msgs)
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
