// Package command is the durable command pipeline: requests on
// commands/<thing> are persisted in the store's inbox (fsync) before the
// broker is acknowledged, acked RUNNING in the same transaction, executed
// exactly once per tid, and answered SUCCESS or FAILURE through the outbox.
// Commands on one actuator run in arrival order; on different actuators they
// run concurrently. A resent tid gets the recorded last ack and never runs
// again.
//
// A write the disk refuses (full, failing) is retried until it is written,
// and the writes that must follow it wait for it: requests enter the inbox
// in arrival order, a command on an actuator records its start only after
// the final status of the one before it is on disk, and every command ends
// with one final ack. So a command whose failure was never written is, after
// a restart, still ahead of every later command on its actuators.
//
// A cancel ({"tid":…,"status":"CANCEL"}) withdraws the request with its tid
// if it has not started, also one that has not arrived yet (cancel.go).
// After every (re)connect no command starts until the broker's backlog has
// arrived, so that a cancel queued behind its request comes first.
//
// expires_at is judged by the trusted clock, and a command whose expiry
// cannot be told yet waits for it; the dedupe window is measured on the
// store's uptime, never on the wall clock (clock.go).
package command

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shadowgate/shadowgate/agent/actuate"
	"github.com/shadowgate/shadowgate/agent/clock"
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
	// OnConnect runs fn after every (re)connect (it begins a backlog hold).
	OnConnect(fn func(ctx context.Context))
	Connected() bool
}

// Kicker is told when the outbox has something new.
type Kicker interface{ Kick() }

// Sink takes the acks of the commands whose tid it claims, in place of
// commands/<thing>/ack: a job execution run as a command (agent/jobrun)
// has its acks turned into Jobs status updates. Ack runs inside the store
// transaction that records what the ack says (ack is an Ack's JSON), so
// that the status lands exactly when its record does; heartbeats come to it
// too, and a sink ignores a RUNNING it already reported. Requests with a
// claimed tid come only through Offer: one on commands/<thing> is refused.
type Sink interface {
	Claims(tid string) bool
	Ack(tx *store.Tx, tid string, ack []byte) error
}

// Starter is a Sink told when a command of a tid it claims starts: inside
// the transaction that records the start, before its first change touches
// hardware (a job execution's step timer starts then, not while it waits
// for its actuators).
type Starter interface {
	Started(tx *store.Tx, tid string) error
}

// Options configure a Processor.
type Options struct {
	Thing   string
	Config  *config.Config
	Store   *store.Store
	Manager *actuate.Manager
	Link    Link
	Outbox  Kicker
	Logger  *slog.Logger
	// Clock judges expires_at and stamps acks (clock.go); default: the
	// system's, trusted only while it is synchronized.
	Clock Clock
	// Tracker, when set, is busy while received requests wait for their
	// inbox write: a disk that stops answering stops the watchdog pings.
	Tracker *watchdog.Tracker
	// Sink, when set, takes the acks of the tids it claims (job
	// executions, see Offer).
	Sink Sink
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

	// settling holds, per actuator, the jobs that left its lane with their
	// final status submitted but perhaps not yet durable.
	settling map[string][]*job

	// Requests whose inbox write is submitted but not yet durable, in
	// arrival order; the intake goroutine acknowledges and schedules them.
	intake     []*pendingRequest
	intakeWake chan struct{}
	// canceling counts, per tid, the cancels received and not yet settled:
	// the command they cancel does not start meanwhile.
	canceling map[string]int
	// hold is the backlog hold (cancel.go): no command starts while it is on.
	hold struct {
		on     bool
		linked bool      // it began at a connect, not at the daemon's start
		since  time.Time // when it began
		last   time.Time // the last message received on the command topic
		over   chan struct{}
		// down: the link was seen down since the last hold began; the
		// first message after it begins one (a backlog arrives right after
		// CONNACK, before the subscriptions and the connect hooks).
		down bool
	}

	received, malformed, tooLarge, executed atomic.Int64
	// executing counts the commands between the start of their action and
	// the submission of their final status.
	executing atomic.Int64
}

