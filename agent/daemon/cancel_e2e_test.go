package daemon_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shadowgate/shadowgate/agent/command"
	"github.com/shadowgate/shadowgate/agent/config"
	"github.com/shadowgate/shadowgate/agent/daemon"
	"github.com/shadowgate/shadowgate/agent/link/brokertest"
	"github.com/shadowgate/shadowgate/agent/shadow"
	"github.com/shadowgate/shadowgate/store"
)

// cancelReq is a cancel of tid.
func cancelReq(tid string) string { return fmt.Sprintf(`{"tid":%q,"status":"CANCEL"}`, tid) }

// cancelConfig is gatewayConfig with commands.retention and
// store.inbox.max_items set (when given).
func cancelConfig(t testing.TB, thing, brokerURL, dir, retention string, inboxItems int) (*config.Config, string) {
	t.Helper()
	path := filepath.Join(dir, "shadowgate.yaml")
	db := filepath.Join(dir, "state.db")
	y := fmt.Sprintf(gatewayYAML, thing, brokerURL, "cloud_wins", db, filepath.Join(dir, "api.sock"))
	if retention != "" {
		y = strings.Replace(y, "  heartbeat: 1s\n", "  heartbeat: 1s\n  retention: "+retention+"\n", 1)
	}
	if inboxItems > 0 {
		y = strings.Replace(y, "store: {path: "+db+"}", fmt.Sprintf("store: {path: %s, inbox: {max_items: %d}}", db, inboxItems), 1)
	}
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := daemon.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg, path
}

// finalAcks are the SUCCESS and FAILURE acks of tid, raw, in arrival order.
func (c *cloud) finalAcks(thing, tid string) []string {
	var out []string
	for _, a := range c.rawAcks(thing, tid) {
		if strings.Contains(a, `"status":"SUCCESS"`) || strings.Contains(a, `"status":"FAILURE"`) {
			out = append(out, a)
		}
	}
	return out
}

// historyOf reads an actuator's history through the gateway's local API.
func historyOf(t *testing.T, sock, actuator string) []*store.Change {
	t.Helper()
	r := shadowctl(t, "history", actuator, "-n", "1000", "--json", "--socket", sock)
	var h []*store.Change
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &h) != nil {
		t.Fatalf("history %s: exit %d\n%s%s", actuator, r.code, r.stdout, r.stderr)
	}
	return h
}

// changedBy reports whether a history holds a change made by tid.
func changedBy(h []*store.Change, tid string) bool {
	for _, c := range h {
		if c.TID == tid {
			return true
		}
	}
	return false
}

