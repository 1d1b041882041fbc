package daemon_test

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shadowgate/shadowgate/agent/command"
	"github.com/shadowgate/shadowgate/agent/localapi"
	"github.com/shadowgate/shadowgate/agent/shadow"
	"github.com/shadowgate/shadowgate/agent/shadowsvc"
	"github.com/shadowgate/shadowgate/agent/watchdog/watchdogtest"
	"github.com/shadowgate/shadowgate/store"
)

// proc is shadowgated running as a process.
type proc struct {
	cmd    *exec.Cmd
	out    *logBuf
	done   chan error
	notify *watchdogtest.Socket
	sock   string
}

type logBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// runGateway runs shadowgated with the config at cfgPath (its API on
// sock) and waits until the local API answers.
func runGateway(t *testing.T, cfgPath, sock string) *proc {
	t.Helper()
	p := &proc{out: &logBuf{}, done: make(chan error, 1), notify: watchdogtest.Listen(t), sock: sock}
	p.cmd = exec.Command(gatewayBin, "--config", cfgPath)
	p.cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+p.notify.Path)
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p.cmd.Stderr = p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.alive() {
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("shadowgated's log:\n%s", p.out.String())
		}
	})
	waitFor(t, "shadowgated's local API", func() bool {
		if !p.alive() {
			t.Fatalf("shadowgated exited while starting\n%s", p.out.String())
		}
		return shadowctl(t, "status", "--socket", sock).code == 0
	})
	return p
}

