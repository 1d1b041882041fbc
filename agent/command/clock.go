package command

import (
	"context"
	"fmt"
	"time"

	"github.com/shadowgate/shadowgate/agent/clock"
	"github.com/shadowgate/shadowgate/store"
)

// Time in the pipeline. A gateway without a real-time clock may boot days
// behind (or at 1970) and jump when NTP syncs, so:
//
//   - expires_at is judged by the trusted clock (agent/clock). A command
//     whose expiry cannot be judged yet (no trusted clock, or expires_at
//     within its uncertainty) is accepted and waits, RUNNING with reason
//     ReasonWaitingForClock, heartbeats going on, until it can: then it
//     runs or fails "expired at …". It never runs on an untrusted clock's
//     word.
//   - Durations the gateway measures itself use the monotonic clock:
//     heartbeats, timeouts, the backlog hold, retries. The retention of
//     finished commands (the dedupe window) is measured on the store's
//     uptime, which runs only while the gateway does and survives
//     restarts: no step of the wall clock shortens or lengthens it.
//   - Acks and stored times carry the trusted time; an ack stamped while
//     nothing was trusted says so ("ts_untrusted": true) and carries the
//     system clock, kept within what the clock knows.

// Clock is the trusted time (agent/clock's Clock).
type Clock interface {
	Now() clock.Reading
	Expired(deadline time.Time) (expired, known bool)
	Until(deadline time.Time) (time.Duration, bool)
	Changed() <-chan struct{}
}

// ReasonWaitingForClock is the reason of the RUNNING acks of a command whose
// expires_at cannot be judged yet.
const ReasonWaitingForClock = "waiting for a trusted clock"

// expireEvery is how often finished commands past the retention are
// deleted (and the store's uptime saved: a crash sets the uptime back by
// at most this, which only keeps records longer).
const expireEvery = 10 * time.Minute

// now is the time to store and stamp.
func (p *Processor) now() time.Time { return p.o.Clock.Now().Time.UTC() }

// expiredAt is the FAILURE reason of a command past its expires_at, with
// the time that says so.
func (p *Processor) expiredAt(exp time.Time) string {
	r := p.o.Clock.Now()
	at := "expired at " + exp.UTC().Format(time.RFC3339)
	switch r.Source {
	case clock.SourceSystem:
		return at + "; the synchronized system clock says " + r.Time.UTC().Format(time.RFC3339)
	case clock.SourceCloud:
		return at + "; the cloud's time is " + r.Time.UTC().Format(time.RFC3339)
	}
	return at + "; the time is at least " + r.Earliest.UTC().Format(time.RFC3339)
}

// expiry judges a plan's expires_at: the FAILURE reason when it has
// passed; wait when that cannot be told yet.
func (p *Processor) expiry(pl *plan) (reason error, wait bool) {
	if pl == nil || pl.expires.IsZero() {
		return nil, false
	}
	switch exp, known := p.o.Clock.Expired(pl.expires); {
	case !known:
		return nil, true
	case exp:
		return fmt.Errorf("%s", p.expiredAt(pl.expires)), false
	}
	return nil, false
}

// Outcomes of awaitExpiry.
const (
	clockRun = iota
	clockExpired
	clockCanceled
	clockStop
)

// awaitExpiry waits until the trusted clock can judge the command's
// expires_at (RUNNING "waiting for a trusted clock" meanwhile; the
// heartbeats say it too), then says whether it runs or expired.
func (p *Processor) awaitExpiry(ctx context.Context, j *job) (outcome int, reason string) {
	if j.plan.expires.IsZero() {
		return clockRun, ""
	}
	defer j.waitingClock.Store(false)
	waited := time.Time{}
	for {
		changed := p.o.Clock.Changed()
		exp, known := p.o.Clock.Expired(j.plan.expires)
		if known {
			if !waited.IsZero() {
				p.log.Info("trusted clock: the command's expiry is judged", "tid", j.tid, "expired", exp, "waited", time.Since(waited).Round(time.Millisecond))
			}
			if exp {
				return clockExpired, p.expiredAt(j.plan.expires)
			}
			return clockRun, ""
		}
		if waited.IsZero() {
			waited = time.Now()
			j.waitingClock.Store(true)
			r := p.o.Clock.Now()
			p.log.Warn("command waits for a trusted clock to judge its expires_at", "tid", j.tid,
				"expires_at", j.plan.expires.UTC().Format(time.RFC3339), "clock", r.Source, "system", r.Time.UTC().Format(time.RFC3339))
			if !j.plan.clockAcked {
				j.plan.clockAcked = true
				p.running(j, ReasonWaitingForClock)
			}
		}
		var timer *time.Timer
		var fire <-chan time.Time
		if d, ok := p.o.Clock.Until(j.plan.expires); ok {
			timer = time.NewTimer(d)
			fire = timer.C
		}
		select {
		case <-changed:
		case <-fire:
		case <-j.abort:
			outcome = clockCanceled
		case <-ctx.Done():
			outcome = clockStop
		}
		if timer != nil {
			timer.Stop()
		}
		if outcome != clockRun {
			return outcome, ""
		}
	}
}

// running queues a RUNNING ack (a heartbeat, or news of a wait) with
// reason while the link is up (one queued offline tells nobody anything),
// unless the command has its final ack already (a cancel's).
func (p *Processor) running(j *job, reason string) {
	if !p.o.Link.Connected() {
		return
	}
	ack := p.ack(j.tid, StatusRunning, reason, nil)
	if err := p.o.Store.Update(func(tx *store.Tx) error {
		if c, err := tx.GetCommand(j.tid); err == nil && c.Done() {
			return nil
		}
		return p.enqueueAck(tx, ack)
	}); err != nil {
		p.log.Warn("queue RUNNING ack", "tid", j.tid, "reason", reason, "err", err)
		return
	}
	p.o.Outbox.Kick()
}
