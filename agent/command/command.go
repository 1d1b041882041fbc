// Package command is the durable command pipeline: requests on
// commands/<thing> are persisted in the store's inbox (fsync) before the
// broker is acknowledged, acked RUNNING in the same transaction, executed
// exactly once per tid, and answered SUCCESS or FAILURE through the outbox.
// Commands on one actuator run in arrival order; on different actuators they
// run concurrently. A resent tid gets the recorded last ack and never runs
// again.
package command

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shadowgate/shadowgate/agent/actuate"
	"github.com/shadowgate/shadowgate/agent/config"
	"github.com/shadowgate/shadowgate/agent/link"
	"github.com/shadowgate/shadowgate/agent/watchdog"
	"github.com/shadowgate/shadowgate/store"
)

// Sentinel errors of the Go API.
var (
	ErrNotAwaiting = errors.New("command is not awaiting approval")
)

// Link is what the processor needs of the MQTT session.
type Link interface {
	Handle(filter string, h link.Handler)
	Connected() bool
}

// Kicker is told when the outbox has something new.
type Kicker interface{ Kick() }

// Options configure a Processor.
type Options struct {
	Thing   string
	Config  *config.Config
	Store   *store.Store
	Manager *actuate.Manager
	Link    Link
	Outbox  Kicker
	Logger  *slog.Logger
	Now     func() time.Time
	// Tracker, when set, is busy while received requests wait for their
	// inbox write: a disk that stops answering stops the watchdog pings.
	Tracker *watchdog.Tracker
}

// Topics of the command protocol for a thing.
func RequestTopic(thing string) string { return "commands/" + thing }

// AckTopic is where a thing's acks go.
func AckTopic(thing string) string { return "commands/" + thing + "/ack" }

// Processor receives, runs and acknowledges commands.
type Processor struct {
	o   Options
	log *slog.Logger

	mu     sync.Mutex
	lanes  map[string][]string // actuator → tids in arrival order
	active map[string]*job     // tid → scheduled job
	wake   chan struct{}
	jobs   sync.WaitGroup

	// Requests whose inbox write is submitted but not yet durable, in
	// arrival order; the intake goroutine acknowledges and schedules them.
	intake     []*pendingRequest
	intakeWake chan struct{}

	malformed, executed atomic.Int64
}

type job struct {
	tid       string
	plan      *plan
	lanes     []string
	started   bool
	awaiting  atomic.Bool
	decision  chan bool
	cancelled bool
}

// New makes a processor and subscribes it to the thing's command topic.
func New(o Options) *Processor {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	p := &Processor{o: o, log: o.Logger.With("component", "command"), lanes: map[string][]string{}, active: map[string]*job{},
		wake: make(chan struct{}, 1), intakeWake: make(chan struct{}, 1)}
	o.Link.Handle(RequestTopic(o.Thing), p.onRequest)
	return p
}

// Stats counts requests that could not be answered and commands executed.
type Stats struct{ Malformed, Executed int64 }

// Stats returns the counters.
func (p *Processor) Stats() Stats { return Stats{p.malformed.Load(), p.executed.Load()} }

// Recover settles the commands a crash left unfinished, before Run: ones
// that never started are queued again; ones that were running fail with
// "interrupted", unless their type is idempotent, then they run again.
func (p *Processor) Recover() error {
	var cmds []*store.Command
	if err := p.o.Store.View(func(tx *store.Tx) (err error) { cmds, err = tx.Unfinished(); return err }); err != nil {
		return fmt.Errorf("read unfinished commands: %w", err)
	}
	now := p.o.Now()
	for _, c := range cmds {
		r, err := parse(c.Request)
		var pl *plan
		if err == nil {
			pl, err = validate(r, p.o.Config, p.o.Manager.Schema, now)
		}
		switch {
		case err != nil:
			// The config changed under it, or it expired while we were down.
			p.finish(c.TID, StatusFailure, err.Error(), nil)()
		case !c.Started.IsZero() && !pl.typ.Idempotent:
			p.log.Warn("command was running when the gateway stopped; reporting it interrupted", "tid", c.TID, "cmd", c.Cmd)
			p.finish(c.TID, StatusFailure, ReasonInterrupted, nil)()
		default:
			if !c.Started.IsZero() {
				p.log.Info("resuming an idempotent command interrupted by a stop", "tid", c.TID, "cmd", c.Cmd)
			}
			p.schedule(c.TID, pl)
		}
	}
	return nil
}