func (p *proc) alive() bool {
	select {
	case err := <-p.done:
		p.done <- err
		return false
	default:
		return true
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil {
			t.Fatalf("shadowgated exited with %v after SIGTERM\n%s", err, p.out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("shadowgated did not stop within 30s of SIGTERM\n%s", p.out.String())
	}
}

func (p *proc) status(t *testing.T) localapi.Status {
	t.Helper()
	r := shadowctl(t, "status", "--json", "--socket", p.sock)
	var st localapi.Status
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &st) != nil {
		t.Fatalf("status: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	return st
}

// state reads an actuator through the local API.
func (p *proc) state(t *testing.T, actuator string) map[string]any {
	t.Helper()
	r := shadowctl(t, "actuators", "--json", "--socket", p.sock)
	var acts []localapi.ActuatorView
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &acts) != nil {
		t.Fatalf("actuators: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for _, a := range acts {
		if a.Name == actuator {
			return a.State
		}
	}
	t.Fatalf("no actuator %s in %s", actuator, r.stdout)
	return nil
}

func (p *proc) history(t *testing.T, actuator string) []*store.Change {
	t.Helper()
	r := shadowctl(t, "history", actuator, "-n", "1000", "--json", "--socket", p.sock)
	var h []*store.Change
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &h) != nil {
		t.Fatalf("history: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	return h
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

const embeddedYAML = `
gateway: {thing: gw-reload}
broker: {embedded: true, listen: %s}
store: {path: %s}
api: {socket: %s}
log: {level: info}
actuators:
  gate_motor:
    driver: sim
    state: {running: false, speed: 0}
    power_on: safe
    on_shutdown: safe
    safe_state: {running: false, speed: 0}
  porch_light: {driver: sim, state: {on: false}}
commands:
  heartbeat: 1s
  types:
    MOTOR_1_ON: {actuator: gate_motor, set: {running: true}}
`

// A reload that passes config check but cannot start (the embedded
// broker's new port is in use) changes nothing and fails with the reason,
// through shadowctl and through SIGHUP; the daemon goes on with the motor
// running. It once printed success and then exited 1.
func TestReloadThatCannotStartKeepsTheRunningConfiguration(t *testing.T) {
	dir := t.TempDir()
	cfgPath, sock := filepath.Join(dir, "shadowgate.yaml"), filepath.Join(dir, "api.sock")
	write := func(listen string) {
		y := fmt.Sprintf(embeddedYAML, listen, filepath.Join(dir, "state.db"), sock)
		if err := os.WriteFile(cfgPath, []byte(y), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	listen := freeAddr(t)
	write(listen)
	p := runGateway(t, cfgPath, sock)
	waitFor(t, "connected to the embedded broker", func() bool { return p.status(t).Connected })
	shadowctl(t, "set", "gate_motor", "running=true", "speed=40", "--socket", sock).must(t, 0, `"running":true`)
	connects := p.status(t).Connects

	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	write(busy.Addr().String())
	shadowctl(t, "config", "check", cfgPath).must(t, 0, "OK")
	shadowctl(t, "reload", "--socket", sock).must(t, 1, "reload failed", "listen on "+busy.Addr().String(), "address already in use")
	waitFor(t, "READY=1 after RELOADING=1", func() bool { return p.notify.Count("RELOADING=1") == 1 && p.notify.Count("READY=1") == 2 })

	p.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, "the SIGHUP reload to fail", func() bool {
		return strings.Count(p.out.String(), "reload failed; the running configuration is kept") == 2
	})
	if !p.alive() {
		t.Fatalf("shadowgated exited\n%s", p.out.String())
	}
	st := p.status(t)
	if !st.Connected || st.Broker != "tcp://"+listen || st.Connects != connects {
		t.Fatalf("after the failed reloads: %+v (connects before: %d)", st, connects)
	}
	if s := p.state(t, "gate_motor"); s["running"] != true || num(s["speed"]) != "40" {
		t.Fatalf("the motor was touched: %v", s)
	}

	// The running configuration again: nothing to do.
	write(listen)
	shadowctl(t, "reload", "--socket", sock).must(t, 0, "nothing changed")
	// A port that is free: the broker moves, the session follows it, and
	// the motor, whose configuration did not change, runs on.
	moved := freeAddr(t)
	write(moved)
	shadowctl(t, "reload", "--socket", sock).must(t, 0, "embedded broker on "+moved, "MQTT session")
	waitFor(t, "connected to the moved broker", func() bool {
		st := p.status(t)
		return st.Connected && st.Broker == "tcp://"+moved
	})
	if s := p.state(t, "gate_motor"); s["running"] != true || num(s["speed"]) != "40" {
		t.Fatalf("the motor was touched by the broker's move: %v", s)
	}
	if h := p.history(t, "gate_motor"); len(h) != 1 {
		t.Fatalf("gate_motor history: %d entries", len(h))
	}
	p.stop(t)
}

const reloadCloudYAML = `
gateway: {thing: gw-rl2}
cloud:
  broker: %s
  keepalive: %s
store: {path: %s}
api: {socket: %s}
log: {level: debug}
actuators:
  gate_motor:
    driver: sim
    state: {running: false, speed: 0}
    power_on: keep
    on_shutdown: safe
    safe_state: {running: false, speed: 0}
  porch_light: {driver: sim, state: {on: false}, latency: %s}
commands:
  heartbeat: 1s
  types:
    MOTOR_1_ON: {actuator: gate_motor, set: {running: true}}
%s`

// A reload leaves alone what did not change: the motor keeps running, its
// history shows nothing, the MQTT session is not dropped; the new command
// type and the reopened light work at once. A shutdown's safe state is
// reported, never written into the cloud's desired state.
func TestReloadLeavesUnchangedPartsAlone(t *testing.T) {
	c := newCloud(t)
	dir := t.TempDir()
	cfgPath, sock := filepath.Join(dir, "shadowgate.yaml"), filepath.Join(dir, "api.sock")
	write := func(keepalive, latency, extra string) {
		y := fmt.Sprintf(reloadCloudYAML, c.broker.URL(), keepalive, filepath.Join(dir, "state.db"), sock, latency, extra)
		if err := os.WriteFile(cfgPath, []byte(y), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("5s", "10ms", "")
	p := runGateway(t, cfgPath, sock)
	waitFor(t, "connected", func() bool { return p.status(t).Connected })
	c.waitShadow(t, "gw-rl2", "", "created", func(g *shadow.GetAccepted) bool { return g.State.Reported["gate_motor"] != nil })
	c.desire(t, "gw-rl2", "", `{"gate_motor":{"running":true,"speed":40}}`)
	c.waitShadow(t, "gw-rl2", "", "the motor running", settled("gate_motor", "running", "true"))
	before := p.history(t, "gate_motor")
	connects := p.status(t).Connects
	offline := func() int {
		c.mu.Lock()
		defer c.mu.Unlock()
		n := 0
		for _, m := range c.msgs {
			if m.Topic != "shadowgate/gw-rl2/presence" {
				continue
			}
			if p, err := shadowsvc.ParsePresence(m.Payload); err == nil && !p.Connected {
				n++
			}
		}
		return n
	}
	if offline() != 0 {
		t.Fatal("offline before any reload")
	}

	shadowctl(t, "reload", "--socket", sock).must(t, 0, "nothing changed")
	write("5s", "20ms", "    LIGHT_OFF: {actuator: porch_light, set: {on: false}}\n")
	r := shadowctl(t, "reload", "--socket", sock)
	r.must(t, 0, "reloaded", "actuator porch_light opened again", "command types")
	if strings.Contains(r.stdout, "gate_motor") || strings.Contains(r.stdout, "MQTT session") {
		t.Fatalf("the reload touched more than changed:\n%s", r.stdout)
	}
	if s := p.state(t, "gate_motor"); s["running"] != true || num(s["speed"]) != "40" {
		t.Fatalf("the motor was touched: %v", s)
	}
	// A delta reaches the reopened light; the new command type runs.
	c.desire(t, "gw-rl2", "", `{"porch_light":{"on":true}}`)
	waitFor(t, "the light on", func() bool { return p.state(t, "porch_light")["on"] == true })
	c.send(t, "gw-rl2", req("LIGHT_OFF", "off-1", ""))
	c.waitAck(t, "gw-rl2", "off-1", command.StatusSuccess)
	if s := p.state(t, "porch_light"); s["on"] != false {
		t.Fatalf("LIGHT_OFF: %v", s)
	}
	if after := p.history(t, "gate_motor"); len(after) != len(before) || after[0].ID != before[0].ID {
		t.Fatalf("gate_motor history changed by the reload: before %d entries, after %d, newest %+v", len(before), len(after), after[0])
	}
	if st := p.status(t); st.Connects != connects || !st.Connected || offline() != 0 {
		t.Fatalf("the MQTT session was dropped: connects %d → %d, connected %v, offline statuses %d", connects, st.Connects, st.Connected, offline())
	}

	// New cloud settings: the session is made again (the old one ends
	// cleanly, with its offline status); the motor runs on.
	write("7s", "20ms", "    LIGHT_OFF: {actuator: porch_light, set: {on: false}}\n")
	shadowctl(t, "reload", "--socket", sock).must(t, 0, "MQTT session: the cloud settings changed")
	waitFor(t, "reconnected", func() bool { return offline() == 1 && p.status(t).Connected })
	if s := p.state(t, "gate_motor"); s["running"] != true {
		t.Fatalf("the motor was touched by a new keepalive: %v", s)
	}

	// Shutdown drives the motor safe (on_shutdown: safe) and reports it;
	// the cloud still wants it running.
	p.stop(t)
	p = runGateway(t, cfgPath, sock)
	waitFor(t, "connected and the outbox sent", func() bool { st := p.status(t); return st.Connected && st.OutboxItems == 0 })
	h := p.history(t, "gate_motor")
	var shut *store.Change
	for _, ch := range h {
		if ch.Source == store.SourceShutdown {
			shut = ch
		}
	}
	if shut == nil || shut.After["running"] != false {
		t.Fatalf("no shutdown change in history: %+v", h)
	}
	// Desired still says running (a shutdown once wrote running:false
	// into it as a local change): the gateway runs the motor again.
	c.waitShadow(t, "gw-rl2", "", "desired running, reported running", settled("gate_motor", "running", "true"))
	p.stop(t)
}

const reloadSetYAML = `
gateway: {thing: gw-rl3}
cloud: {broker: %s, keepalive: 5s}
store: {path: %s}
api: {socket: %s}
log: {level: info}
actuators:
  gate_motor: {driver: sim, state: {running: false, speed: 0}}
%s
commands:
  heartbeat: 1s
  types:
    UNLOCK_GATE: {actuator: gate_motor, set: {running: true}, requires_approval: true}
%s`

// A reload adds and removes actuators (a removed one with on_shutdown: safe
// is driven safe first); a first named shadow makes the session again to
// subscribe its topics; a command awaiting approval survives new command
// types; a change that takes a restart is refused and changes nothing.
func TestReloadAddsAndRemovesActuators(t *testing.T) {
	c := newCloud(t)
	dir := t.TempDir()
	cfgPath, sock := filepath.Join(dir, "shadowgate.yaml"), filepath.Join(dir, "api.sock")
	db := filepath.Join(dir, "state.db")
	light := "  porch_light: {driver: sim, state: {on: false}, on_shutdown: safe, safe_state: {on: false}}"
	door := "  front_door: {driver: sim, shadow: doors, state: {locked: true}}"
	write := func(db, acts, types string) {
		if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf(reloadSetYAML, c.broker.URL(), db, sock, acts, types)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(db, light, "")
	p := runGateway(t, cfgPath, sock)
	waitFor(t, "connected", func() bool { return p.status(t).Connected })
	c.waitShadow(t, "gw-rl3", "", "created", func(g *shadow.GetAccepted) bool { return g.State.Reported["porch_light"] != nil })
	shadowctl(t, "set", "porch_light", "on=true", "--socket", sock).must(t, 0)
	c.send(t, "gw-rl3", req("UNLOCK_GATE", "ap-1", ""))
	c.waitAck(t, "gw-rl3", "ap-1", command.StatusRunning)

	// A change that takes a restart: refused, nothing changed.
	write(filepath.Join(dir, "other.db"), door, "    NOP: {actuator: gate_motor, set: {speed: 0}}\n")
	shadowctl(t, "reload", "--socket", sock).must(t, 1, "store changed: that takes a restart", "nothing was changed")
	if s := p.state(t, "porch_light"); s["on"] != true {
		t.Fatalf("the light was touched by a refused reload: %v", s)
	}

	write(db, door, "    NOP: {actuator: gate_motor, set: {speed: 0}}\n")
	shadowctl(t, "reload", "--socket", sock).must(t, 0, "actuator front_door added", "actuator porch_light removed (driven to its safe state first)",
		"command types", "MQTT session: made again to subscribe")
	shadowctl(t, "set", "porch_light", "on=true", "--socket", sock).must(t, 1, `no actuator named "porch_light"`)
	var shut bool
	for _, ch := range p.history(t, "porch_light") {
		shut = shut || ch.Source == store.SourceShutdown && ch.After["on"] == false
	}
	if !shut {
		t.Fatalf("the removed light was not driven safe: %+v", p.history(t, "porch_light"))
	}
	c.waitShadow(t, "gw-rl3", "doors", "the new named shadow created", func(g *shadow.GetAccepted) bool { return g.State.Reported["front_door"] != nil })
	c.desire(t, "gw-rl3", "doors", `{"front_door":{"locked":false}}`)
	waitFor(t, "the door unlocked", func() bool { return p.state(t, "front_door")["locked"] == false })

	// The command that waited for approval across the reload runs now.
	shadowctl(t, "approve", "ap-1", "--socket", sock).must(t, 0, "ap-1: approved")
	c.waitAck(t, "gw-rl3", "ap-1", command.StatusSuccess)
	if s := p.state(t, "gate_motor"); s["running"] != true {
		t.Fatalf("approved command: %v", s)
	}
	p.stop(t)
}