type job struct {
	tid  string
	plan *plan // nil for a verdict that touches no actuator
	// verdict, when set, is the final status decided at recovery: the job
	// only records and sends it, in its place in the lanes.
	verdict  *verdict
	lanes    []string
	started  bool
	awaiting atomic.Bool
	// waitingClock: its expires_at waits for a trusted clock (clock.go).
	waitingClock atomic.Bool
	decision     chan bool
	// withdrawn, when set, is the reason a rejection gives (Withdraw).
	withdrawn atomic.Pointer[string]
	// shelved: not started when the daemon stopped; it stays in the inbox.
	shelved bool
	// abort is closed when a cancel finished the command's record before
	// it started (it may be awaiting approval).
	abort     chan struct{}
	abortOnce sync.Once
	// preds are the jobs that held its lanes before it and whose final
	// status may not be durable yet; its own writes land after theirs.
	preds []*job
	// final is the write of its final status; landed is closed once that is
	// durable, or given up at shutdown.
	final  mark
	landed chan struct{}
}

type verdict struct{ status, reason string }

// New makes a processor and subscribes it to the thing's command topic.
func New(o Options) *Processor {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Clock == nil {
		o.Clock = clock.New(clock.Options{Logger: o.Logger})
	}
	p := &Processor{o: o, log: o.Logger.With("component", "command"), lanes: map[string][]string{}, active: map[string]*job{},
		settling: map[string][]*job{}, wake: make(chan struct{}, 1), intakeWake: make(chan struct{}, 1), canceling: map[string]int{}}
	// Nothing starts before the first connect's backlog has arrived (or
	// backlogHoldMax has passed without one): it may hold a cancel.
	p.beginHoldLocked(false)
	o.Link.Handle(RequestTopic(o.Thing), p.onRequest)
	o.Link.OnConnect(p.onConnect)
	return p
}

// Stats counts requests received, those that could not be answered
// (Malformed), those over MaxRequestBytes (TooLarge, answered FAILURE when
// their tid could be read) and commands executed; Unwritten is how many
// received requests are not in the inbox yet (their write is being retried
// when the disk refuses it); Inbox shows the inbox and its quota; Held
// says that commands wait for the backlog after a connect (cancel.go).
type Stats struct {
	Received, Malformed, TooLarge, Executed int64
	Unwritten                               int
	Inbox                                   store.InboxStats
	Held                                    bool
}

// Stats returns the counters.
func (p *Processor) Stats() Stats {
	p.mu.Lock()
	unwritten := len(p.intake)
	held := p.hold.on && time.Now().Before(p.holdEndLocked())
	p.mu.Unlock()
	return Stats{Received: p.received.Load(), Malformed: p.malformed.Load(), TooLarge: p.tooLarge.Load(), Executed: p.executed.Load(),
		Unwritten: unwritten, Inbox: p.o.Store.InboxStats(), Held: held}
}

// Recover queues the commands a crash left unfinished, before Run, in
// arrival order: ones that never started run; ones that were running fail
// with "interrupted", unless their type is idempotent, then they run again;
// ones the configuration no longer allows (or that expired meanwhile) fail.
// Each final status is written in its place in its actuators' lanes.
func (p *Processor) Recover() error {
	var cmds []*store.Command
	if err := p.o.Store.View(func(tx *store.Tx) (err error) { cmds, err = tx.Unfinished(); return err }); err != nil {
		return fmt.Errorf("read unfinished commands: %w", err)
	}
	for _, c := range cmds {
		r, err := parse(c.Request)
		var pl *plan
		if err == nil {
			pl, err = validate(r, p.o.Config, p.o.Manager.Schema)
		}
		if err == nil {
			// Unknown yet: it waits in its place for a trusted clock.
			err, _ = p.expiry(pl)
		}
		switch {
		case err != nil:
			// The config changed under it, or it expired while we were down.
			p.schedule(c.TID, nil, &verdict{StatusFailure, err.Error()})
		case !c.Started.IsZero() && !pl.typ.Idempotent:
			p.log.Warn("command was running when the gateway stopped; reporting it interrupted", "tid", c.TID, "cmd", c.Cmd)
			p.schedule(c.TID, pl, &verdict{StatusFailure, ReasonInterrupted})
		default:
			if !c.Started.IsZero() {
				p.log.Info("resuming an idempotent command interrupted by a stop", "tid", c.TID, "cmd", c.Cmd)
			}
			p.schedule(c.TID, pl, nil)
		}
	}
	return nil
}

