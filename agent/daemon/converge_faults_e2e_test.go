package daemon_test

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	gosync "sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shadowgate/shadowgate/agent/command"
	"github.com/shadowgate/shadowgate/agent/ctl"
	"github.com/shadowgate/shadowgate/agent/link"
	"github.com/shadowgate/shadowgate/agent/link/brokertest"
	"github.com/shadowgate/shadowgate/agent/shadowsvc"
	"github.com/shadowgate/shadowgate/agent/sync"
	"github.com/shadowgate/shadowgate/store"
)

// Faults between the gateway and the shadow service: messages lost on the
// way to the gateway, answers that never come, a service that is not there.

// filterRig is a rig whose gateway reaches the broker through a proxy that
// swallows the messages drop selects.
func filterRig(t *testing.T, thing string, o convergeOpts, drop func(topic string, payload []byte) bool) (*rig, *brokertest.FilterProxy) {
	t.Helper()
	c := newCloud(t)
	px := brokertest.NewFilterProxy(t, c.broker.Addr(), drop)
	w := watchShadows(t, c.broker.URL(), thing)
	o.broker = px.URL()
	cfg, _ := convergeConfig(t, thing, t.TempDir(), o)
	r := &rig{t: t, c: c, w: w, thing: thing, d: gateway(t, cfg)}
	for _, n := range r.d.Sync.ShadowNames() {
		r.waitSettled(n, "", "shadow "+n+" created", func(d, rep map[string]any) bool { return len(rep) > 0 })
	}
	return r, px
}

// A delta swallowed on its way to the gateway: the update/accepted of the
// same change carries the desired state too, and the gateway acts on it.
func TestSwallowedDeltaRepaired(t *testing.T) {
	var swallowed atomic.Bool
	r, px := filterRig(t, "gw-swallow", convergeOpts{}, func(topic string, payload []byte) bool {
		return strings.HasSuffix(topic, "/update/delta") && bytes.Contains(payload, []byte(`"clientToken":"op-`)) && swallowed.CompareAndSwap(false, true)
	})
	tok := r.desire("", `{"lamp":{"on":true}}`)
	r.waitSettled("", tok, "the swallowed delta's state applied", func(d, rep map[string]any) bool { return field(rep, "lamp", "on") == "true" })
	if got := px.Dropped(); len(got) != 1 {
		t.Fatalf("the proxy swallowed %v", got)
	}
	if r.hw("lamp", "on") != "true" {
		t.Fatal("lamp off")
	}
}

// Every message of one update swallowed (its delta and its accepted): the
// gateway cannot know, until the next message of the shadow shows a
// version it skipped; then it fetches the shadow and converges.
func TestLostUpdateFoundByVersionGap(t *testing.T) {
	var lost atomic.Value
	lost.Store("none")
	r, px := filterRig(t, "gw-gap", convergeOpts{}, func(topic string, payload []byte) bool {
		return bytes.Contains(payload, []byte(`"clientToken":"`+lost.Load().(string)+`"`))
	})
	lost.Store(fmt.Sprintf("op-%s-%d", r.thing, r.seq+1))
	r.desire("", `{"lamp":{"on":true},"motor":{"speed":30}}`)
	waitFor(t, "the update's delta and accepted swallowed", func() bool { return len(px.Dropped()) >= 2 })
	if r.hw("lamp", "on") != "false" {
		t.Fatal("the gateway saw the lost update")
	}
	// Any later message of the shadow: here another client's reported-only
	// update (no delta: a delta would carry the lost desired state too).
	r.seq++
	tok := fmt.Sprintf("op-%s-%d", r.thing, r.seq)
	r.c.publish(t, root+r.thing+"/shadow/update", `{"state":{"reported":{"ui":{"seen":1}}},"clientToken":"`+tok+`"}`)
	r.waitSettled("", tok, "the lost update applied after the gap", func(d, rep map[string]any) bool {
		return field(rep, "lamp", "on") == "true" && field(rep, "motor", "speed") == "30"
	})
	if st := r.d.Sync.Stats(); st.Gaps < 1 {
		t.Fatalf("gap not counted: %+v", st)
	}
}

