// Package jobrun is the gateway's side of AWS IoT Jobs: it takes the
// thing's job executions from the jobs service (AWS IoT Core, or
// shadowsvc's agent/jobs) one at a time and runs each as a command of the
// durable pipeline (agent/command), whose acks it turns into job status
// updates, so that an execution runs exactly once and its final status
// reaches the cloud whatever happens to the uplink or the gateway.
//
//   - The device MQTT API, as AWS has it: notify-next says the next
//     execution changed; start-next, asked on every (re)connect and whenever
//     the gateway is free, hands out the next one (IN_PROGRESS from then on);
//     {jobId}/update reports, always with expectedVersion; {jobId}/get
//     re-reads an execution.
//   - The job document names the operation as a command does:
//     {"operation": "<command type or ROLLBACK>", "args": {…}}. The execution
//     runs as the command job:<jobId>:<executionNumber> (TID): persisted in
//     the inbox before IN_PROGRESS is reported, never run twice, FAILED
//     "interrupted" after a crash unless its type is idempotent, and subject
//     to the same validation, approval, actuator lanes, timeouts and history.
//   - Every status goes through the outbox (store.KindJob) in the
//     transaction that records it, and is settled by the jobs service's
//     answer, not by the broker's PUBACK. A rejection is classified:
//     InvalidStateTransition, TerminalStateReached and an execution that no
//     longer exists are permanent (recorded, dropped); InternalError,
//     RequestThrottled and no answer are transient (kept, sent again with
//     backoff, also after a restart). VersionMismatch re-reads the execution
//     and reconciles: a status that landed (its answer was lost) is settled,
//     one that did not goes again with the version read.
//   - An execution that ends in the cloud before its action starts (a
//     forced cancel, CancelJobExecution, a timeout, a removal) never starts:
//     it may be awaiting a technician's approval, or waiting for its
//     actuators behind other commands; the gateway learns it from
//     notify-next (the next execution changed), then a {jobId}/get answered
//     with a terminal status or TerminalStateReached, or from an update
//     refused with InvalidStateTransition, and cancels its command through
//     the pipeline's durable cancel. One whose action has started runs to
//     its end (hardware is moving; ROLLBACK is the way back): its end is
//     recorded and never reported over the cloud's terminal status.
//   - The step timer (the command type's timeout as stepTimeoutInMinutes)
//     starts when the action starts, with an IN_PROGRESS sent from the
//     transaction that records the start, not when the execution is taken:
//     a wait in the gateway's queue does not time it out.
//
// Everything the gateway knows of an execution is its Run record in the
// store (job_runs), shown by shadowctl jobs.
package jobrun

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	gosync "sync"
	"sync/atomic"
	"time"

	"github.com/shadowgate/shadowgate/agent/command"
	"github.com/shadowgate/shadowgate/agent/config"
	"github.com/shadowgate/shadowgate/agent/link"
	"github.com/shadowgate/shadowgate/store"
)

// Link is what the client needs of the MQTT session.
type Link interface {
	Handle(filter string, h link.Handler)
	OnConnect(fn func(ctx context.Context))
	Connected() bool
	PublishAsync(topic string, retain bool, payload []byte) (link.Pending, error)
}

// Refuser is a Link that can say the broker refused a subscription (an
// IoT policy without the jobs topics): jobs are then off until a session
// that has them, and nothing else is affected.
type Refuser interface {
	HandleOptional(filter string, h link.Handler)
	Refused(filter string) bool
}

// Commands is what the client needs of the command pipeline.
type Commands interface {
	Offer(payload []byte, done func(ok bool)) bool
	Cancel(tid, reason string, done func(ok bool)) bool
}

// Defaults of the Options.
const (
	DefaultAnswerTimeout = 10 * time.Second
	maxAnswerTimeout     = time.Minute
	minRetry             = time.Second
	maxRetry             = 5 * time.Minute
	// checkEvery re-reads an execution whose action has not started
	// (awaiting approval, or its actuators), in case a notify-next of its
	// end was missed.
	checkEvery = 5 * time.Minute
)

// ReasonEndedInCloud starts the reason of a command whose execution ended
// in the cloud before its action started (it never ran).
const ReasonEndedInCloud = "the job execution ended in the cloud"

