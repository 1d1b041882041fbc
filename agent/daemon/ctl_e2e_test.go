package daemon_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/shadowgate/shadowgate/agent/command"
	"github.com/shadowgate/shadowgate/agent/ctl"
	"github.com/shadowgate/shadowgate/agent/shadow"
	"github.com/shadowgate/shadowgate/store"
)

type ctlResult struct {
	code           int
	stdout, stderr string
}

func shadowctl(t *testing.T, args ...string) ctlResult {
	t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code := ctl.Main(ctx, args, &out, &errOut)
	return ctlResult{code, out.String(), errOut.String()}
}

func (r ctlResult) must(t *testing.T, code int, contains ...string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, code, r.stdout, r.stderr)
	}
	all := r.stdout + r.stderr
	for _, c := range contains {
		if !strings.Contains(all, c) {
			t.Fatalf("output lacks %q\nstdout: %s\nstderr: %s", c, r.stdout, r.stderr)
		}
	}
}

func TestShadowctlOnTheGateway(t *testing.T) {
	c := newCloud(t)
	dir := t.TempDir()
	cfg, cfgPath := gatewayConfig(t, "gw-ctl", c.broker.URL(), dir, "cloud_wins")
	d := gateway(t, cfg)
	waitFor(t, "link up", d.Link.Connected)
	waitFor(t, "the shadows' answers", func() bool { return d.Link.Stats().Received > 0 })
	sock := cfg.API.Socket
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o660 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket %s: mode %v, %v", sock, fi.Mode(), err)
	}

	shadowctl(t, "status", "--socket", sock).must(t, 0, "gw-ctl", "connected to "+c.broker.URL(), "outbox", "bytes written since start", "messages ")
	r := shadowctl(t, "status", "--socket", sock, "--json")
	var st struct {
		Thing       string
		Connected   bool
		StoreWrites store.WriteStats `json:"store_writes"`
		Published   int64            `json:"messages_published"`
		Received    int64            `json:"messages_received"`
	}
	if json.Unmarshal([]byte(r.stdout), &st) != nil || st.Thing != "gw-ctl" || !st.Connected {
		t.Fatalf("status --json: %s", r.stdout)
	}
	// It asked for its shadows (published) and heard the answers.
	if st.Published == 0 || st.Received == 0 {
		t.Fatalf("status --json: %d messages published, %d received", st.Published, st.Received)
	}
	// Creating the shadows wrote the replicas: whole blocks of the log, at
	// least one a commit.
	if w := st.StoreWrites; w.Commits == 0 || w.Bytes < 4096*w.Commits || w.Bytes%4096 != 0 {
		t.Fatalf("store writes in status: %+v", w)
	}
	shadowctl(t, "actuators", "--socket", sock).must(t, 0, "porch_light", "sim", `{"on":false}`, "(classic).porch_light", "doors.front_door")

	// Local set, recorded as source local, reported to the cloud as desired
	// and reported.
	shadowctl(t, "set", "porch_light", "on=true", "--socket", sock).must(t, 0, `porch_light: {"on":false} → {"on":true}`)
	c.waitShadow(t, "gw-ctl", "", "local set reported", settled("porch_light", "on", "true"))
	shadowctl(t, "set", "gate_motor", "speed=40", "running=true", "--socket", sock).must(t, 0, `"speed":40`)
	shadowctl(t, "history", "--socket", sock).must(t, 0, "local", "gate_motor", "porch_light")
	shadowctl(t, "history", "gate_motor", "-n", "1", "--socket", sock).must(t, 0, `{"running":true,"speed":40}`)
	shadowctl(t, "rollback", "gate_motor", "--socket", sock).must(t, 0, `gate_motor: {"running":true,"speed":40} → {"running":false,"speed":0}`)
	shadowctl(t, "rollback", "siren", "--socket", sock).must(t, 1, "no recorded history")
	shadowctl(t, "shadows", "--socket", sock).must(t, 0, "(classic)", "doors")

	// Bad arguments.
	shadowctl(t, "set", "porch_light", "--socket", sock).must(t, 2, "takes ACTUATOR and at least one key=value")
	shadowctl(t, "set", "porch_light", "on", "--socket", sock).must(t, 2, `"on" is not key=value`)
	shadowctl(t, "set", "porch_light", "on=maybe", "--socket", sock).must(t, 1, `"on" wants true or false`)
	shadowctl(t, "set", "jetpack", "on=true", "--socket", sock).must(t, 1, `no actuator named "jetpack"`)
	shadowctl(t, "rollback", "--socket", sock).must(t, 2, "give an ACTUATOR")
	shadowctl(t, "rollback", "gate_motor", "--steps", "2", "--to", "3", "--socket", sock).must(t, 2, "not both")
	shadowctl(t, "history", "-n", "0", "--socket", sock).must(t, 1, "n must be a whole number")
	shadowctl(t, "status", "extra", "--socket", sock).must(t, 2, "takes no arguments")
	shadowctl(t, "status", "--bogus").must(t, 2, "flag provided but not defined")

	// Approval from the gateway.
	c.send(t, "gw-ctl", req("UNLOCK", "ctl-ap", ""))
	c.waitAck(t, "gw-ctl", "ctl-ap", command.StatusRunning)
	shadowctl(t, "commands", "--socket", sock).must(t, 0, "ctl-ap", "UNLOCK", "awaiting approval: shadowctl approve ctl-ap")
	shadowctl(t, "approve", "ctl-ap", "--socket", sock).must(t, 0, "ctl-ap: approved")
	c.waitAck(t, "gw-ctl", "ctl-ap", command.StatusSuccess)
	shadowctl(t, "approve", "ctl-ap", "--socket", sock).must(t, 1, "not awaiting approval")
	c.send(t, "gw-ctl", req("UNLOCK", "ctl-rj", ""))
	c.waitAck(t, "gw-ctl", "ctl-rj", command.StatusRunning)
	waitFor(t, "awaiting", func() bool { return shadowctl(t, "reject", "ctl-rj", "--socket", sock).code == 0 })
	c.waitAck(t, "gw-ctl", "ctl-rj", command.StatusFailure)

	// A browser's request is refused.
	// (The HTTP client of shadowctl never sends Origin; the API test covers it.)

	// Reload: an invalid file is refused and changes nothing.
	good, _ := os.ReadFile(cfgPath)
	os.WriteFile(cfgPath, []byte(strings.Replace(string(good), "keepalive: 5s", "keepalive: soon", 1)), 0o600)
	shadowctl(t, "reload", "--socket", sock).must(t, 1, "problem(s); the running one is kept", "cloud.keepalive: invalid duration")
	shadowctl(t, "config", "check", cfgPath).must(t, 1, cfgPath+":6: cloud.keepalive")
	os.WriteFile(cfgPath, good, 0o600)
	shadowctl(t, "config", "check", cfgPath).must(t, 0, "OK (thing gw-ctl")
}

