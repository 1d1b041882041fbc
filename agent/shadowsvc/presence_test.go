package shadowsvc_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shadowgate/shadowgate/agent/link"
	"github.com/shadowgate/shadowgate/agent/link/brokertest"
	"github.com/shadowgate/shadowgate/agent/shadow"
	"github.com/shadowgate/shadowgate/agent/shadowsvc"
	"github.com/shadowgate/shadowgate/store"
)

const presenceRoot = "$aws/things/"

// presenceEnv is mosquitto, a shadow service applying presence, and an app
// that publishes presence messages by hand and watches the shadows.
type presenceEnv struct {
	t     *testing.T
	b     *brokertest.Broker
	st    *store.Store
	svc   *shadowsvc.Service
	stop  func() // stops the service and its link
	svcL  *link.Link
	app   *link.Link
	seq   int
	mu    sync.Mutex
	msgs  []*link.Message
	links int
}

func newPresenceEnv(t *testing.T) *presenceEnv {
	e := &presenceEnv{t: t, b: brokertest.Start(t)}
	var err error
	if e.st, err = store.Open(filepath.Join(t.TempDir(), "svc.db"), store.Options{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.st.Close() })
	e.startService()
	e.app, _ = link.New(link.Options{Broker: e.b.URL(), ClientID: "app", CleanSession: true, MinBackoff: 50 * time.Millisecond})
	e.app.Handle(presenceRoot+"+/shadow/#", func(_ context.Context, m *link.Message) {
		e.mu.Lock()
		e.msgs = append(e.msgs, m)
		e.mu.Unlock()
	})
	run(t, e.app)
	e.waitFor("app connected", e.app.Connected)
	return e
}

// startService runs a shadow service (on a link of its own) on the store.
func (e *presenceEnv) startService() {
	e.links++
	l, _ := link.New(link.Options{Broker: e.b.URL(), ClientID: fmt.Sprintf("svc-%d", e.links), MinBackoff: 50 * time.Millisecond})
	e.svc = shadowsvc.New(shadowsvc.Options{Root: presenceRoot, Link: l, Store: e.st, PresenceTopic: shadowsvc.DefaultPresenceTopic})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	svc := e.svc
	go func() { defer wg.Done(); svc.Run(ctx) }()
	go func() { defer wg.Done(); l.Run(ctx) }()
	e.svcL = l
	e.stop = func() { cancel(); wg.Wait() }
	e.t.Cleanup(func() { e.stop() })
	e.waitFor("service connected", l.Connected)
}

func (e *presenceEnv) waitFor(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// presence publishes a presence message of thing, retained as a gateway's.
func (e *presenceEnv) presence(thing string, connected bool, session uint64) {
	e.t.Helper()
	p := shadowsvc.Presence{Connected: connected, Session: session}
	if err := e.app.Publish(context.Background(), "shadowgate/"+thing+"/presence", true, p.JSON()); err != nil {
		e.t.Fatal(err)
	}
}

// get returns the classic shadow of thing once every message published
// before it was applied: the GET goes through the service's pipeline
// after them.
func (e *presenceEnv) get(thing string) *shadow.GetAccepted {
	e.t.Helper()
	e.seq++
	tok := fmt.Sprintf("get-%d", e.seq)
	topic := shadow.Topic{Thing: thing, Op: shadow.OpGet}
	if err := e.app.Publish(context.Background(), topic.Build(presenceRoot), false, []byte(`{"clientToken":"`+tok+`"}`)); err != nil {
		e.t.Fatal(err)
	}
	var g *shadow.GetAccepted
	e.waitFor("get "+tok, func() bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		for _, m := range e.msgs {
			if strings.Contains(string(m.Payload), `"clientToken":"`+tok+`"`) {
				switch m.Topic {
				case topic.With(shadow.SuffixRejected).Build(presenceRoot):
					return true
				case topic.With(shadow.SuffixAccepted).Build(presenceRoot):
				default:
					continue
				}
				var err error
				if g, err = shadow.ParseGetAccepted(m.Payload); err != nil {
					e.t.Fatal(err)
				}
				return true
			}
		}
		return false
	})
	return g
}

func (e *presenceEnv) count(topic string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, m := range e.msgs {
		if m.Topic == topic {
			n++
		}
	}
	return n
}

// presenceOf reads connected and presence from reported.
func presenceOf(t *testing.T, g *shadow.GetAccepted) (connected any, session string, since int64) {
	t.Helper()
	if g == nil {
		t.Fatal("no shadow")
	}
	p, _ := g.State.Reported["presence"].(map[string]any)
	if n, ok := p["since"].(json.Number); ok {
		since, _ = n.Int64()
	}
	return g.State.Reported["connected"], fmt.Sprint(p["session"]), since
}

