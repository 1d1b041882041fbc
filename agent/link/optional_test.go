package link_test

import (
	"context"
	"strings"
	"testing"

	"github.com/shadowgate/shadowgate/agent/link"
	"github.com/shadowgate/shadowgate/agent/link/brokertest"
)

// A broker that refuses an optional subscription (an IoT policy without the
// jobs topics) leaves the session up with the others; Refused and Stats
// say which was refused. A required one refused still ends the session.
func TestOptionalSubscriptionRefused(t *testing.T) {
	b := brokertest.Start(t)
	px := brokertest.NewPolicyProxy(t, b.Addr(), func(topic string) bool { return strings.HasPrefix(topic, "jobs/") })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan string, 4)
	connects := make(chan struct{}, 4)
	l := startWith(t, ctx, link.Options{Broker: px.URL(), ClientID: "opt"}, func(l *link.Link) {
		l.Handle("open/topic", func(_ context.Context, m *link.Message) { got <- string(m.Payload) })
		l.HandleOptional("jobs/notify", func(_ context.Context, m *link.Message) { got <- "jobs: " + string(m.Payload) })
		l.OnConnect(func(context.Context) { connects <- struct{}{} })
	})
	waitFor(t, "connected", l.Connected)
	<-connects
	if !l.Refused("jobs/notify") || l.Refused("open/topic") {
		t.Fatalf("refused: jobs/notify %v, open/topic %v; stats %+v", l.Refused("jobs/notify"), l.Refused("open/topic"), l.Stats())
	}
	if st := l.Stats(); len(st.Refused) != 1 || st.Refused[0] != "jobs/notify" {
		t.Fatalf("stats refused %v", st.Refused)
	}
	if err := l.Publish(ctx, "open/topic", false, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if m := <-got; m != "hello" {
		t.Fatalf("got %q", m)
	}

	// The same filter, required, is a session that cannot come up.
	l2, _ := link.New(link.Options{Broker: px.URL(), ClientID: "req"})
	l2.Handle("jobs/notify", func(context.Context, *link.Message) {})
	lctx, lcancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { l2.Run(lctx); close(done) }()
	waitFor(t, "the refusal", func() bool { return strings.Contains(l2.Stats().LastError, "refused by the broker") })
	if l2.Connected() {
		t.Fatal("a required subscription refused left the session up")
	}
	lcancel()
	<-done
}