// Run executes commands until ctx ends, then waits for the running ones to
// finish their action (commands still queued stay in the inbox).
func (p *Processor) Run(ctx context.Context) {
	p.expire()
	if p.o.Link.Connected() {
		// Connected before Run (a reload on a live link): hold for what
		// is still arriving, from now.
		p.onConnect(ctx)
	}
	intakeDone := make(chan struct{})
	go func() { defer close(intakeDone); p.runIntake(ctx) }()
	defer func() { <-intakeDone }()
	watchDone := make(chan struct{})
	go func() { defer close(watchDone); p.watchLink(ctx) }()
	defer func() { <-watchDone }()
	tick := time.NewTicker(expireEvery)
	defer tick.Stop()
	for {
		var holdEnds <-chan time.Time
		var holdTimer *time.Timer
		if left := p.startRunnable(ctx); left > 0 {
			holdTimer = time.NewTimer(left)
			holdEnds = holdTimer.C
		}
		select {
		case <-ctx.Done():
			p.mu.Lock()
			for _, j := range p.active {
				if !j.started {
					j.shelved = true
				}
			}
			p.mu.Unlock()
			p.jobs.Wait()
			return
		case <-p.wake:
		case <-holdEnds:
		case <-tick.C:
			p.expire()
		}
		if holdTimer != nil {
			holdTimer.Stop()
		}
	}
}

func (p *Processor) poke() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// expire deletes the finished commands past the retention, by the store's
// uptime (clock.go), and saves the uptime.
func (p *Processor) expire() {
	var n int
	cut := p.o.Store.Uptime() - p.o.Config.Commands.Retention.D()
	// Found in a read transaction (the whole inbox is read), deleted in a
	// write one: writers are not held up by the reading.
	tids, err := p.o.Store.ExpiredCommands(cut)
	if err == nil {
		err = p.o.Store.Update(func(tx *store.Tx) (err error) {
			if n, err = tx.ExpireCommandsIn(tids, cut); err != nil {
				return err
			}
			return tx.SaveUptime()
		})
	}
	if err != nil {
		p.log.Error("expire finished commands", "err", err)
	} else if n > 0 {
		p.log.Info("expired finished commands", "count", n, "older_than", p.o.Config.Commands.Retention)
	}
}

func (p *Processor) ack(tid, status, reason string, result map[string]any) []byte {
	r := p.o.Clock.Now()
	b, _ := json.Marshal(Ack{TID: tid, Status: status, Reason: clip(reason, maxReason), Result: result,
		TS: r.Time.UTC().Format(time.RFC3339), TSUntrusted: !r.Trusted})
	return b
}

func (p *Processor) enqueueAck(tx *store.Tx, ack []byte) error {
	if p.o.Sink != nil {
		var a struct {
			TID string `json:"tid"`
		}
		if json.Unmarshal(ack, &a) == nil && p.o.Sink.Claims(a.TID) {
			return p.o.Sink.Ack(tx, a.TID, ack)
		}
	}
	_, err := tx.Enqueue(store.OutItem{Kind: store.KindAck, Topic: AckTopic(p.o.Thing), Payload: ack, QoS: 1})
	return err
}

