package daemon_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shadowgate/shadowgate/agent/clock"
	"github.com/shadowgate/shadowgate/agent/clock/clocktest"
	"github.com/shadowgate/shadowgate/agent/command"
	"github.com/shadowgate/shadowgate/agent/link"
	"github.com/shadowgate/shadowgate/agent/link/brokertest"
	"github.com/shadowgate/shadowgate/agent/shadowsvc"
	"github.com/shadowgate/shadowgate/store"
)

// A gateway without a real-time clock, as a real process: its system clock
// comes from a file the test rewrites (clocktest).
func clockFile(t *testing.T, s clocktest.Setting) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "clock.json")
	if err := clocktest.Write(path, s); err != nil {
		t.Fatal(err)
	}
	t.Setenv(clocktest.Env, path)
	return path
}

// bareCloud is a broker and an operator, without a shadow service yet:
// nobody answers the gateway's shadow requests, so it learns no cloud time.
func bareCloud(t *testing.T) *cloud {
	t.Helper()
	c := &cloud{broker: brokertest.Start(t)}
	c.op, _ = link.New(link.Options{Broker: c.broker.URL(), ClientID: "operator", MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond})
	c.op.Handle("commands/+/ack", c.collect)
	runLink(t, c.op)
	waitFor(t, "operator connected", c.op.Connected)
	return c
}

// startService attaches the shadow service: the gateway's next shadow
// request is answered, with the cloud's timestamp.
func (c *cloud) startService(t *testing.T) {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "cloud.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	c.svcLink, _ = link.New(link.Options{Broker: c.broker.URL(), ClientID: "cloud-shadowsvc", MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond})
	c.svc = shadowsvc.New(shadowsvc.Options{Root: root, Link: c.svcLink, Store: st})
	runService(t, c.svc)
	runLink(t, c.svcLink)
	waitFor(t, "shadow service connected", c.svcLink.Connected)
}

// waitLong is waitFor with room for the gateway's shadow GET to be sent
// again (its answer timeout doubles: 5s, 10s, 20s).
func waitLong(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitWithin(t, 90*time.Second, what, cond)
}

