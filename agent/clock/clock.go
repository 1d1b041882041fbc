// Package clock is the gateway's trusted time of day.
//
// A Raspberry Pi has no battery-backed clock: it boots at the time
// fake-hwclock saved at the last shutdown (or at 1970 without it) and jumps
// when NTP synchronizes it, if the uplink lets NTP through. So the system
// clock is trusted only while the kernel says it is synchronized
// (adjtimex: STA_UNSYNC clear; where a sandbox forbids adjtimex, the flag
// file systemd-timesyncd touches on every synchronization). Otherwise the
// cloud's own clock is estimated from the timestamp of every shadow (and
// jobs) response: an answer to a request of ours was made between the
// request's send and the answer's arrival, so the round trip bounds the
// estimate; a message that answers nothing of ours (a delta, say) only
// says that the cloud's time is past its timestamp. The estimate is carried
// forward on the monotonic clock, its bounds widening with the oscillator's
// possible drift, so a step of the system clock never moves it.
//
// Decisions that depend on the time of day (a command's expires_at) ask
// Expired, which says "not known" rather than guess; timestamps (acks,
// history) come from Now, which says whether they are trusted. Durations
// the gateway measures itself never use this package: they use the
// monotonic clock (and, across restarts, the store's uptime).
package clock

import (
	"context"
	"fmt"
	"log/slog"
	gosync "sync"
	"time"
)

// Source says which clock a reading comes from.
type Source string

// Sources of a reading.
const (
	// SourceSystem is the system clock while the kernel says it is
	// synchronized (NTP).
	SourceSystem Source = "system"
	// SourceCloud is the cloud's clock, estimated from the timestamps of
	// its responses.
	SourceCloud Source = "cloud"
	// SourceNone: nothing is trusted yet; a reading is the system clock
	// (kept within the bounds known).
	SourceNone Source = "none"
)

// Tuning.
const (
	// MaxUncertainty is the widest estimate of the cloud's clock (±) that
	// counts as trusted for timestamps. Expired uses the bounds themselves
	// and decides whatever lies outside them, however wide.
	MaxUncertainty = time.Minute
	// DriftPPM bounds how fast the local oscillator may run fast or slow
	// (the kernel's own bound on a frequency correction is 500 ppm).
	DriftPPM = 500
	// StepMin is the smallest jump of the system clock logged as a step
	// and reported on Changed.
	StepMin = time.Second
	// timesyncMaxError is assumed when only timesyncd's flag file says
	// the clock is synchronized (it says nothing of the error).
	timesyncMaxError = time.Second
	pollEvery        = time.Second
)

// KernelState is what the kernel (or timesyncd) says of the system clock.
type KernelState struct {
	Synced   bool
	MaxError time.Duration // the kernel's maximum error estimate; 0 if unknown
	Via      string        // how it was read: "adjtimex", "systemd-timesyncd"
}

// Options configure a Clock. The zero value is the real system.
type Options struct {
	// System is the system clock (default time.Now). Tests give the
	// daemon a wrong one; TLS verification uses it too.
	System func() time.Time
	// Kernel reads whether the system clock is synchronized (default
	// ReadKernel).
	Kernel func() (KernelState, error)
	Logger *slog.Logger
}

// Reading is a time of day and how far it can be trusted.
type Reading struct {
	// Time is the best estimate: the trusted time, or, when nothing is
	// trusted, the system clock kept within Earliest and Latest.
	Time    time.Time
	Source  Source
	Trusted bool
	// Earliest and Latest bound the true time; zero where unbounded.
	Earliest, Latest time.Time
}

// Uncertainty is half the width of the bounds (0 if unbounded).
func (r Reading) Uncertainty() time.Duration {
	if r.Earliest.IsZero() || r.Latest.IsZero() {
		return 0
	}
	return r.Latest.Sub(r.Earliest) / 2
}

// estimate bounds the true time at a monotonic instant.
type estimate struct {
	at     time.Time // a monotonic reading; zero: no estimate
	lo, hi time.Time // hi zero: no upper bound
}

