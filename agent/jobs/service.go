// Package jobs is the self-hosted AWS IoT Jobs for fleets on a plain MQTT
// broker: jobs with their targets (things and static thing groups), job
// executions keyed by (job, thing, executionNumber) with AWS's statuses and
// transitions, rollouts at a rate, abort, timeout and retry criteria, thing
// groups (a continuous job reaches a thing added later) and job templates.
// Devices speak AWS's Jobs device MQTT API under the topic root; operators
// reach the same Service through its Go API, which is the control plane's
// operations one for one (an HTTP handler maps JSON to a call).
//
// Everything lives in the store (its jobs buckets) and every change is a
// store transaction run in the store's group commit (store.Submit): a
// request's answer and the notifications it causes are published only after
// the commit that made them durable, without waiting for their PUBACKs. A
// single scheduler walks one time-ordered index in the store for rollout
// steps and timeouts, so thousands of executions cost no goroutine or timer
// each, and a restart resumes where the index says.
package jobs

import (
	"context"
	"errors"
	"log/slog"
	gosync "sync"
	"sync/atomic"
	"time"

	"github.com/shadowgate/shadowgate/agent/link"
	"github.com/shadowgate/shadowgate/agent/pipeline"
	"github.com/shadowgate/shadowgate/agent/watchdog"
	"github.com/shadowgate/shadowgate/store"
)

// Link is what the service needs of the MQTT session.
type Link interface {
	HandleShed(filter string, h link.Handler, shed link.Shed)
	PublishAsync(topic string, retain bool, payload []byte) (link.Pending, error)
}

// Defaults of the load limits.
const (
	DefaultMaxInFlightPerThing = 100
	DefaultMaxQueued           = 20000
	// timersPerCommit bounds the timers one scheduler commit runs.
	timersPerCommit = 256
)

// ErrOverloaded is the error of a call shed because of load.
var ErrOverloaded = errors.New("jobs service overloaded")

// Options configure a Service.
type Options struct {
	Root   string // topic root, e.g. "$aws/things/"
	Link   Link   // nil: no MQTT door (the Go API only)
	Store  *store.Store
	Logger *slog.Logger
	// Now is the clock of every timestamp, rollout window and timeout. A
	// test that moves its own clock calls Kick afterwards.
	Now func() time.Time
	// Region and Account go into every ARN returned (default us-east-1,
	// 000000000000); ARNs in requests may name any.
	Region, Account string
	// MaxInFlightPerThing and MaxQueued bound the device requests waiting;
	// past them a request is answered RequestThrottled.
	MaxInFlightPerThing, MaxQueued int
	// Tracker, when set, is told when the finisher works.
	Tracker *watchdog.Tracker
}

// Service is the jobs engine with its MQTT door.
type Service struct {
	o   Options
	log *slog.Logger

	// p runs the ops in the store's group commits and publishes what they
	// produced; a thing's device writes hold back its reads.
	p    *pipeline.Pipeline[string]
	kick chan struct{}
	// decoded spares the decoding of job records (jobCache).
	decoded jobCache

	requests, rejected, malformed, throttled, timers atomic.Int64
}

// op is one unit of work in the pipeline: a device request, a control-plane
// call or a scheduler step.
type op struct {
	thing string // device requests: counted per thing
	write bool
	fn    func(t *txn) error
	t     *txn
	done  func(t *txn, err error)
}

// New makes a service and, with a link, registers the device API's request
// topics (never the response topics, so it does not receive its own
// answers). Run serves.
func New(o Options) *Service {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Region == "" {
		o.Region = "us-east-1"
	}
	if o.Account == "" {
		o.Account = "000000000000"
	}
	if o.MaxInFlightPerThing <= 0 {
		o.MaxInFlightPerThing = DefaultMaxInFlightPerThing
	}
	if o.MaxQueued <= 0 {
		o.MaxQueued = DefaultMaxQueued
	}
	s := &Service{o: o, log: o.Logger.With("component", "jobs"), kick: make(chan struct{}, 1)}
	s.p = pipeline.New[string](pipeline.Options{Store: o.Store, Link: o.Link, Logger: s.log, Now: o.Now, What: "jobs message",
		MaxPerThing: o.MaxInFlightPerThing, MaxQueued: o.MaxQueued, Tracker: o.Tracker, ReadsHold: true})
	if o.Link != nil {
		for _, f := range []string{"+/jobs/get", "+/jobs/start-next", "+/jobs/+/get", "+/jobs/+/update"} {
			o.Link.HandleShed(o.Root+f, s.serve, s.shed)
		}
	}
	return s
}

// Stats counts device requests, rejections (throttled included), requests
// on topics AWS would refuse, requests shed because of load, responses the
// broker never acknowledged, and timers run.
type Stats struct {
	Requests, Rejected, Malformed, Throttled, Lost, Timers int64
	Waiting                                                int
}

// Stats returns the counters.
func (s *Service) Stats() Stats {
	return Stats{s.requests.Load(), s.rejected.Load(), s.malformed.Load(), s.throttled.Load(), s.p.Lost(), s.timers.Load(), s.p.Queued()}
}

// Kick makes the scheduler look at the clock again now.
func (s *Service) Kick() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Run serves until ctx ends: the finisher publishes what each commit
// produced, the scheduler runs the timers, the reaper counts lost
// responses. Work already handed to the store is finished before it
// returns.
func (s *Service) Run(ctx context.Context) {
	var wg gosync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); s.schedule(ctx) }()
	defer wg.Wait()
	s.p.Run(ctx)
}

