package daemon_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shadowgate/shadowgate/agent/actuate"
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

// The convergence tests: the gateway ends where the last desired state
// says, and the cloud ends with what the gateway has. The actuators take
// 20 ms per change, as the demo's porch light does. The shadow is watched
// passively on update/documents: a GET from the test would itself show the
// gateway the delta.

const convergeYAML = `
gateway: {thing: %s}
cloud:
  broker: %s
  keepalive: 5s
  conflict: %s
  stale_delta: %s
store: {path: %s}
api: {socket: %s}
log: {level: info}
actuators:
  lamp: {driver: sim, state: {on: false}, latency: 20ms}
  motor: {driver: sim, state: {running: false, speed: 0}, latency: 20ms}
  door: {driver: sim, shadow: doors, state: {locked: true}, latency: 20ms}
%s
commands:
  heartbeat: 1s
  types:
    MOTOR_ON: {actuator: motor, set: {running: true}}
    MOTOR_OFF: {actuator: motor, set: {running: false}}
    LAMP_AND_MOTOR_ON: {set: {lamp: {on: true}, motor: {running: true}}}
%s`

const simLatency = 20 * time.Millisecond

type convergeOpts struct {
	conflict   string // default cloud_wins
	staleDelta string // default 30s
	extra      string // more actuators (YAML lines)
	extraCmds  string // more command types (YAML lines)
	broker     string // URL; default the cloud's broker
	svc        func(o *shadowsvc.Options)
}

func convergeConfig(t testing.TB, thing, dir string, o convergeOpts) (*config.Config, string) {
	t.Helper()
	if o.conflict == "" {
		o.conflict = config.CloudWins
	}
	if o.staleDelta == "" {
		o.staleDelta = "30s"
	}
	path := filepath.Join(dir, "shadowgate.yaml")
	y := fmt.Sprintf(convergeYAML, thing, o.broker, o.conflict, o.staleDelta, filepath.Join(dir, "state.db"), filepath.Join(dir, "api.sock"), o.extra, o.extraCmds)
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := daemon.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg, path
}

// docWatch follows one thing's shadows passively: the newest document of
// each shadow (update/documents), the version each clientToken was
// accepted at, and how many of the gateway's requests await an answer.
type docWatch struct {
	mu          sync.Mutex
	docs        map[string]shadow.DocumentSnapshot // by shadow name
	accepted    map[string]int64                   // clientToken → version
	rejected    map[string][]int                   // clientToken → codes
	outstanding map[string]bool                    // the gateway's requests awaiting an answer
	maxOut      int
}

func watchShadows(t testing.TB, brokerURL, thing string) *docWatch {
	t.Helper()
	w := &docWatch{docs: map[string]shadow.DocumentSnapshot{}, accepted: map[string]int64{}, rejected: map[string][]int{},
		outstanding: map[string]bool{}}
	l, err := link.New(link.Options{Broker: brokerURL, ClientID: "watch-" + thing, CleanSession: true,
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	l.Handle(root+thing+"/shadow/#", w.see)
	runLink(t, l)
	waitFor(t, "watcher connected", l.Connected)
	return w
}

func (w *docWatch) see(_ context.Context, m *link.Message) {
	tp, err := shadow.ParseTopic(root, m.Topic)
	if err != nil {
		return
	}
	var head struct {
		ClientToken string `json:"clientToken"`
		Version     int64  `json:"version"`
		Code        int    `json:"code"`
	}
	json.Unmarshal(m.Payload, &head)
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case tp.Suffix == shadow.Request && (tp.Op == shadow.OpGet || tp.Op == shadow.OpUpdate):
		if strings.HasPrefix(head.ClientToken, "sg-") {
			w.outstanding[head.ClientToken] = true
			w.maxOut = max(w.maxOut, len(w.outstanding))
		}
	case tp.Suffix == shadow.SuffixAccepted || tp.Suffix == shadow.SuffixRejected:
		delete(w.outstanding, head.ClientToken)
		if tp.Op == shadow.OpUpdate && tp.Suffix == shadow.SuffixAccepted {
			w.accepted[head.ClientToken] = head.Version
		}
		if tp.Suffix == shadow.SuffixRejected {
			w.rejected[head.ClientToken] = append(w.rejected[head.ClientToken], head.Code)
		}
	case tp.Suffix == shadow.SuffixDocuments:
		var d shadow.Documents
		if json.Unmarshal(m.Payload, &d) == nil && d.Current.Version >= w.docs[tp.Name].Version {
			w.docs[tp.Name] = d.Current
		}
	}
}

func (w *docWatch) doc(name string) shadow.DocumentSnapshot {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.docs[name]
}

func (w *docWatch) acceptedAt(tok string) int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.accepted[tok]
}

