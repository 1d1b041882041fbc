package link_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/shadowgate/shadowgate/agent/link"
	"github.com/shadowgate/shadowgate/agent/link/brokertest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/eclipse/paho.mqtt.golang.(*router).matchAndDispatch.func1"))
}

func start(t *testing.T, ctx context.Context, o link.Options) *link.Link {
	t.Helper()
	return startWith(t, ctx, o, nil)
}

// startWith runs setup (Handle, OnConnect) before Run, as Link requires.
func startWith(t *testing.T, ctx context.Context, o link.Options, setup func(l *link.Link)) *link.Link {
	t.Helper()
	l, err := link.New(o)
	if err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		setup(l)
	}
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	t.Cleanup(func() { <-done })
	return l
}

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

func TestRoundTripReconnectAndStatus(t *testing.T) {
	b := brokertest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var mu sync.Mutex
	var got []string
	var connects int
	devLink, err := link.New(link.Options{Broker: b.URL(), ClientID: "dev", MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		Presence: link.Presence{Topic: "things/dev/status", Online: []byte("online"), Offline: []byte("offline")}})
	if err != nil {
		t.Fatal(err)
	}
	devLink.Handle("cmd/#", func(_ context.Context, m *link.Message) {
		mu.Lock()
		got = append(got, string(m.Payload))
		mu.Unlock()
	})
	devLink.OnConnect(func(context.Context) { mu.Lock(); connects++; mu.Unlock() })
	devDone := make(chan struct{})
	go func() { devLink.Run(ctx); close(devDone) }()
	defer func() { cancel(); <-devDone }()

	var statusMu sync.Mutex
	var status []string
	obs := startWith(t, ctx, link.Options{Broker: b.URL(), ClientID: "obs", CleanSession: true, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond},
		func(l *link.Link) {
			l.Handle("things/dev/status", func(_ context.Context, m *link.Message) {
				statusMu.Lock()
				status = append(status, string(m.Payload))
				statusMu.Unlock()
			})
		})
	waitFor(t, "both connected", func() bool { return devLink.Connected() && obs.Connected() })
	waitFor(t, "online status", func() bool {
		statusMu.Lock()
		defer statusMu.Unlock()
		return len(status) > 0 && status[len(status)-1] == "online"
	})
	for _, p := range []string{"a", "b", "c"} {
		if err := obs.Publish(ctx, "cmd/x", false, []byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "three messages in order", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return strings.Join(got, "") == "abc"
	})
	// The counters: obs published three, dev received them; dev's one
	// publish is its online presence.
	if st := obs.Stats(); st.Published != 3 {
		t.Errorf("obs published %d messages, want 3", st.Published)
	}
	if st := devLink.Stats(); st.Received != 3 || st.Published != 1 {
		t.Errorf("dev received %d, published %d; want 3 and 1 (its presence)", st.Received, st.Published)
	}

	b.Restart()
	waitFor(t, "reconnect with subscriptions restored", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return connects >= 2 && devLink.Connected() && obs.Connected()
	})
	if err := obs.Publish(ctx, "cmd/x", false, []byte("d")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "message after restart", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return strings.HasSuffix(strings.Join(got, ""), "d")
	})
	if st := devLink.Stats(); st.Connects < 2 || st.LastConnect.IsZero() || !st.Connected {
		t.Fatalf("stats %+v", st)
	}
}

