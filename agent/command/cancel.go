package command

import (
	"context"
	"errors"
	"time"

	"github.com/shadowgate/shadowgate/store"
)

// A cancel is {"tid":"<tid of the request>","status":"CANCEL"} on the
// command topic (an optional "cmd" is kept for display only). It goes
// through the intake like a request, in arrival order and durable before
// its PUBACK, and it acts on the inbox record of its tid in the same
// transaction as its ack:
//
//   - no record: a finished record, FAILURE canceled, is stored (within the
//     inbox quota and its headroom), so that the request, arriving later,
//     is answered with that ack and never runs; it expires with the
//     finished commands;
//   - a record not started (queued, awaiting approval, held after a
//     reconnect): it is finished FAILURE canceled, and the job never
//     starts;
//   - a record started (hardware is moving): RUNNING "too late to cancel";
//     the command's own final ack follows;
//   - a finished record: its recorded final ack, as for a resent request
//     (what ran cannot be undone by a cancel; ROLLBACK is the way back).
//
// A command records its start in the transaction that records its first
// change, and that transaction refuses to start a command whose record is
// finished; the store commits one transaction at a time, so a cancel and a
// start cannot both win.

// Backlog hold: after every (re)connect, and from the start of the daemon
// until the first connect, commands are accepted (durable, RUNNING) but do
// not start until the command topic has been quiet for backlogQuiet (or
// backlogHoldMax has passed). MQTT has no end-of-backlog marker: this is
// what lets a cancel the broker queued behind its request (the operator
// gave up, then canceled, while the gateway was away) arrive before the
// request starts. AWS IoT Core sends a persistent session's stored
// messages at up to 10 a second, so a gap of a second ends a backlog.
const (
	backlogQuiet   = time.Second
	backlogHoldMax = 20 * time.Second
)

// errRevoked refuses, inside the transaction that would mark a command
// started, to start one whose record a cancel has finished.
var errRevoked = errors.New("canceled before it started")

// errAlreadyFinal stops a final status from being written over one a
// cancel wrote first.
var errAlreadyFinal = errors.New("the command already has its final status")

// cancelOutcome is what a cancel found.
type cancelOutcome int

const (
	cancelAhead       cancelOutcome = iota // no request yet: remembered
	cancelQueued                           // not started: canceled
	cancelTooLate                          // running
	cancelFinished                         // answered with the recorded final ack
	cancelNotRecorded                      // unknown tid, no room to remember it
	cancelDamaged                          // the tid's record is damaged
)

// cancelIntakeOf prepares the inbox write of a cancel.
func (p *Processor) cancelIntakeOf(r *Request, now time.Time) *intake {
	return p.cancelIntake(r, now, ReasonCanceled)
}

// Cancel cancels the command tid as a cancel on the command topic does
// (durable, in arrival order with the requests; one not started never
// starts), with reason as its FAILURE reason: how a Sink stops a command
// whose tid it claims, which a cancel on the command topic may not name (a
// job execution that ended in the cloud). done(true) is called once the
// cancel is durable. false for a tid that is not valid.
func (p *Processor) Cancel(tid, reason string, done func(ok bool)) bool {
	if !validTID(tid) {
		return false
	}
	if reason == "" {
		reason = ReasonCanceled
	}
	p.take(p.cancelIntake(&Request{TID: tid, Status: StatusCancel}, p.now(), reason), done)
	return true
}

// cancelIntake prepares the inbox write of a cancel whose FAILURE says
// reason.
func (p *Processor) cancelIntake(r *Request, now time.Time, reason string) *intake {
	tid := r.TID
	canceled := p.ack(tid, StatusFailure, reason, nil)
	var outcome cancelOutcome
	var why error
	var final []byte
	write := func(tx *store.Tx) error {
		why, final = nil, nil
		c, err := tx.GetCommand(tid)
		switch {
		case errors.Is(err, store.ErrNotFound):
			rec := store.Command{TID: tid, Cmd: clip(r.Cmd, maxQuoted), Received: now, Status: StatusFailure, Finished: now, LastAck: canceled}
			switch err := tx.PutCanceled(&rec); {
			case errors.Is(err, store.ErrInboxFull):
				outcome, why = cancelNotRecorded, err
				return p.enqueueAck(tx, p.ack(tid, StatusFailure, ReasonCancelNotRecorded+": "+err.Error()+"; a request with this tid arriving later is not held back", nil))
			case err != nil:
				return err
			}
			outcome = cancelAhead
			return p.enqueueAck(tx, canceled)
		case errors.Is(err, store.ErrCorrupt):
			outcome, why = cancelDamaged, err
			return p.enqueueAck(tx, p.ack(tid, StatusFailure, "the gateway's record of this tid is damaged; not run: "+err.Error(), nil))
		case err != nil:
			return err
		case c.Done():
			outcome, final = cancelFinished, c.LastAck
			if final == nil {
				final = p.ack(tid, c.Status, "", nil)
			}
			return p.enqueueAck(tx, final)
		case !c.Started.IsZero():
			outcome = cancelTooLate
			return p.enqueueAck(tx, p.ack(tid, StatusRunning, ReasonCancelTooLate, nil))
		}
		_, err = tx.UpdateCommand(tid, func(c *store.Command) error {
			c.Status, c.LastAck, c.Finished = StatusFailure, canceled, now
			c.Request = nil // a resend is answered from LastAck alone
			if c.Approval == "pending" {
				c.Approval = ""
			}
			return nil
		})
		if err != nil {
			return err
		}
		outcome = cancelQueued
		return p.enqueueAck(tx, canceled)
	}
	settled := func() {
		p.mu.Lock()
		if p.canceling[tid]--; p.canceling[tid] <= 0 {
			delete(p.canceling, tid)
		}
		p.mu.Unlock()
		switch outcome {
		case cancelAhead:
			p.log.Info("cancel of a tid not received yet; remembered, the request will not run", "tid", tid, "retention", p.o.Config.Commands.Retention)
		case cancelQueued:
			p.log.Info("command canceled before it started", "tid", tid)
			p.cancelJob(tid)
		case cancelTooLate:
			p.log.Warn("cancel came too late: the command is running", "tid", tid)
		case cancelFinished:
			p.log.Info("cancel of a finished command; answered with its final ack", "tid", tid, "ack", clip(string(final), maxReason))
		case cancelNotRecorded:
			p.log.Error("cancel not recorded: the inbox is full", "tid", tid, "err", why)
		case cancelDamaged:
			p.log.Error("cancel of a tid whose record is damaged", "tid", tid, "err", why)
		}
		p.poke()
	}
	return &intake{tid: tid, cancel: true, write: write, settled: settled}
}

