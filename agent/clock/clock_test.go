package clock

import (
	"strings"
	"sync"
	"testing"
	"time"
)

// fake is a machine whose monotonic clock and system clock the test moves.
type fake struct {
	mu     sync.Mutex
	base   time.Time
	mono   time.Duration // elapsed on the monotonic clock
	off    time.Duration // system clock = real + off
	synced bool
}

func newFake(off time.Duration) *fake { return &fake{base: time.Now(), off: off} }

func (f *fake) monoNow() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.base.Add(f.mono)
}

func (f *fake) system() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.base.Add(f.mono + f.off).Round(0)
}

// real is the true time (what the cloud's clock says).
func (f *fake) real() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.base.Add(f.mono).Round(0)
}

func (f *fake) advance(d time.Duration) {
	f.mu.Lock()
	f.mono += d
	f.mu.Unlock()
}

func (f *fake) step(d time.Duration) {
	f.mu.Lock()
	f.off += d
	f.mu.Unlock()
}

func (f *fake) kernel() (KernelState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return KernelState{Synced: f.synced, MaxError: 20 * time.Millisecond, Via: "test"}, nil
}

func newClock(f *fake) *Clock {
	c := New(Options{System: f.system, Kernel: f.kernel})
	c.mono = f.monoNow
	return c
}

// answer feeds the answer to a request sent now, received after rtt,
// stamped by the cloud (in whole seconds) halfway.
func answer(c *Clock, f *fake, rtt time.Duration) {
	sent := f.monoNow()
	f.advance(rtt / 2)
	ts := f.real().Truncate(time.Second)
	f.advance(rtt - rtt/2)
	c.Observe(ts, time.Second, sent, f.monoNow())
}

func TestNothingTrustedUntilTheCloudAnswers(t *testing.T) {
	f := newFake(-48 * time.Hour) // booted two days behind
	c := newClock(f)
	r := c.Now()
	if r.Trusted || r.Source != SourceNone || !r.Time.Equal(f.system()) {
		t.Fatalf("unsynchronized, no cloud time: %+v", r)
	}
	deadline := f.real().Add(-time.Hour) // expired by the true time
	if _, known := c.Expired(deadline); known {
		t.Fatal("expiry judged without any trusted time")
	}
	if _, ok := c.Until(deadline); ok {
		t.Fatal("Until without a lower bound")
	}
	if v := c.VerifyTime(); !v.Equal(f.system()) {
		t.Fatalf("certificates checked at %s while nothing is trusted, want the system clock", v)
	}
	changed := c.Changed()
	answer(c, f, 300*time.Millisecond)
	select {
	case <-changed:
	default:
		t.Fatal("an answer did not report a change")
	}
	r = c.Now()
	if !r.Trusted || r.Source != SourceCloud {
		t.Fatalf("after an answer: %+v", r)
	}
	if d := r.Time.Sub(f.real()); d.Abs() > 2*time.Second || r.Uncertainty() > 2*time.Second {
		t.Fatalf("estimate off by %s ±%s", d, r.Uncertainty())
	}
	if exp, known := c.Expired(deadline); !known || !exp {
		t.Fatalf("an hour past expiry by the cloud: expired %v known %v", exp, known)
	}
	if exp, known := c.Expired(f.real().Add(time.Hour)); !known || exp {
		t.Fatalf("an hour before expiry by the cloud: expired %v known %v", exp, known)
	}
	if _, known := c.Expired(r.Time); known {
		t.Fatal("a deadline within the uncertainty was judged")
	}
	if v := c.VerifyTime(); v.Sub(f.real()).Abs() > 2*time.Second {
		t.Fatalf("certificates checked at %s, want the cloud's time %s", v, f.real())
	}
	st := c.Status()
	if st.Offset < 47*time.Hour || !strings.Contains(st.Summary(), "behind") {
		t.Fatalf("status %+v: %s", st, st.Summary())
	}
}

func TestSystemStepsDoNotMoveTheEstimate(t *testing.T) {
	f := newFake(0)
	c := newClock(f)
	answer(c, f, 100*time.Millisecond)
	before := c.Now()
	changed := c.Changed()
	f.advance(2 * pollEvery)
	f.step(50 * 365 * 24 * time.Hour) // NTP, or a bad RTC, jumps 50 years
	r := c.Now()
	select {
	case <-changed:
	default:
		t.Fatal("a step was not reported")
	}
	if d := r.Time.Sub(before.Time) - 2*pollEvery; d.Abs() > 100*time.Millisecond {
		t.Fatalf("the estimate moved by %s with the system clock", d)
	}
	if st := c.Status(); st.LastStep == nil || st.LastStep.By < 49*365*24*time.Hour {
		t.Fatalf("step not recorded: %+v", st.LastStep)
	}
}

