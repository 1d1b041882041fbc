package link_test

import (
	"context"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shadowgate/shadowgate/agent/link"
	"github.com/shadowgate/shadowgate/agent/link/brokertest"
)

// watcher records the payloads on one topic, retained ones too.
type watcher struct {
	mu   sync.Mutex
	msgs []string
}

func watch(t *testing.T, ctx context.Context, url, id string, topics ...string) (*watcher, *link.Link) {
	t.Helper()
	w := &watcher{}
	l := startWith(t, ctx, link.Options{Broker: url, ClientID: id, CleanSession: true, MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond},
		func(l *link.Link) {
			for _, topic := range topics {
				l.Handle(topic, func(_ context.Context, m *link.Message) {
					w.mu.Lock()
					w.msgs = append(w.msgs, m.Topic+" "+string(m.Payload))
					w.mu.Unlock()
				})
			}
		})
	waitFor(t, id+" connected", l.Connected)
	return w, l
}

func (w *watcher) all() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.msgs)
}

func (w *watcher) last() string {
	all := w.all()
	if len(all) == 0 {
		return ""
	}
	return all[len(all)-1]
}

func (w *watcher) count(msg string) int {
	n := 0
	for _, m := range w.all() {
		if m == msg {
			n++
		}
	}
	return n
}

var presence = link.Presence{Topic: "p/gw", Online: []byte(`{"connected":true,"session":7}`), Offline: []byte(`{"connected":false,"session":7}`)}

const (
	online  = `p/gw {"connected":true,"session":7}`
	offline = `p/gw {"connected":false,"session":7}`
)

// The presence topic says online after every connect, offline from the
// will when the connection is lost, and offline from the link itself on a
// clean stop (whose DISCONNECT suppresses the will); all retained.
func TestPresenceOnlineWillAndCleanStop(t *testing.T) {
	b := brokertest.Start(t)
	proxy := brokertest.NewProxy(t, b.Addr())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, _ := watch(t, ctx, b.URL(), "watcher", "p/gw")

	gwCtx, stopGW := context.WithCancel(ctx)
	gw := start(t, gwCtx, link.Options{Broker: proxy.URL(), ClientID: "gw", Presence: presence, MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	waitFor(t, "online", func() bool { return w.last() == online })

	proxy.Cut() // the broker sees the connection end without DISCONNECT
	waitFor(t, "the will", func() bool { return w.last() == offline })
	proxy.Restore()
	waitFor(t, "online again", func() bool { return w.last() == online && w.count(online) == 2 })
	waitFor(t, "link up", gw.Connected)

	stopGW()
	waitFor(t, "offline from the clean stop", func() bool { return w.last() == offline && w.count(offline) == 2 })

	// Retained: a client that subscribes now sees offline.
	late, _ := watch(t, ctx, b.URL(), "late", "p/gw")
	waitFor(t, "retained offline", func() bool { return late.last() == offline })
}

// halfOpen forwards to a broker; Drop closes the client's side only, so
// that the broker still holds the old connection (a gateway that lost its
// uplink one way) when the client reconnects: the broker takes the session
// over.
type halfOpen struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	client []net.Conn
	up     []net.Conn
}

func newHalfOpen(t *testing.T, target string) *halfOpen {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &halfOpen{ln: ln, target: target}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			h.mu.Lock()
			h.client, h.up = append(h.client, c), append(h.up, up)
			h.mu.Unlock()
			go func() { io.Copy(up, c) }() // the broker's side stays open when c closes
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

func (h *halfOpen) URL() string { return "tcp://" + h.ln.Addr().String() }

func (h *halfOpen) Drop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.client {
		c.Close()
	}
	h.client = nil
}

// A reconnect that takes over a connection the broker still holds never
// leaves the presence offline: mosquitto publishes no will for a
// persistent session taken over (the link's sessions are persistent), and
// a broker that did would publish it before the new connection's CONNACK,
// so before its online. A marker published after the new online is the
// point by which any will of the old connection must have arrived.
func TestPresenceAfterTakeOverIsOnline(t *testing.T) {
	b := brokertest.Start(t)
	h := newHalfOpen(t, b.Addr())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, _ := watch(t, ctx, b.URL(), "watcher", "p/gw", "marker")

	gwCtx, stopGW := context.WithCancel(ctx)
	defer stopGW()
	gw := start(t, gwCtx, link.Options{Broker: h.URL(), ClientID: "gw", Presence: presence, MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	waitFor(t, "online", func() bool { return w.count(online) == 1 })

	h.Drop()
	waitFor(t, "online after the take-over", func() bool { return w.count(online) == 2 && gw.Connected() })
	if err := gw.Publish(ctx, "marker", false, []byte("after")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the marker", func() bool { return w.last() == "marker after" })
	got := w.all()
	want := []string{online, online, "marker after"}
	if !slices.Equal(got, want) {
		t.Fatalf("presence messages %q, want %q\nbroker log:\n%s", got, want, b.Log())
	}
	if !strings.Contains(b.Log(), "already connected, closing old connection") {
		t.Fatalf("no take-over happened; broker log:\n%s", b.Log())
	}
}
