package daemon_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shadowgate/shadowgate/agent/daemon"
	"github.com/shadowgate/shadowgate/agent/shadow"
)

const limitsYAML = `
gateway: {thing: gw-lim}
cloud: {broker: %s, keepalive: 5s}
store: {path: %s}
api: {socket: %s}
log: {level: info}
actuators:
  gate_motor: {driver: sim, state: {running: false, speed: 0}}
  winch: {driver: sim, state: {position: 0, load: 0.5}}
commands:
  heartbeat: 1s
  types:
    SET_SPEED:
      actuator: gate_motor
      set: {speed: "{speed}"}
      args: {speed: {type: int, min: 0, max: 100, required: true}}
    WIND:
      actuator: winch
      set: {position: "{to}"}
      args: {to: {type: int, required: true}}
`

// Numbers an actuator's key cannot hold are refused wherever they come
// from, with a clear error and the actuator untouched: 1e19 in the cloud's
// desired state once drove the motor to -9223372036854775808. The local
// set is held to the range SET_SPEED gives speed; rollback to the checks
// of ROLLBACK.
func TestOutOfRangeNumbersNeverReachTheHardware(t *testing.T) {
	c := newCloud(t)
	dir := t.TempDir()
	cfgPath, sock := filepath.Join(dir, "shadowgate.yaml"), filepath.Join(dir, "api.sock")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(limitsYAML, c.broker.URL(), filepath.Join(dir, "state.db"), sock)), 0o600)
	p := runGateway(t, cfgPath, sock)
	c.waitShadow(t, "gw-lim", "", "created", func(g *shadow.GetAccepted) bool { return g.State.Reported["winch"] != nil })

	untouched := func(when string) {
		t.Helper()
		if s := p.state(t, "gate_motor"); num(s["speed"]) != "0" {
			t.Fatalf("%s: gate_motor %v", when, s)
		}
		if s := p.state(t, "winch"); num(s["position"]) != "0" || num(s["load"]) != "0.5" {
			t.Fatalf("%s: winch %v", when, s)
		}
		for _, a := range []string{"gate_motor", "winch"} {
			if h := p.history(t, a); len(h) != 0 {
				t.Fatalf("%s: %s has history %+v", when, a, h[0])
			}
		}
	}

	c.desire(t, "gw-lim", "", `{"gate_motor":{"speed":1e19},"winch":{"position":-1e300}}`)
	waitFor(t, "the desired state refused", func() bool {
		return strings.Contains(p.out.String(), `\"speed\" is out of range`) || strings.Contains(p.out.String(), `"speed" is out of range`)
	})
	untouched("after 1e19 and -1e300 in desired")
	// A command's int arg with no min or max is held to what int64 holds.
	for _, to := range []string{"1e19", "-1e300", "9223372036854775808"} {
		tid := "wind-" + to
		c.send(t, "gw-lim", fmt.Sprintf(`{"cmd":"WIND","tid":%q,"status":"REQUEST","args":{"to":%s}}`, tid, to))
		if ack := c.waitAck(t, "gw-lim", tid, "FAILURE"); !strings.Contains(ack.Reason, "out of range") {
			t.Fatalf("WIND to %s: %+v", to, ack)
		}
	}
	untouched("after out-of-range command args")

	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"set", "winch", "position=1e308"}, []string{`"position" is out of range`, "9223372036854775807", "1e308"}},
		{[]string{"set", "winch", "position=-1e300"}, []string{`"position" is out of range`, "-1e300"}},
		{[]string{"set", "winch", "position=9223372036854775808"}, []string{`"position" is out of range`}},
		{[]string{"set", "winch", "load=1e400"}, []string{`"load" wants a number`}}, // shadowctl sends what float64 cannot hold as a string
		{[]string{"set", "gate_motor", "speed=1e308"}, []string{`"speed" must be within 0..100, got 1e308`, "SET_SPEED"}},
		{[]string{"set", "gate_motor", "speed=150"}, []string{`"speed" must be within 0..100, got 150 (the range of command SET_SPEED)`}},
		{[]string{"rollback", "gate_motor", "--steps", "-3"}, []string{"steps must be 1 to 10000, got -3"}},
	} {
		shadowctl(t, append(tc.args, "--socket", sock)...).must(t, 1, tc.want...)
	}
	untouched("after the refused local changes")
	// In range it works, exactly.
	shadowctl(t, "set", "winch", "position=9223372036854775807", "--socket", sock).must(t, 0, `"position":9223372036854775807`)
	shadowctl(t, "set", "gate_motor", "speed=100", "--socket", sock).must(t, 0, `"speed":100`)
	p.stop(t)
}