func TestPublishWhileDisconnected(t *testing.T) {
	l, err := link.New(link.Options{Broker: "tcp://127.0.0.1:1", ClientID: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Publish(context.Background(), "t", false, nil); !errors.Is(err, link.ErrNotConnected) {
		t.Fatalf("want ErrNotConnected, got %v", err)
	}
}

func TestRefusedConnectionIsReported(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	l := start(t, ctx, link.Options{Broker: "tcp://127.0.0.1:1", ClientID: "x", MinBackoff: 20 * time.Millisecond})
	waitFor(t, "a connection error", func() bool { return l.Stats().LastError != "" })
	msg := l.Stats().LastError
	cancel()
	if !strings.Contains(msg, "127.0.0.1:1") || !strings.Contains(msg, "refused") {
		t.Fatalf("error does not name the broker and the cause: %q", msg)
	}
}

func TestBadURLs(t *testing.T) {
	for _, u := range []string{"", "127.0.0.1:1883", "http://host:80", "tcp://host", "tcp://"} {
		if _, err := link.New(link.Options{Broker: u, ClientID: "x"}); !errors.Is(err, link.ErrBadURL) {
			t.Errorf("%q: want ErrBadURL, got %v", u, err)
		}
	}
}

func TestTLSFiles(t *testing.T) {
	dir := t.TempDir()
	certA, keyA := writePair(t, dir, "a")
	_, keyB := writePair(t, dir, "b")
	garbage := filepath.Join(dir, "garbage.pem")
	os.WriteFile(garbage, []byte("not pem"), 0o600)

	cfg, err := link.TLSConfig("tls://h.example:443", link.TLSFiles{CA: certA, Cert: certA, Key: keyA})
	if err != nil || len(cfg.Certificates) != 1 || cfg.NextProtos[0] != link.ALPNAWS || cfg.ServerName != "h.example" {
		t.Fatalf("good files: %+v %v", cfg, err)
	}
	if cfg, _ := link.TLSConfig("tls://h:8883", link.TLSFiles{}); cfg == nil || len(cfg.NextProtos) != 0 {
		t.Fatal("port 8883 must not use ALPN")
	}
	for name, tc := range map[string]struct {
		files link.TLSFiles
		want  string
	}{
		"unreadable CA": {link.TLSFiles{CA: filepath.Join(dir, "none.pem")}, "read CA file"},
		"CA not PEM":    {link.TLSFiles{CA: garbage}, "holds no PEM certificate"},
		"wrong key":     {link.TLSFiles{Cert: certA, Key: keyB}, "private key does not match public key"},
		"missing cert":  {link.TLSFiles{Cert: filepath.Join(dir, "none.crt"), Key: keyA}, "none.crt"},
		"key only":      {link.TLSFiles{Key: keyA}, "go together"},
	} {
		if _, err := link.TLSConfig("tls://h:8883", tc.files); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: want %q, got %v", name, tc.want, err)
		}
	}
	if _, err := link.TLSConfig("tcp://h:1883", link.TLSFiles{CA: certA}); err == nil {
		t.Error("TLS files on a tcp:// broker were accepted silently")
	}
}

func writePair(t *testing.T, dir, name string) (cert, key string) {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalECPrivateKey(k)
	cert, key = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}), 0o600)
	return cert, key
}

