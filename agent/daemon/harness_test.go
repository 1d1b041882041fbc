package daemon_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shadowgate/shadowgate/agent/command"
	"github.com/shadowgate/shadowgate/agent/config"
	"github.com/shadowgate/shadowgate/agent/daemon"
	"github.com/shadowgate/shadowgate/agent/link"
	"github.com/shadowgate/shadowgate/agent/link/brokertest"
	"github.com/shadowgate/shadowgate/agent/shadow"
	"github.com/shadowgate/shadowgate/agent/shadowsvc"
	"github.com/shadowgate/shadowgate/drivers"
	"github.com/shadowgate/shadowgate/store"
)

const root = "$aws/things/"

var gatewayBin string // built once by TestMain for the process tests

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "shadowgated-bin")
	if err != nil {
		panic(err)
	}
	gatewayBin = filepath.Join(dir, "shadowgated")
	// Built as it ships (make build, the .deb): static, stripped. A cgo
	// build would map libc and friends, ~2.5 MB of RSS the gateway never has.
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", gatewayBin, "../../cmd/shadowgated")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := build.CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build shadowgated: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// cloud is a broker with shadowsvc attached and an operator client.
type cloud struct {
	broker  *brokertest.Broker
	svc     *shadowsvc.Service
	svcLink *link.Link
	op      *link.Link
	seq     atomic.Int64

	mu   sync.Mutex
	msgs []*link.Message
	// onMessage, when set, sees every message too (benchmarks).
	onMessage func(m *link.Message)
}

