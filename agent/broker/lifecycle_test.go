package broker_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shadowgate/shadowgate/agent/broker"
	"github.com/shadowgate/shadowgate/agent/link"
	"github.com/shadowgate/shadowgate/agent/link/brokertest"
)

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// recorder keeps every message of its subscriptions, in order.
type recorder struct {
	mu   sync.Mutex
	msgs []*link.Message
}

func (r *recorder) handle(_ context.Context, m *link.Message) {
	r.mu.Lock()
	r.msgs = append(r.msgs, m)
	r.mu.Unlock()
}

func (r *recorder) all() []*link.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.msgs)
}

// events are the lifecycle events of clientID received so far.
func (r *recorder) events(t *testing.T, clientID string) []map[string]any {
	var out []map[string]any
	for _, m := range r.all() {
		if m.Topic != broker.TopicConnected+clientID && m.Topic != broker.TopicDisconnected+clientID {
			continue
		}
		var e map[string]any
		if err := json.Unmarshal(m.Payload, &e); err != nil {
			t.Fatalf("%s: %v: %s", m.Topic, err, m.Payload)
		}
		if !strings.HasSuffix(m.Topic, "/"+e["eventType"].(string)+"/"+clientID) {
			t.Fatalf("event %s on %s", e["eventType"], m.Topic)
		}
		out = append(out, e)
	}
	return out
}

func runLink(t *testing.T, ctx context.Context, l *link.Link) {
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	t.Cleanup(func() { <-done })
}

