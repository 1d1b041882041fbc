package daemon_test

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shadowgate/shadowgate/agent/command"
	"github.com/shadowgate/shadowgate/agent/shadow"
	"github.com/shadowgate/shadowgate/store"
)

func req(cmd, tid, args string) string {
	if args == "" {
		return fmt.Sprintf(`{"cmd":%q,"tid":%q,"status":"REQUEST"}`, cmd, tid)
	}
	return fmt.Sprintf(`{"cmd":%q,"tid":%q,"status":"REQUEST","args":%s}`, cmd, tid, args)
}

func TestCommandRunningThenSuccess(t *testing.T) {
	c := newCloud(t)
	cfg, _ := gatewayConfig(t, "gw-cmd", c.broker.URL(), t.TempDir(), "cloud_wins")
	d := gateway(t, cfg)
	waitFor(t, "link up", d.Link.Connected)
	c.send(t, "gw-cmd", req("MOTOR_1_ON", "CAFED00D", ""))
	ok := c.waitAck(t, "gw-cmd", "CAFED00D", command.StatusSuccess)
	acks := c.acks("gw-cmd", "CAFED00D")
	if acks[0].Status != command.StatusRunning || acks[0].TS == "" {
		t.Fatalf("first ack must be RUNNING: %+v", acks)
	}
	motor, _ := ok.Result["gate_motor"].(map[string]any)
	if motor["running"] != true {
		t.Fatalf("result %+v", ok.Result)
	}
	if read(t, d, "gate_motor")["running"] != true {
		t.Fatal("motor not running")
	}
	// The change is reported to the shadow too, with the tid in history.
	c.waitShadow(t, "gw-cmd", "", "command's change reported", func(g *shadow.GetAccepted) bool {
		return reported(g, "gate_motor", "running") == true
	})
	var h []*store.Change
	d.Store.View(func(tx *store.Tx) (err error) { h, err = tx.History("gate_motor", 1); return err })
	if h[0].TID != "CAFED00D" || h[0].Source != store.SourceCommand {
		t.Fatalf("history %+v", h[0])
	}
}

func TestDuplicateTIDRunsOnce(t *testing.T) {
	c := newCloud(t)
	cfg, _ := gatewayConfig(t, "gw-dup", c.broker.URL(), t.TempDir(), "cloud_wins")
	d := gateway(t, cfg)
	waitFor(t, "link up", d.Link.Connected)
	r := req("SET_SPEED", "dup-1", `{"speed":30}`)
	c.send(t, "gw-dup", r)
	c.waitAck(t, "gw-dup", "dup-1", command.StatusSuccess)
	for i := 0; i < 4; i++ {
		c.send(t, "gw-dup", r)
	}
	var finals []string
	waitFor(t, "5 final acks", func() bool {
		finals = nil
		for _, a := range c.rawAcks("gw-dup", "dup-1") {
			if strings.Contains(a, `"SUCCESS"`) {
				finals = append(finals, a)
			}
		}
		return len(finals) == 5
	})
	for _, f := range finals[1:] {
		if f != finals[0] {
			t.Fatalf("final acks differ:\n%s\n%s", finals[0], f)
		}
	}
	if n := d.Commands.Stats().Executed; n != 1 {
		t.Fatalf("executed %d times", n)
	}
	var h []*store.Change
	d.Store.View(func(tx *store.Tx) (err error) { h, err = tx.History("gate_motor", 10); return err })
	if len(h) != 1 {
		t.Fatalf("motor changed %d times", len(h))
	}
}