func (e estimate) known() bool { return !e.at.IsZero() }

// bounds carries the estimate to now, widened by the possible drift.
func (e estimate) bounds(now time.Time) (lo, hi time.Time) {
	el := now.Sub(e.at)
	if el < 0 {
		el = 0
	}
	d := time.Duration(float64(el) * DriftPPM / 1e6)
	lo = e.lo.Add(el - d)
	if !e.hi.IsZero() {
		hi = e.hi.Add(el + d)
	}
	return lo, hi
}

// Clock is the trusted time. It is safe for concurrent use.
type Clock struct {
	o    Options
	log  *slog.Logger
	mono func() time.Time // only its monotonic reading matters

	mu        gosync.Mutex
	changed   chan struct{}
	kernel    KernelState
	kernelErr error
	kernelAt  time.Time // monotonic; zero: never read
	lastWall  time.Time // the system clock at lastMono, for step detection
	lastMono  time.Time
	step      *Step
	cloud     estimate // from answers to our requests
	floor     estimate // lower bound from messages that answer nothing of ours
	lastRTT   time.Duration
	obs       int64
	obsAt     time.Time // monotonic, the last answer that fed the estimate
	disagree  bool      // system (synchronized) and cloud disagree; logged
	source    Source    // of the last reading, to log changes
}

// Step is a jump of the system clock.
type Step struct {
	At time.Time     `json:"at"` // the system clock after the step
	By time.Duration `json:"by_ns"`
}

