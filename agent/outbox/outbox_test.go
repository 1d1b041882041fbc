package outbox_test

import (
	"context"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/shadowgate/shadowgate/agent/link"
	"github.com/shadowgate/shadowgate/agent/link/brokertest"
	"github.com/shadowgate/shadowgate/agent/outbox"
	"github.com/shadowgate/shadowgate/store"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/eclipse/paho.mqtt.golang.(*router).matchAndDispatch.func1"))
}

// A backlog drains in order and exactly once through a real broker, with a
// small window so that many windows go out while the one before is still
// being removed from the store (those items must not be sent twice);
// whatever is queued while draining follows the backlog.
func TestDrainInOrderExactlyOnce(t *testing.T) {
	b := brokertest.Start(t)
	st, err := store.Open(filepath.Join(t.TempDir(), "state.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	const backlog, later = 2000, 200
	if err := st.Update(func(tx *store.Tx) error {
		for i := range backlog {
			if _, err := tx.Enqueue(store.OutItem{Kind: store.KindAck, Topic: "acks", Payload: []byte(strconv.Itoa(i)), QoS: 1}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	var mu sync.Mutex
	var got []int
	sub, _ := link.New(link.Options{Broker: b.URL(), ClientID: "sub", CleanSession: true})
	sub.Handle("acks", func(_ context.Context, m *link.Message) {
		n, _ := strconv.Atoi(string(m.Payload))
		mu.Lock()
		got = append(got, n)
		mu.Unlock()
	})
	goRun := runner(ctx, &wg)
	goRun(func(c context.Context) { sub.Run(c) })
	waitFor(t, "subscriber connected", sub.Connected)
	pub, _ := link.New(link.Options{Broker: b.URL(), ClientID: "gw", CleanSession: true})
	d := outbox.New(st, pub, 16, nil)
	pub.OnConnect(func(context.Context) { d.Kick() })
	goRun(func(c context.Context) { pub.Run(c) })
	goRun(d.Run)
	for i := backlog; i < backlog+later; i++ {
		if _, err := st.Enqueue(store.OutItem{Kind: store.KindAck, Topic: "acks", Payload: []byte(strconv.Itoa(i)), QoS: 1}); err != nil {
			t.Fatal(err)
		}
		d.Kick()
	}
	waitFor(t, "outbox empty", func() bool { return st.OutboxStats().Items == 0 })
	waitFor(t, "every message received", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) >= backlog+later })
	time.Sleep(200 * time.Millisecond) // a duplicate would arrive by now
	mu.Lock()
	defer mu.Unlock()
	if len(got) != backlog+later {
		t.Fatalf("received %d messages for %d queued", len(got), backlog+later)
	}
	for i, n := range got {
		if n != i {
			t.Fatalf("message %d is %d: out of order or repeated (%v…)", i, n, got[max(0, i-3):min(len(got), i+3)])
		}
	}
	if s := d.Sent(); s != backlog+later {
		t.Fatalf("Sent() = %d", s)
	}
}

// runner starts functions on goroutines that wg waits for, each given ctx.
func runner(ctx context.Context, wg *sync.WaitGroup) func(run func(context.Context)) {
	return func(run func(context.Context)) {
		wg.Add(1)
		go func() { defer wg.Done(); run(ctx) }()
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Reports are not the drainer's (agent/sync sends them and removes them
// once the shadow service accepts them): it passes them by, and acks queued
// behind more reports than a window still go out.
func TestReportsPassedBy(t *testing.T) {
	b := brokertest.Start(t)
	st, err := store.Open(filepath.Join(t.TempDir(), "state.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	const window, reports, acks = 4, 10, 6
	for i := range reports {
		if _, err := st.Enqueue(store.OutItem{Kind: store.KindReport, Topic: "reports", Payload: []byte("r"), QoS: 1, Key: "gw//k" + strconv.Itoa(i)}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range acks {
		if _, err := st.Enqueue(store.OutItem{Kind: store.KindAck, Topic: "acks", Payload: []byte(strconv.Itoa(i)), QoS: 1}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	var mu sync.Mutex
	got := map[string]int{}
	sub, _ := link.New(link.Options{Broker: b.URL(), ClientID: "sub", CleanSession: true})
	count := func(_ context.Context, m *link.Message) { mu.Lock(); got[m.Topic]++; mu.Unlock() }
	sub.Handle("acks", count)
	sub.Handle("reports", count)
	goRun := runner(ctx, &wg)
	goRun(func(c context.Context) { sub.Run(c) })
	waitFor(t, "subscriber connected", sub.Connected)
	pub, _ := link.New(link.Options{Broker: b.URL(), ClientID: "gw", CleanSession: true})
	d := outbox.New(st, pub, window, nil)
	pub.OnConnect(func(context.Context) { d.Kick() })
	goRun(func(c context.Context) { pub.Run(c) })
	goRun(d.Run)
	waitFor(t, "acks sent", func() bool { mu.Lock(); defer mu.Unlock(); return got["acks"] == acks })
	waitFor(t, "only the reports left", func() bool { return st.OutboxStats().Items == reports })
	time.Sleep(200 * time.Millisecond) // a report would arrive by now
	mu.Lock()
	defer mu.Unlock()
	if got["reports"] != 0 {
		t.Fatalf("the drainer published %d reports", got["reports"])
	}
}

// heldRig is a drainer (not yet running) of a store of its own, whose
// link reaches the broker through a HoldProxy, and a subscriber that
// records what arrives on "acks"; both links run until the test ends.
type heldRig struct {
	st   *store.Store
	hold *brokertest.HoldProxy
	d    *outbox.Drainer
	mu   sync.Mutex
	got  []string
}

func newHeldRig(t *testing.T, goRun func(func(context.Context)), window int) *heldRig {
	t.Helper()
	b := brokertest.Start(t)
	r := &heldRig{hold: brokertest.NewHoldProxy(t, strings.TrimPrefix(b.URL(), "tcp://"))}
	st, err := store.Open(filepath.Join(t.TempDir(), "state.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	r.st = st
	sub, _ := link.New(link.Options{Broker: b.URL(), ClientID: "sub", CleanSession: true})
	sub.Handle("acks", func(_ context.Context, m *link.Message) {
		r.mu.Lock()
		r.got = append(r.got, string(m.Payload))
		r.mu.Unlock()
	})
	goRun(func(c context.Context) { sub.Run(c) })
	pub, _ := link.New(link.Options{Broker: r.hold.URL(), ClientID: "gw", CleanSession: true})
	r.d = outbox.New(st, pub, window, nil)
	pub.OnConnect(func(context.Context) { r.d.Kick() })
	goRun(func(c context.Context) { pub.Run(c) })
	waitFor(t, "both connected", func() bool { return sub.Connected() && pub.Connected() })
	return r
}

// received is what the subscriber has had, in order.
func (r *heldRig) received() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

// enqueue puts acks with these payloads in the outbox.
func (r *heldRig) enqueue(t *testing.T, payloads ...string) {
	t.Helper()
	for _, p := range payloads {
		if _, err := r.st.Enqueue(store.OutItem{Kind: store.KindAck, Topic: "acks", Payload: []byte(p), QoS: 1}); err != nil {
			t.Fatal(err)
		}
	}
}

// An ack enqueued while the messages before it await their PUBACKs goes
// out at once: the window slides, it is not sent window by window. The
// proxy holds every PUBACK back, so the second message can reach the
// subscriber only if the drainer sent it before the first one's PUBACK.
func TestWindowSlides(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	goRun := runner(ctx, &wg)
	r := newHeldRig(t, goRun, 16)
	goRun(r.d.Run)

	r.hold.Hold()
	for i, p := range []string{"first", "second"} {
		r.enqueue(t, p)
		r.d.Kick()
		waitFor(t, p+" message at the subscriber, no PUBACK yet", func() bool { return len(r.received()) == i+1 })
	}
	if n := r.d.Sent(); n != 0 {
		t.Fatalf("%d messages acknowledged while the proxy held every PUBACK", n)
	}
	r.hold.Release()
	waitFor(t, "both acknowledged and removed", func() bool { return r.d.Sent() == 2 && r.st.OutboxStats().Items == 0 })
	if got := strings.Join(r.received(), ","); got != "first,second" {
		t.Fatalf("received %v", got)
	}
}

// A drainer that stops while the removal of acknowledged messages waits
// for company (half a window) submits it before it returns: those
// messages are not sent again after the restart; the unacknowledged ones
// are. The proxy lets the first three PUBACKs of five through.
func TestStopRemovesTheAcknowledged(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	const window = 16 // removals wait for 8 acknowledged, or none in flight
	r := newHeldRig(t, runner(ctx, &wg), window)
	drainCtx, stopDrain := context.WithCancel(ctx)
	drained := make(chan struct{})
	go func() { defer close(drained); r.d.Run(drainCtx) }()
	defer func() { stopDrain(); <-drained }()

	r.hold.Hold()
	r.enqueue(t, "0", "1", "2", "3", "4")
	r.d.Kick()
	waitFor(t, "five messages at the subscriber", func() bool { return len(r.received()) == 5 })
	r.hold.ReleasePubacks(3)
	waitFor(t, "three acknowledged", func() bool { return r.d.Sent() == 3 })
	if n := r.st.OutboxStats().Items; n != 5 {
		t.Fatalf("%d in the outbox before the stop: the removal of the three did not wait for company", n)
	}
	stopDrain()
	<-drained
	items, err := r.st.Peek(10)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, it := range items {
		left = append(left, string(it.Payload))
	}
	if strings.Join(left, ",") != "3,4" {
		t.Fatalf("after the stop the outbox holds %v, want the two unacknowledged [3 4]", left)
	}
}
