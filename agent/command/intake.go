package command

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/shadowgate/shadowgate/agent/link"
	"github.com/shadowgate/shadowgate/store"
)

// MaxRequestBytes caps a request: AWS IoT Core refuses a message payload
// over 128 KB, so no request from the cloud is larger. A larger one (from a
// broker without that limit) is answered FAILURE if its tid can be read, and
// is never stored.
const MaxRequestBytes = 128 << 10

// Retry delays of a write the disk refused (a full disk, an I/O error).
const (
	retryMin = 50 * time.Millisecond
	retryMax = 5 * time.Second
)

// How long a write waits for company in the store's next commit (see
// store.SubmitWithin) when one is near: a request's inbox write while a
// command runs, a final status while the next command on its actuators
// waits to record its start. Bounded so that an ack is never late by more.
const (
	intakeWithin = 5 * time.Millisecond
	finalWithin  = 10 * time.Millisecond
)

// errEarlierPending fails a write that must land after an earlier one that
// is not durable (it failed, or is still being retried): it runs again once
// the earlier one is.
var errEarlierPending = errors.New("an earlier write is not on disk yet")

// mark tells later writes whether an earlier write landed. set is the
// write's last step inside its transaction; landed, asked inside a later
// transaction, is true once the write is durable or if it ran in that same
// transaction (then both land, or neither). The store commits one
// transaction at a time, so an earlier transaction has committed or rolled
// back before a later one runs.
type mark struct {
	done atomic.Bool
	tx   atomic.Pointer[store.Tx]
}

func (m *mark) set(tx *store.Tx) {
	m.tx.Store(tx)
	tx.OnCommit(func() { m.done.Store(true) })
}

func (m *mark) landed(tx *store.Tx) bool { return m == nil || m.done.Load() || m.tx.Load() == tx }

// pendingRequest is a received request on its way into the inbox.
type pendingRequest struct {
	in   *intake
	done func(ok bool) // acknowledges the message to the broker
	att  *mark         // the current attempt of its write
	wait func() error  // until that attempt is durable
	// failures counts the attempts the disk refused.
	failures int
}

// intake is what a request becomes in the inbox: its record, its first ack
// and what to do once they are durable.
type intake struct {
	tid    string
	cancel bool                     // a cancel, not a request
	write  func(tx *store.Tx) error // re-runnable: it acts only through tx
	// settled runs once the write is durable, with the outcome of the
	// transaction that committed it.
	settled func()
}

// onRequest runs on the link's dispatcher. It submits the request's inbox
// write (with its first ack) and returns without waiting for the fsync; the
// intake goroutine acknowledges the message to the broker once the write is
// durable. Requests that arrive meanwhile share the next commit: a burst
// costs one fsync, not one each. Each write lands only after the one of the
// request before it, so requests enter the inbox in arrival order even
// when the disk refuses some writes (then the refused one and every later
// one are written again, in order).
func (p *Processor) onRequest(_ context.Context, m *link.Message) {
	p.received.Add(1)
	p.mu.Lock()
	if p.hold.down || !p.o.Link.Connected() {
		// The first message after the link was down: a backlog may be
		// arriving, with cancels behind requests.
		p.hold.down = false
		p.beginHoldLocked(true)
	}
	p.hold.last = time.Now() // a backlog is still arriving (monotonic)
	p.mu.Unlock()
	in := p.intakeOf(m.Payload, true)
	if in == nil {
		return // nobody to answer; counted and logged. The message is acknowledged.
	}
	if in.cancel {
		p.log.Debug("command cancel received", "tid", in.tid, "bytes", len(m.Payload))
	} else {
		p.log.Debug("command request received", "tid", in.tid, "bytes", len(m.Payload))
	}
	p.take(in, m.Defer())
}

// Offer takes a request that did not come on commands/<thing> (a job
// execution, whose tid the Sink claims) into the same intake as those that
// do: persisted in arrival order with its first ack, run once per tid,
// acked through the Sink. done(true) is called once it is durable; a
// request still unwritten when the processor stops gets no call (offer it
// again after the restart). false when payload has no usable tid.
func (p *Processor) Offer(payload []byte, done func(ok bool)) bool {
	in := p.intakeOf(payload, false)
	if in == nil {
		return false
	}
	p.log.Debug("command request offered", "tid", in.tid, "bytes", len(payload))
	p.take(in, done)
	return true
}

// take submits in's write, acknowledged with done once it is durable.
func (p *Processor) take(in *intake, done func(ok bool)) {
	pr := &pendingRequest{in: in, done: done}
	p.mu.Lock()
	if in.cancel {
		// Until it is settled, the command it cancels does not start.
		p.canceling[in.tid]++
	}
	var prev *mark
	if n := len(p.intake); n > 0 {
		prev = p.intake[n-1].att
	}
	p.submitLocked(pr, prev)
	p.intake = append(p.intake, pr)
	p.mu.Unlock()
	select {
	case p.intakeWake <- struct{}{}:
	default:
	}
}