func keys(e map[string]any) string {
	var k []string
	for key := range e {
		k = append(k, key)
	}
	sort.Strings(k)
	return strings.Join(k, ",")
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// The embedded broker publishes AWS IoT Core's connect and disconnect
// events with AWS's fields: the same sessionIdentifier and versionNumber
// on the two events of one connection, the versionNumber growing with
// each connection of a client id, and the disconnectReason of each way a
// connection ends.
func TestLifecycleEventsHaveAWSShapes(t *testing.T) {
	addr := freeAddr(t)
	srv, err := broker.Start(addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rec := &recorder{}
	apps, _ := link.New(link.Options{Broker: "tcp://" + addr, ClientID: "app", CleanSession: true, MinBackoff: 20 * time.Millisecond})
	apps.Handle("$aws/events/presence/+/+", rec.handle)
	runLink(t, ctx, apps)
	waitFor(t, "app connected", apps.Connected)

	proxy := brokertest.NewProxy(t, addr)
	devCtx, stopDev := context.WithCancel(ctx)
	dev, _ := link.New(link.Options{Broker: proxy.URL(), ClientID: "gw-1", Username: "gw-user", MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	runLink(t, devCtx, dev)
	waitFor(t, "connected event", func() bool { return len(rec.events(t, "gw-1")) == 1 })

	before := time.Now().UnixMilli()
	proxy.Cut() // connection lost
	waitFor(t, "disconnected event", func() bool { return len(rec.events(t, "gw-1")) == 2 })
	proxy.Restore()
	waitFor(t, "second connection", func() bool { return len(rec.events(t, "gw-1")) == 3 })
	stopDev() // a clean DISCONNECT
	waitFor(t, "clean disconnect", func() bool { return len(rec.events(t, "gw-1")) == 4 })
	after := time.Now().UnixMilli()

	ev := rec.events(t, "gw-1")
	const connKeys = "clientId,eventType,ipAddress,principalIdentifier,sessionIdentifier,timestamp,versionNumber"
	const discKeys = "clientId,clientInitiatedDisconnect,disconnectReason,eventType,principalIdentifier,sessionIdentifier,timestamp,versionNumber"
	for i, want := range []struct {
		typ, keys, reason string
		byClient          bool
		version           float64
	}{
		{"connected", connKeys, "", false, 0},
		{"disconnected", discKeys, "CONNECTION_LOST", false, 0},
		{"connected", connKeys, "", false, 1},
		{"disconnected", discKeys, "CLIENT_INITIATED_DISCONNECT", true, 1},
	} {
		e := ev[i]
		if e["eventType"] != want.typ || keys(e) != want.keys || e["clientId"] != "gw-1" || e["versionNumber"] != want.version ||
			e["principalIdentifier"] != "gw-user" || !uuidRE.MatchString(e["sessionIdentifier"].(string)) {
			t.Fatalf("event %d: %v", i, e)
		}
		if want.typ == "connected" && e["ipAddress"] != "127.0.0.1" {
			t.Fatalf("event %d: ipAddress %v", i, e["ipAddress"])
		}
		if want.typ == "disconnected" && (e["disconnectReason"] != want.reason || e["clientInitiatedDisconnect"] != want.byClient ||
			e["sessionIdentifier"] != ev[i-1]["sessionIdentifier"]) {
			t.Fatalf("event %d: %v (its connect: %v)", i, e, ev[i-1])
		}
		if ts, _ := e["timestamp"].(float64); i > 0 && (ts < float64(before)-60_000 || ts > float64(after)) {
			t.Fatalf("event %d: timestamp %v is not unix milliseconds of now", i, e["timestamp"])
		}
	}
	if ev[0]["sessionIdentifier"] == ev[2]["sessionIdentifier"] {
		t.Fatal("two connections share a sessionIdentifier")
	}

	// A client that stops talking: the keepalive (1 s here) runs out.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	id := "silent"
	connect := []byte{0x10, byte(12 + len(id)), 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 1, 0, byte(len(id))}
	if _, err := c.Write(append(connect, id...)); err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, c)
	waitFor(t, "keepalive timeout", func() bool { return len(rec.events(t, id)) == 2 })
	if e := rec.events(t, id)[1]; e["disconnectReason"] != "MQTT_KEEP_ALIVE_TIMEOUT" || e["clientInitiatedDisconnect"] != false || e["principalIdentifier"] != "anonymous" {
		t.Fatalf("keepalive: %v", e)
	}
}

// halfOpen forwards to addr; Drop closes the client's side only, so that
// the broker still holds the connection when the client comes back.
type halfOpen struct {
	ln     net.Listener
	mu     sync.Mutex
	client []net.Conn
	up     []net.Conn
}

func newHalfOpen(t *testing.T, addr string) *halfOpen {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &halfOpen{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", addr)
			if err != nil {
				c.Close()
				continue
			}
			h.mu.Lock()
			h.client, h.up = append(h.client, c), append(h.up, up)
			h.mu.Unlock()
			go io.Copy(up, c)
			go func() { io.Copy(c, up); c.Close() }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, c := range append(h.client, h.up...) {
			c.Close()
		}
	})
	return h
}

func (h *halfOpen) drop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.client {
		c.Close()
	}
	h.client = nil
}

// A connection taken over by a new one of the same client id ends before
// the new one starts: its will, then its disconnected event
// (DUPLICATE_CLIENTID), then the new connection's connected event and its
// first messages. So an old will never follows the new "online".
func TestTakeOverEndsTheOldConnectionFirst(t *testing.T) {
	addr := freeAddr(t)
	srv, err := broker.Start(addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rec := &recorder{}
	apps, _ := link.New(link.Options{Broker: "tcp://" + addr, ClientID: "app", CleanSession: true, MinBackoff: 20 * time.Millisecond})
	apps.Handle("$aws/events/presence/+/gw-2", rec.handle)
	apps.Handle("p/gw-2", rec.handle)
	runLink(t, ctx, apps)
	waitFor(t, "app connected", apps.Connected)

	for round := range 20 {
		h := newHalfOpen(t, addr)
		devCtx, stopDev := context.WithCancel(ctx)
		dev, _ := link.New(link.Options{Broker: "tcp://" + h.ln.Addr().String(), ClientID: "gw-2", MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
			Presence: link.Presence{Topic: "p/gw-2", Online: []byte("online"), Offline: []byte("offline")}})
		n := len(rec.all())
		runLink(t, devCtx, dev)
		count := func(payload string) int {
			k := 0
			for _, m := range rec.all()[n:] {
				if m.Topic == "p/gw-2" && string(m.Payload) == payload {
					k++
				}
			}
			return k
		}
		waitFor(t, "online", func() bool { return count("online") == 1 })
		h.drop()
		waitFor(t, "online after the take-over", func() bool { return count("online") == 2 })
		stopDev()
		waitFor(t, "offline and the disconnected event after the stop", func() bool { return count("offline") == 2 && len(rec.all())-n >= 8 })

		var seq []string
		for _, m := range rec.all()[n:] {
			switch {
			case m.Topic == "p/gw-2":
				seq = append(seq, string(m.Payload))
			default:
				var e map[string]any
				json.Unmarshal(m.Payload, &e)
				s, _ := e["eventType"].(string)
				if r := reasonOf(e); r != "" {
					s += " " + r
				}
				seq = append(seq, s)
			}
		}
		want := []string{"connected", "online", "offline", "disconnected DUPLICATE_CLIENTID", "connected", "online", "offline", "disconnected CLIENT_INITIATED_DISCONNECT"}
		if !slices.Equal(seq, want) {
			t.Fatalf("round %d: %q, want %q", round, seq, want)
		}
	}
}

func reasonOf(e map[string]any) string {
	if r, ok := e["disconnectReason"].(string); ok {
		return r
	}
	return ""
}