// A Pi that was off for two days boots two days behind, its clock not
// synchronized. A command queued with an expires_at an hour ago (by the
// cloud) must never run, although the gateway's clock says it has 47 hours
// left: it waits, RUNNING "waiting for a trusted clock" with heartbeats,
// until the cloud's first answer tells the time, then fails "expired". A
// command still valid by the cloud runs then.
func TestBootTwoDaysBehind(t *testing.T) {
	const thing = "gw-rtc"
	clockFile(t, clocktest.Setting{Offset: -48 * time.Hour, Synced: false})
	c := bareCloud(t)
	dir := t.TempDir()
	_, cfgPath := gatewayConfig(t, thing, c.broker.URL(), dir, "cloud_wins")
	p := runGateway(t, cfgPath, filepath.Join(dir, "api.sock"))
	waitFor(t, "gateway connected", func() bool { return p.status(t).Connected })
	if st := p.status(t); st.Clock == nil || st.Clock.Trusted || st.Clock.Source != clock.SourceNone {
		t.Fatalf("clock before any cloud time: %+v", st.Clock)
	}

	now := time.Now() // the true time: the cloud's
	stale := fmt.Sprintf(`{"cmd":"MOTOR_1_ON","tid":"stale","status":"REQUEST","expires_at":%q}`, now.Add(-time.Hour).UTC().Format(time.RFC3339))
	fresh := fmt.Sprintf(`{"cmd":"OPEN_VALVE","tid":"fresh","status":"REQUEST","expires_at":%q}`, now.Add(time.Hour).UTC().Format(time.RFC3339))
	c.send(t, thing, stale)
	c.send(t, thing, fresh)
	// Both wait, and say why, again and again (heartbeat 1s).
	waiting := func(tid string) int {
		n := 0
		for _, a := range c.acks(thing, tid) {
			if a.Status == command.StatusRunning && a.Reason == command.ReasonWaitingForClock {
				n++
			}
		}
		return n
	}
	waitFor(t, "RUNNING waiting for a trusted clock, with heartbeats", func() bool { return waiting("stale") >= 3 && waiting("fresh") >= 3 })
	for _, a := range c.acks(thing, "stale") {
		if a.Status != command.StatusRunning {
			t.Fatalf("before any trusted time: %+v", a)
		}
		ts, err := time.Parse(time.RFC3339, a.TS)
		if err != nil || !a.TSUntrusted || ts.After(now.Add(-47*time.Hour)) {
			t.Fatalf("an ack stamped by the untrusted clock must say so and carry it: %+v", a)
		}
	}
	if st := p.state(t, "gate_motor"); st["running"] != false {
		t.Fatalf("the stale command ran: %v", st)
	}
	// Approved, a command still waits for the clock, and a cancel stops it.
	door := fmt.Sprintf(`{"cmd":"UNLOCK","tid":"door","status":"REQUEST","expires_at":%q}`, now.Add(time.Hour).UTC().Format(time.RFC3339))
	c.send(t, thing, door)
	waitFor(t, "door awaiting approval", func() bool {
		for _, a := range c.acks(thing, "door") {
			if a.Reason == command.ReasonAwaitingApproval {
				return true
			}
		}
		return false
	})
	shadowctl(t, "approve", "door", "--socket", p.sock).must(t, 0)
	waitFor(t, "door approved, waiting for the clock", func() bool { return waiting("door") >= 2 })
	c.send(t, thing, `{"tid":"door","status":"CANCEL"}`)
	if a := c.waitAck(t, thing, "door", command.StatusFailure); a.Reason != command.ReasonCanceled {
		t.Fatalf("door: %+v", a)
	}

	// The cloud answers: its timestamp is the time.
	c.startService(t)
	a := c.waitAck(t, thing, "stale", command.StatusFailure)
	if !strings.HasPrefix(a.Reason, "expired at "+now.Add(-time.Hour).UTC().Format(time.RFC3339)) || !strings.Contains(a.Reason, "the cloud's time is") {
		t.Fatalf("stale: %+v", a)
	}
	waitLong(t, "the fresh command", func() bool {
		for _, a := range c.acks(thing, "fresh") {
			if a.Status == command.StatusSuccess || a.Status == command.StatusFailure {
				return true
			}
		}
		return false
	})
	f := c.waitAck(t, thing, "fresh", command.StatusSuccess)
	if ts, err := time.Parse(time.RFC3339, f.TS); err != nil || f.TSUntrusted || time.Until(ts).Abs() > time.Minute {
		t.Fatalf("the final ack is not stamped with the trusted time: %+v", f)
	}
	if h := p.history(t, "gate_motor"); len(h) != 0 {
		t.Fatalf("the stale command touched the motor: %+v", h)
	}
	if h := p.history(t, "front_door"); len(h) != 0 {
		t.Fatalf("the canceled command touched the door: %+v", h)
	}
	for _, a := range c.acks(thing, "door") {
		if a.Status == command.StatusSuccess {
			t.Fatalf("the canceled command ran: %+v", a)
		}
	}
	if st := p.state(t, "gate_motor"); st["running"] != false {
		t.Fatalf("the stale command ran: %v", st)
	}
	if h := p.history(t, "valve"); len(h) != 1 || h[0].TimeUntrusted || time.Until(h[0].Time).Abs() > time.Minute {
		t.Fatalf("valve history: %+v", h)
	}
	st := p.status(t)
	if st.Clock == nil || !st.Clock.Trusted || st.Clock.Source != clock.SourceCloud ||
		st.Clock.Offset < 48*time.Hour-10*time.Second || st.Clock.Offset > 48*time.Hour+10*time.Second {
		t.Fatalf("clock after the cloud's answer: %+v", st.Clock)
	}
	r := shadowctl(t, "status", "--socket", p.sock)
	r.must(t, 0, "clock", "cloud time; the system clock is ", " behind (±")
	p.stop(t)
	if out := p.out.String(); !strings.Contains(out, "command waits for a trusted clock") || !strings.Contains(out, "cloud time known") {
		t.Fatalf("the log does not say what the clock did:\n%s", out)
	}
}