// submitLocked submits a new attempt of pr's write, to land after prev.
// While a command runs, a commit of its own is near (its start, its final
// status): the write waits up to intakeWithin to share it, so that a
// request costs no fsync of its own.
func (p *Processor) submitLocked(pr *pendingRequest, prev *mark) {
	att := &mark{}
	pr.att = att
	submit := p.o.Store.Submit
	if p.runningLocked() {
		submit = func(fn func(tx *store.Tx) error) func() error { return p.o.Store.SubmitWithin(intakeWithin, fn) }
	}
	pr.wait = submit(func(tx *store.Tx) error {
		if !prev.landed(tx) {
			return errEarlierPending
		}
		if err := pr.in.write(tx); err != nil {
			return err
		}
		att.set(tx)
		return nil
	})
}

// intakeOf reads a request and prepares its inbox write; nil when there is
// no tid to answer to. A request on the command topic (fromLink) with a tid
// the Sink claims is refused, on commands/<thing>/ack.
func (p *Processor) intakeOf(payload []byte, fromLink bool) *intake {
	now := p.now()
	var r *Request
	var reason error
	if len(payload) > MaxRequestBytes {
		p.tooLarge.Add(1)
		tid := probeTID(payload)
		if tid == "" {
			p.malformed.Add(1)
			p.log.Warn("command request over the size limit, without a usable tid; nobody to answer", "bytes", len(payload), "limit", MaxRequestBytes)
			return nil
		}
		r = &Request{TID: tid}
		reason = fmt.Errorf("request is %d bytes; the limit is %d bytes (AWS IoT Core's 128 KB message limit)", len(payload), MaxRequestBytes)
	} else {
		var err error
		if r, err = parse(payload); r == nil {
			p.malformed.Add(1)
			p.log.Warn("command request without a usable tid; nobody to answer", "err", err, "bytes", len(payload))
			return nil
		}
		reason = err
		if fromLink && p.o.Sink != nil && p.o.Sink.Claims(r.TID) {
			return p.reservedIntake(r.TID) // a job execution's: not the requester's to run or cancel
		}
		if reason == nil && r.Status == StatusCancel {
			return p.cancelIntakeOf(r, now)
		}
	}
	if fromLink && p.o.Sink != nil && p.o.Sink.Claims(r.TID) {
		return p.reservedIntake(r.TID)
	}
	var pl *plan
	var waitClock bool
	if reason == nil {
		pl, reason = validate(r, p.o.Config, p.o.Manager.Schema)
	}
	if reason == nil {
		reason, waitClock = p.expiry(pl)
	}
	// Only what the command needs is stored: the request's own fields and
	// the declared args, never unknown fields; nothing of a refused one.
	c := store.Command{TID: r.TID, Cmd: clip(r.Cmd, maxQuoted), Received: now, Status: store.StatusRunning}
	var ack []byte
	switch {
	case reason != nil:
		ack = p.ack(r.TID, StatusFailure, reason.Error(), nil)
		c.Status, c.Finished = StatusFailure, now
	case pl.typ.RequiresApproval:
		ack = p.ack(r.TID, StatusRunning, ReasonAwaitingApproval, nil)
		c.Approval = "pending"
	case waitClock:
		ack = p.ack(r.TID, StatusRunning, ReasonWaitingForClock, nil)
		pl.clockAcked = true
	default:
		ack = p.ack(r.TID, StatusRunning, "", nil)
	}
	if reason == nil {
		c.ExpiresAt = pl.expires
		c.Request, _ = json.Marshal(Request{Cmd: r.Cmd, TID: r.TID, Status: r.Status, Args: r.Args, ExpiresAt: r.ExpiresAt})
	}
	c.LastAck = ack

	const (
		fresh = iota
		duplicate
		refused
		damaged
	)
	var outcome int
	var kept bool
	var why error
	var dupAck []byte
	write := func(tx *store.Tx) error {
		rec := c
		old, err := tx.PutCommand(&rec)
		switch {
		case errors.Is(err, store.ErrCorrupt):
			// The record of this tid is damaged: whether it ran is
			// unknown, so it must not run; answer, and store nothing.
			outcome, why = damaged, err
			return p.enqueueAck(tx, p.ack(r.TID, StatusFailure, "the gateway's record of this tid is damaged; not run: "+err.Error(), nil))
		case errors.Is(err, store.ErrDuplicateTID):
			outcome = duplicate
			a := old.LastAck
			if a == nil {
				a = p.ack(r.TID, StatusRunning, "", nil)
			}
			dupAck = a
			return p.enqueueAck(tx, a)
		case errors.Is(err, store.ErrInboxFull):
			outcome, why = refused, err
			a := p.ack(r.TID, StatusFailure, err.Error(), nil)
			ref := store.Command{TID: c.TID, Cmd: c.Cmd, Received: now, Status: StatusFailure, Finished: now, LastAck: a}
			if kept, err = tx.PutRefused(&ref); err != nil {
				return err
			}
			return p.enqueueAck(tx, a)
		case err != nil:
			return err
		}
		outcome = fresh
		return p.enqueueAck(tx, ack)
	}
	settled := func() {
		switch {
		case outcome == duplicate:
			var a Ack
			if json.Unmarshal(dupAck, &a) == nil && a.Status == StatusFailure && a.Reason == ReasonCanceled {
				p.log.Info("request of a canceled tid; answered FAILURE canceled, not run", "tid", r.TID, "cmd", c.Cmd)
				break
			}
			p.log.Info("duplicate command tid; answered with its recorded ack", "tid", r.TID)
		case outcome == damaged:
			p.log.Error("command refused: its stored record is damaged", "tid", r.TID, "err", why)
		case outcome == refused:
			p.log.Warn("command refused: the inbox is full", "tid", r.TID, "cmd", c.Cmd, "reason", why, "remembered", kept)
		case reason != nil:
			p.log.Warn("command refused", "tid", r.TID, "cmd", c.Cmd, "reason", clip(reason.Error(), maxReason))
		default:
			if waitClock {
				p.log.Info("command accepted; its expires_at waits for a trusted clock", "tid", r.TID, "cmd", r.Cmd, "expires_at", r.ExpiresAt)
			} else {
				p.log.Info("command accepted", "tid", r.TID, "cmd", r.Cmd)
			}
			p.schedule(r.TID, pl, nil)
		}
	}
	return &intake{tid: r.TID, write: write, settled: settled}
}