// New makes a clock.
func New(o Options) *Clock {
	if o.System == nil {
		o.System = time.Now
	}
	if o.Kernel == nil {
		o.Kernel = ReadKernel
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Clock{o: o, log: o.Logger.With("component", "clock"), mono: time.Now, changed: make(chan struct{})}
}

// Run watches the system clock until ctx ends: synchronization gained or
// lost and steps are logged and reported on Changed.
func (c *Clock) Run(ctx context.Context) {
	t := time.NewTicker(pollEvery)
	defer t.Stop()
	for {
		c.mu.Lock()
		c.kernelAt = time.Time{} // read again now
		c.refreshLocked(c.mono())
		c.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Changed returns a channel closed at the next change of what the clock
// knows: the system clock synchronized or not, stepped, or a cloud
// timestamp received. Ask again after it closes.
func (c *Clock) Changed() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}

func (c *Clock) fireLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// System is what the system clock says (TLS verifies certificates with it).
func (c *Clock) System() time.Time { return c.o.System() }

// Trusted reports whether the time is trusted now.
func (c *Clock) Trusted() bool { return c.Now().Trusted }

// VerifyTime is the time to check certificates with (tls.Config.Time): the
// trusted time, or the system clock while nothing is trusted. The cloud's
// time came over a verified connection, so a system clock that went wrong
// later does not lock the gateway out.
func (c *Clock) VerifyTime() time.Time {
	if r := c.Now(); r.Trusted {
		return r.Time
	}
	return c.o.System()
}

// Now reads the trusted time.
func (c *Clock) Now() Reading {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.mono()
	c.refreshLocked(now)
	r := c.readingLocked(now)
	if r.Source != c.source {
		c.sourceChangedLocked(r)
	}
	return r
}

// Stamp is Now's time and whether it is trusted, for timestamps.
func (c *Clock) Stamp() (time.Time, bool) {
	r := c.Now()
	return r.Time, r.Trusted
}

// Expired reports whether deadline has passed by the trusted time; known
// is false while that cannot be told: no clock is trusted yet, or deadline
// lies within the uncertainty.
func (c *Clock) Expired(deadline time.Time) (expired, known bool) {
	r := c.Now()
	if !r.Earliest.IsZero() && !r.Earliest.Before(deadline) {
		return true, true
	}
	if !r.Latest.IsZero() && r.Latest.Before(deadline) {
		return false, true
	}
	return false, false
}

// Until is how long, on the monotonic clock, until deadline has passed
// for certain by what the clock knows now; ok is false when it knows no
// lower bound on the time (then only Changed can tell).
func (c *Clock) Until(deadline time.Time) (d time.Duration, ok bool) {
	r := c.Now()
	if r.Earliest.IsZero() {
		return 0, false
	}
	d = deadline.Sub(r.Earliest)
	if d <= 0 {
		return 0, true
	}
	// The lower bound advances a little slower than the monotonic clock.
	return d + time.Duration(float64(d)*DriftPPM/1e6) + time.Millisecond, true
}

// ObserveUnix takes a cloud timestamp in Unix seconds (shadow and jobs
// responses), received now; sent is when the request it answers was first
// sent (a monotonic reading), zero if it answers nothing of ours.
func (c *Clock) ObserveUnix(sec int64, sent time.Time) {
	if sec <= 0 {
		return
	}
	c.Observe(time.Unix(sec, 0), time.Second, sent, c.mono())
}

// Observe takes a cloud timestamp ts of the given resolution, received at
// recv (a monotonic reading); sent is when the request it answers was
// first sent, zero if it answers nothing of ours. The cloud made ts between
// sent and recv, so at recv its clock read between ts-res and
// ts+res+(recv-sent); without sent only the lower bound holds.
func (c *Clock) Observe(ts time.Time, res time.Duration, sent, recv time.Time) {
	ts = ts.Round(0)
	lo := ts.Add(-res)
	c.mu.Lock()
	defer c.mu.Unlock()
	if sent.IsZero() {
		flo, _ := c.floor.bounds(recv)
		if !c.floor.known() || lo.After(flo) {
			c.floor = estimate{at: recv, lo: lo}
		}
		if c.cloud.known() {
			if _, chi := c.cloud.bounds(recv); lo.After(chi) {
				c.log.Warn("a cloud timestamp is later than the estimate of the cloud's clock allows; estimate dropped until the next answer",
					"timestamp", ts.UTC().Format(time.RFC3339), "latest", chi.UTC().Format(time.RFC3339))
				c.cloud = estimate{}
			}
		}
		c.fireLocked()
		return
	}
	rtt := recv.Sub(sent)
	if rtt < 0 {
		rtt = 0
	}
	hi := ts.Add(res + rtt)
	fresh := estimate{at: recv, lo: lo, hi: hi}
	first := !c.cloud.known()
	if !first {
		clo, chi := c.cloud.bounds(recv)
		ilo, ihi := later(lo, clo), earlier(hi, chi)
		if ilo.After(ihi) {
			c.log.Warn("the cloud's clock disagrees with the estimate made of it; starting over from its latest answer",
				"timestamp", ts.UTC().Format(time.RFC3339), "estimate_from", clo.UTC().Format(time.RFC3339), "estimate_to", chi.UTC().Format(time.RFC3339))
			c.cloud = fresh
		} else {
			c.cloud = estimate{at: recv, lo: ilo, hi: ihi}
		}
	} else {
		c.cloud = fresh
	}
	if flo, _ := c.floor.bounds(recv); c.floor.known() && flo.After(hi) {
		c.floor = estimate{} // from a cloud whose clock has gone back since
	}
	c.obs++
	c.obsAt, c.lastRTT = recv, rtt
	clo, chi := c.cloud.bounds(recv)
	mid := clo.Add(chi.Sub(clo) / 2)
	sys := c.o.System().Round(0)
	if first {
		c.log.Info("cloud time known", "cloud", mid.UTC().Format(time.RFC3339), "system", sys.UTC().Format(time.RFC3339),
			"system_off_by", Describe(mid.Sub(sys)), "uncertainty", chi.Sub(clo)/2, "round_trip", rtt)
	}
	if c.kernel.Synced {
		e := c.kernelMaxError()
		apart := sys.Add(e).Before(clo) || sys.Add(-e).After(chi)
		if apart && !c.disagree {
			c.log.Warn("the synchronized system clock and the cloud's clock disagree; the system clock is used",
				"system", sys.UTC().Format(time.RFC3339), "cloud", mid.UTC().Format(time.RFC3339), "difference", mid.Sub(sys))
		}
		c.disagree = apart
	}
	c.fireLocked()
}

// refreshLocked reads the kernel's state (at most every pollEvery) and
// looks for steps of the system clock.
func (c *Clock) refreshLocked(now time.Time) {
	if !c.kernelAt.IsZero() && now.Sub(c.kernelAt) < pollEvery {
		return
	}
	k, err := c.o.Kernel()
	wasSynced, hadErr := c.kernel.Synced, c.kernelErr != nil
	c.kernel, c.kernelErr, c.kernelAt = k, err, now
	wall := c.o.System().Round(0)
	first := c.lastMono.IsZero()
	if !first {
		step := wall.Sub(c.lastWall) - now.Sub(c.lastMono)
		if step >= StepMin || step <= -StepMin {
			c.step = &Step{At: wall, By: step}
			c.log.Warn("system clock stepped", "by", step, "from", c.lastWall.Add(now.Sub(c.lastMono)).UTC().Format(time.RFC3339),
				"to", wall.UTC().Format(time.RFC3339))
			c.fireLocked()
		}
	}
	c.lastWall, c.lastMono = wall, now
	switch {
	case err != nil && (first || !hadErr):
		// The usual case under the hardened unit without timesyncd: the
		// cloud's time is used instead (logged when it arrives).
		c.log.Info("cannot tell whether the system clock is synchronized; it is not trusted, the cloud's time will be", "err", err)
	case k.Synced && !wasSynced:
		c.log.Info("system clock synchronized", "via", k.Via, "system", wall.UTC().Format(time.RFC3339), "max_error", k.MaxError)
		c.fireLocked()
	case !k.Synced && wasSynced:
		c.log.Warn("system clock no longer synchronized", "via", k.Via)
		c.fireLocked()
	}
}

func (c *Clock) kernelMaxError() time.Duration {
	if c.kernel.MaxError > 0 {
		return c.kernel.MaxError
	}
	return timesyncMaxError
}

func (c *Clock) readingLocked(now time.Time) Reading {
	sys := c.o.System().Round(0)
	if c.kernel.Synced {
		e := c.kernelMaxError()
		return Reading{Time: sys, Source: SourceSystem, Trusted: true, Earliest: sys.Add(-e), Latest: sys.Add(e)}
	}
	var lo, hi time.Time
	if c.cloud.known() {
		lo, hi = c.cloud.bounds(now)
	}
	if c.floor.known() {
		if flo, _ := c.floor.bounds(now); flo.After(lo) {
			lo = flo
		}
	}
	if !hi.IsZero() && !lo.After(hi) && hi.Sub(lo) <= 2*MaxUncertainty {
		return Reading{Time: lo.Add(hi.Sub(lo) / 2), Source: SourceCloud, Trusted: true, Earliest: lo, Latest: hi}
	}
	t := sys
	if !lo.IsZero() && t.Before(lo) {
		t = lo
	}
	if !hi.IsZero() && t.After(hi) {
		t = hi
	}
	return Reading{Time: t, Source: SourceNone, Earliest: lo, Latest: hi}
}

func (c *Clock) sourceChangedLocked(r Reading) {
	prev := c.source
	c.source = r.Source
	if prev == "" && r.Source == SourceNone {
		// At start this is the normal state until the first cloud answer
		// (a Pi boots unsynchronized): information, not a warning. A
		// command that has to wait for it says so itself.
		c.log.Info("no trusted clock yet: the system clock is not synchronized and no cloud time has arrived; commands with expires_at wait",
			"system", r.Time.UTC().Format(time.RFC3339))
		return
	}
	if prev == "" {
		return // the first reading is logged where it was learned
	}
	switch r.Source {
	case SourceNone:
		c.log.Warn("the clock is no longer trusted", "was", prev)
	default:
		c.log.Info("trusted clock", "source", r.Source, "was", prev, "time", r.Time.UTC().Format(time.RFC3339), "uncertainty", r.Uncertainty())
	}
}

// Status is what the clock knows, for status views.
type Status struct {
	Source      Source        `json:"source"`
	Trusted     bool          `json:"trusted"`
	Now         time.Time     `json:"now"`
	System      time.Time     `json:"system"`
	Offset      time.Duration `json:"offset_ns"` // Now - System
	Uncertainty time.Duration `json:"uncertainty_ns"`
	// Earliest is the lower bound known when nothing is trusted.
	Earliest     time.Time    `json:"earliest,omitzero"`
	SystemSynced bool         `json:"system_synchronized"`
	SystemVia    string       `json:"system_via,omitempty"`
	SystemError  string       `json:"system_error,omitempty"`
	Cloud        *CloudStatus `json:"cloud,omitempty"`
	LastStep     *Step        `json:"last_step,omitempty"`
}

// CloudStatus is the estimate of the cloud's clock.
type CloudStatus struct {
	Offset       time.Duration `json:"offset_ns"` // cloud - system
	Uncertainty  time.Duration `json:"uncertainty_ns"`
	RoundTrip    time.Duration `json:"round_trip_ns"` // of the last answer
	Age          time.Duration `json:"age_ns"`        // since the last answer
	Observations int64         `json:"observations"`
}

// Status returns what the clock knows.
func (c *Clock) Status() Status {
	r := c.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.mono()
	sys := c.o.System().Round(0)
	st := Status{Source: r.Source, Trusted: r.Trusted, Now: r.Time, System: sys, Offset: r.Time.Sub(sys),
		Uncertainty: r.Uncertainty(), SystemSynced: c.kernel.Synced, SystemVia: c.kernel.Via, LastStep: c.step}
	if !r.Trusted {
		st.Earliest = r.Earliest
	}
	if c.kernelErr != nil {
		st.SystemError = c.kernelErr.Error()
	}
	if c.cloud.known() {
		lo, hi := c.cloud.bounds(now)
		st.Cloud = &CloudStatus{Offset: lo.Add(hi.Sub(lo) / 2).Sub(sys), Uncertainty: hi.Sub(lo) / 2, RoundTrip: c.lastRTT,
			Age: now.Sub(c.obsAt), Observations: c.obs}
	}
	return st
}

// Summary is the status in a few words (the systemd STATUS line, shadowctl
// status).
func (s Status) Summary() string {
	switch s.Source {
	case SourceSystem:
		via := s.SystemVia
		if via == "" {
			via = "kernel"
		}
		out := "system clock, synchronized (" + via + ")"
		if s.Cloud != nil && s.Cloud.Offset.Abs() > s.Cloud.Uncertainty+time.Second {
			out += fmt.Sprintf("; the cloud's clock differs by %s", s.Cloud.Offset.Round(time.Millisecond))
		}
		return out
	case SourceCloud:
		return fmt.Sprintf("cloud time; the system clock is %s (±%s)", Describe(s.Offset), s.Uncertainty.Round(time.Millisecond))
	}
	out := "not trusted: the system clock is not synchronized and no cloud time has arrived"
	if s.Cloud != nil {
		out = fmt.Sprintf("not trusted: the system clock is not synchronized and the cloud time is too uncertain (±%s)", s.Cloud.Uncertainty.Round(time.Second))
	}
	if !s.Earliest.IsZero() {
		out += "; not before " + s.Earliest.UTC().Format(time.RFC3339)
	}
	return out
}

// Describe says how far the system clock is off, given trusted - system.
func Describe(offset time.Duration) string {
	switch {
	case offset.Abs() < time.Millisecond:
		return "right"
	case offset > 0:
		return offset.Round(time.Millisecond).String() + " behind"
	default:
		return (-offset).Round(time.Millisecond).String() + " ahead"
	}
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func earlier(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
