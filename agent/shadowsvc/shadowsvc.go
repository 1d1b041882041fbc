// Package shadowsvc is the self-hosted AWS IoT Device Shadow service for
// fleets on a plain MQTT broker: it answers every thing's shadow requests
// under the topic root exactly as agent/shadow specifies, and keeps the
// documents in its own bbolt file. A document is stored before it is
// accepted.
//
// The service is a pipeline (agent/pipeline), so that nothing waits on the
// network where a message is received and the disk's commits are shared:
//
//   - the link's dispatcher hands each request to the engine (serve) and
//     returns at once, so the broker is acknowledged without delay;
//   - the engine runs the request against the document inside the store's
//     next group commit (store.Submit), in arrival order, so requests to
//     one shadow see each other's results and hundreds share one fsync;
//   - the finisher waits for each commit in turn, then publishes the
//     responses (without waiting for their PUBACKs): nothing is accepted
//     before it is on disk.
//
// Load is shed, never queued without bound: more than MaxInFlightPerThing
// requests for one thing waiting, or more than MaxQueued in all, and the
// request is answered 429 "Too Many Requests" at once, as AWS answers a
// connection with too many requests in flight.
package shadowsvc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/shadowgate/shadowgate/agent/link"
	"github.com/shadowgate/shadowgate/agent/pipeline"
	"github.com/shadowgate/shadowgate/agent/shadow"
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
	DefaultMaxInFlightPerThing = 1000
	DefaultMaxQueued           = 20000
	DefaultMaxQueuedBytes      = 16 << 20
)

// ErrOverloaded is Do's error when the request was shed (429).
var ErrOverloaded = errors.New("shadow service overloaded")

// Service answers shadow requests.
type Service struct {
	root  string
	link  Link
	store *store.Store
	log   *slog.Logger
	now   func() time.Time
	o     Options

	// p runs the requests in the store's group commits and publishes
	// their answers; a shadow's updates and deletes hold back its gets.
	p        *pipeline.Pipeline[store.ShadowKey]
	presence presenceTopics // see presence.go

	requests, rejected, malformed, throttled atomic.Int64
}

// Options configure a Service.
type Options struct {
	Root   string // topic root, e.g. "$aws/things/"
	Link   Link
	Store  *store.Store
	Logger *slog.Logger
	Now    func() time.Time
	// MaxInFlightPerThing is how many requests for one thing may wait in the
	// service before more are answered 429 (default 1000; AWS allows 10 in
	// flight per connection).
	MaxInFlightPerThing int
	// MaxQueued and MaxQueuedBytes bound the requests waiting in all, in
	// count and in payload bytes (defaults 20000 and 16 MiB), so that a
	// burst of large requests cannot take the memory of a small box.
	MaxQueued      int
	MaxQueuedBytes int
	// Tracker, when set, is told when the finisher works, so that a commit
	// that never ends shows as a stuck loop to the watchdog.
	Tracker *watchdog.Tracker
	// PresenceTopic, when set, is the gateways' presence topic ({thing}
	// for the thing, see presence.go), applied to their classic shadows.
	PresenceTopic string
}

// request is one shadow request in the pipeline.
type request struct {
	topic   shadow.Topic
	payload []byte
	out     []shadow.Message // what it answers, set when its commit ran it
	// publish says which of the answers go to the broker (all of them for
	// an MQTT request); done is told the outcome once they are out.
	publish func(shadow.Message) bool
	done    func(out []shadow.Message, err error)
	// update, when set, makes the payload from the stored document inside
	// the commit, or says there is nothing to do (presence.go).
	update func(sh *shadow.Shadow, now time.Time) ([]byte, bool)
}