// A 10 MB configuration with 250,000 actuators is refused by its size, and
// one under the size cap with 5,000 actuators by the count, each quickly,
// in little memory, by config check and by the daemon (it once passed
// config check and took 1.2 GB).
func TestHugeConfigRefusedInLittleMemory(t *testing.T) {
	dir := t.TempDir()
	gen := func(name string, n int) string {
		var b strings.Builder
		b.WriteString("gateway: {thing: gw}\ncloud: {broker: tcp://127.0.0.1:1883}\nstore: {path: " + filepath.Join(dir, "state.db") + "}\nactuators:\n")
		for i := 0; i < n; i++ {
			fmt.Fprintf(&b, "  a%d: {driver: sim, state: {on: false}}\n", i)
		}
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(b.String()), 0o600)
		return p
	}
	huge, many := gen("huge.yaml", 250000), gen("many.yaml", 5000)
	if fi, _ := os.Stat(huge); fi.Size() < 10<<20 {
		t.Fatalf("huge.yaml is only %d bytes", fi.Size())
	}
	shadowctl(t, "config", "check", huge).must(t, 1, huge+": the file is 1", "MiB; a configuration file is at most 512.0 KiB")
	shadowctl(t, "config", "check", many).must(t, 1, many+":5: actuators: 5000 actuators; at most 1000 are supported")
	for path, want := range map[string]string{huge: "a configuration file is at most 512.0 KiB", many: "5000 actuators; at most 1000"} {
		name := filepath.Base(path)
		// What the daemon does first, measured in this process.
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		_, err := daemon.LoadConfig(path)
		runtime.ReadMemStats(&after)
		alloc := after.TotalAlloc - before.TotalAlloc
		if err == nil || !strings.Contains(err.Error(), want) || alloc > 48<<20 {
			t.Fatalf("%s: LoadConfig allocated %d bytes: %v", name, alloc, err)
		}
		// The daemon: EX_CONFIG, the reason, and its peak RSS where GNU
		// time can tell it (a Go parent cannot: its child's ru_maxrss
		// counts the parent's memory from before exec).
		args := []string{gatewayBin, "--config", path}
		timed := false
		if _, err := os.Stat("/usr/bin/time"); err == nil {
			args, timed = append([]string{"/usr/bin/time", "-f", "maxrss=%M"}, args...), true
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // a bound, not a timing
		cmd := exec.CommandContext(ctx, args[0], args[1:]...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		out, err := cmd.CombinedOutput()
		cancel()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 78 || !strings.Contains(string(out), want) {
			t.Fatalf("%s: %v\n%s", name, err, out)
		}
		var rss int
		if timed {
			if _, err := fmt.Sscanf(string(out[strings.LastIndex(string(out), "maxrss="):]), "maxrss=%d", &rss); err != nil {
				t.Fatalf("%s: no maxrss in %s", name, out)
			}
		}
		t.Logf("%s: refused; LoadConfig allocated %.1f MB, shadowgated's peak RSS %d KiB", name, float64(alloc)/(1<<20), rss)
		if rss > 64<<10 {
			t.Fatalf("%s: peak RSS %d KiB to refuse it", name, rss)
		}
	}
}

// A zero-length state.db (a power cut on ext4 before the file was written
// out) is refused with the advice a truncated one gets; it was silently
// started over, history, inbox and outbox gone.
func TestZeroLengthStoreRefusedByTheDaemon(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "state.db")
	os.WriteFile(db, nil, 0o600)
	cfg := filepath.Join(dir, "shadowgate.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(limitsYAML, "tcp://127.0.0.1:1", db, filepath.Join(dir, "api.sock"))), 0o600)
	cmd := exec.Command(gatewayBin, "--config", cfg)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out := &logBuf{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(out.String(), "is empty") || !strings.Contains(out.String(), "move it aside (mv "+db+" "+db+".broken)") {
			t.Fatalf("exit %v\n%s", err, out.String())
		}
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("shadowgated started over an empty store\n%s", out.String())
	}
	if fi, err := os.Stat(db); err != nil || fi.Size() != 0 {
		t.Fatalf("the empty store was changed: %v %v", fi, err)
	}
}