func TestCommandFailureReasons(t *testing.T) {
	c := newCloud(t)
	cfg, _ := gatewayConfig(t, "gw-fail", c.broker.URL(), t.TempDir(), "cloud_wins")
	d := gateway(t, cfg)
	waitFor(t, "link up", d.Link.Connected)
	past := time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
	for _, tc := range []struct{ tid, payload, reason string }{
		{"f-unknown", req("LAUNCH", "f-unknown", ""), `unknown command type "LAUNCH"`},
		{"f-range", req("SET_SPEED", "f-range", `{"speed":500}`), "invalid args: speed must be ≤ 100"},
		{"f-type", req("SET_SPEED", "f-type", `{"speed":"fast"}`), "invalid args: speed must be a number"},
		{"f-missing", req("SET_SPEED", "f-missing", `{}`), "invalid args: speed is required"},
		{"f-extra", req("SET_SPEED", "f-extra", `{"speed":1,"turbo":true}`), `invalid args: unknown arg "turbo"`},
		{"f-expired", fmt.Sprintf(`{"cmd":"MOTOR_1_ON","tid":"f-expired","status":"REQUEST","expires_at":%q}`, past), "expired at"},
		{"f-badexp", `{"cmd":"MOTOR_1_ON","tid":"f-badexp","status":"REQUEST","expires_at":"tomorrow"}`, "not an RFC 3339 time"},
		{"f-status", `{"cmd":"MOTOR_1_ON","tid":"f-status","status":"SUCCESS"}`, `status must be "REQUEST"`},
		{"f-json", `{"cmd":"MOTOR_1_ON","tid":"f-json","args":5}`, "invalid request JSON"},
		{"f-timeout", req("OPEN_VALVE_QUICKLY", "f-timeout", ""), "timeout"},
		{"f-rollback", req("ROLLBACK", "f-rollback", `{"actuator":"jetpack"}`), `unknown actuator "jetpack"`},
		{"f-nohist", req("ROLLBACK", "f-nohist", `{"actuator":"porch_light"}`), "no recorded history"},
	} {
		c.send(t, "gw-fail", tc.payload)
		a := c.waitAck(t, "gw-fail", tc.tid, command.StatusFailure)
		if !strings.Contains(a.Reason, tc.reason) {
			t.Errorf("%s: reason %q lacks %q", tc.tid, a.Reason, tc.reason)
		}
	}
	// No tid: nobody to answer; counted and logged.
	c.send(t, "gw-fail", `{"cmd":"MOTOR_1_ON"}`)
	c.send(t, "gw-fail", `not json`)
	waitFor(t, "requests without tid counted", func() bool { return d.Commands.Stats().Malformed == 2 })
}

func TestHeartbeatsWhileRunning(t *testing.T) {
	c := newCloud(t)
	cfg, _ := gatewayConfig(t, "gw-beat", c.broker.URL(), t.TempDir(), "cloud_wins")
	d := gateway(t, cfg)
	waitFor(t, "link up", d.Link.Connected)
	c.send(t, "gw-beat", req("OPEN_VALVE", "slow-1", "")) // 2.5 s, heartbeat 1 s
	c.waitAck(t, "gw-beat", "slow-1", command.StatusSuccess)
	acks := c.acks("gw-beat", "slow-1")
	running := 0
	for _, a := range acks {
		if a.Status == command.StatusRunning {
			running++
		}
	}
	if running < 3 || acks[len(acks)-1].Status != command.StatusSuccess {
		t.Fatalf("want RUNNING, ≥2 heartbeats, then SUCCESS; got %+v", acks)
	}
}

func TestApproval(t *testing.T) {
	c := newCloud(t)
	cfg, _ := gatewayConfig(t, "gw-appr", c.broker.URL(), t.TempDir(), "cloud_wins")
	d := gateway(t, cfg)
	waitFor(t, "link up", d.Link.Connected)
	c.send(t, "gw-appr", req("UNLOCK", "ap-1", ""))
	a := c.waitAck(t, "gw-appr", "ap-1", command.StatusRunning)
	if a.Reason != command.ReasonAwaitingApproval {
		t.Fatalf("first ack %+v", a)
	}
	// Heartbeats keep saying so.
	waitFor(t, "an awaiting-approval heartbeat", func() bool { return len(c.acks("gw-appr", "ap-1")) >= 2 })
	if read(t, d, "front_door")["locked"] != true {
		t.Fatal("door unlocked before approval")
	}
	if err := d.Commands.Approve("ap-1"); err != nil {
		t.Fatal(err)
	}
	c.waitAck(t, "gw-appr", "ap-1", command.StatusSuccess)
	if read(t, d, "front_door")["locked"] != false {
		t.Fatal("door not unlocked after approval")
	}

	c.send(t, "gw-appr", req("UNLOCK", "ap-2", ""))
	c.waitAck(t, "gw-appr", "ap-2", command.StatusRunning)
	waitFor(t, "ap-2 awaiting", func() bool { return d.Commands.Reject("ap-2") == nil })
	if f := c.waitAck(t, "gw-appr", "ap-2", command.StatusFailure); f.Reason != command.ReasonRejected {
		t.Fatalf("reject: %+v", f)
	}
	if err := d.Commands.Approve("nope"); !errors.Is(err, command.ErrNotAwaiting) {
		t.Fatalf("approve unknown: %v", err)
	}
}