// Run executes commands until ctx ends, then waits for the running ones to
// finish their action (commands still queued stay in the inbox).
func (p *Processor) Run(ctx context.Context) {
	p.expire()
	intakeDone := make(chan struct{})
	go func() { defer close(intakeDone); p.runIntake(ctx) }()
	defer func() { <-intakeDone }()
	tick := time.NewTicker(time.Hour)
	defer tick.Stop()
	for {
		p.startRunnable(ctx)
		select {
		case <-ctx.Done():
			p.mu.Lock()
			for _, j := range p.active {
				if !j.started {
					j.cancelled = true
				}
			}
			p.mu.Unlock()
			p.jobs.Wait()
			return
		case <-p.wake:
		case <-tick.C:
			p.expire()
		}
	}
}

func (p *Processor) poke() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (p *Processor) expire() {
	cutoff := p.o.Now().Add(-p.o.Config.Commands.Retention.D())
	var n int
	err := p.o.Store.Update(func(tx *store.Tx) (err error) { n, err = tx.ExpireCommands(cutoff); return err })
	if err != nil {
		p.log.Error("expire finished commands", "err", err)
	} else if n > 0 {
		p.log.Info("expired finished commands", "count", n, "older_than", p.o.Config.Commands.Retention)
	}
}

// pendingRequest is a received request whose inbox write was submitted.
type pendingRequest struct {
	wait    func() error    // until the write is durable
	done    func(ok bool)   // acknowledges the message, or asks for it again
	settled func(err error) // runs once durable (err nil) or failed
}

// onRequest runs on the link's dispatcher. It submits the request's inbox
// write (with its RUNNING ack) and returns without waiting for the fsync:
// the message is acknowledged to the broker by the intake goroutine once
// the write is durable. Requests that arrive meanwhile share the next
// commit, and a burst costs one fsync, not one each.
func (p *Processor) onRequest(_ context.Context, m *link.Message) {
	r, perr := parse(m.Payload)
	if r == nil {
		p.malformed.Add(1)
		p.log.Warn("command request without a usable tid; nobody to answer", "err", perr, "bytes", len(m.Payload))
		return
	}
	now := p.o.Now()
	var pl *plan
	reason := perr
	if reason == nil {
		pl, reason = validate(r, p.o.Config, p.o.Manager.Schema, now)
	}
	request := json.RawMessage(m.Payload)
	if !json.Valid(request) {
		request, _ = json.Marshal(string(m.Payload))
	}
	fresh := false
	wait := p.o.Store.Submit(func(tx *store.Tx) error {
		fresh = false
		c := &store.Command{TID: r.TID, Cmd: r.Cmd, Request: request, Received: now}
		if pl != nil {
			c.ExpiresAt = pl.expires
		}
		old, err := tx.PutCommand(c)
		if errors.Is(err, store.ErrDuplicateTID) {
			ack := old.LastAck
			if ack == nil {
				ack = p.ack(r.TID, StatusRunning, "", nil)
			}
			return p.enqueueAck(tx, ack)
		}
		if err != nil {
			return err
		}
		fresh = true
		var ack []byte
		if reason != nil {
			ack = p.ack(r.TID, StatusFailure, reason.Error(), nil)
		} else if pl.typ.RequiresApproval {
			ack = p.ack(r.TID, StatusRunning, ReasonAwaitingApproval, nil)
		} else {
			ack = p.ack(r.TID, StatusRunning, "", nil)
		}
		_, err = tx.UpdateCommand(r.TID, func(c *store.Command) error {
			c.LastAck = ack
			c.Status = StatusRunning
			if reason != nil {
				c.Status, c.Finished = StatusFailure, now
			} else if pl.typ.RequiresApproval {
				c.Approval = "pending"
			}
			return nil
		})
		if err != nil {
			return err
		}
		return p.enqueueAck(tx, ack)
	})
	settled := func(err error) {
		switch {
		case err != nil:
			// Not in the inbox: the broker must not forget it.
			p.log.Error("cannot persist command; asking the broker to deliver it again", "tid", r.TID, "err", err)
		case !fresh:
			p.log.Info("duplicate command tid; answered with its recorded ack", "tid", r.TID)
		case reason != nil:
			p.log.Warn("command refused", "tid", r.TID, "cmd", r.Cmd, "reason", reason)
		default:
			p.log.Info("command accepted", "tid", r.TID, "cmd", r.Cmd)
			p.schedule(r.TID, pl)
		}
	}
	p.mu.Lock()
	p.intake = append(p.intake, &pendingRequest{wait: wait, done: m.Defer(), settled: settled})
	p.mu.Unlock()
	select {
	case p.intakeWake <- struct{}{}:
	default:
	}
}