func TestDriftWidensTheEstimate(t *testing.T) {
	f := newFake(0)
	c := newClock(f)
	answer(c, f, 100*time.Millisecond)
	u0 := c.Now().Uncertainty()
	f.advance(24 * time.Hour)
	r := c.Now()
	if w := r.Uncertainty() - u0; w < 43*time.Second || w > 44*time.Second {
		t.Fatalf("a day without answers widened the estimate by %s, want 43.2s (500 ppm)", w)
	}
	f.advance(24 * time.Hour)
	r = c.Now()
	if r.Trusted {
		t.Fatalf("two days without answers, ±%s is still trusted", r.Uncertainty())
	}
	// Far deadlines are still judged; a near one is not.
	if exp, known := c.Expired(f.real().Add(-time.Hour)); !known || !exp {
		t.Fatal("an hour past, not judged expired")
	}
	if _, known := c.Expired(f.real()); known {
		t.Fatal("a deadline within ±87s judged")
	}
	// A new answer narrows it again (the intersection of both).
	answer(c, f, 100*time.Millisecond)
	if r := c.Now(); !r.Trusted || r.Uncertainty() > 2*time.Second {
		t.Fatalf("after a new answer: %+v ±%s", r, r.Uncertainty())
	}
}

func TestUnsolicitedTimestampsOnlyBoundFromBelow(t *testing.T) {
	f := newFake(-48 * time.Hour)
	c := newClock(f)
	// A delta stamped an hour ago (queued at the broker while offline).
	c.Observe(f.real().Add(-time.Hour), time.Second, time.Time{}, f.monoNow())
	r := c.Now()
	if r.Trusted || r.Earliest.IsZero() || r.Time.Before(r.Earliest) {
		t.Fatalf("after a delta: %+v", r)
	}
	if exp, known := c.Expired(f.real().Add(-2 * time.Hour)); !known || !exp {
		t.Fatal("past the lower bound, not judged expired")
	}
	if _, known := c.Expired(f.real().Add(time.Hour)); known {
		t.Fatal("judged not expired with no upper bound")
	}
	deadline := f.real().Add(-30 * time.Minute)
	d, ok := c.Until(deadline)
	if !ok || d < 30*time.Minute || d > 31*time.Minute {
		t.Fatalf("until %s %v", d, ok)
	}
	f.advance(d)
	if exp, known := c.Expired(deadline); !known || !exp {
		t.Fatal("not expired after Until")
	}
}

func TestSynchronizedSystemClockWins(t *testing.T) {
	f := newFake(0)
	f.synced = true
	c := newClock(f)
	r := c.Now()
	if !r.Trusted || r.Source != SourceSystem || !r.Time.Equal(f.system()) || r.Uncertainty() != 20*time.Millisecond {
		t.Fatalf("synchronized: %+v", r)
	}
	if exp, known := c.Expired(f.real().Add(time.Second)); !known || exp {
		t.Fatal("a second ahead, within 20ms")
	}
	if !strings.Contains(c.Status().Summary(), "synchronized") {
		t.Fatal(c.Status().Summary())
	}
	// It loses synchronization: the cloud, or nothing.
	changed := c.Changed()
	f.mu.Lock()
	f.synced = false
	f.mu.Unlock()
	f.advance(2 * pollEvery)
	if r := c.Now(); r.Trusted {
		t.Fatalf("unsynchronized: %+v", r)
	}
	select {
	case <-changed:
	default:
		t.Fatal("losing synchronization not reported")
	}
}

func TestAContradictingAnswerStartsOver(t *testing.T) {
	f := newFake(0)
	c := newClock(f)
	answer(c, f, 100*time.Millisecond)
	// The cloud's clock is set back an hour (a self-hosted service's host).
	sent := f.monoNow()
	f.advance(50 * time.Millisecond)
	c.Observe(f.real().Add(-time.Hour).Truncate(time.Second), time.Second, sent, f.monoNow())
	r := c.Now()
	if !r.Trusted || r.Time.Sub(f.real().Add(-time.Hour)).Abs() > 2*time.Second {
		t.Fatalf("after the contradiction: %+v", r)
	}
}