// Options configure a Client.
type Options struct {
	Thing, Root string
	Config      *config.Config
	Store       *store.Store
	Link        Link
	Logger      *slog.Logger
	Now         func() time.Time
	// AnswerTimeout is how long a request waits for its answer before it
	// is sent again (default 10s; it doubles, up to a minute).
	AnswerTimeout time.Duration
	// ConfigUpdate, when set, is handed each CONFIG_UPDATE execution once
	// its IN_PROGRESS is recorded (the daemon's worker, which replaces the
	// configuration file and reports through Finish). It must not block.
	ConfigUpdate func(tid string, args map[string]json.RawMessage)
	// CloudTime, when set, is given the timestamp (Unix seconds) of every
	// jobs answer, with when the request it answers was first sent (zero
	// for a message that answers nothing of ours): the trusted clock's
	// estimate of the cloud's time.
	CloudTime func(unixSec int64, sent time.Time)
	// Off (jobs.enabled: false) subscribes to nothing and sends nothing;
	// executions already in the pipeline are still recorded, their
	// statuses kept for when jobs are on again.
	Off bool
}

// Client runs the thing's job executions.
type Client struct {
	o    Options
	log  *slog.Logger
	t    topics
	wake chan struct{}
	tag  string
	seq  atomic.Uint64

	cmds Commands

	// hints carry what a start-next answer says of an execution to the
	// record made when its command is persisted (Ack).
	hintMu gosync.Mutex
	hints  map[string]hint

	mu state
	// st is the state shared by the handlers, the sender and the sink; it
	// is taken with mu and never held across a store write.
}

// state is the client's mutable state.
type state struct {
	gosync.Mutex
	runs     map[string]*Run // open executions, and those with a request in flight
	inflight map[string]*req // by tid
	byToken  map[string]string
	retryAt  map[string]time.Time
	checkAt  map[string]time.Time  // next re-read of an execution awaiting approval
	mismatch map[string]*execState // the state a VersionMismatch gave
	needRead map[string]bool       // re-read before the status goes again
	tries    map[string]int        // transient refusals in a row
	offered  map[string]bool       // offered to the pipeline, not yet recorded
	// known is the version an update's answer gave, until the record has
	// it: a status waiting behind that update goes with it, not with the
	// version the record had when it was written.
	known map[string]int64
	// handling: an answer taken, its record not yet written; nothing more
	// is sent for the tid meanwhile (it would go without what the answer
	// changes).
	handling   map[string]bool
	start      *req // the start-next in flight
	wantStart  bool
	startAt    time.Time // not before (after a transient refusal)
	startTries int
	refused    string // why jobs are off in this session ("" when on)
	loaded     bool

	received, succeeded, failed, rejected, endedInCloud int64
	resent, retried, refusedForGood                     int64
}

type hint struct {
	operation string
	version   int64
	status    string
}

type reqKind uint8

const (
	reqUpdate reqKind = iota
	reqGet
	reqStart
)

func (k reqKind) String() string { return [...]string{"update", "get", "start-next"}[k] }

// req is a request awaiting its answer.
type req struct {
	kind     reqKind
	tid      string
	token    string
	status   string // update: the status sent
	details  map[string]string
	step     int64 // update: the stepTimeoutInMinutes sent
	expected int64 // update: the expectedVersion sent
	topic    string
	payload  []byte
	deadline time.Time
	timeout  time.Duration
	// firstSent is when the request first went out (monotonic): an answer
	// to any copy was made after it, which bounds the cloud's clock.
	firstSent time.Time
}