// The issue 22 sequence: the gateway is away, the operator sends, gives up,
// is told the request may still run and how to stop it, cancels, and the
// gateway comes back: the request ends FAILURE canceled and the motor never
// moves. The same for a cancel sent before its request. Both reach the
// gateway from the broker's queue of its persistent session, request first.
func TestCancelAfterGiveUpWhileGatewayAway(t *testing.T) {
	c := newCloud(t)
	dir := t.TempDir()
	const thing = "gw-away"
	_, cfgPath := gatewayConfig(t, thing, c.broker.URL(), dir, "cloud_wins")
	sock := filepath.Join(dir, "api.sock")
	p := startProcess(t, cfgPath)
	c.waitShadow(t, thing, "", "gateway up (its session subscribed)", func(g *shadow.GetAccepted) bool { return g.State.Reported["gate_motor"] != nil })
	stopProcess(t, p)
	b := []string{"--broker", c.broker.URL()}

	r := shadowctl(t, append([]string{"command", "send", thing, "MOTOR_1_ON", "--tid", "away-1", "--tries", "2", "--backoff", "100ms", "--expires", "1h"}, b...)...)
	r.must(t, 3, "away-1 GAVE UP", "no answer after 2 tries", "it may still run", "Giving up does not withdraw the request",
		"To stop it:", "shadowctl command cancel "+thing+" away-1", "shadowctl command send "+thing+" MOTOR_1_ON --tid away-1")
	// expires_at as a local time, with its zone.
	zone := regexp.QuoteMeta(time.Now().Add(time.Hour).Format("MST"))
	if !regexp.MustCompile(`before \d{4}-\d\d-\d\d \d\d:\d\d:\d\d ` + zone + ` \(its expires_at\)`).MatchString(r.stderr + r.stdout) {
		t.Fatalf("give-up does not print expires_at as a local time (%s):\n%s%s", zone, r.stdout, r.stderr)
	}
	// Without --expires it says there is no bound.
	r = shadowctl(t, append([]string{"command", "send", thing, "SET_SPEED", "speed=9", "--tid", "away-x", "--tries", "1", "--backoff", "100ms"}, b...)...)
	r.must(t, 3, "whenever it comes back", "it has no expires_at", "shadowctl command cancel "+thing+" away-x")

	r = shadowctl(t, append([]string{"command", "cancel", thing, "away-1", "--tries", "1", "--backoff", "100ms"}, b...)...)
	r.must(t, 3, "away-1 GAVE UP", "The cancel is not lost", "shadowctl command cancel "+thing+" away-1")
	shadowctl(t, append([]string{"command", "cancel", thing, "away-x", "--tries", "1", "--backoff", "100ms"}, b...)...).must(t, 3)
	// The other order: the cancel before its request.
	shadowctl(t, append([]string{"command", "cancel", thing, "away-2", "--tries", "1", "--backoff", "100ms"}, b...)...).must(t, 3, "GAVE UP")
	shadowctl(t, append([]string{"command", "send", thing, "MOTOR_1_ON", "--tid", "away-2", "--tries", "1", "--backoff", "100ms"}, b...)...).must(t, 3, "GAVE UP")

	startProcess(t, cfgPath)
	for _, tid := range []string{"away-1", "away-x", "away-2"} {
		if a := c.waitAck(t, thing, tid, command.StatusFailure); a.Reason != command.ReasonCanceled {
			t.Fatalf("%s: want FAILURE canceled, got %+v", tid, a)
		}
	}
	// A later command on the motor runs after them (one actuator, arrival
	// order): once it is done, the canceled ones have had their turn.
	c.send(t, thing, req("SET_SPEED", "away-3", `{"speed":7}`))
	c.waitAck(t, thing, "away-3", command.StatusSuccess)
	h := historyOf(t, sock, "gate_motor")
	for _, tid := range []string{"away-1", "away-x", "away-2"} {
		if changedBy(h, tid) {
			t.Fatalf("%s moved the motor after it was canceled: %+v", tid, h)
		}
	}
	if len(h) != 1 || h[0].TID != "away-3" || h[0].After["running"] != false {
		t.Fatalf("the motor's history should hold away-3 alone, not running: %+v", h)
	}
	for _, tid := range []string{"away-1", "away-x", "away-2"} {
		for _, f := range c.finalAcks(thing, tid) {
			if !strings.Contains(f, `"reason":"canceled"`) {
				t.Fatalf("%s: a final ack other than canceled: %s", tid, f)
			}
		}
	}
	// Asked again, the answers hold.
	shadowctl(t, append([]string{"command", "cancel", thing, "away-1"}, b...)...).must(t, 0, "away-1 CANCELED", "will not run it")
	shadowctl(t, append([]string{"command", "send", thing, "MOTOR_1_ON", "--tid", "away-2"}, b...)...).must(t, 1, "away-2 FAILURE: canceled")
	shadowctl(t, "commands", "--socket", sock).must(t, 0, "away-1", "away-2", "canceled")
}