func runLink(t testing.TB, l *link.Link) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// runService runs a shadow service until the test ends.
func runService(t testing.TB, svc *shadowsvc.Service) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { svc.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func newCloud(t testing.TB) *cloud {
	t.Helper()
	return newCloudWith(t, brokertest.Config{})
}

// newCloudWith is newCloud on a broker configured as bc says.
func newCloudWith(t testing.TB, bc brokertest.Config) *cloud {
	t.Helper()
	return newCloudSvc(t, bc, nil)
}

// newCloudSvc is newCloudWith with the shadow service's options changed by
// opt (a throttle, say).
func newCloudSvc(t testing.TB, bc brokertest.Config, opt func(o *shadowsvc.Options)) *cloud {
	t.Helper()
	return newCloudOps(t, bc, opt, true)
}

// newCloudOps is newCloudSvc whose operator, unless watchShadows, hears the
// command acks only, as an operator sending commands does: a benchmark of
// commands then does not make the broker copy every shadow message to it.
func newCloudOps(t testing.TB, bc brokertest.Config, opt func(o *shadowsvc.Options), watchShadows bool) *cloud {
	t.Helper()
	c := &cloud{broker: brokertest.StartWith(t, bc)}
	st, err := store.Open(filepath.Join(t.TempDir(), "cloud.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	svcLink, _ := link.New(link.Options{Broker: c.broker.URL(), ClientID: "cloud-shadowsvc", MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond})
	so := shadowsvc.Options{Root: root, Link: svcLink, Store: st}
	if opt != nil {
		opt(&so)
	}
	c.svc = shadowsvc.New(so)
	c.svcLink = svcLink
	runService(t, c.svc)
	runLink(t, svcLink)
	// A persistent session: acks published while the operator reconnects
	// after a broker restart wait for it.
	c.op, _ = link.New(link.Options{Broker: c.broker.URL(), ClientID: "operator", MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond})
	if watchShadows {
		c.op.Handle(root+"+/shadow/+/+", c.collect)
		c.op.Handle(root+"+/shadow/name/+/+/+", c.collect)
		c.op.Handle("shadowgate/+/presence", c.collect)
	}
	c.op.Handle("commands/+/ack", c.collect)
	runLink(t, c.op)
	waitFor(t, "cloud connected", func() bool { return svcLink.Connected() && c.op.Connected() })
	return c
}

func (c *cloud) collect(_ context.Context, m *link.Message) {
	if c.onMessage != nil {
		c.onMessage(m)
		return
	}
	c.mu.Lock()
	c.msgs = append(c.msgs, m)
	c.mu.Unlock()
}

// publish sends a raw message as the operator.
func (c *cloud) publish(t testing.TB, topic, payload string) {
	t.Helper()
	waitFor(t, "operator connected", c.op.Connected)
	if err := c.op.Publish(context.Background(), topic, false, []byte(payload)); err != nil {
		t.Fatal(err)
	}
}

// desire sets desired state of a shadow.
func (c *cloud) desire(t testing.TB, thing, name, desired string) {
	t.Helper()
	c.publish(t, shadow.Topic{Thing: thing, Name: name, Op: shadow.OpUpdate}.Build(root), `{"state":{"desired":`+desired+`}}`)
}

// get fetches a shadow; nil when it does not exist (or no answer came).
func (c *cloud) get(t testing.TB, thing, name string) *shadow.GetAccepted {
	t.Helper()
	tok := fmt.Sprintf("op-%d", c.seq.Add(1))
	topic := shadow.Topic{Thing: thing, Name: name, Op: shadow.OpGet}
	if !c.op.Connected() {
		return nil
	}
	if err := c.op.Publish(context.Background(), topic.Build(root), false, []byte(`{"clientToken":"`+tok+`"}`)); err != nil {
		return nil
	}
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		for _, m := range c.msgs {
			if m.Topic == topic.With(shadow.SuffixAccepted).Build(root) && strings.Contains(string(m.Payload), `"clientToken":"`+tok+`"`) {
				c.mu.Unlock()
				g, err := shadow.ParseGetAccepted(m.Payload)
				if err != nil {
					t.Fatal(err)
				}
				return g
			}
			if m.Topic == topic.With(shadow.SuffixRejected).Build(root) && strings.Contains(string(m.Payload), tok) {
				c.mu.Unlock()
				return nil
			}
		}
		c.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// waitShadow waits until the shadow satisfies ok.
func (c *cloud) waitShadow(t testing.TB, thing, name, what string, ok func(g *shadow.GetAccepted) bool) *shadow.GetAccepted {
	t.Helper()
	var last *shadow.GetAccepted
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if g := c.get(t, thing, name); g != nil {
			last = g
			if ok(g) {
				return g
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	b, _ := json.Marshal(last)
	t.Fatalf("timed out waiting for %s; last shadow %s\nshadowsvc link %+v, stats %+v\noperator link %+v\nbroker log:\n%s",
		what, b, c.svcLink.Stats(), c.svc.Stats(), c.op.Stats(), c.broker.Log())
	return nil
}

func (c *cloud) lastPayload(topic string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := len(c.msgs) - 1; i >= 0; i-- {
		if c.msgs[i].Topic == topic {
			return string(c.msgs[i].Payload)
		}
	}
	return ""
}

// send publishes a command request.
func (c *cloud) send(t testing.TB, thing, req string) {
	t.Helper()
	c.publish(t, "commands/"+thing, req)
}

// acks returns the acks received for tid, in arrival order.
func (c *cloud) acks(thing, tid string) []command.Ack {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []command.Ack
	for _, m := range c.msgs {
		if m.Topic != "commands/"+thing+"/ack" {
			continue
		}
		var a command.Ack
		if json.Unmarshal(m.Payload, &a) == nil && a.TID == tid {
			out = append(out, a)
		}
	}
	return out
}

// rawAcks returns the ack payloads for tid.
func (c *cloud) rawAcks(thing, tid string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, m := range c.msgs {
		if m.Topic == "commands/"+thing+"/ack" && strings.Contains(string(m.Payload), `"tid":"`+tid+`"`) {
			out = append(out, string(m.Payload))
		}
	}
	return out
}

// waitAck waits for an ack of tid with status and returns it.
func (c *cloud) waitAck(t testing.TB, thing, tid, status string) command.Ack {
	t.Helper()
	var found command.Ack
	waitFor(t, tid+" "+status, func() bool {
		for _, a := range c.acks(thing, tid) {
			if a.Status == status {
				found = a
				return true
			}
		}
		return false
	})
	return found
}

// reported returns reported[key][field] of a document.
func reported(g *shadow.GetAccepted, key, field string) any {
	m, _ := g.State.Reported[key].(map[string]any)
	return m[field]
}

func num(v any) string { return fmt.Sprint(v) }

const gatewayYAML = `
gateway: {thing: %s}
cloud:
  broker: %s
  topic_root: "$aws/things/"
  keepalive: 5s
  conflict: %s
store: {path: %s}
api: {socket: %s}
log: {level: debug}
actuators:
  porch_light: {driver: sim, state: {on: false}}
  gate_motor: {driver: sim, state: {running: false, speed: 0}}
  front_door: {driver: sim, shadow: doors, state: {locked: true}}
  valve: {driver: sim, state: {open: false}, latency: 2500ms}
  siren: {driver: sim, state: {on: false, volume: 0}, fail_keys: [volume]}
commands:
  heartbeat: 1s
  types:
    MOTOR_1_ON: {actuator: gate_motor, set: {running: true}}
    SET_SPEED:
      actuator: gate_motor
      set: {speed: "{speed}"}
      args: {speed: {type: int, min: 0, max: 100, required: true}}
    OPEN_VALVE: {actuator: valve, set: {open: true}}
    CLOSE_VALVE: {actuator: valve, set: {open: false}}
    OPEN_VALVE_QUICKLY: {actuator: valve, set: {open: true}, timeout: 300ms}
    UNLOCK: {actuator: front_door, set: {locked: false}, requires_approval: true}
    ALL_ON: {set: {porch_light: {on: true}, gate_motor: {running: true}}}
    ALARM: {set: {porch_light: {on: true}, siren: {on: true, volume: 5}}}
    SLOW_GROUP: {set: {porch_light: {on: true}, valve: {open: true}}}
`

func gatewayConfig(t testing.TB, thing, brokerURL, dir, conflict string) (*config.Config, string) {
	t.Helper()
	path := filepath.Join(dir, "shadowgate.yaml")
	y := fmt.Sprintf(gatewayYAML, thing, brokerURL, conflict, filepath.Join(dir, "state.db"), filepath.Join(dir, "api.sock"))
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := daemon.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg, path
}

// gateway runs a daemon in-process until the test ends.
func gateway(t testing.TB, cfg *config.Config) *daemon.Daemon {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan *daemon.Daemon, 1)
	done := make(chan error, 1)
	// The configuration's level, as shadowgated sets it (a benchmark's
	// `log: {level: error}` is not paid for at info).
	var lv slog.Level
	lv.UnmarshalText([]byte(cfg.Log.Level))
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: lv}))
	go func() { done <- daemon.Run(ctx, cfg, log, daemon.Hooks{Ready: func(d *daemon.Daemon) { ready <- d }}) }()
	var d *daemon.Daemon
	select {
	case d = <-ready:
	case err := <-done:
		t.Fatalf("daemon did not start: %v", err)
	case <-time.After(15 * time.Second):
		t.Fatal("daemon did not become ready")
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("daemon stopped with %v", err)
		}
	})
	return d
}

func read(t *testing.T, d *daemon.Daemon, actuator string) drivers.State {
	t.Helper()
	st, err := d.Manager.Read(context.Background(), actuator)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	waitWithin(t, 20*time.Second, what, cond)
}

// waitWithin is waitFor with its own deadline.
func waitWithin(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