// cancelJob stops the job of a command whose record a cancel has finished
// (durably): a job not started leaves its lanes at once; one awaiting
// approval (or on its way to its first change) is told to stop, and its
// start refuses in any case (errRevoked).
func (p *Processor) cancelJob(tid string) {
	p.mu.Lock()
	j := p.active[tid]
	if j == nil {
		p.mu.Unlock()
		return
	}
	j.final.done.Store(true) // its final status is the cancel's, on disk
	j.awaiting.Store(false)
	if !j.started {
		delete(p.active, tid)
		p.dropFromLanesLocked(j)
		p.mu.Unlock()
		close(j.landed)
		p.poke()
		return
	}
	p.mu.Unlock()
	j.abortOnce.Do(func() { close(j.abort) })
}

// linkPoll is how often the processor looks whether the link is down.
const linkPoll = 100 * time.Millisecond

// onConnect begins a backlog hold on every (re)connect.
func (p *Processor) onConnect(context.Context) {
	p.mu.Lock()
	p.hold.down = false
	p.beginHoldLocked(true)
	p.mu.Unlock()
	p.poke()
}

// watchLink notes when the link is down, so that the first message after
// it begins a backlog hold at once, before the connect hooks run (they run
// after the subscriptions and the shadow GETs, while the backlog is
// arriving already).
func (p *Processor) watchLink(ctx context.Context) {
	t := time.NewTicker(linkPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if !p.o.Link.Connected() {
				p.mu.Lock()
				p.hold.down = true
				p.mu.Unlock()
			}
		}
	}
}

// beginHoldLocked starts (or restarts) the backlog hold; linked is false at
// the start of the daemon, before the first connect.
func (p *Processor) beginHoldLocked(linked bool) {
	now := time.Now() // the hold is measured on the monotonic clock
	if !p.hold.on {
		p.hold.on = true
		p.hold.over = make(chan struct{})
	}
	p.hold.since, p.hold.linked = now, linked
}

// holdLeftLocked is how long the backlog hold lasts still (0: it is over,
// and ends it now if it was on).
func (p *Processor) holdLeftLocked(now time.Time) time.Duration {
	h := &p.hold
	if !h.on {
		return 0
	}
	if left := p.holdEndLocked().Sub(now); left > 0 {
		return left
	}
	h.on = false
	close(h.over)
	waiting := 0
	for _, j := range p.active {
		if !j.started {
			waiting++
		}
	}
	p.log.Debug("command backlog settled; starting commands", "waiting", waiting, "connected", h.linked)
	return 0
}

// holdEndLocked is when the backlog hold ends, as things stand.
func (p *Processor) holdEndLocked() time.Time {
	h := &p.hold
	end := h.since.Add(backlogHoldMax)
	if h.linked {
		quiet := h.since
		if h.last.After(quiet) {
			quiet = h.last
		}
		if q := quiet.Add(backlogQuiet); q.Before(end) {
			end = q
		}
	}
	return end
}

// waitUnheld waits, for a job approved while a backlog hold is on, until
// the hold is over; false if the job is canceled or the daemon stops.
func (p *Processor) waitUnheld(ctx context.Context, j *job) bool {
	for {
		p.mu.Lock()
		left := p.holdLeftLocked(time.Now())
		over := p.hold.over
		p.mu.Unlock()
		if left == 0 {
			return true
		}
		t := time.NewTimer(left)
		select {
		case <-over:
		case <-t.C:
		case <-j.abort:
			t.Stop()
			return false
		case <-ctx.Done():
			t.Stop()
			return false
		}
		t.Stop()
	}
}
