package daemon_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shadowgate/shadowgate/agent/shadow"
	"github.com/shadowgate/shadowgate/agent/shadow/shadowtest"
	"github.com/shadowgate/shadowgate/agent/shadow/shadowtest/mqttdoor"
)

// TestCorpusAgainstEmbeddedService plays the shadow conformance corpus
// against the demo as it ships: the shadowgated binary with
// configs/demo.yaml (broker: {embedded: true}), moved to a free port and a
// temporary directory. The corpus's things are not the gateway's, so the
// gateway's own shadow traffic runs beside it.
func TestCorpusAgainstEmbeddedService(t *testing.T) {
	demo, err := os.ReadFile("../../configs/demo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	listen := freeLoopbackAddr(t)
	y := string(demo)
	for old, repl := range map[string]string{
		"listen: 127.0.0.1:1883":        "listen: " + listen,
		"path: tmp/demo/state.db":       "path: " + filepath.Join(dir, "state.db"),
		"socket: tmp/demo/api.sock":     "socket: " + filepath.Join(dir, "api.sock"),
		"listen: 127.0.0.1:8080":        "listen: " + freeLoopbackAddr(t),
		"credentials: demo-credentials": "credentials: " + filepath.Join(cwd(t), "../../configs/demo-credentials"),
	} {
		if !strings.Contains(y, old) {
			t.Fatalf("configs/demo.yaml no longer has %q: update this test", old)
		}
		y = strings.Replace(y, old, repl, 1)
	}
	cfgPath := filepath.Join(dir, "demo.yaml")
	if err := os.WriteFile(cfgPath, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProcess(t, cfgPath)

	waitListening(t, listen)
	// Connect once the daemon's own clients (the embedded service and the
	// gateway) are up and subscribed.
	waitFor(t, "the gateway's link", func() bool {
		return strings.Contains(p.output(), `msg="mqtt link up" broker=tcp://`+listen+` client_id=demo-gw subscriptions=`)
	})
	door := mqttdoor.New(t, "tcp://"+listen, shadow.DefaultRoot)
	// Both the classic and the named request topics answer before the
	// corpus starts.
	for _, name := range []string{"", "probe"} {
		waitFor(t, "the embedded shadow service to answer (shadow "+name+")", func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_, err := door.Send(ctx, shadowtest.Request{Thing: "conformance-probe", Shadow: name, Op: shadow.OpGet})
			return err == nil
		})
	}
	shadowtest.RunCorpus(t, door, shadowtest.Options{})
}

func waitListening(t *testing.T, addr string) {
	t.Helper()
	waitFor(t, "the embedded broker on "+addr, func() bool {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return fmt.Sprintf("127.0.0.1:%d", l.Addr().(*net.TCPAddr).Port)
}

func cwd(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return wd
}