// A handler that defers its acknowledgement lets the next message through
// at once; done(true) acknowledges (no redelivery after a reconnect), and
// done(false) has the broker deliver the message again.
func TestDeferredAck(t *testing.T) {
	b := brokertest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var got []string
	var laterDone func(bool)
	redone := false
	handle := func(_ context.Context, m *link.Message) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, string(m.Payload))
		switch string(m.Payload) {
		case "later":
			laterDone = m.Defer() // acknowledged when "next" arrives
		case "next":
			laterDone(true)
		case "redo":
			if !redone {
				redone = true
				done := m.Defer()
				go done(false)
			}
		}
	}
	dev := startWith(t, ctx, link.Options{Broker: b.URL(), ClientID: "dev-defer", MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond},
		func(l *link.Link) { l.Handle("cmd/#", handle) })
	op := start(t, ctx, link.Options{Broker: b.URL(), ClientID: "op-defer", CleanSession: true})
	waitFor(t, "both connected", func() bool { return dev.Connected() && op.Connected() })
	deliveries := func() string {
		mu.Lock()
		defer mu.Unlock()
		return strings.Join(got, ",")
	}
	for _, p := range []string{"later", "next"} {
		if err := op.Publish(ctx, "cmd/x", false, []byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(15 * time.Second); deliveries() != "later,next"; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("deliveries %q, want later,next; link %+v", deliveries(), dev.Stats())
		}
	}
	// paho queues PUBACKs and a DISCONNECT on different channels, so a
	// message acknowledged just before a forced reconnect may come again
	// (at least once). Give the acks time to leave before forcing one.
	time.Sleep(time.Second)
	if err := op.Publish(ctx, "cmd/x", false, []byte("redo")); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(15 * time.Second); deliveries() != "later,next,redo,redo"; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("deliveries %s, want later,next,redo,redo; link %+v", deliveries(), dev.Stats())
		}
	}
	if err := op.Publish(ctx, "cmd/x", false, []byte("end")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "end", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return strings.HasSuffix(strings.Join(got, ","), ",end")
	})
	mu.Lock()
	defer mu.Unlock()
	if s := strings.Join(got, ","); s != "later,next,redo,redo,end" {
		t.Fatalf("deliveries %s: an acknowledged message came again", s)
	}
	if st := dev.Stats(); st.Connects < 2 {
		t.Fatalf("done(false) did not reconnect: %+v", st)
	}
}

// TestFullQueueNeverBlocksTheReader: paho reads the PUBACKs of our publishes
// on the goroutine that delivers messages. A handler that waits for a PUBACK
// while more messages arrive than the queue holds used to block that reader
// for good. Now the overflow is queued all the same (or answered by a Shed),
// the handler's PUBACK arrives, and every message is handled.
func TestFullQueueNeverBlocksTheReader(t *testing.T) {
	for _, shed := range []bool{false, true} {
		name := map[bool]string{false: "queue", true: "shed"}[shed]
		t.Run(name, func(t *testing.T) {
			b := brokertest.Start(t) // no in-flight limit: the broker sends all at once
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			const n = 50
			var mu sync.Mutex
			handled, shedded := map[string]bool{}, map[string]bool{}
			var dev *link.Link
			h := func(ctx context.Context, m *link.Message) {
				// Wait on the network inside the handler, as a service
				// answering a request might.
				if err := dev.Publish(ctx, "echo/"+string(m.Payload), false, m.Payload); err != nil {
					t.Errorf("publish from a handler: %v", err)
				}
				mu.Lock()
				handled[string(m.Payload)] = true
				mu.Unlock()
			}
			dev = startWith(t, ctx, link.Options{Broker: b.URL(), ClientID: "dev-full-" + name, QueueDepth: 4,
				MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond}, func(l *link.Link) {
				if shed {
					l.HandleShed("req/#", h, func(m *link.Message) {
						mu.Lock()
						shedded[string(m.Payload)] = true
						mu.Unlock()
					})
				} else {
					l.Handle("req/#", h)
				}
			})
			op := start(t, ctx, link.Options{Broker: b.URL(), ClientID: "op-full-" + name, CleanSession: true})
			waitFor(t, "both connected", func() bool { return dev.Connected() && op.Connected() })
			for i := range n {
				if _, err := op.PublishAsync("req/x", false, []byte(fmt.Sprint(i))); err != nil {
					t.Fatal(err)
				}
			}
			missing := func() []string {
				mu.Lock()
				defer mu.Unlock()
				var out []string
				for i := range n {
					if k := fmt.Sprint(i); !handled[k] && !shedded[k] {
						out = append(out, k)
					}
				}
				return out
			}
			for deadline := time.Now().Add(15 * time.Second); len(missing()) > 0; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("never handled: %v; link %+v; broker log:\n%s", missing(), dev.Stats(), b.Log())
				}
			}
			st := dev.Stats()
			if shed && (st.Shed == 0 || len(shedded) == 0) || !shed && st.Overflowed == 0 {
				t.Fatalf("the queue never overflowed: %+v", st)
			}
		})
	}
}
