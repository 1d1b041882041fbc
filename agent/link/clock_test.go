package link_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"log/slog"
	"math/big"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shadowgate/shadowgate/agent/link"
	"github.com/shadowgate/shadowgate/agent/link/brokertest"
)

// stepClock is a gateway clock the test steps.
type stepClock struct {
	mu      sync.Mutex
	synced  bool
	changed chan struct{}
}

func (c *stepClock) Trusted() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.synced }
func (c *stepClock) Changed() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}
func (c *stepClock) sync() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.synced = true
	close(c.changed)
	c.changed = make(chan struct{})
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// A gateway whose clock is before the broker's certificate (booted at
// 1970, or here: the certificate is valid from tomorrow) says so plainly,
// and connects as soon as the clock is right, without waiting out the
// backoff.
func TestTLSClockBeforeCertificate(t *testing.T) {
	dir := t.TempDir()
	tomorrow := time.Now().Add(24 * time.Hour).Truncate(time.Second)
	cert, key := brokertest.ServerCert(t, dir, tomorrow, tomorrow.Add(48*time.Hour))
	b := brokertest.StartWith(t, brokertest.Config{TLSCert: cert, TLSKey: key})
	cfg, err := link.TLSConfig(b.URL(), link.TLSFiles{CA: cert})
	if err != nil {
		t.Fatal(err)
	}
	var skew atomic.Int64 // what the gateway's system clock is off by
	cfg.Time = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	clk := &stepClock{changed: make(chan struct{})}
	logs := &syncBuf{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// A backoff far longer than the test waits: only the clock's change
	// can bring the link up in time.
	l := start(t, ctx, link.Options{Broker: b.URL(), ClientID: "rtc", TLS: cfg, Clock: clk,
		MinBackoff: 5 * time.Minute, MaxBackoff: 10 * time.Minute, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	waitFor(t, "the clock error", func() bool { return strings.Contains(l.Stats().LastError, "NotBefore") })
	le := l.Stats().LastError
	want := "is before the certificate's NotBefore " + tomorrow.UTC().Format(time.RFC3339) + " (CN=broker.test); waiting for time sync"
	if !strings.Contains(le, "system clock ") || !strings.Contains(le, want) {
		t.Fatalf("last error %q, want it to say %q", le, want)
	}
	// The status has the error before the log line is written.
	waitFor(t, "the clock error logged", func() bool { return strings.Contains(logs.String(), "waiting for time sync") })
	if l.Connected() {
		t.Fatal("connected with the clock before the certificate")
	}
	// NTP syncs: the clock jumps to a day and a half later.
	skew.Store(int64(36 * time.Hour))
	clk.sync()
	waitFor(t, "connected once the clock is right", l.Connected)
	if err := l.Publish(ctx, "rtc/x", false, []byte("hello")); err != nil {
		t.Fatal(err)
	}
}

func TestClockErrorWhenSynchronized(t *testing.T) {
	past := time.Now().Add(-48 * time.Hour)
	c, _ := x509.ParseCertificate(selfSigned(t, past, past.Add(time.Hour)))
	e := &link.ClockError{Now: time.Now(), Cert: c, Trusted: true, Err: errors.New("x")}
	if s := e.Error(); !strings.Contains(s, "the certificate (CN=x) expired at") || !strings.Contains(s, "the clock is trusted") {
		t.Fatal(s)
	}
	e.Trusted = false
	if s := e.Error(); !strings.Contains(s, "is after the certificate's NotAfter") || !strings.Contains(s, "waiting for time sync") {
		t.Fatal(s)
	}
}

func selfSigned(t *testing.T, nb, na time.Time) []byte {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "x"}, NotBefore: nb, NotAfter: na}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}