// The gateway's process stays up and its network goes away: the request and
// its cancel wait at the broker and arrive, in that order, after the
// reconnect. The request ends FAILURE canceled; the motor never moves.
func TestCancelQueuedAtTheBrokerDuringAnOutage(t *testing.T) {
	c := newCloud(t)
	px := brokertest.NewProxy(t, c.broker.Addr())
	const thing = "gw-cout"
	cfg, _ := gatewayConfig(t, thing, px.URL(), t.TempDir(), "cloud_wins")
	d := gateway(t, cfg)
	waitFor(t, "link up", d.Link.Connected)
	c.waitShadow(t, thing, "", "gateway up", func(g *shadow.GetAccepted) bool { return g.State.Reported["gate_motor"] != nil })
	px.Cut()
	waitFor(t, "gateway offline", func() bool { return !d.Link.Connected() })
	c.send(t, thing, req("MOTOR_1_ON", "out-1", ""))
	c.send(t, thing, req("MOTOR_1_ON", "out-1", "")) // a resend
	c.send(t, thing, cancelReq("out-1"))
	c.send(t, thing, cancelReq("out-2"))
	c.send(t, thing, req("SET_SPEED", "out-2", `{"speed":50}`))
	px.Restore()
	for _, tid := range []string{"out-1", "out-2"} {
		if a := c.waitAck(t, thing, tid, command.StatusFailure); a.Reason != command.ReasonCanceled {
			t.Fatalf("%s: %+v", tid, a)
		}
	}
	c.send(t, thing, req("SET_SPEED", "out-3", `{"speed":5}`))
	c.waitAck(t, thing, "out-3", command.StatusSuccess)
	var h []*store.Change
	d.Store.View(func(tx *store.Tx) (err error) { h, err = tx.History("gate_motor", 100); return err })
	if len(h) != 1 || h[0].TID != "out-3" {
		t.Fatalf("only out-3 may have moved the motor: %+v", h)
	}
	if n := d.Commands.Stats().Executed; n != 1 {
		t.Fatalf("executed %d", n)
	}
}

