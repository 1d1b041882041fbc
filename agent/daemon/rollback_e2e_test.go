package daemon_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/shadowgate/shadowgate/agent/actuate"
	"github.com/shadowgate/shadowgate/agent/command"
	"github.com/shadowgate/shadowgate/agent/link/brokertest"
	"github.com/shadowgate/shadowgate/agent/shadow"
	"github.com/shadowgate/shadowgate/drivers"
	"github.com/shadowgate/shadowgate/store"
)

func desiredOf(g *shadow.GetAccepted, key, field string) any {
	m, _ := g.State.Desired[key].(map[string]any)
	return m[field]
}

// settled: the cloud's desired and reported agree on key.field == want and
// there is no delta left.
func settled(key, field, want string) func(g *shadow.GetAccepted) bool {
	return func(g *shadow.GetAccepted) bool {
		return num(desiredOf(g, key, field)) == want && num(reported(g, key, field)) == want && g.State.Delta == nil
	}
}

func TestRollbackStepsAndToID(t *testing.T) {
	c := newCloud(t)
	cfg, _ := gatewayConfig(t, "gw-rb", c.broker.URL(), t.TempDir(), "cloud_wins")
	d := gateway(t, cfg)
	waitFor(t, "link up", d.Link.Connected)
	c.desire(t, "gw-rb", "", `{"gate_motor":{"speed":5}}`) // the cloud asked for 5 once
	waitFor(t, "speed 5", func() bool { return num(read(t, d, "gate_motor")["speed"]) == "5" })
	for i, s := range []int{10, 20, 30} {
		tid := fmt.Sprintf("s%d", i)
		c.send(t, "gw-rb", req("SET_SPEED", tid, fmt.Sprintf(`{"speed":%d}`, s)))
		c.waitAck(t, "gw-rb", tid, command.StatusSuccess)
	}
	speed := func() string { return num(read(t, d, "gate_motor")["speed"]) }

	// One step back: 30 → 20. The cloud's desired becomes 20 too, so the
	// old desired (5) is not applied again.
	c.send(t, "gw-rb", req("ROLLBACK", "rb-1", `{"actuator":"gate_motor"}`))
	c.waitAck(t, "gw-rb", "rb-1", command.StatusSuccess)
	if speed() != "20" {
		t.Fatalf("after 1 step: %s", speed())
	}
	c.waitShadow(t, "gw-rb", "", "desired == reported == 20", settled("gate_motor", "speed", "20"))

	// History now: 0→5, 5→10, 10→20, 20→30, 30→20. Three steps back is the
	// state before 10→20: 10.
	c.send(t, "gw-rb", req("ROLLBACK", "rb-3", `{"actuator":"gate_motor","steps":3}`))
	c.waitAck(t, "gw-rb", "rb-3", command.StatusSuccess)
	if speed() != "10" {
		t.Fatalf("after 3 steps: %s", speed())
	}
	c.waitShadow(t, "gw-rb", "", "desired == reported == 10", settled("gate_motor", "speed", "10"))

	// Back to the state right after a given history entry (5→10 ... take 10→20).
	var h []*store.Change
	d.Store.View(func(tx *store.Tx) (err error) { h, err = tx.History("gate_motor", 100); return err })
	var id uint64
	for _, ch := range h {
		if num(ch.After["speed"]) == "20" && ch.Source == store.SourceCommand {
			id = ch.ID
		}
	}
	c.send(t, "gw-rb", req("ROLLBACK", "rb-to", fmt.Sprintf(`{"to":%d}`, id)))
	c.waitAck(t, "gw-rb", "rb-to", command.StatusSuccess)
	if speed() != "20" {
		t.Fatalf("after rollback to %d: %s", id, speed())
	}
	c.waitShadow(t, "gw-rb", "", "desired == reported == 20", settled("gate_motor", "speed", "20"))
	time.Sleep(300 * time.Millisecond)
	if speed() != "20" {
		t.Fatalf("an old desired state came back: %s", speed())
	}
	// The cloud can still change it afterwards.
	c.desire(t, "gw-rb", "", `{"gate_motor":{"speed":77}}`)
	waitFor(t, "speed 77", func() bool { return speed() == "77" })
}

func TestGroupFailureRestoresTheOthers(t *testing.T) {
	c := newCloud(t)
	cfg, _ := gatewayConfig(t, "gw-gf", c.broker.URL(), t.TempDir(), "cloud_wins")
	d := gateway(t, cfg)
	waitFor(t, "link up", d.Link.Connected)
	c.send(t, "gw-gf", req("ALARM", "al-1", ""))
	f := c.waitAck(t, "gw-gf", "al-1", command.StatusFailure)
	if !strings.Contains(f.Reason, "actuator siren failed") || !strings.Contains(f.Reason, "restored porch_light") {
		t.Fatalf("reason %q", f.Reason)
	}
	if read(t, d, "porch_light")["on"] != false {
		t.Fatal("porch_light not restored")
	}
	c.waitShadow(t, "gw-gf", "", "reported light off", func(g *shadow.GetAccepted) bool { return reported(g, "porch_light", "on") == false })
}