func (w *docWatch) codes() map[int]int {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[int]int{}
	for _, cs := range w.rejected {
		for _, c := range cs {
			out[c]++
		}
	}
	return out
}

func (w *docWatch) maxOutstanding() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.maxOut
}

// field is doc[section][key][field] as text ("" when absent).
func field(sec map[string]any, key, f string) string {
	m, _ := sec[key].(map[string]any)
	if v, ok := m[f]; ok {
		return fmt.Sprint(v)
	}
	return ""
}

// rig is a gateway in-process against mosquitto + shadowsvc, watched.
type rig struct {
	t     testing.TB
	c     *cloud
	d     *daemon.Daemon
	w     *docWatch
	thing string
	seq   int
}

func newRig(t testing.TB, thing string, o convergeOpts) *rig {
	t.Helper()
	c := newCloudSvc(t, brokertest.Config{}, o.svc)
	w := watchShadows(t, c.broker.URL(), thing)
	if o.broker == "" {
		o.broker = c.broker.URL()
	}
	cfg, _ := convergeConfig(t, thing, t.TempDir(), o)
	r := &rig{t: t, c: c, w: w, thing: thing}
	r.d = gateway(t, cfg)
	for _, n := range r.d.Sync.ShadowNames() {
		r.waitSettled(n, "", "shadow "+n+" created", func(d, rep map[string]any) bool { return len(rep) > 0 })
	}
	return r
}

// desire publishes a desired state with a fresh clientToken and returns it.
func (r *rig) desire(name, desired string) string {
	r.t.Helper()
	return r.send(name, desired)
}

// send publishes without waiting for the broker's PUBACK, so that two
// changes can leave microseconds apart.
func (r *rig) send(name, desired string) string {
	r.t.Helper()
	r.seq++
	tok := fmt.Sprintf("op-%s-%d", r.thing, r.seq)
	topic := shadow.Topic{Thing: r.thing, Name: name, Op: shadow.OpUpdate}.Build(root)
	if _, err := r.c.op.PublishAsync(topic, false, []byte(`{"state":{"desired":`+desired+`},"clientToken":"`+tok+`"}`)); err != nil {
		r.t.Fatal(err)
	}
	return tok
}

