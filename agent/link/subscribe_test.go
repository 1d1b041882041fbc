package link_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/shadowgate/shadowgate/agent/link"
	"github.com/shadowgate/shadowgate/agent/link/brokertest"
)

// TestSubscribesAllAtOnce: a session's SUBSCRIBEs go out together, the
// SUBACKs awaited after the last (the proxy holds every SUBACK until all
// filters were subscribed): one round trip for all, whatever the link's
// latency. None carries more than 8 filters (AWS IoT Core's limit per
// SUBSCRIBE).
func TestSubscribesAllAtOnce(t *testing.T) {
	b := brokertest.Start(t)
	const n = 18 // the gateway's, with classic and named shadows, commands and jobs
	hold := brokertest.NewSubackHold(t, b.Addr(), n)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan string, 1)
	l := startWith(t, ctx, link.Options{Broker: hold.URL(), ClientID: "subs", CleanSession: true}, func(l *link.Link) {
		for i := range n {
			l.Handle(fmt.Sprintf("t/%d/#", i), func(_ context.Context, m *link.Message) { got <- m.Topic })
		}
	})
	waitFor(t, "connected: every SUBSCRIBE sent before a SUBACK came", l.Connected)
	per := hold.Filters()
	for _, f := range per {
		if f > 8 {
			t.Fatalf("a SUBSCRIBE carried %d filters (%v): AWS IoT Core takes 8", f, per)
		}
	}
	if len(per) != 3 {
		t.Fatalf("%d SUBSCRIBEs (%v filters each), want 3 of at most 8", len(per), per)
	}
	if err := l.Publish(ctx, "t/17/x", false, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if topic := <-got; topic != "t/17/x" {
		t.Fatalf("got %q", topic)
	}
}
