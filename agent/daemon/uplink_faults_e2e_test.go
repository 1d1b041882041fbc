package daemon_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"

	"github.com/shadowgate/shadowgate/agent/command"
	"github.com/shadowgate/shadowgate/agent/config"
	"github.com/shadowgate/shadowgate/agent/daemon"
	"github.com/shadowgate/shadowgate/agent/link/brokertest"
	"github.com/shadowgate/shadowgate/agent/shadow"
	"github.com/shadowgate/shadowgate/agent/shadowsvc"
)

// A gateway's uplink in the field is a cellular modem or a long Wi-Fi
// hop: slow, chopped into small segments, cut now and then, and sometimes
// a black hole (a NAT that forgot the connection: nothing arrives, nothing
// says so). These tests put toxiproxy, in-process, between the gateway and
// a real mosquitto and give the link each of those faults. The cloud's
// shadow service and the operator stay on the broker directly.

// uplink is a toxiproxy proxy in front of the broker for the gateway.
type uplink struct {
	t *testing.T
	p *toxiproxy.Proxy
}

func newUplink(t *testing.T, broker string) *uplink {
	t.Helper()
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, "uplink", "127.0.0.1:0", broker)
	if err := p.Start(); err != nil {
		t.Fatalf("start toxiproxy: %v", err)
	}
	t.Cleanup(p.Stop)
	return &uplink{t: t, p: p}
}

// URL is the broker address the gateway dials.
func (u *uplink) URL() string { return "tcp://" + u.p.Listen }

// add puts a toxic on the link: typ is toxiproxy's (latency, slicer,
// reset_peer, timeout, ...), stream "upstream" (gateway to broker) or
// "downstream".
func (u *uplink) add(name, typ, stream string, attrs map[string]any) {
	u.t.Helper()
	b, _ := json.Marshal(map[string]any{"name": name, "type": typ, "stream": stream, "toxicity": 1, "attributes": attrs})
	if _, err := u.p.Toxics.AddToxicJson(strings.NewReader(string(b))); err != nil {
		u.t.Fatalf("add toxic %s: %v", name, err)
	}
}

func (u *uplink) remove(name string) {
	u.t.Helper()
	if err := u.p.Toxics.RemoveToxic(context.Background(), name); err != nil {
		u.t.Fatalf("remove toxic %s: %v", name, err)
	}
}

// cut waits for the gateway's link to be up, resets its connection (TCP
// RST on the next bytes either way) and every new one until the gateway
// has seen the link go down; then the link heals. It returns once the
// gateway knows it is down, reconnecting.
func (u *uplink) cut(d *daemon.Daemon) {
	u.t.Helper()
	waitFor(u.t, "the gateway's link up before the cut", d.Link.Connected)
	u.add("cut-up", "reset_peer", "upstream", map[string]any{"timeout": 0})
	u.add("cut-down", "reset_peer", "downstream", map[string]any{"timeout": 0})
	waitFor(u.t, "the gateway to see its link cut", func() bool { return !d.Link.Connected() })
	u.remove("cut-up")
	u.remove("cut-down")
}

// slow gives the link a cellular modem's latency both ways and chops
// what the broker sends into segments of a few bytes (MQTT packets then
// arrive in pieces, and several in one read).
func (u *uplink) slow() {
	u.add("latency-up", "latency", "upstream", map[string]any{"latency": 15, "jitter": 10})
	u.add("latency-down", "latency", "downstream", map[string]any{"latency": 15, "jitter": 10})
	u.add("sliced", "slicer", "downstream", map[string]any{"average_size": 12, "size_variation": 10, "delay": 20})
}

// behindUplink starts a gateway for thing whose link to c's broker goes
// through a new uplink; edit, when set, changes its configuration first.
func behindUplink(t *testing.T, c *cloud, thing string, edit func(cfg *config.Config)) (*uplink, *daemon.Daemon) {
	t.Helper()
	up := newUplink(t, c.broker.Addr())
	cfg, _ := gatewayConfig(t, thing, up.URL(), t.TempDir(), "cloud_wins")
	if edit != nil {
		edit(cfg)
	}
	d := gateway(t, cfg)
	waitFor(t, "link up", d.Link.Connected)
	return up, d
}

// finals returns each tid's final acks (SUCCESS or FAILURE), in arrival
// order: more than one is a resend of the same after a reconnect.
func (c *cloud) finals(thing string) map[string][]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string][]string{}
	for _, m := range c.msgs {
		var a command.Ack
		if m.Topic != "commands/"+thing+"/ack" || json.Unmarshal(m.Payload, &a) != nil {
			continue
		}
		if a.Status == command.StatusSuccess || a.Status == command.StatusFailure {
			out[a.TID] = append(out[a.TID], a.Status)
		}
	}
	return out
}

// TestCommandsOverACutUplinkRunOnce: commands sent in a stream while the
// gateway's slow, sliced uplink is cut four times (some sent while it is
// down, queued by the broker in the gateway's session; some in flight
// when the reset comes, delivered again after it) each run once, in the
// order sent, and each is answered SUCCESS: a request delivered again is
// answered from its record, not run again.
func TestCommandsOverACutUplinkRunOnce(t *testing.T) {
	c := newCloud(t)
	up, d := behindUplink(t, c, "gw-flaky", nil)
	up.slow()
	const n, cuts = 60, 4
	connects := d.Link.Stats().Connects
	for i := range n {
		c.send(t, "gw-flaky", req("SET_SPEED", fmt.Sprintf("flaky-%02d", i), fmt.Sprintf(`{"speed":%d}`, i+1)))
		if i%(n/cuts) == n/cuts/2 {
			up.cut(d)
		}
	}
	waitWithin(t, 60*time.Second, "every command answered", func() bool { return len(c.finals("gw-flaky")) == n })
	if got := d.Link.Stats().Connects - connects; got < cuts {
		t.Fatalf("the gateway connected %d times after the first, want at least %d: the cuts did not cut", got, cuts)
	}
	for tid, st := range c.finals("gw-flaky") {
		for _, s := range st {
			if s != command.StatusSuccess {
				t.Errorf("%s: final acks %v, want SUCCESS only (a repeated ack is a resend of the same)", tid, st)
				break
			}
		}
	}
	if got := d.Commands.Stats().Executed; got != n {
		t.Fatalf("%d commands executed, want %d: each exactly once", got, n)
	}
	if got := read(t, d, "gate_motor")["speed"]; num(got) != fmt.Sprint(n) {
		t.Fatalf("motor speed %v, want %d: the last command sent ran last", got, n)
	}
}

