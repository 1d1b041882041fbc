package shadowsvc_test

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shadowgate/shadowgate/agent/link"
	"github.com/shadowgate/shadowgate/agent/link/brokertest"
	"github.com/shadowgate/shadowgate/agent/shadow"
	"github.com/shadowgate/shadowgate/agent/shadow/shadowtest"
	"github.com/shadowgate/shadowgate/agent/shadowsvc"
	"github.com/shadowgate/shadowgate/store"
)

// client collects every shadow response under root.
type client struct {
	root string
	l    *link.Link
	mu   sync.Mutex
	msgs []*link.Message
}

// run runs l until the test ends (cleanups run last-in first-out, so this
// one cancels before it waits).
func run(t testing.TB, l *link.Link) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// runService runs svc until the test ends.
func runService(t testing.TB, svc *shadowsvc.Service) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { svc.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func setup(t testing.TB, root string) (*client, *shadowsvc.Service, *brokertest.Broker) {
	b := brokertest.Start(t)
	st, err := store.Open(filepath.Join(t.TempDir(), "svc.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	svcLink, _ := link.New(link.Options{Broker: b.URL(), ClientID: "svc", MinBackoff: 50 * time.Millisecond})
	svc := shadowsvc.New(shadowsvc.Options{Root: root, Link: svcLink, Store: st})
	runService(t, svc)
	run(t, svcLink)

	c := &client{root: root}
	c.l, _ = link.New(link.Options{Broker: b.URL(), ClientID: "app", CleanSession: true, MinBackoff: 50 * time.Millisecond})
	for _, f := range []string{root + "+/shadow/+/+", root + "+/shadow/name/+/+/+"} {
		c.l.Handle(f, func(_ context.Context, m *link.Message) {
			c.mu.Lock()
			c.msgs = append(c.msgs, m)
			c.mu.Unlock()
		})
	}
	run(t, c.l)
	deadline := time.Now().Add(10 * time.Second)
	for !(c.l.Connected() && svcLink.Connected()) {
		if time.Now().After(deadline) {
			t.Fatal("clients did not connect")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return c, svc, b
}

func (c *client) exchange(t *testing.T, topic shadow.Topic, payload []byte, want int) map[shadow.Suffix][]byte {
	t.Helper()
	c.mu.Lock()
	c.msgs = nil
	c.mu.Unlock()
	if err := c.l.Publish(context.Background(), topic.Build(c.root), false, payload); err != nil {
		t.Fatal(err)
	}
	got := map[shadow.Suffix][]byte{}
	collect := func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, m := range c.msgs {
			rt, err := shadow.ParseTopic(c.root, m.Topic)
			if err == nil && rt.Thing == topic.Thing && rt.Name == topic.Name && rt.Op == topic.Op && rt.Suffix != shadow.Request {
				got[rt.Suffix] = m.Payload
			}
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for collect(); len(got) < want && time.Now().Before(deadline); collect() {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // any extra response would show now
	collect()
	return got
}

func TestConformanceOverMQTT(t *testing.T) {
	for _, root := range []string{"$aws/things/", "things/"} {
		t.Run(strings.TrimSuffix(root, "/"), func(t *testing.T) {
			c, svc, _ := setup(t, root)
			shadowtest.Run(t, shadowtest.Cases, c.exchange)
			if st := svc.Stats(); st.Requests == 0 || st.Rejected == 0 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

func TestShadowsSurviveServiceRestart(t *testing.T) {
	// The documents live in bbolt: a broker restart and a new service on the
	// same file answer with the same version.
	c, _, b := setup(t, "things/")
	got := c.exchange(t, shadow.Topic{Thing: "persist", Op: shadow.OpUpdate}, []byte(`{"state":{"reported":{"a":1}}}`), 2)
	if got[shadow.SuffixAccepted] == nil {
		t.Fatalf("update: %v", got)
	}
	b.Restart()
	deadline := time.Now().Add(10 * time.Second)
	for !c.l.Connected() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // the service reconnects too
	got = c.exchange(t, shadow.Topic{Thing: "persist", Op: shadow.OpGet}, []byte(`{}`), 1)
	if err := shadowtest.SameJSON(got[shadow.SuffixAccepted], []byte(`{"state":{"reported":{"a":1}},"metadata":{"reported":{"a":{"timestamp":0}}},"version":1,"timestamp":0}`)); err != nil {
		t.Fatalf("after restart: %s: %v", got[shadow.SuffixAccepted], err)
	}
}

func TestMalformedRequestsNeverCrash(t *testing.T) {
	c, svc, _ := setup(t, "things/")
	for _, p := range []string{"", "\xff\xfe", "{", "null", `{"state":{"desired":{"a":` + strings.Repeat("[", 200) + `}}}`, strings.Repeat("x", 200000)} {
		c.exchange(t, shadow.Topic{Thing: "junk", Op: shadow.OpUpdate}, []byte(p), 1)
	}
	// Still serving.
	got := c.exchange(t, shadow.Topic{Thing: "junk", Op: shadow.OpUpdate}, []byte(`{"state":{"reported":{"ok":true}}}`), 2)
	if got[shadow.SuffixAccepted] == nil {
		t.Fatalf("service stopped answering: %v (stats %+v)", got, svc.Stats())
	}
}