// submit queues o: a write runs in the store's next group commit, a read
// (a thing with no write waiting) in a read transaction now.
func (s *Service) submit(o *op) error {
	err := s.p.Submit(pipeline.Work[string]{Thing: o.thing, Key: o.thing, Write: o.write,
		Run: func(tx *store.Tx, now time.Time) error {
			t := s.newTxn(tx, now)
			o.t = t
			if err := o.fn(t); err != nil {
				return err
			}
			return t.flush()
		},
		Finish: func(_ time.Time, err error) { s.finish(o, err) }})
	if err != nil {
		s.throttled.Add(1)
		return ErrOverloaded
	}
	return nil
}

// finish publishes what o's commit produced, once it ended with err.
func (s *Service) finish(o *op, err error) {
	if err == nil && o.t != nil {
		s.publishAll(o.t.out)
		if o.t.kick {
			s.Kick()
		}
	}
	o.done(o.t, err)
}

// do runs fn as a write through the pipeline and waits for it to be
// durable and its messages out. fn's *APIError is returned as is (the
// commit of fn's changes is rolled back); a store failure is
// InternalFailureException.
func (s *Service) do(ctx context.Context, write bool, fn func(t *txn) error) error {
	res := make(chan error, 1)
	o := &op{write: write, fn: fn, done: func(_ *txn, err error) { res <- err }}
	if err := s.submit(o); err != nil {
		return Throttled
	}
	select {
	case err := <-res:
		var ae *APIError
		if err == nil || errors.As(err, &ae) {
			return err
		}
		s.log.Error("jobs control call", "err", err)
		return internalFailure(err.Error())
	case <-ctx.Done():
		return ctx.Err()
	}
}

// schedule runs due timers, one commit at a time, and otherwise sleeps
// until the next one is due or a commit files an earlier one.
func (s *Service) schedule(ctx context.Context) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for ctx.Err() == nil {
		var next time.Time
		var ok bool
		if err := s.o.Store.View(func(tx *store.Tx) error { next, ok = tx.NextJobTimer(); return nil }); err != nil {
			if !errors.Is(err, store.ErrClosed) {
				s.log.Error("read job timers", "err", err)
			}
			return
		}
		var wait <-chan time.Time
		if ok {
			d := next.Sub(s.o.Now())
			if d <= 0 {
				if s.step(ctx) {
					continue
				}
				d = time.Second // the store failed: try again soon
			}
			if timer == nil {
				timer = time.NewTimer(d)
			} else {
				timer.Reset(d)
			}
			wait = timer.C
		}
		select {
		case <-ctx.Done():
		case <-s.kick:
		case <-wait:
		}
		if timer != nil && !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// step runs one commit of due timers and waits for it.
func (s *Service) step(ctx context.Context) bool {
	res := make(chan error, 1)
	var ran int
	o := &op{write: true, fn: func(t *txn) (err error) {
		ran, err = t.tick(timersPerCommit)
		return err
	}, done: func(_ *txn, err error) { res <- err }}
	if err := s.submit(o); err != nil {
		return false
	}
	select {
	case err := <-res:
		if err != nil {
			s.log.Error("run job timers", "err", err)
			return false
		}
		s.timers.Add(int64(ran))
		return true
	case <-ctx.Done():
		return false
	}
}

// serve is the MQTT door: it runs on the link's dispatcher and only hands
// the request on; the acknowledgement waits for the commit.
func (s *Service) serve(_ context.Context, m *link.Message) {
	s.requests.Add(1)
	r, err := parseTopic(s.o.Root, m.Topic)
	if err != nil {
		s.malformed.Add(1)
		if r.topic == "" {
			s.log.Warn("ignoring request on an invalid topic", "topic", m.Topic, "err", err)
			return
		}
		s.answer(r.topic+"/rejected", CodeInvalidTopic, err.Error(), m.Payload)
		return
	}
	r.payload = m.Payload
	ack := m.Defer()
	o := &op{thing: r.thing, write: r.op == opStartNext || r.op == opUpdate, fn: func(t *txn) error { return t.handle(&r) },
		done: func(_ *txn, err error) {
			if err != nil {
				s.log.Error("jobs request", "topic", m.Topic, "err", err)
				s.answer(r.topic+"/rejected", CodeInternalError, "Internal error", m.Payload)
			}
			ack(true)
		}}
	if err := s.submit(o); err != nil {
		s.answer(r.topic+"/rejected", CodeRequestThrottled, "Rate exceeded", m.Payload)
		ack(true)
	}
}

// shed answers a request the link had no room for; it must not block.
func (s *Service) shed(m *link.Message) {
	s.requests.Add(1)
	s.throttled.Add(1)
	r, err := parseTopic(s.o.Root, m.Topic)
	if err != nil && r.topic == "" {
		s.malformed.Add(1)
		return
	}
	s.answer(r.topic+"/rejected", CodeRequestThrottled, "Rate exceeded", m.Payload)
}

// answer publishes an error response outside a transaction, with the
// request's clientToken when it can be read.
func (s *Service) answer(topic string, code ErrorCode, msg string, payload []byte) {
	var token string
	if len(payload) <= 128<<10 {
		var v struct{}
		token, _ = decode(payload, &v)
	}
	t := &txn{s: s, now: s.o.Now()}
	t.publish(topic, ErrorResponse{Code: code, Message: msg, ClientToken: token, Timestamp: t.now.Unix()})
	s.publishAll(t.out)
}

// publishAll sends messages without waiting for their PUBACKs; the
// pipeline's reaper counts the ones that never get one.
func (s *Service) publishAll(out []Message) {
	if s.o.Link == nil {
		return
	}
	for _, m := range out {
		if len(m.Topic) > 9 && m.Topic[len(m.Topic)-9:] == "/rejected" {
			s.rejected.Add(1)
		}
		s.p.Publish(m.Topic, m.Payload)
	}
}