// TestDesiredConvergesOverACutUplink: desired states sent in quick
// succession over a slow, sliced uplink, cut twice while they arrive, end
// with the hardware and the reported state at the last one and no delta
// left: a delta lost with a connection, or one that arrives late, does not
// leave the gateway at an older desired state.
func TestDesiredConvergesOverACutUplink(t *testing.T) {
	c := newCloud(t)
	up, d := behindUplink(t, c, "gw-slow", nil)
	up.slow()
	const last = 12
	for i := 1; i <= last; i++ {
		c.desire(t, "gw-slow", "", fmt.Sprintf(`{"gate_motor":{"speed":%d}}`, i))
		if i == 4 || i == 8 {
			up.cut(d)
		}
	}
	g := c.waitShadow(t, "gw-slow", "", "reported at the last desired, no delta", func(g *shadow.GetAccepted) bool {
		return num(reported(g, "gate_motor", "speed")) == fmt.Sprint(last) && len(g.State.Delta) == 0
	})
	if got := read(t, d, "gate_motor")["speed"]; num(got) != fmt.Sprint(last) {
		t.Fatalf("motor speed %v, want %d; shadow %+v", got, last, g.State)
	}
}

// TestBlackholedUplink: the link turns into a black hole both ways (a
// NAT that forgot the connection: nothing gets through, no reset). The
// broker finds out by its keepalive and publishes the gateway's will, so
// the shadow says connected: false; a command sent meanwhile waits in the
// gateway's session. Once the link carries again the gateway is back
// (having found out by its own keepalive, or by the broker's close once
// that got through), the shadow says connected: true, and the command
// runs once.
func TestBlackholedUplink(t *testing.T) {
	t.Parallel() // it waits on the broker's keepalive, as TestSilentUplink on the gateway's
	c := newCloudSvc(t, brokertest.Config{}, func(o *shadowsvc.Options) { o.PresenceTopic = shadowsvc.DefaultPresenceTopic })
	up, d := behindUplink(t, c, "gw-hole", nil)
	_, session := presence(c.waitShadow(t, "gw-hole", "", "connected", connectedIs(true, 0)))

	up.add("hole-up", "timeout", "upstream", map[string]any{"timeout": 0})
	up.add("hole-down", "timeout", "downstream", map[string]any{"timeout": 0})
	c.send(t, "gw-hole", req("SET_SPEED", "hole-1", `{"speed":42}`))
	// keepalive 5s: the broker gives up after 1.5 of them.
	c.waitShadow(t, "gw-hole", "", "connected: false from the broker's will", connectedIs(false, session))
	if got := d.Commands.Stats().Executed; got != 0 {
		t.Fatalf("%d commands ran through a black hole", got)
	}
	up.remove("hole-up")
	up.remove("hole-down")
	c.waitAck(t, "gw-hole", "hole-1", command.StatusSuccess)
	// The same link, the same session number: its will and its online are
	// fixed when it is made, and presence orders them by arrival.
	c.waitShadow(t, "gw-hole", "", "connected: true again", connectedIs(true, session))
	if got := d.Commands.Stats().Executed; got != 1 {
		t.Fatalf("%d commands executed, want 1", got)
	}
	if got := read(t, d, "gate_motor")["speed"]; num(got) != "42" {
		t.Fatalf("motor speed %v, want 42", got)
	}
}

// TestSilentUplink: the broker hears the gateway, the gateway hears
// nothing (a one-way loss). Only the gateway's own keepalive can tell: a
// ping unanswered for the link's ping timeout (10s) ends the session, the
// gateway says it is down and why, and once the link carries both ways
// again a command sent into the silence runs once. (With a keepalive of
// 10s the broker, which waits 1.5 of them after the gateway's ping, gives
// up later than the gateway does; toxiproxy would pass its close on.)
func TestSilentUplink(t *testing.T) {
	t.Parallel()
	c := newCloud(t)
	up, d := behindUplink(t, c, "gw-deaf", func(cfg *config.Config) { cfg.Cloud.Keepalive = config.Duration(10 * time.Second) })

	up.add("deaf", "timeout", "downstream", map[string]any{"timeout": 0})
	c.send(t, "gw-deaf", req("SET_SPEED", "deaf-1", `{"speed":7}`))
	waitWithin(t, 60*time.Second, "the gateway to find its link silent", func() bool { return !d.Link.Connected() })
	if got := d.Commands.Stats().Executed; got != 0 {
		t.Fatalf("%d commands ran that the gateway cannot have heard", got)
	}
	if st := d.Link.Stats(); !strings.Contains(st.LastError, "pingresp not received") {
		t.Fatalf("the link's last error %q does not say its pings went unanswered", st.LastError)
	}
	up.remove("deaf")
	c.waitAck(t, "gw-deaf", "deaf-1", command.StatusSuccess)
	if got := d.Commands.Stats().Executed; got != 1 {
		t.Fatalf("%d commands executed, want 1", got)
	}
}