// A cancel before, during and after approval; a cancel of a tid nobody
// sent; a cancel of a command queued behind a slow one; a cancel too late.
func TestCancelOutcomes(t *testing.T) {
	c := newCloud(t)
	const thing = "gw-cx"
	cfg, _ := gatewayConfig(t, thing, c.broker.URL(), t.TempDir(), "cloud_wins")
	d := gateway(t, cfg)
	waitFor(t, "link up", d.Link.Connected)
	c.waitShadow(t, thing, "", "gateway up", func(g *shadow.GetAccepted) bool { return g.State.Reported["valve"] != nil })
	b := []string{"--broker", c.broker.URL()}
	cancel := func(tid string, code int, contains ...string) ctlResult {
		t.Helper()
		r := shadowctl(t, append([]string{"command", "cancel", thing, tid, "--backoff", "500ms"}, b...)...)
		r.must(t, code, contains...)
		return r
	}
	history := func(actuator string) []*store.Change {
		var h []*store.Change
		if err := d.Store.View(func(tx *store.Tx) (err error) { h, err = tx.History(actuator, 1000); return err }); err != nil {
			t.Fatal(err)
		}
		return h
	}

	t.Run("during approval", func(t *testing.T) {
		c.send(t, thing, req("UNLOCK", "ap-during", ""))
		waitFor(t, "an awaiting-approval heartbeat", func() bool { return len(c.acks(thing, "ap-during")) >= 2 })
		cancel("ap-during", 0, "ap-during CANCELED")
		if err := d.Commands.Approve("ap-during"); !errors.Is(err, command.ErrNotAwaiting) {
			t.Fatalf("approve after cancel: %v", err)
		}
		// The next command on the door takes its place, awaits approval
		// and beats: by its second heartbeat the canceled one would have
		// beaten too, had its heartbeats not stopped at its final ack.
		c.send(t, thing, req("UNLOCK", "ap-next", ""))
		waitFor(t, "two heartbeats of the next", func() bool { return len(c.acks(thing, "ap-next")) >= 3 })
		acks := c.acks(thing, "ap-during")
		if last := acks[len(acks)-1]; last.Status != command.StatusFailure || last.Reason != command.ReasonCanceled {
			t.Fatalf("a heartbeat after the final ack: %+v", acks)
		}
		if len(c.finalAcks(thing, "ap-during")) != 1 {
			t.Fatalf("final acks: %v", c.finalAcks(thing, "ap-during"))
		}
		if read(t, d, "front_door")["locked"] != true {
			t.Fatal("the door unlocked")
		}
		if err := d.Commands.Reject("ap-next"); err != nil {
			t.Fatal(err)
		}
		c.waitAck(t, thing, "ap-next", command.StatusFailure)
	})

	t.Run("before approval", func(t *testing.T) {
		cancel("ap-before", 0, "ap-before CANCELED")
		c.send(t, thing, req("UNLOCK", "ap-before", ""))
		waitFor(t, "the request answered", func() bool { return len(c.finalAcks(thing, "ap-before")) == 2 })
		f := c.finalAcks(thing, "ap-before")
		if f[0] != f[1] || !strings.Contains(f[1], `"reason":"canceled"`) {
			t.Fatalf("the request must get the cancel's ack: %v", f)
		}
		for _, a := range c.acks(thing, "ap-before") {
			if a.Status == command.StatusRunning {
				t.Fatalf("a canceled request was accepted: %+v", a)
			}
		}
		if err := d.Commands.Approve("ap-before"); !errors.Is(err, command.ErrNotAwaiting) {
			t.Fatalf("approve: %v", err)
		}
	})

	t.Run("after approval", func(t *testing.T) {
		c.send(t, thing, req("UNLOCK", "ap-after", ""))
		waitFor(t, "ap-after awaiting", func() bool { return d.Commands.Approve("ap-after") == nil })
		c.waitAck(t, thing, "ap-after", command.StatusSuccess)
		r := cancel("ap-after", 1, "ap-after ALREADY FINISHED: SUCCESS", `"front_door":{"locked":false}`,
			"cannot undo", "ROLLBACK is the way back", "shadowctl command send "+thing+" ROLLBACK actuator=front_door")
		waitFor(t, "the operator saw the cancel's answer", func() bool { return len(c.finalAcks(thing, "ap-after")) == 2 })
		f := c.finalAcks(thing, "ap-after")
		if f[0] != f[1] {
			t.Fatalf("the cancel must get the recorded final ack: %v\n%s", f, r.stdout)
		}
		if read(t, d, "front_door")["locked"] != false {
			t.Fatal("a cancel changed the door")
		}
	})

	t.Run("unknown tid", func(t *testing.T) {
		cancel("nobody-sent-this", 0, "nobody-sent-this CANCELED")
		cancel("nobody-sent-this", 0, "CANCELED") // idempotent
		waitFor(t, "the operator saw both answers", func() bool { return len(c.finalAcks(thing, "nobody-sent-this")) == 2 })
		f := c.finalAcks(thing, "nobody-sent-this")
		if f[0] != f[1] {
			t.Fatalf("acks: %v", f)
		}
		var rec *store.Command
		d.Store.View(func(tx *store.Tx) (err error) { rec, err = tx.GetCommand("nobody-sent-this"); return err })
		if rec == nil || !rec.Done() || rec.Request != nil {
			t.Fatalf("the cancel is remembered as a finished record: %+v", rec)
		}
	})

	t.Run("queued behind a slow one", func(t *testing.T) {
		n := d.Commands.Stats().Executed
		c.send(t, thing, req("OPEN_VALVE", "q-slow", ""))
		c.send(t, thing, req("CLOSE_VALVE", "q-next", ""))
		waitFor(t, "q-slow started", func() bool { return changedBy(history("valve"), "q-slow") })
		cancel("q-next", 0, "q-next CANCELED")
		c.waitAck(t, thing, "q-slow", command.StatusSuccess)
		c.send(t, thing, req("MOTOR_1_ON", "q-after", ""))
		c.send(t, thing, req("CLOSE_VALVE", "q-close", ""))
		c.waitAck(t, thing, "q-close", command.StatusSuccess)
		c.waitAck(t, thing, "q-after", command.StatusSuccess)
		if changedBy(history("valve"), "q-next") {
			t.Fatal("a canceled command ran")
		}
		if got := d.Commands.Stats().Executed - n; got != 3 {
			t.Fatalf("executed %d, want 3 (q-slow, q-after, q-close)", got)
		}
	})

	t.Run("too late", func(t *testing.T) {
		c.send(t, thing, req("OPEN_VALVE", "late-1", ""))
		waitFor(t, "late-1 started", func() bool { return changedBy(history("valve"), "late-1") })
		r := cancel("late-1", 1, "late-1 TOO LATE: SUCCESS", "too late to cancel", "already running", "ROLLBACK actuator=valve")
		c.waitAck(t, thing, "late-1", command.StatusSuccess)
		acks := c.acks(thing, "late-1")
		sawTooLate := false
		for _, a := range acks {
			if a.Status == command.StatusRunning && a.Reason == command.ReasonCancelTooLate {
				sawTooLate = true
			}
		}
		if !sawTooLate || acks[len(acks)-1].Status != command.StatusSuccess || len(c.finalAcks(thing, "late-1")) != 1 {
			t.Fatalf("want RUNNING %q then one SUCCESS: %+v\n%s", command.ReasonCancelTooLate, acks, r.stderr)
		}
	})
}