func TestKill9MidGroupRestoredAfterRestart(t *testing.T) {
	c := newCloud(t)
	_, cfgPath := gatewayConfig(t, "gw-kg", c.broker.URL(), t.TempDir(), "cloud_wins")
	p := startProcess(t, cfgPath)
	c.waitShadow(t, "gw-kg", "", "gateway up", func(g *shadow.GetAccepted) bool { return g.State.Reported["valve"] != nil })
	// porch_light changes first (name order), then the valve takes 2.5 s.
	c.send(t, "gw-kg", req("SLOW_GROUP", "sg-1", ""))
	c.waitAck(t, "gw-kg", "sg-1", command.StatusRunning)
	c.waitShadow(t, "gw-kg", "", "light on (first half of the group)", func(g *shadow.GetAccepted) bool { return reported(g, "porch_light", "on") == true })
	p.kill9()
	p2 := startProcess(t, cfgPath)
	if f := c.waitAck(t, "gw-kg", "sg-1", command.StatusFailure); f.Reason != command.ReasonInterrupted {
		t.Fatalf("ack %+v", f)
	}
	c.waitShadow(t, "gw-kg", "", "light restored by the journal", func(g *shadow.GetAccepted) bool {
		return reported(g, "porch_light", "on") == false
	})
	waitFor(t, "restore logged", func() bool { return strings.Contains(p2.output(), "restoring a group change interrupted by a crash") })
}

func TestRollbackWhileOfflineConverges(t *testing.T) {
	c := newCloud(t)
	px := brokertest.NewProxy(t, c.broker.Addr())
	cfg, _ := gatewayConfig(t, "gw-orb", px.URL(), t.TempDir(), "cloud_wins")
	d := gateway(t, cfg)
	waitFor(t, "link up", d.Link.Connected)
	c.desire(t, "gw-orb", "", `{"porch_light":{"on":true}}`)
	c.waitShadow(t, "gw-orb", "", "light on everywhere", settled("porch_light", "on", "true"))

	px.Cut()
	waitFor(t, "gateway offline", func() bool { return !d.Link.Connected() })
	if _, err := d.Manager.Rollback(context.Background(), actuate.Rollback{Actuator: "porch_light"}); err != nil {
		t.Fatal(err)
	}
	if read(t, d, "porch_light")["on"] != false {
		t.Fatal("rollback did not switch the light off")
	}
	px.Restore()
	c.waitShadow(t, "gw-orb", "", "desired == reported == rolled back (off), no delta", settled("porch_light", "on", "false"))
	time.Sleep(300 * time.Millisecond)
	if read(t, d, "porch_light")["on"] != false {
		t.Fatal("the cloud's old desired state was applied again after the rollback")
	}
}

func TestConflictPolicies(t *testing.T) {
	for _, tc := range []struct{ policy, want string }{{"cloud_wins", "50"}, {"local_wins", "20"}} {
		t.Run(tc.policy, func(t *testing.T) {
			c := newCloud(t)
			px := brokertest.NewProxy(t, c.broker.Addr())
			thing := "gw-" + strings.ReplaceAll(tc.policy, "_", "-")
			cfg, _ := gatewayConfig(t, thing, px.URL(), t.TempDir(), tc.policy)
			d := gateway(t, cfg)
			waitFor(t, "link up", d.Link.Connected)
			c.desire(t, thing, "", `{"gate_motor":{"speed":10}}`)
			c.waitShadow(t, thing, "", "speed 10 everywhere", settled("gate_motor", "speed", "10"))

			px.Cut()
			waitFor(t, "gateway offline", func() bool { return !d.Link.Connected() })
			c.desire(t, thing, "", `{"gate_motor":{"speed":50}}`) // the cloud changes its mind
			if _, err := d.Manager.Apply(context.Background(), actuate.Change{Actuator: "gate_motor", State: drivers.State{"speed": 20}, Source: store.SourceLocal}); err != nil {
				t.Fatal(err) // and a technician changes it at the gateway
			}
			px.Restore()
			c.waitShadow(t, thing, "", tc.policy+" decides", settled("gate_motor", "speed", tc.want))
			waitFor(t, "gateway agrees", func() bool { return num(read(t, d, "gate_motor")["speed"]) == tc.want })
			if d.Sync.Stats().Conflicts < 1 {
				t.Fatal("conflict not counted")
			}
		})
	}
}

func TestHistoryBound(t *testing.T) {
	c := newCloud(t)
	cfg, _ := gatewayConfig(t, "gw-hb", c.broker.URL(), t.TempDir(), "cloud_wins")
	cfg.History = 3
	d := gateway(t, cfg)
	waitFor(t, "link up", d.Link.Connected)
	for i := 1; i <= 6; i++ {
		tid := fmt.Sprintf("hb%d", i)
		c.send(t, "gw-hb", req("SET_SPEED", tid, fmt.Sprintf(`{"speed":%d}`, i)))
		c.waitAck(t, "gw-hb", tid, command.StatusSuccess)
	}
	var h []*store.Change
	d.Store.View(func(tx *store.Tx) (err error) { h, err = tx.History("gate_motor", 100); return err })
	if len(h) != 3 || num(h[0].After["speed"]) != "6" {
		t.Fatalf("history %d entries, newest %+v", len(h), h[0])
	}
}