// The safety net: the answers to the gateway's report never arrive, so its
// replica shows a delta that stands; after stale_delta the gateway fetches
// the shadow, sees the report landed, and is at rest.
func TestStandingDeltaSafetyNet(t *testing.T) {
	r, px := filterRig(t, "gw-net", convergeOpts{staleDelta: "1s"}, func(topic string, payload []byte) bool {
		return strings.HasSuffix(topic, "/update/accepted") && bytes.Contains(payload, []byte(`"clientToken":"sg-`)) &&
			bytes.Contains(payload, []byte(`"reported":{"lamp"`))
	})
	tok := r.desire("", `{"lamp":{"on":true}}`)
	r.waitSettled("", tok, "the gateway at rest after the safety net's fetch", func(d, rep map[string]any) bool { return field(rep, "lamp", "on") == "true" })
	if _, _, delta, _, _ := r.d.Sync.Shadow(""); delta != nil {
		t.Fatalf("the replica keeps a delta: %v", delta)
	}
	st := r.d.Sync.Stats()
	if st.SafetyGets < 1 || len(px.Dropped()) < 1 {
		t.Fatalf("stats %+v, dropped %v", st, px.Dropped())
	}
	// shadowctl status shows the counters.
	var out, errOut strings.Builder
	if code := ctl.Main(context.Background(), []string{"status", "--socket", r.d.Config.API.Socket}, &out, &errOut); code != 0 {
		t.Fatalf("shadowctl status: %d %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "safety-net fetches") || !strings.Contains(out.String(), fmt.Sprintf("%d safety-net fetches", r.d.Sync.Stats().SafetyGets)) {
		t.Fatalf("shadowctl status:\n%s", out.String())
	}
}

// The gateway keeps its shadow requests awaiting an answer under AWS's
// limit of 10 per connection, however many shadows change at once.
func TestInFlightShadowRequestsBounded(t *testing.T) {
	var extra strings.Builder
	const n = 16
	for i := range n {
		fmt.Fprintf(&extra, "  l%d: {driver: sim, shadow: s%d, state: {on: false}}\n", i, i)
	}
	r := newRig(t, "gw-bound", convergeOpts{extra: extra.String()})
	toks := make([]string, n)
	for i := range n {
		toks[i] = r.send(fmt.Sprintf("s%d", i), fmt.Sprintf(`{"l%d":{"on":true}}`, i))
	}
	for i := range n {
		r.waitSettled(fmt.Sprintf("s%d", i), toks[i], "shadow applied", func(d, rep map[string]any) bool { return field(rep, fmt.Sprintf("l%d", i), "on") == "true" })
	}
	if m := r.w.maxOutstanding(); m > sync.DefaultMaxInFlight || m == 0 {
		t.Fatalf("%d of the gateway's shadow requests awaited an answer at once (limit %d)", m, sync.DefaultMaxInFlight)
	} else {
		t.Logf("at most %d requests awaited an answer at once", m)
	}
}

// A service that sheds load (429, as AWS does above 10 requests in flight
// on a connection; here above 2 per thing): the gateway's GETs, reports and
// writes are retried with backoff until accepted, none dropped.
func TestThrottled429Retried(t *testing.T) {
	var acts, set strings.Builder
	const n = 16
	for i := range n {
		fmt.Fprintf(&acts, "  l%d: {driver: sim, shadow: s%d, state: {on: false}}\n", i, i)
		fmt.Fprintf(&set, "l%d: {on: true}, ", i)
	}
	r := newRig(t, "gw-429", convergeOpts{extra: acts.String(), extraCmds: "    ALL_ON: {set: {" + strings.TrimSuffix(set.String(), ", ") + "}}\n",
		svc: func(o *shadowsvc.Options) { o.MaxInFlightPerThing = 2 }})
	r.c.send(t, r.thing, req("ALL_ON", "all-on", ""))
	r.c.waitAck(t, r.thing, "all-on", command.StatusSuccess)
	for i := range n {
		r.waitSettled(fmt.Sprintf("s%d", i), "", "the command's state written", func(d, rep map[string]any) bool {
			return field(d, fmt.Sprintf("l%d", i), "on") == "true" && field(rep, fmt.Sprintf("l%d", i), "on") == "true"
		})
	}
	st := r.d.Sync.Stats()
	if r.w.codes()[429] == 0 || st.Retried == 0 || st.Rejected != 0 {
		t.Fatalf("answers refused %v; stats %+v", r.w.codes(), st)
	}
	t.Logf("%d answers 429, %d requests retried", r.w.codes()[429], st.Retried)
}

// svc is a shadow service on the test's broker that can be stopped and
// started again (on the same store).
type svc struct {
	t      *testing.T
	broker *brokertest.Broker
	st     *store.Store
	mu     gosync.Mutex
	stop   func()
}

func newSvc(t *testing.T, b *brokertest.Broker) *svc {
	st, err := store.Open(filepath.Join(t.TempDir(), "cloud.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s := &svc{t: t, broker: b, st: st}
	t.Cleanup(func() { s.halt(); st.Close() })
	return s
}

func (s *svc) run() {
	l, _ := link.New(link.Options{Broker: s.broker.URL(), ClientID: "cloud-shadowsvc", MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond})
	service := shadowsvc.New(shadowsvc.Options{Root: root, Link: l, Store: s.st})
	ctx, cancel := context.WithCancel(context.Background())
	var wg gosync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); l.Run(ctx) }()
	go func() { defer wg.Done(); service.Run(ctx) }()
	s.mu.Lock()
	s.stop = func() { cancel(); wg.Wait() }
	s.mu.Unlock()
	waitFor(s.t, "shadow service connected", l.Connected)
}

func (s *svc) halt() {
	s.mu.Lock()
	stop := s.stop
	s.stop = nil
	s.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// Issue 25, item 8: the broker restarts empty and the gateway (the real
// shadowgated) reconnects before the shadow service does. Its GET and its
// local change are acknowledged by the broker with nobody to receive them;
// the gateway asks again until the service answers, and the cloud ends with
// the gateway's state.
func TestBrokerRestartGatewayBeforeService(t *testing.T) {
	b := brokertest.Start(t)
	s := newSvc(t, b)
	s.run()
	c := &cloud{broker: b}
	c.op, _ = link.New(link.Options{Broker: b.URL(), ClientID: "operator", MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond})
	c.op.Handle(root+"+/shadow/+/+", c.collect)
	runLink(t, c.op)
	w := watchShadows(t, b.URL(), "gw-first")
	dir := t.TempDir()
	_, cfgPath := convergeConfig(t, "gw-first", dir, convergeOpts{broker: b.URL()})
	sock := filepath.Join(dir, "api.sock")
	startProcess(t, cfgPath)
	r := &rig{t: t, c: c, w: w, thing: "gw-first"}
	waitFor(t, "operator connected", c.op.Connected)
	tok := r.desire("", `{"motor":{"speed":10}}`)
	waitCloud(t, w, "", "speed 10 everywhere", func(d, rep map[string]any) bool {
		return w.acceptedAt(tok) > 0 && field(d, "motor", "speed") == "10" && field(rep, "motor", "speed") == "10"
	})

	s.halt()
	b.Stop()
	// A technician changes the motor while the cloud is out of reach.
	var out, errOut strings.Builder
	if code := ctl.Main(context.Background(), []string{"set", "motor", "speed=33", "--socket", sock}, &out, &errOut); code != 0 {
		t.Fatalf("shadowctl set: %d %s", code, errOut.String())
	}
	b.RestartEmpty()
	waitFor(t, "gateway reconnected and its GET sent to nobody", func() bool {
		st := daemonStatus(t, sock)
		return st.Connected && st.Sync.InFlight >= 1
	})
	s.run() // the service comes back last
	waitCloud(t, w, "", "the cloud holds the gateway's change", func(d, rep map[string]any) bool {
		return field(d, "motor", "speed") == "33" && field(rep, "motor", "speed") == "33"
	})
	waitFor(t, "gateway at rest", func() bool { st := daemonStatus(t, sock); return st.Sync.InFlight == 0 && st.OutboxItems == 0 })
	if st := daemonStatus(t, sock); st.Sync.Resent < 1 {
		t.Fatalf("converged without asking again? %+v", st.Sync)
	}
}

// waitCloud waits for the newest document of a shadow to satisfy ok.
func waitCloud(t *testing.T, w *docWatch, name, what string, ok func(desired, reported map[string]any) bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		doc := w.doc(name)
		if ok(doc.State.Desired, doc.State.Reported) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; newest document v%d %+v", what, doc.Version, doc.State)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