// runIntake settles submitted requests in arrival order: wait for the
// write, acknowledge the message (or ask for it again), schedule. When ctx
// ends it settles what was already submitted, so that a stop does not make
// the broker deliver durable requests again.
func (p *Processor) runIntake(ctx context.Context) {
	for {
		for p.settleIntake() {
		}
		select {
		case <-ctx.Done():
			p.settleIntake()
			return
		case <-p.intakeWake:
		}
	}
}

// settleIntake settles the requests submitted so far; false if there were
// none.
func (p *Processor) settleIntake() bool {
	p.mu.Lock()
	batch := p.intake
	p.intake = nil
	p.mu.Unlock()
	if len(batch) > 0 {
		p.o.Tracker.Begin()
		defer p.o.Tracker.End()
	}
	for _, r := range batch {
		err := r.wait()
		r.done(err == nil)
		r.settled(err)
	}
	if len(batch) > 0 {
		p.o.Outbox.Kick()
	}
	return len(batch) > 0
}

func (p *Processor) ack(tid, status, reason string, result map[string]any) []byte {
	b, _ := json.Marshal(Ack{TID: tid, Status: status, Reason: reason, Result: result, TS: p.o.Now().UTC().Format(time.RFC3339)})
	return b
}

func (p *Processor) enqueueAck(tx *store.Tx, ack []byte) error {
	_, err := tx.Enqueue(store.OutItem{Kind: store.KindAck, Topic: AckTopic(p.o.Thing), Payload: ack, QoS: 1})
	return err
}

// schedule queues a job in the lanes of every actuator it touches.
func (p *Processor) schedule(tid string, pl *plan) {
	var lanes []string
	switch {
	case pl.rollback != nil && pl.rollback.Actuator != "" && pl.rollback.To == 0:
		lanes = []string{pl.rollback.Actuator}
	case pl.rollback != nil:
		lanes = p.o.Manager.Names() // a group or history id: hold every lane
	default:
		for _, c := range pl.changes {
			lanes = append(lanes, c.Actuator)
		}
	}
	j := &job{tid: tid, plan: pl, lanes: lanes, decision: make(chan bool, 1)}
	if pl.typ.RequiresApproval {
		j.awaiting.Store(true)
	}
	p.mu.Lock()
	p.active[tid] = j
	for _, l := range lanes {
		p.lanes[l] = append(p.lanes[l], tid)
	}
	p.mu.Unlock()
	p.poke()
}

func (p *Processor) startRunnable(ctx context.Context) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, j := range p.active {
		if j.started || j.cancelled || ctx.Err() != nil {
			continue
		}
		head := true
		for _, l := range j.lanes {
			if q := p.lanes[l]; len(q) == 0 || q[0] != j.tid {
				head = false
				break
			}
		}
		if !head {
			continue
		}
		j.started = true
		p.jobs.Add(1)
		go func() {
			defer p.jobs.Done()
			settle := p.run(ctx, j)
			// The final status is submitted: the next command on these
			// lanes may start now, as its writes land after this one.
			p.release(j)
			settle()
		}()
	}
}

// release takes a job out of its lanes.
func (p *Processor) release(j *job) {
	p.mu.Lock()
	delete(p.active, j.tid)
	for _, l := range j.lanes {
		q := p.lanes[l]
		for i, tid := range q {
			if tid == j.tid {
				p.lanes[l] = append(q[:i:i], q[i+1:]...)
				break
			}
		}
	}
	p.mu.Unlock()
	p.poke()
}