// New registers the service's subscriptions on the link: the six request
// topics (classic and named get, update, delete) of every thing, so that it
// never receives its own responses. Run serves them.
func New(o Options) *Service {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MaxInFlightPerThing <= 0 {
		o.MaxInFlightPerThing = DefaultMaxInFlightPerThing
	}
	if o.MaxQueued <= 0 {
		o.MaxQueued = DefaultMaxQueued
	}
	if o.MaxQueuedBytes <= 0 {
		o.MaxQueuedBytes = DefaultMaxQueuedBytes
	}
	s := &Service{root: o.Root, link: o.Link, store: o.Store, log: o.Logger.With("component", "shadowsvc"), now: o.Now, o: o}
	s.p = pipeline.New[store.ShadowKey](pipeline.Options{Store: o.Store, Link: o.Link, Logger: s.log, Now: o.Now, What: "shadow response",
		MaxPerThing: o.MaxInFlightPerThing, MaxQueued: o.MaxQueued, MaxBytes: o.MaxQueuedBytes, Tracker: o.Tracker})
	for _, op := range []shadow.Op{shadow.OpGet, shadow.OpUpdate, shadow.OpDelete} {
		s.link.HandleShed(o.Root+"+/shadow/"+string(op), s.serve, s.shed)
		s.link.HandleShed(o.Root+"+/shadow/name/+/"+string(op), s.serve, s.shed)
	}
	s.handlePresence(o.PresenceTopic)
	return s
}

// Stats counts requests received, rejected (429 included), on an invalid
// topic, answered 429 because of load, and responses the broker never
// acknowledged; Waiting is the requests in the pipeline now.
type Stats struct {
	Requests, Rejected, Malformed, Throttled, Lost int64
	Waiting                                        int
}

// Stats returns the counters.
func (s *Service) Stats() Stats {
	return Stats{s.requests.Load(), s.rejected.Load(), s.malformed.Load(), s.throttled.Load(), s.p.Lost(), s.p.InFlight()}
}

// Run finishes requests until ctx ends: it waits for each one's commit and
// publishes its responses. When ctx ends, the requests already handed to
// the store are finished too, so that none is committed and left
// unanswered.
func (s *Service) Run(ctx context.Context) { s.p.Run(ctx) }

// serve is the MQTT door: it runs on the link's dispatcher and only hands
// the request on.
func (s *Service) serve(_ context.Context, m *link.Message) {
	t, err := shadow.ParseTopic(s.root, m.Topic)
	if err != nil {
		// A name AWS would refuse: there is no valid topic to answer on.
		s.malformed.Add(1)
		s.log.Warn("ignoring request on an invalid topic", "topic", m.Topic, "err", err)
		return
	}
	s.requests.Add(1)
	// The request is acknowledged to the broker when this returns, before
	// its commit: a request lost with a crash was never answered, which a
	// client must handle anyway (it asks again), while acknowledging only
	// after the commit would cap each group commit at the broker's
	// in-flight window (20 on a stock mosquitto) and make the broker queue,
	// and then drop, what a busy service has not taken yet.
	if err := s.submit(t, m.Payload, all, func([]shadow.Message, error) {}); err != nil {
		s.publishAll([]shadow.Message{tooMany(t, m.Payload, s.now())}, nil)
	}
}

// shed answers a request the link had no room for; it must not block.
func (s *Service) shed(m *link.Message) {
	t, err := shadow.ParseTopic(s.root, m.Topic)
	if err != nil {
		s.malformed.Add(1)
		return
	}
	s.requests.Add(1)
	s.throttled.Add(1)
	s.publishAll([]shadow.Message{tooMany(t, m.Payload, s.now())}, nil)
}

