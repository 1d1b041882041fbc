package main_test

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// lockedBuffer collects a process's output while the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// The demo (`make run`, configs/demo.yaml) starts, as any user, without a
// single warning: it names no socket group that may not exist.
func TestDemoStartsWithoutWarnings(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "shadowgated")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	demo, err := os.ReadFile("../../configs/demo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// The same file on free ports, so that a running demo does not matter,
	// with the files it names beside it.
	text := strings.ReplaceAll(string(demo), "127.0.0.1:1883", "127.0.0.1:"+strconv.Itoa(freePort(t)))
	text = strings.ReplaceAll(text, "127.0.0.1:8080", "127.0.0.1:"+strconv.Itoa(freePort(t)))
	cfg := filepath.Join(dir, "demo.yaml")
	os.WriteFile(cfg, []byte(text), 0o644)
	if creds, err := os.ReadFile("../../configs/demo-credentials"); err == nil {
		os.WriteFile(filepath.Join(dir, "demo-credentials"), creds, 0o600)
	}
	os.MkdirAll(filepath.Join(dir, "tmp", "demo"), 0o755)

	cmd := exec.Command(bin, "--config", cfg)
	cmd.Dir = dir // the demo's paths are relative to the working directory
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET=")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	deadline := time.Now().Add(30 * time.Second)
	// Up: the gateway's and the embedded service's links, the API, and the
	// classic shadow created.
	for strings.Count(out.String(), `msg="mqtt link up"`) < 2 || !strings.Contains(out.String(), `msg="shadowgated running"`) ||
		!strings.Contains(out.String(), "creating it with the actuators' state") {
		if time.Now().After(deadline) {
			t.Fatalf("the demo did not come up within 30s:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := os.Stat(filepath.Join(dir, "tmp", "demo", "api.sock")); err != nil {
		t.Fatalf("no API socket: %v", err)
	}
	started := out.String() // what starting logged (stopping is not this test's)
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit: %v\n%s", err, out.String())
	}
	for _, line := range strings.Split(started, "\n") {
		if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
			t.Errorf("the demo logs: %s", line)
		}
	}
}