// Presence messages become reported state of the classic shadow, with
// update/accepted and update/documents published as for any update; a will
// of an older session arriving after a newer session's "connected" is
// ignored, and so is a message of the session and state already stored.
func TestPresenceAppliedInSessionOrder(t *testing.T) {
	e := newPresenceEnv(t)
	accepted := shadow.Topic{Thing: "gw-1", Op: shadow.OpUpdate, Suffix: shadow.SuffixAccepted}.Build(presenceRoot)
	documents := shadow.Topic{Thing: "gw-1", Op: shadow.OpUpdate, Suffix: shadow.SuffixDocuments}.Build(presenceRoot)

	before := time.Now().Unix()
	e.presence("gw-1", true, 5)
	g := e.get("gw-1")
	if c, s, since := presenceOf(t, g); c != true || s != "5" || since < before || since > time.Now().Unix() || g.Version != 1 {
		t.Fatalf("after online: connected %v session %s since %d version %d", c, s, since, g.Version)
	}
	e.waitFor("accepted and documents", func() bool { return e.count(accepted) == 1 && e.count(documents) == 1 })

	e.presence("gw-1", false, 5) // the will of session 5
	if c, s, _ := presenceOf(t, e.get("gw-1")); c != false || s != "5" {
		t.Fatalf("after the will: connected %v session %s", c, s)
	}

	e.presence("gw-1", true, 6)  // the next session
	e.presence("gw-1", false, 5) // a will of session 5 delivered late
	g = e.get("gw-1")
	if c, s, _ := presenceOf(t, g); c != true || s != "6" || g.Version != 3 {
		t.Fatalf("a stale will won: connected %v session %s version %d", c, s, g.Version)
	}

	e.presence("gw-1", true, 6) // the same again (a reconnect without a will)
	if g2 := e.get("gw-1"); g2.Version != g.Version {
		t.Fatalf("a duplicate moved the version from %d to %d", g.Version, g2.Version)
	}
	if n := e.count(accepted); n != 3 {
		t.Fatalf("%d update/accepted, want 3 (the ignored messages publish nothing)", n)
	}
	st, ok, err := e.svc.Presence("gw-1")
	if err != nil || !ok || !st.Connected || st.Session != 6 || st.Since == 0 {
		t.Fatalf("Presence: %+v %v %v", st, ok, err)
	}
}

// The retained presence messages are delivered again each time the service
// subscribes (a new service, a broker restart): they change nothing.
func TestRetainedPresenceDeliveredAgainChangesNothing(t *testing.T) {
	e := newPresenceEnv(t)
	for i := range 20 {
		e.presence(fmt.Sprintf("gw-%d", i), i%2 == 0, 3)
	}
	versions := map[string]int64{}
	for i := range 20 {
		thing := fmt.Sprintf("gw-%d", i)
		g := e.get(thing)
		if c, s, _ := presenceOf(t, g); c != (i%2 == 0) || s != "3" {
			t.Fatalf("%s: connected %v session %s", thing, c, s)
		}
		versions[thing] = g.Version
	}
	e.stop()
	e.startService()
	for i := range 20 { // the new service subscribed: it had them all
		thing := fmt.Sprintf("gw-%d", i)
		if g := e.get(thing); g.Version != versions[thing] {
			t.Fatalf("%s: version %d after a new service subscribed, want %d", thing, g.Version, versions[thing])
		}
	}
	e.b.Restart()
	e.waitFor("app and service reconnected", func() bool { return e.app.Connected() && e.svcL.Stats().Connects >= 2 })
	for i := range 20 {
		thing := fmt.Sprintf("gw-%d", i)
		if g := e.get(thing); g.Version != versions[thing] {
			t.Fatalf("%s: version %d after the retained message came again, want %d", thing, g.Version, versions[thing])
		}
	}
}

// A payload that is not a presence message is logged and ignored; the
// shadow is not touched, and the next valid one is applied.
func TestMalformedPresenceIgnored(t *testing.T) {
	e := newPresenceEnv(t)
	for _, p := range []string{"online", "{", `{"connected":"yes","session":1}`, `{"connected":true}`, `{"connected":true,"session":-1}`,
		`{"connected":true,"session":1.5}`, `{"connected":true,"session":0}`, strings.Repeat("x", 100000)} {
		if err := e.app.Publish(context.Background(), "shadowgate/gw-bad/presence", false, []byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.app.Publish(context.Background(), "shadowgate/bad.name/presence", false, []byte(`{"connected":true,"session":1}`)); err != nil {
		t.Fatal(err)
	}
	if g := e.get("gw-bad"); g != nil {
		t.Fatalf("a malformed presence made a shadow: %+v", g)
	}
	if st := e.svc.Stats(); st.Malformed < 9 {
		t.Fatalf("malformed presence not counted: %+v", st)
	}
	e.presence("gw-bad", true, 1)
	if c, _, _ := presenceOf(t, e.get("gw-bad")); c != true {
		t.Fatalf("valid presence after malformed ones: %v", c)
	}
}

func TestCheckPresenceTopic(t *testing.T) {
	for _, ok := range []string{shadowsvc.DefaultPresenceTopic, "{thing}/presence", "fleet/{thing}", "a/b/{thing}/c"} {
		if err := shadowsvc.CheckPresenceTopic(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "$aws/things/{thing}/presence", "shadowgate/+/presence", "p/#", "p/x{thing}", "p/{thing}/{thing}", "presence"} {
		if err := shadowsvc.CheckPresenceTopic(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, err := shadowsvc.ParsePresence([]byte(`{"connected":true,"session":18446744073709551615}`)); err != nil {
		t.Errorf("max session: %v", err)
	}
	if _, err := shadowsvc.ParsePresence([]byte(`[]`)); !errors.Is(err, shadowsvc.ErrBadPresence) {
		t.Errorf("array: %v", err)
	}
}
