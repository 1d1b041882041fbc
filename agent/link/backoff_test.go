package link_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shadowgate/shadowgate/agent/link"
	"github.com/shadowgate/shadowgate/agent/link/brokertest"
)

// losses records the retry_in of each "mqtt link down" logged for a
// session that was up and was lost (not for a failed connect).
type losses struct {
	mu    sync.Mutex
	retry []time.Duration
}

func (l *losses) Enabled(context.Context, slog.Level) bool { return true }
func (l *losses) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *losses) WithGroup(string) slog.Handler            { return l }
func (l *losses) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "mqtt link down" {
		return nil
	}
	var lost bool
	var retry time.Duration
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "err":
			lost = strings.Contains(a.Value.String(), " lost: ")
		case "retry_in":
			retry = a.Value.Duration()
		}
		return true
	})
	if lost {
		l.mu.Lock()
		l.retry = append(l.retry, retry)
		l.mu.Unlock()
	}
	return nil
}

func (l *losses) count() int { l.mu.Lock(); defer l.mu.Unlock(); return len(l.retry) }
func (l *losses) last() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.retry[len(l.retry)-1]
}

// TestBackoffStartsOverAfterAStableSession: a session dropped soon after
// it came up leaves the reconnect backoff growing (a broker that drops the
// client at once is not hammered); one that held for StableAfter starts
// the next outage over at MinBackoff, however many outages came before
// (a gateway whose link is cut once an hour reconnects at once each time,
// not at MaxBackoff from the sixth cut on).
func TestBackoffStartsOverAfterAStableSession(t *testing.T) {
	b := brokertest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const minBackoff, stable = 40 * time.Millisecond, 2 * time.Second
	log := &losses{}
	l := start(t, ctx, link.Options{Broker: b.URL(), ClientID: "backoff", MinBackoff: minBackoff, MaxBackoff: time.Minute,
		StableAfter: stable, Logger: slog.New(log)})

	// cut drops the session (a broker restart) once it is up, and returns
	// how long it had been up and the retry_in the link logged for it.
	cut := func() (up, retry time.Duration) {
		t.Helper()
		waitFor(t, "connected", l.Connected)
		n := log.count()
		up = time.Since(l.Stats().LastConnect)
		b.Restart()
		waitFor(t, "the loss logged", func() bool { return log.count() > n })
		return up, log.last()
	}
	// Two short sessions: the second loss waits longer than the first.
	var first, second time.Duration
	for range 3 { // a session that happened to last stable/2 on a busy machine tells nothing: again
		up1, r1 := cut()
		up2, r2 := cut()
		if up1 < stable/2 && up2 < stable/2 {
			first, second = r1, r2
			break
		}
	}
	if first == 0 {
		t.Fatal("no two short sessions in three tries")
	}
	if second <= first {
		t.Fatalf("after two sessions lost at once the backoff is %v, then %v: it must grow", first, second)
	}
	// A session that held: the next outage starts over.
	waitFor(t, "a session up for StableAfter", func() bool {
		st := l.Stats()
		return st.Connected && time.Since(st.LastConnect) >= stable
	})
	if _, r := cut(); r != minBackoff {
		t.Fatalf("after a session that held for %v the reconnect waits up to %v, want MinBackoff (%v)", stable, r, minBackoff)
	}
}