// The clock jumps 50 years forward (a Pi booted with a bad time, then NTP;
// or the reverse): the record of a finished command must not look ancient.
// The same tid sent again after the jump and a restart returns the recorded
// ack and never runs the command a second time.
func TestClockJumpsFiftyYearsForward(t *testing.T) {
	const thing = "gw-jump"
	path := clockFile(t, clocktest.Setting{Synced: true})
	c := newCloud(t)
	dir := t.TempDir()
	_, cfgPath := gatewayConfig(t, thing, c.broker.URL(), dir, "cloud_wins")
	sock := filepath.Join(dir, "api.sock")
	p := runGateway(t, cfgPath, sock)
	waitFor(t, "gateway connected", func() bool { return p.status(t).Connected })
	req := `{"cmd":"MOTOR_1_ON","tid":"once","status":"REQUEST"}`
	c.send(t, thing, req)
	c.waitAck(t, thing, "once", command.StatusSuccess)
	final := func() []string {
		var out []string
		for _, a := range c.rawAcks(thing, "once") {
			if strings.Contains(a, `"SUCCESS"`) {
				out = append(out, a)
			}
		}
		return out
	}
	first := final()[0]
	p.stop(t)
	// The motor is stopped by hand meanwhile: a second run would show.
	if err := clocktest.Write(path, clocktest.Setting{Offset: 50 * 365 * 24 * time.Hour, Synced: true}); err != nil {
		t.Fatal(err)
	}
	p = runGateway(t, cfgPath, sock)
	waitFor(t, "gateway connected", func() bool { return p.status(t).Connected })
	if st := p.status(t); st.Clock == nil || st.Clock.Source != clock.SourceSystem || st.Clock.Now.Year() < time.Now().Year()+49 {
		t.Fatalf("clock after the jump: %+v", st.Clock)
	}
	shadowctl(t, "set", "gate_motor", "running=false", "--socket", sock).must(t, 0)
	c.send(t, thing, req)
	waitFor(t, "the recorded ack again", func() bool { return len(final()) >= 2 })
	if again := final()[1]; again != first {
		t.Fatalf("after the jump the tid got a new answer (run again?):\nfirst %s\nagain %s", first, again)
	}
	var commanded int
	for _, h := range p.history(t, "gate_motor") {
		if h.Source == store.SourceCommand {
			commanded++
		}
	}
	if commanded != 1 {
		t.Fatalf("the command ran %d times", commanded)
	}
	if st := p.state(t, "gate_motor"); st["running"] != false {
		t.Fatalf("the command ran again: %v", st)
	}
}

// TLS to a broker whose certificate is valid from tomorrow: the gateway's
// log and status say the clock is before the certificate, and it connects
// once the clock moves.
func TestTLSBeforeTheCertificateUntilTheClockMoves(t *testing.T) {
	const thing = "gw-tls"
	path := clockFile(t, clocktest.Setting{Synced: false})
	t.Setenv("WATCHDOG_USEC", "2000000") // a STATUS line every second
	dir := t.TempDir()
	tomorrow := time.Now().Add(24 * time.Hour).Truncate(time.Second)
	cert, key := brokertest.ServerCert(t, dir, tomorrow, tomorrow.Add(72*time.Hour))
	b := brokertest.StartWith(t, brokertest.Config{TLSCert: cert, TLSKey: key})
	_, cfgPath := gatewayConfig(t, thing, b.URL(), dir, "cloud_wins")
	y, _ := os.ReadFile(cfgPath)
	y = []byte(strings.Replace(string(y), "  topic_root:", "  tls: {ca: "+cert+"}\n  topic_root:", 1))
	if err := os.WriteFile(cfgPath, y, 0o600); err != nil {
		t.Fatal(err)
	}
	p := runGateway(t, cfgPath, filepath.Join(dir, "api.sock"))
	want := "is before the certificate's NotBefore " + tomorrow.UTC().Format(time.RFC3339)
	waitFor(t, "the clock error in the status", func() bool { return strings.Contains(p.status(t).LastError, want) })
	if le := p.status(t).LastError; !strings.Contains(le, "system clock ") || !strings.Contains(le, "; waiting for time sync") {
		t.Fatalf("last error %q", le)
	}
	waitFor(t, "the clock error in the log", func() bool { return strings.Contains(p.out.String(), want) })
	waitFor(t, "the clock error on the systemd STATUS line", func() bool { return p.notify.Count("waiting for time sync") >= 1 })
	if p.status(t).Connected {
		t.Fatal("connected before the certificate's validity")
	}
	// NTP syncs: the clock steps to two days on.
	if err := clocktest.Write(path, clocktest.Setting{Offset: 48 * time.Hour, Synced: true}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "connected once the clock moved", func() bool { return p.status(t).Connected })
	waitFor(t, "the step and the synchronized clock in the status", func() bool {
		st := p.status(t).Clock
		return st != nil && st.Source == clock.SourceSystem && st.LastStep != nil && st.LastStep.By > 47*time.Hour
	})
}