// New makes a client and registers its topics on l. Attach the command
// pipeline before Run.
func New(o Options) *Client {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.AnswerTimeout <= 0 {
		o.AnswerTimeout = DefaultAnswerTimeout
	}
	b := make([]byte, 4)
	rand.Read(b)
	c := &Client{o: o, log: o.Logger.With("component", "jobs"), t: newTopics(o.Root, o.Thing), wake: make(chan struct{}, 1),
		tag: hex.EncodeToString(b), hints: map[string]hint{}}
	c.mu.runs, c.mu.inflight, c.mu.byToken = map[string]*Run{}, map[string]*req{}, map[string]string{}
	c.mu.retryAt, c.mu.checkAt, c.mu.mismatch, c.mu.offered = map[string]time.Time{}, map[string]time.Time{}, map[string]*execState{}, map[string]bool{}
	c.mu.needRead, c.mu.tries, c.mu.known, c.mu.handling = map[string]bool{}, map[string]int{}, map[string]int64{}, map[string]bool{}
	handlers := map[string]link.Handler{
		c.t.notifyNext():               c.onNotifyNext,
		c.t.startNext() + "/accepted":  c.onStartAccepted,
		c.t.startNext() + "/rejected":  c.onRejected(reqStart),
		c.t.base + "+/update/accepted": c.onUpdateAccepted,
		c.t.base + "+/update/rejected": c.onRejected(reqUpdate),
		c.t.base + "+/get/accepted":    c.onGetAccepted,
		c.t.base + "+/get/rejected":    c.onRejected(reqGet),
	}
	if o.Off {
		return c
	}
	ref, optional := o.Link.(Refuser)
	for _, f := range c.t.filters() {
		if optional {
			ref.HandleOptional(f, handlers[f])
		} else {
			o.Link.Handle(f, handlers[f])
		}
	}
	o.Link.OnConnect(c.onConnect)
	return c
}

// Attach gives the client the command pipeline it runs executions on (its
// Sink must be this client). Call before Run.
func (c *Client) Attach(p Commands) { c.cmds = p }

func (c *Client) kick() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *Client) token(kind string) string {
	return fmt.Sprintf("gw-%s-%s-%d", c.tag, kind, c.seq.Add(1))
}

// Stats are the client's state and counters.
type Stats struct {
	// State is "on", "off" (jobs disabled) or why jobs are unavailable in
	// this session (the broker refused their topics).
	State string `json:"state"`
	// Current is the execution in hand (its tid), if any.
	Current      string `json:"current,omitempty"`
	Unsent       int    `json:"unsent"` // statuses waiting for the service's answer
	Received     int64  `json:"received"`
	Succeeded    int64  `json:"succeeded"`
	Failed       int64  `json:"failed"`
	Rejected     int64  `json:"rejected"`
	EndedInCloud int64  `json:"ended_in_cloud"` // ended by the cloud first (canceled, timed out)
	Resent       int64  `json:"resent"`         // requests sent again after no answer
	Retried      int64  `json:"retried"`        // after InternalError or RequestThrottled
	Refused      int64  `json:"refused"`        // statuses the service refused for good
}

// Stats returns the client's state.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := &c.mu
	st := Stats{State: "on", Received: s.received, Succeeded: s.succeeded, Failed: s.failed, Rejected: s.rejected,
		EndedInCloud: s.endedInCloud, Resent: s.resent, Retried: s.retried, Refused: s.refusedForGood}
	switch {
	case c.o.Off:
		st.State = "off"
	case s.refused != "":
		st.State = "unavailable: " + s.refused
	}
	var open []string
	for tid, r := range s.runs {
		if r.Unsent {
			st.Unsent++
		}
		if r.Open() {
			open = append(open, tid)
		}
	}
	sort.Strings(open)
	if len(open) > 0 {
		st.Current = open[0]
	}
	return st
}

// Unavailable is why jobs are off in this session, "" when they are on.
func (c *Client) Unavailable() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.refused
}

func (c *Client) count(status string, cloudEnded bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case cloudEnded:
		c.mu.endedInCloud++
	case status == StatusSucceeded:
		c.mu.succeeded++
	case status == StatusFailed:
		c.mu.failed++
	case status == StatusRejected:
		c.mu.rejected++
	}
}

// committed takes a record just made durable (the sink's OnCommit).
func (c *Client) committed(r *Run) {
	c.mu.Lock()
	delete(c.mu.offered, r.TID)
	if v, ok := c.mu.known[r.TID]; ok && r.Version >= v {
		delete(c.mu.known, r.TID)
	}
	if r.Open() || c.mu.inflight[r.TID] != nil {
		c.mu.runs[r.TID] = r
		if _, ok := c.mu.checkAt[r.TID]; !ok && r.Started.IsZero() && !terminal(r.Status) && !terminal(r.Cloud) && r.Operation != config.ConfigUpdateOperation {
			// Not started: re-read now and then, in case the notify-next
			// of its end in the cloud is missed.
			c.mu.checkAt[r.TID] = c.o.Now().Add(checkEvery)
		}
	} else {
		delete(c.mu.runs, r.TID)
		for _, m := range []map[string]time.Time{c.mu.retryAt, c.mu.checkAt} {
			delete(m, r.TID)
		}
		delete(c.mu.tries, r.TID)
		delete(c.mu.known, r.TID)
		delete(c.mu.needRead, r.TID)
		delete(c.mu.mismatch, r.TID)
		c.mu.wantStart = true
	}
	c.mu.Unlock()
	c.kick()
}