// Do is the door for other front ends (the HTTP API): it runs one request
// (a topic with the empty suffix) through the same pipeline as an MQTT
// request and returns its answers once they are durable. publish chooses
// which answers are also published to the broker (nil: none). The error is
// ErrOverloaded when the request was shed, or ctx's.
func (s *Service) Do(ctx context.Context, t shadow.Topic, payload []byte, publish func(shadow.Message) bool) ([]shadow.Message, error) {
	type result struct {
		out []shadow.Message
		err error
	}
	s.requests.Add(1)
	res := make(chan result, 1)
	if publish == nil {
		publish = func(shadow.Message) bool { return false }
	}
	if err := s.submit(t, payload, publish, func(out []shadow.Message, err error) { res <- result{out, err} }); err != nil {
		return nil, err
	}
	select {
	case r := <-res:
		return r.out, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// submit runs the request in the store's next group commit and queues it
// for the finisher, or refuses it (ErrOverloaded) when the thing or the
// service has too much waiting.
func (s *Service) submit(t shadow.Topic, payload []byte, publish func(shadow.Message) bool, done func([]shadow.Message, error)) error {
	return s.enqueue(&request{topic: t, payload: payload, publish: publish, done: done})
}

// enqueue is submit of a request made by the caller.
func (s *Service) enqueue(r *request) error {
	err := s.p.Submit(pipeline.Work[store.ShadowKey]{Thing: r.topic.Thing, Key: r.key(), Write: r.topic.Op != shadow.OpGet, Bytes: len(r.payload),
		Run:    func(tx *store.Tx, now time.Time) error { return s.apply(tx, r, now) },
		Finish: func(now time.Time, err error) { s.finish(r, now, err) }})
	if err != nil {
		s.throttled.Add(1)
		return ErrOverloaded
	}
	return nil
}

func (r *request) key() store.ShadowKey {
	return store.ShadowKey{Thing: r.topic.Thing, Name: r.topic.Name}
}

// apply runs r against its document inside a commit. It may run more than
// once (the store retries a group without a writer that failed), so it
// sets r.out afresh each time.
func (s *Service) apply(tx *store.Tx, r *request, now time.Time) error {
	key := r.key()
	var sh shadow.Shadow
	doc, err := tx.GetShadow(key)
	switch {
	case err == nil:
		if err := sh.UnmarshalJSON(doc); err != nil {
			s.log.Error("stored shadow unreadable", "thing", key.Thing, "shadow", key.Name, "err", err)
			r.out = []shadow.Message{internalError(r.topic, now)}
			return nil
		}
	case !errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("load shadow %s/%s: %w", key.Thing, key.Name, err)
	}
	payload := r.payload
	if r.update != nil {
		var ok bool
		if payload, ok = r.update(&sh, now); !ok {
			r.out = nil
			return nil
		}
	}
	out, changed := shadow.Handle(&sh, r.topic, payload, now)
	if changed {
		b, err := sh.MarshalJSON()
		if err != nil {
			return fmt.Errorf("encode shadow %s/%s: %w", key.Thing, key.Name, err)
		}
		if _, err := tx.PutShadow(key, b); err != nil {
			return err
		}
	}
	r.out = out
	return nil
}

// finish answers r once its commit ended with err.
func (s *Service) finish(r *request, now time.Time, err error) {
	out := r.out
	if err != nil {
		s.log.Error("store shadow request", "thing", r.topic.Thing, "shadow", r.topic.Name, "err", err)
		out = []shadow.Message{internalError(r.topic, now)}
	}
	s.publishAll(out, r.publish)
	r.done(out, nil)
}

// publishAll sends answers without waiting for their PUBACKs; the
// pipeline's reaper counts the ones that never get one.
func (s *Service) publishAll(out []shadow.Message, which func(shadow.Message) bool) {
	for _, msg := range out {
		if msg.Topic.Suffix == shadow.SuffixRejected {
			s.rejected.Add(1)
		}
		if which != nil && !which(msg) {
			continue
		}
		s.p.Publish(msg.Topic.Build(s.root), msg.Payload)
	}
}

// all publishes every answer: an MQTT request is answered on MQTT.
func all(shadow.Message) bool { return true }

func internalError(t shadow.Topic, now time.Time) shadow.Message {
	e := &shadow.Error{Code: 500, Message: shadow.MsgInternal, Timestamp: now.Unix()}
	return shadow.Message{Topic: t.With(shadow.SuffixRejected), Payload: e.JSON()}
}

// tooMany is AWS's answer to a request beyond the in-flight limit, with the
// request's clientToken when it can be read.
func tooMany(t shadow.Topic, payload []byte, now time.Time) shadow.Message {
	e := &shadow.Error{Code: 429, Message: shadow.MsgTooManyRequests, Timestamp: now.Unix()}
	if len(payload) <= shadow.MaxPayloadBytes {
		if req, err := shadow.ParseTokenRequest(payload); err == nil {
			e.ClientToken = req.ClientToken
		}
	}
	return shadow.Message{Topic: t.With(shadow.SuffixRejected), Payload: e.JSON()}
}