// A cancel that lands while its command waits for its actuator's worker
// (held by a change the shadow asked for) is the race a cancel and a
// start run: the command has begun, but its start is not recorded. The
// start's transaction finds the record finished and refuses, and the
// command never touches the hardware; its one final ack is the cancel's,
// and no heartbeat follows it. The worker is held by hardware the test
// releases (test_latch), so the order is the test's, not the machine's.
func TestCancelWhileWaitingForItsActuator(t *testing.T) {
	c := newCloud(t)
	const thing = "gw-cw"
	dir := t.TempDir()
	gatewayConfig(t, thing, c.broker.URL(), dir, "cloud_wins") // writes the file this test extends
	path := filepath.Join(dir, "shadowgate.yaml")
	y, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ys := strings.Replace(string(y), "actuators:\n", "actuators:\n  latch: {driver: test_latch}\n", 1)
	ys = strings.Replace(ys, "  types:\n", "  types:\n    OPEN_LATCH: {actuator: latch, set: {open: true}}\n    CLOSE_LATCH: {actuator: latch, set: {open: false}}\n", 1)
	if err := os.WriteFile(path, []byte(ys), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := daemon.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	d := gateway(t, cfg)
	waitFor(t, "link up", d.Link.Connected)
	c.waitShadow(t, thing, "", "gateway up", func(g *shadow.GetAccepted) bool { return g.State.Reported["latch"] != nil })
	waitFor(t, "the backlog hold over", func() bool { return !d.Commands.Stats().Held })
	executed := d.Commands.Stats().Executed

	entered, release := latch.hold()
	defer release()
	c.desire(t, thing, "", `{"latch":{"open":true}}`)
	<-entered // the desired state holds the latch's worker

	c.send(t, thing, req("CLOSE_LATCH", "cw-1", ""))
	running := func() int {
		n := 0
		for _, a := range c.acks(thing, "cw-1") {
			if a.Status == command.StatusRunning {
				n++
			}
		}
		return n
	}
	// Accepted, then a heartbeat: the command has begun, and waits for
	// the worker.
	waitFor(t, "cw-1 begun (a heartbeat after its acceptance)", func() bool { return running() >= 2 })
	c.send(t, thing, cancelReq("cw-1"))
	waitFor(t, "the cancel's ack", func() bool { return len(c.finalAcks(thing, "cw-1")) == 1 })
	release()

	// The next command on the latch runs once cw-1 has left its lane.
	c.send(t, thing, req("OPEN_LATCH", "cw-2", ""))
	c.waitAck(t, thing, "cw-2", command.StatusSuccess)
	if f := c.finalAcks(thing, "cw-1"); len(f) != 1 || !strings.Contains(f[0], `"reason":"canceled"`) {
		t.Fatalf("final acks of cw-1: %v, want one FAILURE canceled", f)
	}
	if acks := c.acks(thing, "cw-1"); acks[len(acks)-1].Status != command.StatusFailure {
		t.Fatalf("an ack after the cancel's: %+v", acks)
	}
	var h []*store.Change
	if err := d.Store.View(func(tx *store.Tx) (err error) { h, err = tx.History("latch", 1000); return err }); err != nil {
		t.Fatal(err)
	}
	if changedBy(h, "cw-1") {
		t.Fatal("the canceled command changed the latch")
	}
	if got := d.Commands.Stats().Executed - executed; got != 1 {
		t.Fatalf("executed %d, want 1 (cw-2)", got)
	}
}

// A cancel of an unknown tid is kept within the inbox quota's headroom;
// past it the gateway says it could not record it.
func TestCancelInboxFull(t *testing.T) {
	c := newCloud(t)
	const thing = "gw-cfull"
	cfg, _ := cancelConfig(t, thing, c.broker.URL(), t.TempDir(), "", 4)
	d := gateway(t, cfg)
	waitFor(t, "link up", d.Link.Connected)
	b := []string{"--broker", c.broker.URL()}
	for i := range 4 {
		tid := fmt.Sprintf("fill-%d", i)
		c.send(t, thing, req("SET_SPEED", tid, fmt.Sprintf(`{"speed":%d}`, i)))
		c.waitAck(t, thing, tid, command.StatusSuccess)
	}
	shadowctl(t, append([]string{"command", "cancel", thing, "full-1"}, b...)...).must(t, 0, "full-1 CANCELED")
	shadowctl(t, append([]string{"command", "cancel", thing, "full-2"}, b...)...).must(t, 1, "full-2 NOT CANCELED", "cancel not recorded", "inbox is full", "did not record the cancel")
	c.send(t, thing, req("MOTOR_1_ON", "full-1", ""))
	c.send(t, thing, req("MOTOR_1_ON", "full-2", ""))
	waitFor(t, "both answered", func() bool {
		return len(c.finalAcks(thing, "full-1")) == 2 && len(c.finalAcks(thing, "full-2")) == 2
	})
	if f := c.finalAcks(thing, "full-1"); f[0] != f[1] {
		t.Fatalf("full-1: %v", f)
	}
	if f := c.finalAcks(thing, "full-2"); !strings.Contains(f[1], "inbox is full") {
		t.Fatalf("full-2: %v", f)
	}
	if n := d.Commands.Stats().Executed; n != 4 {
		t.Fatalf("executed %d", n)
	}
}

// A cancel of a tid whose request never comes is forgotten after
// commands.retention, like a finished command; the tid is then new again.
func TestCancelOfUnknownTIDExpires(t *testing.T) {
	c := newCloud(t)
	dir := t.TempDir()
	const thing = "gw-cexp"
	_, cfgPath := cancelConfig(t, thing, c.broker.URL(), dir, "2s", 0)
	sock := filepath.Join(dir, "api.sock")
	p := startProcess(t, cfgPath)
	c.waitShadow(t, thing, "", "gateway up", func(g *shadow.GetAccepted) bool { return g.State.Reported["gate_motor"] != nil })
	b := []string{"--broker", c.broker.URL()}
	shadowctl(t, append([]string{"command", "cancel", thing, "ghost-1"}, b...)...).must(t, 0, "ghost-1 CANCELED")
	at := time.Now()
	shadowctl(t, "commands", "--socket", sock).must(t, 0, "ghost-1", "canceled")
	// Finished commands expire when the gateway starts and every hour.
	waitFor(t, "the cancel older than the retention", func() bool { return time.Since(at) > 3*time.Second })
	stopProcess(t, p)
	startProcess(t, cfgPath)
	waitFor(t, "the local API", func() bool { return shadowctl(t, "status", "--socket", sock).code == 0 })
	// The start's expiry pass runs beside the local API: wait for it.
	waitFor(t, "the cancel to expire at the start", func() bool {
		r := shadowctl(t, "commands", "--socket", sock)
		return r.code == 0 && !strings.Contains(r.stdout, "ghost-1")
	})
	c.send(t, thing, req("MOTOR_1_ON", "ghost-1", ""))
	c.waitAck(t, thing, "ghost-1", command.StatusSuccess)
}

// startProcessKillOn runs shadowgated and kills it (SIGKILL) the moment it
// logs a line matching pattern; killed is closed then.
func startProcessKillOn(t *testing.T, cfgPath, pattern string) (killed <-chan struct{}) {
	t.Helper()
	cmd := exec.Command(gatewayBin, "--config", cfgPath)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	k := make(chan struct{})
	var log strings.Builder
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		fired := false
		for sc.Scan() {
			l := sc.Text()
			log.WriteString(l + "\n")
			if !fired && strings.Contains(l, pattern) {
				cmd.Process.Signal(syscall.SIGKILL)
				fired = true
			}
		}
		cmd.Wait()
		if fired {
			close(k)
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("shadowgated (pid %d, killed on %q) output:\n%s", cmd.Process.Pid, pattern, log.String())
		}
	})
	return k
}