// run takes one command from approval to its final ack, and returns once
// that ack is submitted; settle waits until it is durable.
func (p *Processor) run(ctx context.Context, j *job) (settle func()) {
	stopBeat := p.heartbeat(j)
	defer stopBeat()
	if j.plan.typ.RequiresApproval {
		switch ok, reason := p.awaitApproval(ctx, j); {
		case reason == "shutdown":
			return func() {} // still pending in the inbox; asked again after restart
		case !ok:
			return p.finish(j.tid, StatusFailure, reason, nil)
		}
	}
	if !j.plan.expires.IsZero() && !p.o.Now().Before(j.plan.expires) {
		return p.finish(j.tid, StatusFailure, "expired at "+j.plan.expires.UTC().Format(time.RFC3339), nil)
	}
	// The action finishes even when the daemon is asked to stop (SIGTERM
	// finishes the running action); only its own timeout cuts it short.
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), j.plan.typ.Timeout.D())
	defer cancel()
	// The command counts as started from the first recorded change on, in
	// the same transaction: a crash before it touched hardware resumes it.
	started := func(tx *store.Tx) error {
		_, err := tx.UpdateCommand(j.tid, func(c *store.Command) error {
			if c.Started.IsZero() {
				c.Started = p.o.Now()
			}
			return nil
		})
		return err
	}
	var results []actuate.Result
	var err error
	if j.plan.rollback != nil {
		rb := *j.plan.rollback
		rb.OnRecord = started
		results, err = p.o.Manager.Rollback(actx, rb)
	} else {
		changes := make([]actuate.Change, len(j.plan.changes))
		for i, c := range j.plan.changes {
			c.Source, c.TID, c.OnRecord = store.SourceCommand, j.tid, started
			changes[i] = c
		}
		results, err = p.o.Manager.ApplyGroup(actx, changes)
	}
	p.executed.Add(1)
	if err != nil {
		reason := err.Error()
		if errors.Is(err, context.DeadlineExceeded) {
			reason = ReasonTimeout
		}
		return p.finish(j.tid, StatusFailure, reason, nil)
	}
	result := map[string]any{}
	for _, r := range results {
		result[r.Actuator] = map[string]any(r.After)
	}
	return p.finish(j.tid, StatusSuccess, "", result)
}

func (p *Processor) awaitApproval(ctx context.Context, j *job) (bool, string) {
	var expire <-chan time.Time
	if !j.plan.expires.IsZero() {
		t := time.NewTimer(j.plan.expires.Sub(p.o.Now()))
		defer t.Stop()
		expire = t.C
	}
	select {
	case ok := <-j.decision:
		j.awaiting.Store(false)
		if !ok {
			return false, ReasonRejected
		}
		p.o.Store.Update(func(tx *store.Tx) error {
			_, err := tx.UpdateCommand(j.tid, func(c *store.Command) error { c.Approval = "approved"; return nil })
			return err
		})
		return true, ""
	case <-expire:
		return false, "expired at " + j.plan.expires.UTC().Format(time.RFC3339) + " while awaiting approval"
	case <-ctx.Done():
		return false, "shutdown"
	}
}

// heartbeat re-sends RUNNING every interval while the link is up (a stale
// heartbeat queued offline tells nobody anything).
func (p *Processor) heartbeat(j *job) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(p.o.Config.Commands.Heartbeat.D())
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if !p.o.Link.Connected() {
					continue
				}
				reason := ""
				if j.awaiting.Load() {
					reason = ReasonAwaitingApproval
				}
				ack := p.ack(j.tid, StatusRunning, reason, nil)
				if err := p.o.Store.Update(func(tx *store.Tx) error { return p.enqueueAck(tx, ack) }); err != nil {
					p.log.Warn("queue heartbeat", "tid", j.tid, "err", err)
					continue
				}
				p.o.Outbox.Kick()
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// finish submits the final status and its ack in one transaction; settle
// waits until they are durable.
func (p *Processor) finish(tid, status, reason string, result map[string]any) (settle func()) {
	ack := p.ack(tid, status, reason, result)
	wait := p.o.Store.Submit(func(tx *store.Tx) error {
		_, err := tx.UpdateCommand(tid, func(c *store.Command) error {
			c.Status, c.LastAck, c.Finished = status, ack, p.o.Now()
			if c.Approval == "pending" {
				c.Approval = ""
			}
			return nil
		})
		if err != nil {
			return err
		}
		return p.enqueueAck(tx, ack)
	})
	return func() {
		if err := wait(); err != nil {
			p.log.Error("record command result", "tid", tid, "status", status, "err", err)
			return
		}
		p.o.Outbox.Kick()
		if status == StatusFailure {
			p.log.Warn("command failed", "tid", tid, "reason", reason)
		} else {
			p.log.Info("command done", "tid", tid)
		}
	}
}

// Approve lets a command that requires approval run.
func (p *Processor) Approve(tid string) error { return p.decide(tid, true) }

// Reject fails a command that requires approval.
func (p *Processor) Reject(tid string) error { return p.decide(tid, false) }

func (p *Processor) decide(tid string, ok bool) error {
	p.mu.Lock()
	j := p.active[tid]
	p.mu.Unlock()
	if j == nil || !j.awaiting.Load() {
		return fmt.Errorf("%w: %s", ErrNotAwaiting, tid)
	}
	select {
	case j.decision <- ok:
		return nil
	default:
		return fmt.Errorf("%w: %s (already decided)", ErrNotAwaiting, tid)
	}
}
