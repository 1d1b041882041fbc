package daemon_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shadowgate/shadowgate/agent/config"
	"github.com/shadowgate/shadowgate/agent/ctl"
	"github.com/shadowgate/shadowgate/agent/daemon"
)

// TestDemoShadowctlJob runs the demo's configuration (on free ports) and
// the README's shadowctl job lines as printed: shadowctl in this process,
// the aws line with the AWS CLI when it is installed. The demo gateway runs
// both jobs itself.
func TestDemoShadowctlJob(t *testing.T) {
	root, _ := filepath.Abs("../..")
	cfg, _, httpAddr := demoOnFreePorts(t)
	d := gateway(t, cfg)
	waitFor(t, "link up", d.Link.Connected)

	// Only the README's settings: no AWS_* of whoever runs the tests.
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION",
		"AWS_CA_BUNDLE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_IOT", "AWS_ACCOUNT_ID", "SHADOWGATE_IOT_ENDPOINT"} {
		t.Setenv(k, "") // restored after the test
		os.Unsetenv(k)
	}
	t.Setenv("HOME", t.TempDir())
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	var outputs []string
	for _, l := range readmeBlock(t, "<!-- shadowctl-job:") {
		l = strings.ReplaceAll(l, "127.0.0.1:8080", httpAddr)
		switch {
		case strings.HasPrefix(l, "export "):
			k, v, _ := strings.Cut(strings.TrimPrefix(l, "export "), "=")
			t.Setenv(k, filepath.Join(root, v))
		case strings.HasPrefix(l, "aws "):
			if _, err := exec.LookPath("aws"); err != nil {
				t.Logf("the AWS CLI is not installed: %s not run; the job is made with the Go SDK instead", l)
				l = "bin/shadowctl job create demo-2 --targets demo-gw --operation SET_SPEED --args '{\"speed\":60}'"
				break
			}
			cmd := exec.Command("bash", "-c", l)
			cmd.Dir = root
			if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), `"jobId": "demo-2"`) {
				t.Fatalf("%s: %v\n%s", l, err, out)
			}
			continue
		}
		if !strings.HasPrefix(l, "bin/shadowctl ") {
			continue
		}
		args := shellWords(t, strings.TrimPrefix(l, "bin/shadowctl "))
		// The demo's default endpoint, moved to this test's port.
		args = append(args, "--endpoint-url", "http://"+httpAddr)
		var out, errOut bytes.Buffer
		if code := ctl.Main(context.Background(), args, &out, &errOut); code != 0 {
			t.Fatalf("%s: exit %d\n%s%s", l, code, out.String(), errOut.String())
		}
		outputs = append(outputs, out.String())
	}
	if len(outputs) != 4 {
		t.Fatalf("the README's block ran %d shadowctl commands, want 4", len(outputs))
	}
	for i, want := range []string{"job demo-1 COMPLETED: queued 0 · in progress 0 · succeeded 1", "demo-gw  SUCCEEDED  1", "demo-1", "job demo-2 COMPLETED: queued 0 · in progress 0 · succeeded 1"} {
		if !strings.Contains(outputs[i], want) {
			t.Errorf("command %d: output lacks %q:\n%s", i, want, outputs[i])
		}
	}
	if got := read(t, d, "gate_motor")["speed"]; got != float64(60) && got != int64(60) && got != 60 {
		t.Errorf("gate motor speed %v after demo-2, want 60", got)
	}
}

// demoOnFreePorts is configs/demo.yaml with its broker and HTTP API moved
// to free loopback ports, its state in a temporary directory and its
// credentials the repository's configs/demo-credentials: the demo as make
// run starts it, for a test. It returns the configuration, and the MQTT and
// HTTP addresses.
func demoOnFreePorts(t *testing.T) (cfg *config.Config, mqttAddr, httpAddr string) {
	t.Helper()
	root, _ := filepath.Abs("../..")
	demo, err := os.ReadFile(filepath.Join(root, "configs/demo.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	mqttAddr, httpAddr = freeAddr(t), freeAddr(t)
	y := string(demo)
	for old, repl := range map[string]string{
		"127.0.0.1:1883": mqttAddr, "127.0.0.1:8080": httpAddr, "tmp/demo/state.db": filepath.Join(dir, "state.db"),
		"tmp/demo/api.sock": filepath.Join(dir, "api.sock"), "credentials: demo-credentials": "credentials: " + filepath.Join(root, "configs/demo-credentials"),
	} {
		if !strings.Contains(y, old) {
			t.Fatalf("configs/demo.yaml no longer has %q: update this test", old)
		}
		y = strings.ReplaceAll(y, old, repl)
	}
	path := filepath.Join(dir, "demo.yaml")
	os.WriteFile(path, []byte(y), 0o600)
	if cfg, err = daemon.LoadConfig(path); err != nil {
		t.Fatal(err)
	}
	return cfg, mqttAddr, httpAddr
}

// shellWords splits a command line as sh does for the README's lines:
// words apart by spaces, '…' and "…" quoting.
func shellWords(t *testing.T, s string) []string {
	t.Helper()
	var words []string
	var cur strings.Builder
	in, quote := false, rune(0)
	for _, r := range s {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '\'' || r == '"':
			quote, in = r, true
		case r == ' ':
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	if quote != 0 {
		t.Fatalf("unbalanced quote in %s", s)
	}
	if in {
		words = append(words, cur.String())
	}
	return words
}