// kill -9 between the cancel's receipt and its ack: after the restart the
// command is still canceled and never runs. The command is queued behind a
// slow one on the same actuator (it cannot have started). The gateway is
// killed the moment it logs the cancel's receipt (before its write is
// durable: after the restart the queued command is recovered as queued,
// and the broker delivers the cancel again), or the moment it logs the
// cancel's outcome (durable, its ack in the outbox: after the restart the
// ack goes out, and the cancel delivered again gets the same answer).
func TestCancelKill9BetweenReceiptAndAck(t *testing.T) {
	c := newCloud(t)
	dir := t.TempDir()
	const thing = "gw-ck9"
	// The gateway's uplink runs through a proxy that withholds the
	// canceled command's acks from the moment the cancel is sent until
	// the kill, so that every kill lands before the cancel's answer
	// reached the operator (racing the kill against the ack could not
	// tell the two apart).
	px := brokertest.NewFilterProxy(t, c.broker.Addr(), func(string, []byte) bool { return false })
	_, cfgPath := gatewayConfig(t, thing, px.URL(), dir, "cloud_wins")
	sock := filepath.Join(dir, "api.sock")
	points := []struct{ name, line string }{
		{"at its receipt", `msg="command cancel received"`},
		{"once it is durable", `msg="command canceled before it started"`},
	}
	for round, at := range points {
		slow, queued, after := fmt.Sprintf("k9-slow-%d", round), fmt.Sprintf("k9-q-%d", round), fmt.Sprintf("k9-after-%d", round)
		killed := startProcessKillOn(t, cfgPath, at.line)
		waitFor(t, "the local API", func() bool { return shadowctl(t, "status", "--socket", sock).code == 0 })
		c.waitShadow(t, thing, "", "gateway up", func(g *shadow.GetAccepted) bool { return g.State.Reported["valve"] != nil })
		c.send(t, thing, req("OPEN_VALVE", slow, ""))
		c.send(t, thing, req("CLOSE_VALVE", queued, ""))
		c.waitAck(t, thing, queued, command.StatusRunning)
		waitFor(t, slow+" started", func() bool { return changedBy(historyOf(t, sock, "valve"), slow) })
		px.DropFromClient(func(topic string, payload []byte) bool {
			return topic == command.AckTopic(thing) && strings.Contains(string(payload), `"`+queued+`"`)
		})
		c.send(t, thing, cancelReq(queued))
		select {
		case <-killed:
		case <-time.After(20 * time.Second):
			t.Fatalf("the gateway never logged %s", at.line)
		}
		if f := c.finalAcks(thing, queued); len(f) != 0 {
			t.Fatalf("round %d: a final ack of %s passed the proxy: %q", round, queued, f)
		}
		px.DropFromClient(nil)
		p := startProcess(t, cfgPath)
		if a := c.waitAck(t, thing, queued, command.StatusFailure); a.Reason != command.ReasonCanceled {
			t.Fatalf("round %d: %s ended %+v, want canceled", round, queued, a)
		}
		c.waitAck(t, thing, slow, command.StatusFailure) // interrupted
		c.send(t, thing, req("CLOSE_VALVE", after, ""))
		c.waitAck(t, thing, after, command.StatusSuccess)
		h := historyOf(t, sock, "valve")
		if changedBy(h, queued) {
			t.Fatalf("round %d: %s ran after it was canceled: %+v", round, queued, h)
		}
		for _, f := range c.finalAcks(thing, queued) {
			if !strings.Contains(f, `"reason":"canceled"`) {
				t.Fatalf("round %d: a final ack other than canceled: %s", round, f)
			}
		}
		again := strings.Contains(p.output(), `msg="command canceled before it started" component=command tid=`+queued)
		t.Logf("round %d, killed %s: canceled anew after the restart: %v", round, at.name, again)
		p.kill9()
	}
}

// Until the first connect's backlog is in (a second of quiet after the
// connect), commands wait, and shadowctl status says so; then it does not.
func TestBacklogHoldShownInStatus(t *testing.T) {
	c := newCloud(t)
	px := brokertest.NewProxy(t, c.broker.Addr())
	px.Cut() // no connect yet: the hold lasts
	cfg, _ := gatewayConfig(t, "gw-held", px.URL(), t.TempDir(), "cloud_wins")
	d := gateway(t, cfg)
	if !d.Commands.Stats().Held {
		t.Fatal("before the first connect commands are not held")
	}
	const held = "waiting for the broker's backlog"
	shadowctl(t, "status", "--socket", cfg.API.Socket).must(t, 0, held)
	px.Restore()
	waitFor(t, "link up", d.Link.Connected)
	waitFor(t, "the hold over", func() bool { return !d.Commands.Stats().Held })
	if r := shadowctl(t, "status", "--socket", cfg.API.Socket); r.code != 0 || strings.Contains(r.stdout, held) {
		t.Fatalf("status after the hold: exit %d\n%s", r.code, r.stdout)
	}
}