// reservedIntake answers a request on the command topic whose tid is a job
// execution's: FAILURE, stored nowhere (the execution's record is not the
// requester's to touch).
func (p *Processor) reservedIntake(tid string) *intake {
	ack := p.ack(tid, StatusFailure, "tid "+q(tid)+" is reserved for job executions; use another tid", nil)
	write := func(tx *store.Tx) error {
		_, err := tx.Enqueue(store.OutItem{Kind: store.KindAck, Topic: AckTopic(p.o.Thing), Payload: ack, QoS: 1})
		return err
	}
	settled := func() { p.log.Warn("command refused: its tid is reserved for job executions", "tid", tid) }
	return &intake{tid: tid, write: write, settled: settled}
}

// probeTID reads the tid of a request too large to handle.
func probeTID(payload []byte) string {
	var probe struct {
		TID string `json:"tid"`
	}
	if json.Unmarshal(payload, &probe) != nil || !validTID(probe.TID) {
		return ""
	}
	return probe.TID
}

// runIntake settles submitted requests in arrival order: wait until the
// write is durable, acknowledge the message, schedule the command. A write
// the disk refuses is tried again (with a backoff) until it is written,
// with every later request's after it; the broker keeps the messages
// unacknowledged meanwhile. When ctx ends it settles what is already
// durable, so that a stop does not make the broker deliver durable requests
// again; what is not is delivered again after the restart.
func (p *Processor) runIntake(ctx context.Context) {
	backoff := retryMin
	settledSinceKick := 0
	for {
		p.mu.Lock()
		var head *pendingRequest
		if len(p.intake) > 0 {
			head = p.intake[0]
		}
		p.mu.Unlock()
		if head == nil {
			if settledSinceKick > 0 {
				p.o.Outbox.Kick()
				settledSinceKick = 0
			}
			if ctx.Err() != nil {
				return
			}
			select {
			case <-ctx.Done():
			case <-p.intakeWake:
			}
			continue
		}
		p.o.Tracker.Begin()
		err := head.wait()
		p.o.Tracker.End()
		if err == nil {
			p.mu.Lock()
			p.intake[0] = nil
			p.intake = p.intake[1:]
			p.mu.Unlock()
			head.done(true)
			head.in.settled()
			backoff = retryMin
			if settledSinceKick++; settledSinceKick >= 64 {
				p.o.Outbox.Kick()
				settledSinceKick = 0
			}
			continue
		}
		if !errors.Is(err, errEarlierPending) {
			head.failures++
			p.mu.Lock()
			waiting := len(p.intake)
			p.mu.Unlock()
			if ctx.Err() != nil {
				p.log.Warn("stopping with command requests not yet in the inbox; the broker delivers them again", "count", waiting, "err", err)
				return
			}
			lvl := "retrying until it is written; the broker keeps it meanwhile"
			if head.failures == 1 {
				p.log.Error("cannot persist command request; "+lvl, "tid", head.in.tid, "waiting", waiting, "err", err)
			} else {
				p.log.Warn("cannot persist command request yet; "+lvl, "tid", head.in.tid, "attempt", head.failures, "waiting", waiting, "err", err)
			}
			sleep(ctx, backoff)
			backoff = min(2*backoff, retryMax)
		}
		// Write the head again, and every request after it (their writes
		// were to land after the head's and fail without it), in order.
		p.mu.Lock()
		var prev *mark
		for _, pr := range p.intake {
			p.submitLocked(pr, prev)
			prev = pr.att
		}
		p.mu.Unlock()
	}
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