func TestAcksWhileBrokerDownArriveAfter(t *testing.T) {
	c := newCloud(t)
	cfg, _ := gatewayConfig(t, "gw-down", c.broker.URL(), t.TempDir(), "cloud_wins")
	d := gateway(t, cfg)
	waitFor(t, "link up", d.Link.Connected)
	c.send(t, "gw-down", req("OPEN_VALVE", "down-1", ""))
	c.waitAck(t, "gw-down", "down-1", command.StatusRunning)
	c.broker.Stop()
	waitFor(t, "command finished offline", func() bool { return d.Commands.Stats().Executed == 1 })
	// The final ack is written just after the count (its commit is not
	// waited for in line); the valve's change is no outbox item (a
	// command's change is written to the shadow from the replica).
	waitFor(t, "the SUCCESS ack waiting in the outbox", func() bool { return d.Store.OutboxStats().Items > 0 })
	c.broker.Restart()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("outbox %+v, sent %d; operator %+v\nbroker log:\n%s", d.Store.OutboxStats(), d.Outbox.Sent(), c.op.Stats(), c.broker.Log())
		}
	})
	c.waitAck(t, "gw-down", "down-1", command.StatusSuccess)
}

func TestGroupCommand(t *testing.T) {
	c := newCloud(t)
	cfg, _ := gatewayConfig(t, "gw-grp", c.broker.URL(), t.TempDir(), "cloud_wins")
	d := gateway(t, cfg)
	waitFor(t, "link up", d.Link.Connected)
	c.send(t, "gw-grp", req("ALL_ON", "grp-1", ""))
	a := c.waitAck(t, "gw-grp", "grp-1", command.StatusSuccess)
	if len(a.Result) != 2 || read(t, d, "porch_light")["on"] != true || read(t, d, "gate_motor")["running"] != true {
		t.Fatalf("group: %+v", a)
	}
}

func TestKill9MidCommandReportsInterrupted(t *testing.T) {
	c := newCloud(t)
	dir := t.TempDir()
	_, cfgPath := gatewayConfig(t, "gw-k9", c.broker.URL(), dir, "cloud_wins")
	p := startProcess(t, cfgPath)
	c.waitShadow(t, "gw-k9", "", "gateway up", func(g *shadow.GetAccepted) bool { return g.State.Reported["valve"] != nil })
	c.send(t, "gw-k9", req("OPEN_VALVE", "k9-1", "")) // takes 2.5 s
	c.waitAck(t, "gw-k9", "k9-1", command.StatusRunning)
	// Into the action: its change is recorded (the command started) and
	// the valve takes 2.5 s. (Accepted is not started: commands wait for
	// the backlog after a connect.)
	waitFor(t, "k9-1 started", func() bool {
		r := shadowctl(t, "history", "valve", "--json", "--socket", filepath.Join(dir, "api.sock"))
		return r.code == 0 && strings.Contains(r.stdout, `"k9-1"`)
	})
	p.kill9()
	startProcess(t, cfgPath)
	f := c.waitAck(t, "gw-k9", "k9-1", command.StatusFailure)
	if f.Reason != command.ReasonInterrupted {
		t.Fatalf("want interrupted, got %+v", f)
	}
	// A new command runs normally after the restart.
	c.send(t, "gw-k9", req("MOTOR_1_ON", "k9-2", ""))
	c.waitAck(t, "gw-k9", "k9-2", command.StatusSuccess)
}

func TestBacklogOf100WhileStopped(t *testing.T) {
	c := newCloud(t)
	dir := t.TempDir()
	_, cfgPath := gatewayConfig(t, "gw-100", c.broker.URL(), dir, "cloud_wins")
	p := startProcess(t, cfgPath)
	c.waitShadow(t, "gw-100", "", "gateway up (its session subscribed)", func(g *shadow.GetAccepted) bool { return g.State.Reported["gate_motor"] != nil })
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.cmd.Wait()
	for i := 0; i < 100; i++ {
		c.send(t, "gw-100", req("SET_SPEED", fmt.Sprintf("b%03d", i), fmt.Sprintf(`{"speed":%d}`, i)))
	}
	startProcess(t, cfgPath)
	waitFor(t, "100 SUCCESS acks", func() bool {
		acks := c.acks("gw-100", "b099")
		return len(acks) > 0 && acks[len(acks)-1].Status == command.StatusSuccess
	})
	// Exactly one final ack each, in the order sent.
	c.mu.Lock()
	var order []string
	for _, m := range c.msgs {
		if m.Topic == "commands/gw-100/ack" && strings.Contains(string(m.Payload), `"SUCCESS"`) {
			order = append(order, string(m.Payload)[8:12])
		}
	}
	c.mu.Unlock()
	if len(order) != 100 {
		t.Fatalf("%d final acks, want 100", len(order))
	}
	for i, tid := range order {
		if tid != fmt.Sprintf("b%03d", i) {
			t.Fatalf("final ack %d is %s: out of order", i, tid)
		}
	}
	c.waitShadow(t, "gw-100", "", "last speed reported", func(g *shadow.GetAccepted) bool {
		return num(reported(g, "gate_motor", "speed")) == "99"
	})
}