func TestShadowctlWithoutDaemon(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "api.sock")
	r := shadowctl(t, "status", "--socket", sock)
	r.must(t, 3, "cannot reach shadowgated at "+sock, "systemctl status shadowgated")
	if strings.Contains(r.stderr, "goroutine") || strings.Contains(r.stderr, "panic") {
		t.Fatalf("stack trace: %s", r.stderr)
	}
	os.Setenv("SHADOWGATE_SOCKET", sock)
	defer os.Unsetenv("SHADOWGATE_SOCKET")
	shadowctl(t, "history").must(t, 3, sock)
}

func TestShadowctlOperator(t *testing.T) {
	c := newCloud(t)
	cfg, _ := gatewayConfig(t, "gw-op", c.broker.URL(), t.TempDir(), "cloud_wins")
	d := gateway(t, cfg)
	waitFor(t, "link up", d.Link.Connected)
	c.waitShadow(t, "gw-op", "", "created", func(g *shadow.GetAccepted) bool { return g.State.Reported["porch_light"] != nil })
	b := []string{"--broker", c.broker.URL()}

	shadowctl(t, append([]string{"shadow", "update", "gw-op", "porch_light.on=true"}, b...)...).must(t, 0, `"desired"`, `"version"`)
	waitFor(t, "light on", func() bool { return read(t, d, "porch_light")["on"] == true })
	shadowctl(t, append([]string{"shadow", "get", "gw-op"}, b...)...).must(t, 0, `"porch_light"`, `"reported"`)
	shadowctl(t, append([]string{"shadow", "update", "gw-op", "--name", "doors", "front_door.locked=false"}, b...)...).must(t, 0)
	waitFor(t, "door open", func() bool { return read(t, d, "front_door")["locked"] == false })
	shadowctl(t, append([]string{"shadow", "update", "gw-op", "x=1", "--version", "1"}, b...)...).must(t, 1, "rejected: 409 Version conflict")
	shadowctl(t, append([]string{"shadow", "get", "nobody"}, b...)...).must(t, 1, "rejected: 404 No shadow exists with name: 'nobody'")
	shadowctl(t, append([]string{"shadow", "delete", "gw-op", "--name", "doors"}, b...)...).must(t, 0, `"version"`)
	shadowctl(t, append([]string{"shadow", "update", "gw-op"}, b...)...).must(t, 2, "give key=value arguments")
	shadowctl(t, append([]string{"shadow", "get", "bad name"}, b...)...).must(t, 2, "invalid name")

	shadowctl(t, append([]string{"command", "send", "gw-op", "SET_SPEED", "speed=33"}, b...)...).must(t, 0, "SUCCESS", `"speed":33`)
	shadowctl(t, append([]string{"command", "send", "gw-op", "SET_SPEED", "speed=333"}, b...)...).must(t, 1, "FAILURE: invalid args: speed must be ≤ 100")
	r := shadowctl(t, append([]string{"command", "send", "gw-op", "OPEN_VALVE", "--json"}, b...)...) // heartbeats while it runs
	r.must(t, 0, "RUNNING", `"status": "SUCCESS"`)
	// The same tid again: the recorded result, not a second run.
	shadowctl(t, append([]string{"command", "send", "gw-op", "SET_SPEED", "speed=12", "--tid", "fixed-1"}, b...)...).must(t, 0, "SUCCESS")
	shadowctl(t, append([]string{"command", "send", "gw-op", "SET_SPEED", "speed=12", "--tid", "fixed-1"}, b...)...).must(t, 0, "fixed-1 SUCCESS")

	// A gateway that is offline: retries, then a clear give-up.
	r = shadowctl(t, append([]string{"command", "send", "gw-nobody", "MOTOR_1_ON", "--tries", "3", "--backoff", "100ms"}, b...)...)
	r.must(t, 3, "GAVE UP", "no answer after 3 tries", "try 3 of 3")

	// Fleet rollout: one live gateway, one that is not there.
	r = shadowctl(t, append([]string{"command", "send", "--things", "gw-op,gw-ghost", "MOTOR_1_ON", "--rate", "600", "--tries", "2", "--backoff", "100ms"}, b...)...)
	r.must(t, 1, "THING", "gw-op", "SUCCESS", "gw-ghost", "GAVE UP", "1 of 2 succeeded")
	r = shadowctl(t, append([]string{"command", "send", "--things", "gw-ghost,gw-ghost2,gw-op", "MOTOR_1_ON", "--rate", "120", "--tries", "1", "--backoff", "100ms", "--abort-after-failures", "1"}, b...)...)
	r.must(t, 1, "NOT SENT", "rollout aborted after 1 failures")

	// The broker is unreachable.
	shadowctl(t, "shadow", "get", "gw-op", "--broker", "tcp://127.0.0.1:1", "--timeout", "500ms").must(t, 3, "cannot reach the broker tcp://127.0.0.1:1")
}

// TestShadowctlLeavesNoConnection: shadowctl run in a process that goes
// on (as here) leaves no connection open to the daemon, nor the goroutines
// each would hold on both sides, after it returns.
func TestShadowctlLeavesNoConnection(t *testing.T) {
	c := newCloud(t)
	cfg, _ := gatewayConfig(t, "gw-conns", c.broker.URL(), t.TempDir(), "cloud_wins")
	d := gateway(t, cfg)
	waitFor(t, "link up", d.Link.Connected)
	shadowctl(t, "status", "--socket", cfg.API.Socket).must(t, 0, "gw-conns")
	before := runtime.NumGoroutine()
	const calls = 20
	for range calls {
		shadowctl(t, "status", "--socket", cfg.API.Socket).must(t, 0, "gw-conns")
	}
	// The daemon's side of a closed connection ends a moment later; the
	// daemon's own goroutines come and go by a few.
	waitWithin(t, 5*time.Second, fmt.Sprintf("goroutines back near %d after %d status calls", before, calls), func() bool {
		return runtime.NumGoroutine() <= before+calls/4
	})
}
