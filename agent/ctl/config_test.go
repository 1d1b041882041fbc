package ctl

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := Main(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestConfigCheck(t *testing.T) {
	code, out, _ := run(t, "config", "check", "../../configs/demo.yaml")
	if code != ExitOK || !strings.Contains(out, "OK (thing demo-gw, 3 actuators") {
		t.Fatalf("demo: %d %q", code, out)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("gateway: {thing: gw}\ncloud: {broker: \"tcp://127.0.0.1:1883\", keepalive: soon}\nactuators:\n  a: {driver: sim}\n"), 0o644)
	code, _, errOut := run(t, "config", "check", bad)
	if code != ExitFailure || !strings.Contains(errOut, bad+":2: cloud.keepalive: invalid duration") ||
		!strings.Contains(errOut, bad+":4: actuators.a.state: is required") || !strings.Contains(errOut, "2 problem(s)") {
		t.Fatalf("bad: %d %q", code, errOut)
	}
	code, _, errOut = run(t, "config", "check", "/nonexistent.yaml")
	if code != ExitFailure || !strings.Contains(errOut, "does not exist") {
		t.Fatalf("missing: %d %q", code, errOut)
	}
	code, _, errOut = run(t, "config", "check", "a", "b")
	if code != ExitUsage || !strings.Contains(errOut, "at most one FILE") {
		t.Fatalf("usage: %d %q", code, errOut)
	}
	code, _, _ = run(t, "frobnicate")
	if code != ExitUsage {
		t.Fatalf("unknown command: %d", code)
	}
	code, out, _ = run(t, "config", "check", "--help")
	if code != ExitOK || !strings.Contains(out, "Example:") {
		t.Fatalf("help: %d %q", code, out)
	}
}