// schedule queues a job in the lanes of every actuator it touches.
func (p *Processor) schedule(tid string, pl *plan, v *verdict) {
	var lanes []string
	switch {
	case pl == nil:
	case pl.rollback != nil && pl.rollback.Actuator != "" && pl.rollback.To == 0:
		lanes = []string{pl.rollback.Actuator}
	case pl.rollback != nil:
		lanes = p.o.Manager.Names() // a group or history id: hold every lane
	default:
		for _, c := range pl.changes {
			lanes = append(lanes, c.Actuator)
		}
	}
	j := &job{tid: tid, plan: pl, verdict: v, lanes: lanes, decision: make(chan bool, 1), landed: make(chan struct{}), abort: make(chan struct{})}
	if v == nil && pl.typ.RequiresApproval {
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

// startRunnable starts the jobs at the head of all their lanes; while the
// backlog hold is on it starts none and returns how long the hold lasts.
func (p *Processor) startRunnable(ctx context.Context) (held time.Duration) {
	held, _ = p.startRunnableKeep(ctx, false)
	return held
}

// startRunnableKeep is startRunnable; with keep, the first job it starts is
// returned to be run by the caller's goroutine instead of a new one.
func (p *Processor) startRunnableKeep(ctx context.Context, keep bool) (held time.Duration, kept *job) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if left := p.holdLeftLocked(time.Now()); left > 0 {
		return left, nil
	}
	for _, j := range p.active {
		if j.started || j.shelved || ctx.Err() != nil || p.canceling[j.tid] > 0 {
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
		for _, l := range j.lanes {
			for _, pj := range p.settling[l] {
				if !slices.Contains(j.preds, pj) {
					j.preds = append(j.preds, pj)
				}
			}
		}
		if keep && kept == nil {
			kept = j
			continue
		}
		p.jobs.Add(1)
		go p.runJobs(ctx, j)
	}
	return 0, kept
}

// runJobs runs j, and then the next command on its lanes, and so on while
// there is one: the next one runs on this goroutine, whose stack has grown
// to what a command needs (a new goroutine's grew again for each command,
// a twentieth of a busy lane's CPU).
func (p *Processor) runJobs(ctx context.Context, j *job) {
	defer p.jobs.Done()
	for j != nil {
		settle := p.run(ctx, j)
		// The final status is submitted: the next command on these lanes
		// may start now; its writes land after this one. It is started
		// from here, not by the scheduler's goroutine woken for it: on a
		// busy lane that wake-up (and the goroutine's wait for a thread)
		// was a sixth of each command's time.
		p.release(j, settle != nil)
		_, next := p.startRunnableKeep(ctx, true)
		if settle != nil {
			if next == nil {
				settle()
				p.settled(j)
			} else {
				// Its final status lands with the next one's start: wait
				// for it beside the next command, not before it.
				p.jobs.Add(1)
				go func(j *job) {
					defer p.jobs.Done()
					settle()
					p.settled(j)
				}(j)
			}
		}
		j = next
	}
}

// runningLocked says whether a command is executing (a commit of its is
// near).
func (p *Processor) runningLocked() bool { return p.executing.Load() > 0 }

// successorWaits says whether another command waits behind j on one of its
// lanes, ready to start once j leaves them.
func (p *Processor) successorWaits(j *job) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range j.lanes {
		for _, tid := range p.lanes[l] {
			if o := p.active[tid]; o != nil && o != j && !o.awaiting.Load() && p.canceling[tid] == 0 {
				return true
			}
		}
	}
	return false
}

// release takes a job out of its lanes; finishing, it stays in settling
// until its final status is durable.
func (p *Processor) release(j *job, finishing bool) {
	p.mu.Lock()
	delete(p.active, j.tid)
	p.dropFromLanesLocked(j)
	if finishing {
		for _, l := range j.lanes {
			p.settling[l] = append(p.settling[l], j)
		}
	}
	p.mu.Unlock()
	p.poke()
}

// dropFromLanesLocked takes j out of its actuators' queues.
func (p *Processor) dropFromLanesLocked(j *job) {
	for _, l := range j.lanes {
		q := p.lanes[l]
		for i, tid := range q {
			if tid == j.tid {
				p.lanes[l] = append(q[:i:i], q[i+1:]...)
				break
			}
		}
		if len(p.lanes[l]) == 0 {
			delete(p.lanes, l)
		}
	}
}

// settled drops a job from settling once its final status is durable (or
// given up at shutdown) and wakes the jobs waiting for it.
func (p *Processor) settled(j *job) {
	p.mu.Lock()
	for _, l := range j.lanes {
		p.settling[l] = slices.DeleteFunc(p.settling[l], func(o *job) bool { return o == j })
		if len(p.settling[l]) == 0 {
			delete(p.settling, l)
		}
	}
	p.mu.Unlock()
	// Its own writes are done: it needs its predecessors no more. Kept,
	// they would chain every command of a busy lane to the one before it
	// (each starts while the last one's final status is still settling),
	// and none would be freed while the lane stays busy.
	j.preds = nil
	close(j.landed)
}

// predsLanded fails with errEarlierPending, inside a transaction of j's,
// while the final status of a job before it on its lanes is not durable.
func (j *job) predsLanded(tx *store.Tx) error {
	for _, pj := range j.preds {
		if !pj.final.landed(tx) {
			return fmt.Errorf("%w: the final status of %s", errEarlierPending, pj.tid)
		}
	}
	return nil
}

// waitPreds waits until the final status of every job before j on its
// lanes is durable; false if one never will be (the daemon is stopping).
func (j *job) waitPreds(ctx context.Context) bool {
	for _, pj := range j.preds {
		select {
		case <-pj.landed:
		case <-ctx.Done():
			select {
			case <-pj.landed:
			default:
				return false
			}
		}
		if !pj.final.done.Load() {
			return false
		}
	}
	return true
}

// run takes one command from approval to its final ack, and returns once
// that ack is submitted; settle retries it until it is durable. run returns
// nil when the command stays in the inbox for after a restart (the daemon is
// stopping).
func (p *Processor) run(ctx context.Context, j *job) (settle func()) {
	if j.verdict != nil {
		return p.finish(ctx, j, j.verdict.status, j.verdict.reason, nil)
	}
	stopBeat := p.heartbeat(j)
	defer stopBeat()
	// No heartbeat may follow the final ack: stop them before it.
	finish := func(status, reason string, result map[string]any) func() {
		stopBeat()
		return p.finish(ctx, j, status, reason, result)
	}
	if j.plan.typ.RequiresApproval {
		switch ok, reason := p.awaitApproval(ctx, j); {
		case reason == "shutdown":
			return nil // still pending in the inbox; asked again after restart
		case reason == ReasonCanceled:
			return func() {} // the cancel wrote its final status and ack
		case !ok:
			return finish(StatusFailure, reason, nil)
		}
		// Approved during a backlog hold: a cancel may be on its way.
		if !p.waitUnheld(ctx, j) {
			select {
			case <-j.abort:
				return func() {}
			default:
				return nil // stopping: approved but not started; asked again after restart
			}
		}
	}
	// expires_at by the trusted clock; waits (heartbeats going on) while
	// it cannot be told.
	switch outcome, reason := p.awaitExpiry(ctx, j); outcome {
	case clockExpired:
		return finish(StatusFailure, reason, nil)
	case clockCanceled:
		return func() {} // the cancel wrote its final status and ack
	case clockStop:
		return nil // not started: judged again after the restart
	}
	// The command counts as started from the first recorded change on, in
	// the same transaction: a crash before it touched hardware resumes it.
	// That transaction lands only after the final status of the command
	// before it on these actuators.
	started := func(tx *store.Tx) error {
		if err := j.predsLanded(tx); err != nil {
			return err
		}
		first, err := tx.MarkStarted(j.tid, p.now())
		switch {
		case errors.Is(err, store.ErrCommandFinished):
			return errRevoked // a cancel came first; touch nothing
		case err != nil:
			return err
		case !first:
			return nil // recorded by an earlier change of this command
		}
		if s, ok := p.o.Sink.(Starter); ok && p.o.Sink.Claims(j.tid) {
			return s.Started(tx, j.tid)
		}
		return nil
	}
	var results []actuate.Result
	var err error
	p.executing.Add(1)
	defer p.executing.Add(-1)
	for {
		// The action finishes even when the daemon is asked to stop
		// (SIGTERM finishes the running action); only its own timeout cuts
		// it short.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), j.plan.typ.Timeout.D())
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
		cancel()
		// Refused before it touched anything: the command before it has
		// not written its final status yet. Wait for it, then go.
		if !errors.Is(err, errEarlierPending) {
			break
		}
		if !j.waitPreds(ctx) {
			return nil // not started; runs after the restart, still in order
		}
	}
	if errors.Is(err, errRevoked) {
		// Refused before it touched anything: the cancel's FAILURE
		// canceled is its final status, durable already.
		j.final.done.Store(true)
		p.log.Info("command not started: it was canceled", "tid", j.tid)
		return func() {}
	}
	p.executed.Add(1)
	if err != nil {
		reason := err.Error()
		if errors.Is(err, context.DeadlineExceeded) {
			reason = ReasonTimeout
		}
		return finish(StatusFailure, reason, nil)
	}
	result := map[string]any{}
	for _, r := range results {
		result[r.Actuator] = map[string]any(r.After)
	}
	return finish(StatusSuccess, "", result)
}

func (p *Processor) awaitApproval(ctx context.Context, j *job) (bool, string) {
	for {
		ok, reason, again := p.awaitDecision(ctx, j)
		if !again {
			return ok, reason
		}
	}
}

// awaitDecision waits for the operator's decision, a cancel, the stop, or
// the command's expiry by the trusted clock; again when what the clock
// knows changed (its expiry is judged anew).
func (p *Processor) awaitDecision(ctx context.Context, j *job) (ok bool, reason string, again bool) {
	var expire <-chan time.Time
	var changed <-chan struct{}
	if exp := j.plan.expires; !exp.IsZero() {
		changed = p.o.Clock.Changed()
		if e, known := p.o.Clock.Expired(exp); known && e {
			j.awaiting.Store(false)
			return false, p.expiredAt(exp) + " while awaiting approval", false
		}
		if d, ok := p.o.Clock.Until(exp); ok {
			t := time.NewTimer(d)
			defer t.Stop()
			expire = t.C
		}
	}
	select {
	case <-expire:
		return false, "", true
	case <-changed:
		return false, "", true
	case ok := <-j.decision:
		j.awaiting.Store(false)
		if !ok {
			if r := j.withdrawn.Load(); r != nil {
				return false, *r, false
			}
			return false, ReasonRejected, false
		}
		p.o.Store.Update(func(tx *store.Tx) error {
			var done bool
			_, err := tx.UpdateCommand(j.tid, func(c *store.Command) error {
				if done = c.Done(); !done { // a cancel may have finished it meanwhile
					c.Approval = "approved"
				}
				return nil
			})
			if err == nil && !done && p.o.Sink != nil && p.o.Sink.Claims(j.tid) {
				// A sink reports the approval (the status leaves "awaiting").
				err = p.o.Sink.Ack(tx, j.tid, p.ack(j.tid, StatusRunning, "", nil))
			}
			return err
		})
		return true, "", false
	case <-j.abort:
		return false, ReasonCanceled, false
	case <-ctx.Done():
		return false, "shutdown", false
	}
}

// heartbeat re-sends RUNNING every interval while the link is up (a stale
// heartbeat queued offline tells nobody anything).
func (p *Processor) heartbeat(j *job) (stop func()) {
	// A timer, not a goroutine: most commands end before their first
	// heartbeat, and a goroutine's start and its wake-up to end were each
	// on the path of every command on a busy actuator.
	every := p.o.Config.Commands.Heartbeat.D()
	var mu sync.Mutex // held while a heartbeat is sent: stop waits for it
	stopped := false
	var t *time.Timer
	mu.Lock() // t is set before the first heartbeat reads it
	defer mu.Unlock()
	t = time.AfterFunc(every, func() {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		reason := ""
		switch {
		case j.awaiting.Load():
			reason = ReasonAwaitingApproval
		case j.waitingClock.Load():
			reason = ReasonWaitingForClock
		}
		p.running(j, reason) // a heartbeat
		t.Reset(every)
	})
	return func() {
		mu.Lock()
		defer mu.Unlock()
		stopped = true
		t.Stop()
	}
}

// finish submits the final status and its ack in one transaction, to land
// after the final status of the jobs before it; settle retries it until it
// is durable: every command ends with exactly one final ack (the same ack,
// however often it is tried). Only a stop gives up, after one more try; the
// command is then settled by Recover after the restart.
func (p *Processor) finish(ctx context.Context, j *job, status, reason string, result map[string]any) (settle func()) {
	ack := p.ack(j.tid, status, reason, result)
	var already bool
	write := func(tx *store.Tx) error {
		already = false
		if err := j.predsLanded(tx); err != nil {
			return err
		}
		_, err := tx.UpdateCommand(j.tid, func(c *store.Command) error {
			if c.Done() {
				return errAlreadyFinal // a cancel's; one final ack per command
			}
			c.Status, c.LastAck, c.Finished = status, ack, p.now()
			c.Request = nil // a resend is answered from LastAck alone
			if c.Approval == "pending" {
				c.Approval = ""
			}
			return nil
		})
		if errors.Is(err, errAlreadyFinal) {
			already = true
			j.final.set(tx)
			return nil
		}
		if err != nil {
			return err
		}
		if err := p.enqueueAck(tx, ack); err != nil {
			return err
		}
		j.final.set(tx)
		return nil
	}
	submit := p.o.Store.Submit
	if p.successorWaits(j) {
		// The next command on these lanes records its start in a moment:
		// this status goes in that commit.
		submit = func(fn func(tx *store.Tx) error) func() error { return p.o.Store.SubmitWithin(finalWithin, fn) }
	}
	wait := submit(write)
	return func() {
		backoff := retryMin
		for failures := 0; ; {
			err := wait()
			if err == nil {
				break
			}
			switch {
			case errors.Is(err, errEarlierPending):
				if !j.waitPreds(ctx) {
					p.log.Warn("stopping before the final status of a command was written; it is settled after the restart", "tid", j.tid, "status", status)
					return
				}
			case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrClosed), errors.Is(err, store.ErrCorrupt):
				p.log.Error("record command result", "tid", j.tid, "status", status, "err", err)
				return
			default:
				failures++
				if ctx.Err() != nil && failures > 1 {
					p.log.Error("stopping before the final status of a command was written; it is settled after the restart", "tid", j.tid, "status", status, "err", err)
					return
				}
				if failures == 1 {
					p.log.Error("cannot record command result; retrying until it is written", "tid", j.tid, "status", status, "err", err)
				} else {
					p.log.Warn("cannot record command result yet; retrying", "tid", j.tid, "status", status, "attempt", failures, "err", err)
				}
				if ctx.Err() == nil {
					sleep(ctx, backoff)
					backoff = min(2*backoff, retryMax)
				}
			}
			wait = p.o.Store.Submit(write)
		}
		p.o.Outbox.Kick()
		if already {
			p.log.Info("command was canceled first; its result is not sent", "tid", j.tid, "status", status)
			return
		}
		if status == StatusFailure {
			p.log.Warn("command failed", "tid", j.tid, "reason", clip(reason, maxReason))
		} else {
			p.log.Info("command done", "tid", j.tid)
		}
	}
}