// busy: an execution is in hand (running, awaiting approval, its status
// unsettled, or offered and not yet recorded). c.mu held.
func (s *state) busy() bool {
	if len(s.offered) > 0 {
		return true
	}
	for _, r := range s.runs {
		if r.Open() {
			return true
		}
	}
	return false
}

// Run loads the open executions and sends what is due until ctx ends.
func (c *Client) Run(ctx context.Context) {
	if c.o.Off {
		<-ctx.Done()
		return
	}
	if err := c.load(); err != nil {
		c.log.Error("read the job executions in the store; jobs wait for the next start", "err", err)
		return
	}
	c.cancelEnded()
	c.expire()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	expire := time.NewTicker(time.Hour)
	defer expire.Stop()
	for {
		next := c.sendDue()
		timer.Reset(time.Until(next))
		select {
		case <-ctx.Done():
			return
		case <-c.wake:
		case <-timer.C:
		case <-expire.C:
			c.expire()
		}
	}
}

// load reads the open executions (a restart: their statuses go again).
func (c *Client) load() error {
	runs := map[string]*Run{}
	err := c.o.Store.View(func(tx *store.Tx) error {
		return tx.JobRuns(func(tid string, v []byte) error {
			var r Run
			if err := json.Unmarshal(v, &r); err != nil {
				c.log.Error("unreadable job execution record; ignored", "tid", tid, "err", err)
				return nil
			}
			if r.Open() {
				runs[tid] = &r
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	c.mu.Lock()
	for tid, r := range runs {
		if _, ok := c.mu.runs[tid]; !ok {
			c.mu.runs[tid] = r
		}
	}
	c.mu.loaded = true
	c.mu.Unlock()
	if len(runs) > 0 {
		c.log.Info("job executions in hand from before", "count", len(runs))
	}
	return nil
}

// expire deletes the records of executions finished longer ago than
// commands.retention.
func (c *Client) expire() {
	cutoff := c.o.Now().Add(-c.o.Config.Commands.Retention.D())
	var old []string
	c.o.Store.View(func(tx *store.Tx) error {
		return tx.JobRuns(func(tid string, v []byte) error {
			var r Run
			if json.Unmarshal(v, &r) == nil && !r.Open() && !r.Finished.IsZero() && r.Finished.Before(cutoff) {
				old = append(old, tid)
			}
			return nil
		})
	})
	if len(old) == 0 {
		return
	}
	err := c.o.Store.Update(func(tx *store.Tx) error {
		for _, tid := range old {
			if err := tx.DeleteJobRun(tid); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		c.log.Warn("expire job execution records", "err", err)
	}
}

// onConnect runs after every (re)connect, once the subscriptions are in
// place: requests in flight are lost with the old connection.
func (c *Client) onConnect(context.Context) {
	refused := ""
	if ref, ok := c.o.Link.(Refuser); ok {
		for _, f := range c.t.filters() {
			if ref.Refused(f) {
				refused = fmt.Sprintf("the broker refused the subscription to %s: the IoT policy needs iot:Subscribe, iot:Receive and iot:Publish on %s*", f, c.t.base)
				break
			}
		}
	}
	c.mu.Lock()
	was := c.mu.refused
	c.mu.refused = refused
	c.mu.start = nil
	for tid, q := range c.mu.inflight {
		delete(c.mu.byToken, q.token)
		delete(c.mu.inflight, tid)
	}
	c.mu.wantStart = true
	now := c.o.Now()
	for tid, r := range c.mu.runs {
		if !r.Unsent && !terminal(r.Status) && !terminal(r.Cloud) {
			c.mu.checkAt[tid] = now // re-read: did it end in the cloud meanwhile?
		}
	}
	c.mu.Unlock()
	switch {
	case refused != "" && refused != was:
		c.log.Error("jobs are unavailable in this session; everything else goes on", "why", refused)
	case refused == "" && was != "":
		c.log.Info("jobs are available again")
	}
	c.kick()
}

// onNotifyNext: the next execution changed. Free, the gateway asks for it;
// busy, it checks that the execution in hand is still the cloud's.
func (c *Client) onNotifyNext(_ context.Context, m *link.Message) {
	var n answer
	if err := json.Unmarshal(m.Payload, &n); err != nil {
		c.log.Warn("unreadable notify-next", "err", err)
		return
	}
	c.cloudTime(n.Timestamp, nil)
	c.mu.Lock()
	c.mu.wantStart = true
	now := c.o.Now()
	for tid, r := range c.mu.runs {
		if r.Unsent || terminal(r.Status) || terminal(r.Cloud) {
			continue // its update learns it, or it is known
		}
		if n.Execution == nil || n.Execution.JobID != r.JobID || n.Execution.ExecutionNumber != r.ExecutionNumber {
			c.mu.checkAt[tid] = now
		}
	}
	c.mu.Unlock()
	c.kick()
}

// cloudTime passes an answer's timestamp on to the clock. AWS documents it
// in seconds since the epoch, but its own examples show milliseconds
// (1489096425069): a value too large for seconds (past the year 5138) is
// read as milliseconds, so that either unit gives the right time.
func (c *Client) cloudTime(ts int64, q *req) {
	if c.o.CloudTime == nil || ts <= 0 {
		return
	}
	if ts > 1e11 {
		ts /= 1000
	}
	var sent time.Time
	if q != nil {
		sent = q.firstSent
	}
	c.o.CloudTime(ts, sent)
}

// takeAnswer finds the request a token answers and ends it; nil for a
// token of no request in flight (an old one, another client's). For an
// accepted update, version is the execution's version it gives (0: not
// said, one more than the update expected), known at once to what is sent
// next.
func (c *Client) takeAnswer(token string, kind reqKind, version ...int64) *req {
	c.mu.Lock()
	defer c.mu.Unlock()
	if kind == reqStart {
		q := c.mu.start
		if q == nil || q.token != token {
			return nil
		}
		c.mu.start = nil
		return q
	}
	tid, ok := c.mu.byToken[token]
	if !ok {
		return nil
	}
	q := c.mu.inflight[tid]
	if q == nil || q.token != token || q.kind != kind {
		return nil
	}
	delete(c.mu.byToken, token)
	delete(c.mu.inflight, tid)
	c.mu.handling[tid] = true // until handled(q)
	if len(version) > 0 {
		v := version[0]
		if v <= 0 {
			v = q.expected + 1
		}
		c.mu.known[tid] = max(c.mu.known[tid], v)
	}
	return q
}

// handled ends the handling of an answer taken by takeAnswer: its record
// is written (or the write failed and is retried): the tid may send again.
func (c *Client) handled(q *req) {
	c.mu.Lock()
	delete(c.mu.handling, q.tid)
	c.mu.Unlock()
	c.kick()
}

// onStartAccepted takes the next execution: it is offered to the command
// pipeline, which persists it and reports IN_PROGRESS through Ack.
func (c *Client) onStartAccepted(_ context.Context, m *link.Message) {
	var a answer
	if err := json.Unmarshal(m.Payload, &a); err != nil {
		c.log.Warn("unreadable start-next answer", "err", err)
		return
	}
	q := c.takeAnswer(a.ClientToken, reqStart)
	c.cloudTime(a.Timestamp, q)
	if q == nil {
		return
	}
	e := a.Execution
	if e == nil {
		c.log.Debug("no job execution pending")
		c.kick()
		return
	}
	if !validJobID(e.JobID) || e.ExecutionNumber < 1 {
		c.log.Warn("start-next answered an execution the gateway cannot name", "job", e.JobID, "execution", e.ExecutionNumber)
		return
	}
	tid := TID(e.JobID, e.ExecutionNumber)
	c.mu.Lock()
	if r := c.mu.runs[tid]; (r != nil && r.Open()) || c.mu.offered[tid] {
		c.mu.Unlock()
		return // in hand already
	}
	c.mu.offered[tid] = true
	c.mu.received++
	c.mu.Unlock()
	c.take(tid, e)
}

// take offers an execution to the command pipeline, or rejects it when its
// document is not one the gateway can read.
func (c *Client) take(tid string, e *execution) {
	doc, err := parseDocument(e.JobDocument)
	op := ""
	if doc != nil {
		op = doc.Operation
	}
	c.hintMu.Lock()
	c.hints[tid] = hint{operation: op, version: e.VersionNumber, status: e.Status}
	c.hintMu.Unlock()
	c.log.Info("job execution received", "job", e.JobID, "execution", e.ExecutionNumber, "operation", op, "version", e.VersionNumber)
	if err != nil {
		c.rejectDocument(tid, err.Error())
		return
	}
	if doc.Operation == config.ConfigUpdateOperation {
		c.acceptConfigUpdate(tid, doc)
		return
	}
	payload, _ := json.Marshal(command.Request{Cmd: doc.Operation, TID: tid, Status: command.StatusRequest, Args: doc.Args})
	if c.cmds == nil || !c.cmds.Offer(payload, func(ok bool) { c.offerDone(tid, ok) }) {
		c.offerDone(tid, false)
	}
}

func (c *Client) offerDone(tid string, ok bool) {
	c.hintMu.Lock()
	delete(c.hints, tid)
	c.hintMu.Unlock()
	c.mu.Lock()
	delete(c.mu.offered, tid)
	c.mu.Unlock()
	if !ok {
		c.log.Warn("job execution not taken; asked again on the next start-next", "tid", tid)
	}
	c.kick()
}

// rejectDocument records REJECTED for an execution whose document the
// gateway cannot read, and reports it; it never reaches the pipeline.
func (c *Client) rejectDocument(tid, why string) {
	now := c.o.Now()
	var saved *Run
	err := c.o.Store.Update(func(tx *store.Tx) error {
		saved = nil
		if _, err := loadRun(tx, tid); err == nil {
			return nil // known already
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		r, err := c.newRun(tid, now)
		if err != nil {
			return err
		}
		r.Status, r.Details = StatusRejected, map[string]string{"reason": detailValue(why)}
		r.event(now, "%s: %s", r.Status, describe(r.Details))
		if err := c.report(tx, r); err != nil {
			return err
		}
		saved = r
		return saveRun(tx, r)
	})
	if err != nil {
		c.log.Error("record a rejected job execution; asked again on the next start-next", "tid", tid, "err", err)
	} else if saved != nil {
		c.log.Warn("job execution rejected: its document", "tid", tid, "reason", why)
		c.committed(saved)
		c.count(StatusRejected, false)
	}
	c.offerDone(tid, err == nil)
}

// document is a job document the gateway runs.
type document struct {
	Operation string                     `json:"operation"`
	Args      map[string]json.RawMessage `json:"args,omitempty"`
}

func parseDocument(raw json.RawMessage) (*document, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, errors.New(`the job has no document; want {"operation": "<command type or ROLLBACK>", "args": {…}}`)
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(raw, &keys); err != nil {
		return nil, fmt.Errorf(`the job document is not a JSON object: want {"operation": "<command type or ROLLBACK>", "args": {…}}`)
	}
	for k := range keys {
		if k != "operation" && k != "args" {
			return nil, fmt.Errorf("the job document has the key %q; it takes operation and args", clip(k))
		}
	}
	var d document
	if err := json.Unmarshal(raw, &d); err != nil {
		return nil, fmt.Errorf("the job document: operation must be a string and args an object: %v", err)
	}
	if d.Operation == "" {
		return nil, errors.New(`the job document has no "operation" (a command type of this gateway, or ROLLBACK)`)
	}
	return &d, nil
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:61] + "…"
	}
	return s
}

// Runs returns up to n records, newest first.
func (c *Client) Runs(n int) ([]*Run, error) {
	var out []*Run
	err := c.o.Store.View(func(tx *store.Tx) error {
		return tx.JobRuns(func(tid string, v []byte) error {
			var r Run
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("job run %s: %w", tid, err)
			}
			out = append(out, &r)
			return nil
		})
	})
	slices.SortFunc(out, func(a, b *Run) int { return b.Received.Compare(a.Received) })
	if len(out) > n {
		out = out[:n]
	}
	return out, err
}

// TIDOf returns the tid of the newest execution of jobID the gateway knows.
func (c *Client) TIDOf(jobID string) (string, bool) {
	var best *Run
	c.o.Store.View(func(tx *store.Tx) error {
		return tx.JobRuns(func(tid string, v []byte) error {
			var r Run
			if json.Unmarshal(v, &r) == nil && r.JobID == jobID && (best == nil || r.ExecutionNumber > best.ExecutionNumber) {
				best = &r
			}
			return nil
		})
	})
	if best == nil {
		return "", false
	}
	return best.TID, true
}