// waitSettled waits until the update tok (if any) was accepted, the
// gateway is at rest on shadow name with it (Settled: nothing to apply, to
// report or awaiting an answer), and the newest document the cloud
// published, as new as the gateway's replica, holds no delta for the
// gateway's keys and satisfies ok.
func (r *rig) waitSettled(name, tok, what string, ok func(desired, reported map[string]any) bool) shadow.DocumentSnapshot {
	r.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		v := r.w.acceptedAt(tok)
		doc := r.w.doc(name)
		_, _, _, held, _ := r.d.Sync.Shadow(name)
		// The document must be at least as new as the gateway's replica,
		// which holds the answer to its own last update.
		if (tok == "" || v > 0) && held >= v && doc.Version >= held && r.d.Sync.Settled(name) &&
			r.noDelta(name, doc) && ok(doc.State.Desired, doc.State.Reported) {
			return doc
		}
		if time.Now().After(deadline) {
			d, rep, delta, ver, _ := r.d.Sync.Shadow(name)
			b, _ := json.Marshal(doc)
			r.t.Fatalf("timed out waiting for %s (token %s accepted at v%d)\ncloud's newest document: %s\ngateway replica v%d desired %v reported %v delta %v; settled %v\nstats %+v",
				what, tok, v, b, ver, d, rep, delta, r.d.Sync.Settled(name), r.d.Sync.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// noDelta: the document's desired and reported agree on every key the
// gateway owns in that shadow.
func (r *rig) noDelta(name string, doc shadow.DocumentSnapshot) bool {
	for _, a := range r.d.Config.Actuators {
		if a.Shadow != name || doc.State.Desired[a.Key] == nil {
			continue
		}
		if shadow.Delta(map[string]any{a.Key: doc.State.Desired[a.Key]}, map[string]any{a.Key: doc.State.Reported[a.Key]}) != nil {
			return false
		}
	}
	return true
}

func (r *rig) hw(actuator, f string) string {
	r.t.Helper()
	st, err := r.d.Manager.Read(context.Background(), actuator)
	if err != nil {
		r.t.Fatal(err)
	}
	return fmt.Sprint(st[f])
}

// A desired change reversed after 0, 1, 5, 10 ms and after the actuator's
// latency ends at the last desired state, every time. The reversal has no
// delta (desired equals reported when it lands): acting on deltas alone
// left the lamp on for good.
func TestReversedDesiredEndsAtLast(t *testing.T) {
	for _, policy := range []string{config.CloudWins, config.LocalWins} {
		t.Run(policy, func(t *testing.T) {
			r := newRig(t, "gw-rev-"+strings.ReplaceAll(policy, "_", "-"), convergeOpts{conflict: policy})
			trials := 20
			if policy == config.LocalWins {
				trials = 3
			}
			for _, delay := range []time.Duration{0, time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond, simLatency} {
				for i := range trials {
					on := i%2 == 0 // from off: on then back off; from on: off then back on
					r.send("", fmt.Sprintf(`{"lamp":{"on":%v}}`, on))
					if delay > 0 {
						time.Sleep(delay) // the scenario's input: the operator's second click
					}
					last := r.send("", fmt.Sprintf(`{"lamp":{"on":%v}}`, !on))
					want := fmt.Sprint(!on)
					r.waitSettled("", last, fmt.Sprintf("reversal after %s, trial %d", delay, i), func(d, rep map[string]any) bool {
						return field(d, "lamp", "on") == want && field(rep, "lamp", "on") == want
					})
					if got := r.hw("lamp", "on"); got != want {
						t.Fatalf("reversal after %s, trial %d: the lamp is %s, desired %s", delay, i, got, want)
					}
				}
			}
			if st := r.d.Sync.Stats(); st.ApplyFailures != 0 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

// Three quick changes end at the last: alternating (on, off, on) and
// back to where they started (speed 0 → 40 → 70 → 0, whose last change
// has no delta).
func TestThreeQuickChangesEndAtLast(t *testing.T) {
	r := newRig(t, "gw-three", convergeOpts{})
	for i, delay := range []time.Duration{0, time.Millisecond, 3 * time.Millisecond, 7 * time.Millisecond, simLatency / 2, simLatency} {
		base := i%2 == 0
		r.send("", fmt.Sprintf(`{"lamp":{"on":%v}}`, base))
		time.Sleep(delay)
		r.send("", fmt.Sprintf(`{"lamp":{"on":%v}}`, !base))
		time.Sleep(delay)
		last := r.send("", fmt.Sprintf(`{"lamp":{"on":%v}}`, base))
		want := fmt.Sprint(base)
		r.waitSettled("", last, fmt.Sprintf("three changes %s apart", delay), func(d, rep map[string]any) bool {
			return field(d, "lamp", "on") == want && field(rep, "lamp", "on") == want
		})
		if got := r.hw("lamp", "on"); got != want {
			t.Fatalf("three changes %s apart: lamp %s, want %s", delay, got, want)
		}

		r.send("", `{"motor":{"speed":40}}`)
		time.Sleep(delay)
		r.send("", `{"motor":{"speed":70}}`)
		time.Sleep(delay)
		last = r.send("", `{"motor":{"speed":0}}`)
		r.waitSettled("", last, fmt.Sprintf("speed 0, 40, 70, 0, %s apart", delay), func(d, rep map[string]any) bool {
			return field(d, "motor", "speed") == "0" && field(rep, "motor", "speed") == "0"
		})
		if got := r.hw("motor", "speed"); got != "0" {
			t.Fatalf("speed changes %s apart: speed %s, want 0", delay, got)
		}
	}
}

// The same on a named shadow.
func TestReversedDesiredNamedShadow(t *testing.T) {
	r := newRig(t, "gw-revnamed", convergeOpts{})
	for i, delay := range []time.Duration{0, time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond, simLatency, 0, 5 * time.Millisecond, simLatency} {
		locked := i%2 == 1 // the door starts locked
		r.send("doors", fmt.Sprintf(`{"door":{"locked":%v}}`, locked))
		time.Sleep(delay)
		last := r.send("doors", fmt.Sprintf(`{"door":{"locked":%v}}`, !locked))
		want := fmt.Sprint(!locked)
		r.waitSettled("doors", last, fmt.Sprintf("door reversed after %s", delay), func(d, rep map[string]any) bool {
			return field(d, "door", "locked") == want && field(rep, "door", "locked") == want
		})
		if got := r.hw("door", "locked"); got != want {
			t.Fatalf("door reversed after %s: locked %s, want %s", delay, got, want)
		}
	}
}

// The same for a group: one desired change of two actuators, reversed.
func TestReversedDesiredGroup(t *testing.T) {
	r := newRig(t, "gw-revgroup", convergeOpts{})
	for i, delay := range []time.Duration{0, time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond, simLatency, 2 * simLatency} {
		v := i%2 == 0
		r.send("", fmt.Sprintf(`{"lamp":{"on":%v},"motor":{"running":%v,"speed":%d}}`, v, v, 10*(i+1)))
		time.Sleep(delay)
		last := r.send("", fmt.Sprintf(`{"lamp":{"on":%v},"motor":{"running":%v,"speed":%d}}`, !v, !v, i))
		want, speed := fmt.Sprint(!v), fmt.Sprint(i)
		r.waitSettled("", last, fmt.Sprintf("group reversed after %s", delay), func(d, rep map[string]any) bool {
			return field(rep, "lamp", "on") == want && field(rep, "motor", "running") == want && field(rep, "motor", "speed") == speed
		})
		if r.hw("lamp", "on") != want || r.hw("motor", "running") != want || r.hw("motor", "speed") != speed {
			t.Fatalf("group reversed after %s: lamp %s motor %s/%s, want %s/%s", delay, r.hw("lamp", "on"), r.hw("motor", "running"), r.hw("motor", "speed"), want, speed)
		}
	}
}

// A command against a standing desired state leaves no delta and is not
// undone: the command's change is written as desired too.
func TestCommandAgainstStandingDesired(t *testing.T) {
	r := newRig(t, "gw-cmdstand", convergeOpts{})
	tok := r.desire("", `{"motor":{"running":false}}`)
	r.waitSettled("", tok, "desired running:false standing", func(d, rep map[string]any) bool { return field(d, "motor", "running") == "false" })

	r.c.send(t, r.thing, req("MOTOR_ON", "on-1", ""))
	r.c.waitAck(t, r.thing, "on-1", command.StatusSuccess)
	r.waitSettled("", "", "the command's state is desired and reported", func(d, rep map[string]any) bool {
		return field(d, "motor", "running") == "true" && field(rep, "motor", "running") == "true"
	})
	if r.hw("motor", "running") != "true" {
		t.Fatal("reconciling undid the command")
	}
	var h []*store.Change
	r.d.Store.View(func(tx *store.Tx) (err error) { h, err = tx.History("motor", 10); return err })
	if len(h) == 0 || h[0].Source != store.SourceCommand {
		t.Fatalf("the newest change of the motor is not the command's: %+v", h[0])
	}
	// The cloud can still change it afterwards.
	tok = r.desire("", `{"motor":{"running":false}}`)
	r.waitSettled("", tok, "desired after the command", func(d, rep map[string]any) bool { return field(rep, "motor", "running") == "false" })
}

// A command and a desired change that race: the later one, by the order
// the gateway applies them, wins, in both orders, and nothing flaps after.
func TestCommandAndDesiredRace(t *testing.T) {
	r := newRig(t, "gw-race", convergeOpts{})
	for i := range 12 {
		cmdFirst := i%2 == 0
		want, cmd := i%4 < 2, "MOTOR_OFF" // the desired value, and the command setting the other
		if !want {
			cmd = "MOTOR_ON"
		}
		tid := fmt.Sprintf("race-%d", i)
		var tok string
		if cmdFirst {
			r.c.send(t, r.thing, req(cmd, tid, ""))
			tok = r.send("", fmt.Sprintf(`{"motor":{"running":%v}}`, want))
		} else {
			tok = r.send("", fmt.Sprintf(`{"motor":{"running":%v}}`, want))
			r.c.send(t, r.thing, req(cmd, tid, ""))
		}
		r.c.waitAck(t, r.thing, tid, command.StatusSuccess)
		doc := r.waitSettled("", tok, fmt.Sprintf("race %d (command first: %v)", i, cmdFirst), func(d, rep map[string]any) bool { return true })
		var h []*store.Change
		r.d.Store.View(func(tx *store.Tx) (err error) { h, err = tx.History("motor", 1); return err })
		last := fmt.Sprint(h[0].After["running"])
		if got := r.hw("motor", "running"); got != last || field(doc.State.Reported, "motor", "running") != last || field(doc.State.Desired, "motor", "running") != last {
			t.Fatalf("race %d (command first: %v): motor %s, last applied %s (%s), cloud desired %s reported %s", i, cmdFirst, got, last, h[0].Source,
				field(doc.State.Desired, "motor", "running"), field(doc.State.Reported, "motor", "running"))
		}
		t.Logf("race %d (command first: %v): %s wins (%s applied last)", i, cmdFirst, last, h[0].Source)
	}
}

// Changes on both sides while the gateway is offline converge once it is
// back: the cloud's desired is applied; a command that ran while offline
// (it waited for approval, say) is written over a standing desired, not
// undone by it; a technician's change (local_wins) is written too.
func TestOfflineChangesConverge(t *testing.T) {
	c := newCloud(t)
	px := brokertest.NewProxy(t, c.broker.Addr())
	w := watchShadows(t, c.broker.URL(), "gw-off")
	cfg, _ := convergeConfig(t, "gw-off", t.TempDir(), convergeOpts{conflict: config.LocalWins, broker: px.URL()})
	r := &rig{t: t, c: c, w: w, thing: "gw-off", d: gateway(t, cfg)}
	r.waitSettled("", "", "created", func(d, rep map[string]any) bool { return len(rep) > 0 })
	r.waitSettled("doors", "", "created", func(d, rep map[string]any) bool { return len(rep) > 0 })
	tok := r.desire("", `{"motor":{"running":false}}`)
	r.waitSettled("", tok, "desired running:false standing", func(d, rep map[string]any) bool { return field(d, "motor", "running") == "false" })
	tok = r.desire("doors", `{"door":{"locked":true}}`)
	r.waitSettled("doors", tok, "door desired locked", func(d, rep map[string]any) bool { return true })

	px.Cut()
	waitFor(t, "gateway offline", func() bool { return !r.d.Link.Connected() })
	last := r.send("", `{"lamp":{"on":true}}`)
	ctx := context.Background()
	if _, err := r.d.Manager.Apply(ctx, actuate.Change{Actuator: "motor", State: drivers.State{"running": true}, Source: store.SourceCommand, TID: "offline-1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.d.Manager.Apply(ctx, actuate.Change{Actuator: "door", State: drivers.State{"locked": false}, Source: store.SourceLocal}); err != nil {
		t.Fatal(err)
	}
	px.Restore()
	r.waitSettled("", last, "cloud's offline change applied, the command's written", func(d, rep map[string]any) bool {
		return field(rep, "lamp", "on") == "true" && field(d, "motor", "running") == "true" && field(rep, "motor", "running") == "true"
	})
	r.waitSettled("doors", "", "the technician's change written (local_wins)", func(d, rep map[string]any) bool {
		return field(d, "door", "locked") == "false" && field(rep, "door", "locked") == "false"
	})
	if r.hw("lamp", "on") != "true" || r.hw("motor", "running") != "true" || r.hw("door", "locked") != "false" {
		t.Fatal("hardware does not match")
	}
}