// Approve lets a command that requires approval run.
func (p *Processor) Approve(tid string) error { return p.decide(tid, true) }

// Reject fails a command that requires approval.
func (p *Processor) Reject(tid string) error { return p.decide(tid, false) }

// Withdraw ends a command awaiting approval with FAILURE reason, as a
// rejection does (a job execution canceled in the cloud stops waiting).
func (p *Processor) Withdraw(tid, reason string) error {
	return p.decideWith(tid, false, &reason)
}

func (p *Processor) decide(tid string, ok bool) error { return p.decideWith(tid, ok, nil) }

func (p *Processor) decideWith(tid string, ok bool, reason *string) error {
	p.mu.Lock()
	j := p.active[tid]
	p.mu.Unlock()
	if j == nil || !j.awaiting.Load() {
		return fmt.Errorf("%w: %s", ErrNotAwaiting, tid)
	}
	if reason != nil && !j.withdrawn.CompareAndSwap(nil, reason) {
		return fmt.Errorf("%w: %s (already withdrawn)", ErrNotAwaiting, tid)
	}
	select {
	case j.decision <- ok:
		return nil
	default:
		if reason != nil {
			j.withdrawn.CompareAndSwap(reason, nil)
		}
		return fmt.Errorf("%w: %s (already decided)", ErrNotAwaiting, tid)
	}
}
