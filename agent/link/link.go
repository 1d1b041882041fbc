// Package link is shadowgate's one MQTT session (paho): TLS for AWS IoT Core,
// a persistent session with QoS 1, retained presence messages with a last
// will that marks the gateway offline, a reconnect loop with capped, jittered exponential backoff, and
// handlers that run off paho's goroutine.
//
// Incoming messages are acknowledged (PUBACK) only after their handler
// returns, so a handler that persists a message makes it durable before the
// broker forgets it; after a crash the broker delivers it again. A handler
// that batches its writes defers the acknowledgement (Message.Defer) and
// gives it once the write is durable.
//
// paho reads every packet of a connection on one goroutine: the messages
// it delivers and the PUBACKs of what we publish. So nothing on that
// goroutine may wait: received messages go to a queue that one dispatcher
// drains. Past QueueDepth a subscription with a Shed answers the message at
// once (a service answering 429); one without queues it still, since its
// messages must not be lost, and counts it: the broker's in-flight window
// (20 on a stock mosquitto, 100 on AWS IoT Core) bounds what it can send
// before we acknowledge. A handler may wait (with a deadline) without
// stopping the connection: PUBACKs keep arriving while it waits.
package link

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"slices"
	gosync "sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/shadowgate/shadowgate/agent/watchdog"
)

// Sentinel errors.
var (
	ErrNotConnected = errors.New("not connected to the broker")
	ErrBadURL       = errors.New("invalid broker URL")
)

// Message is one received message.
type Message struct {
	Topic     string
	Payload   []byte
	Retained  bool
	Duplicate bool

	redeliver bool
	deferred  bool
	ack       func()
	link      *Link
}

// Redeliver asks for the message again: it is not acknowledged, and the
// session is dropped so that the broker delivers it again on reconnect. A
// handler calls it when it could not make the message durable.
func (m *Message) Redeliver() { m.redeliver = true }

// Defer takes the acknowledgement of m over from the dispatcher, so that the
// handler can return, and the next message be handled, before m is durable
// (a handler that batches its writes). done must be called exactly once,
// from any goroutine: done(true) acknowledges m; done(false) asks for it
// again, as Redeliver. If the connection drops before done(true), the
// broker delivers m again.
func (m *Message) Defer() (done func(ok bool)) {
	m.deferred = true
	return func(ok bool) {
		if ok {
			m.ack()
		} else {
			m.link.redeliver(m.Topic)
		}
	}
}

// Handler processes a message. The message is acknowledged to the broker
// when the handler returns, unless it called Defer.
type Handler func(ctx context.Context, m *Message)

// Shed answers a message that arrived while the queue was full. It runs on
// the connection's reader, so it must not block (PublishAsync is fine); the
// message is acknowledged when it returns.
type Shed func(m *Message)

// maxFiltersPerSubscribe is how many topic filters one SUBSCRIBE carries:
// AWS IoT Core takes at most 8 per request.
const maxFiltersPerSubscribe = 8

// Options configure a Link.
type Options struct {
	Broker       string // tcp://, mqtt://, ssl://, tls://, mqtts://, ws://, wss://
	ClientID     string
	Username     string
	Password     string
	TLS          *tls.Config // nil: from the URL scheme, system roots
	Keepalive    time.Duration
	CleanSession bool // false (default): persistent session
	// Presence, when its Topic is set, tells the broker's other clients
	// whether this link is connected (see Presence).
	Presence   Presence
	MinBackoff time.Duration // default 500ms
	MaxBackoff time.Duration // default 60s
	// StableAfter is how long a session must have been up for the next
	// outage to start over at MinBackoff (default 30s, as the AWS IoT
	// Device SDKs' minimum connected time to reset the reconnect delay): a
	// link that held survives a cut with a quick reconnect, while a broker
	// that drops the session at once (a policy that refuses a publish, a
	// client id taken over) is not hammered at MinBackoff.
	StableAfter time.Duration
	// QueueDepth is how many received messages may wait for their handler
	// (default 4096) before more are shed (see Shed), or, for a
	// subscription without Shed, queued still and counted as Overflowed:
	// the reader never waits, so PUBACKs are never held up behind a slow
	// handler.
	QueueDepth int
	Logger     *slog.Logger
	// Tracker, when set, is told when each handler runs, so that a handler
	// that never returns shows as a stuck loop.
	Tracker *watchdog.Tracker
	// Clock, when set, tells whether the time TLS verifies certificates
	// with (TLS.Time) is trusted, and when what is known of the time
	// changes: a connect that fails because that time is outside the
	// broker's certificate's validity (a Pi booted at 1970) says so plainly
	// (ClockError) and is tried again as soon as the clock changes, not
	// after the backoff.
	Clock Clock
}

// Clock is what the link needs of the gateway's clock (agent/clock).
type Clock interface {
	Trusted() bool
	Changed() <-chan struct{}
}

// Presence is a retained topic that says whether the link is connected.
// Online is published on it after every connect, once the subscriptions are
// in place and before the OnConnect functions run; Offline is published
// before the clean DISCONNECT that ends Run (a clean DISCONNECT suppresses
// the will), and is the last will the broker publishes when the connection
// is lost. All three are retained QoS 1 messages. The payloads are fixed for
// the link's life, as the will is fixed when the client is made: what
// orders them against other links' (a session number) goes in them.
type Presence struct {
	Topic           string
	Online, Offline []byte
}

type subscription struct {
	filter string
	h      Handler
	shed   Shed
	// optional: a broker that refuses it leaves the session up (Refused).
	optional bool
}

// Link is one MQTT session that stays connected until its context ends.
type Link struct {
	opts   Options
	client mqtt.Client
	log    *slog.Logger

	mu        gosync.Mutex
	subs      []subscription
	onConnect []func(ctx context.Context)
	queue     []queued
	wake      chan struct{}

	connected   atomic.Bool
	connects    atomic.Int64
	published   atomic.Int64 // messages handed to paho (Stats)
	received    atomic.Int64 // messages the broker delivered
	shed        atomic.Int64 // messages answered by a Shed because the queue was full
	overflowed  atomic.Int64 // messages queued past QueueDepth
	warned      atomic.Bool  // overflow logged since the queue was last empty
	dropping    atomic.Bool  // the connection is being dropped on purpose
	lastConnect atomic.Int64 // unix nanos
	lastError   atomic.Pointer[string]
	refused     atomic.Pointer[[]string] // optional filters the current session's broker refused
	lost        chan error
	// down is closed when the current connection is lost, so that waits
	// for a PUBACK that can no longer come end (paho never completes the
	// tokens of a dropped connection when it does not resume them).
	down atomic.Pointer[chan struct{}]
	once atomic.Pointer[gosync.Once]
}

type queued struct {
	m *Message
	h Handler
}

// New validates the options and makes a link; Run connects it.
func New(o Options) (*Link, error) {
	u, err := url.Parse(o.Broker)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("%w %q: want e.g. tls://host:8883 or tcp://host:1883", ErrBadURL, o.Broker)
	}
	switch u.Scheme {
	case "tcp", "mqtt", "ssl", "tls", "mqtts", "ws", "wss":
	default:
		return nil, fmt.Errorf("%w %q: unsupported scheme %q", ErrBadURL, o.Broker, u.Scheme)
	}
	if u.Port() == "" {
		return nil, fmt.Errorf("%w %q: no port", ErrBadURL, o.Broker)
	}
	if o.ClientID == "" {
		return nil, errors.New("link: a client id is required")
	}
	if o.Keepalive <= 0 {
		o.Keepalive = 30 * time.Second
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 500 * time.Millisecond
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = 60 * time.Second
	}
	if o.StableAfter <= 0 {
		o.StableAfter = 30 * time.Second
	}
	if o.QueueDepth <= 0 {
		o.QueueDepth = 4096
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	l := &Link{opts: o, log: o.Logger.With("broker", o.Broker), wake: make(chan struct{}, 1), lost: make(chan error, 1)}

	po := mqtt.NewClientOptions().
		AddBroker(o.Broker).
		SetClientID(o.ClientID).
		SetCleanSession(o.CleanSession).
		SetKeepAlive(o.Keepalive).
		SetPingTimeout(10 * time.Second).
		SetConnectTimeout(15 * time.Second).
		SetWriteTimeout(15 * time.Second).
		SetAutoReconnect(false). // Run reconnects, with jitter
		SetConnectRetry(false).
		SetOrderMatters(true).
		SetAutoAckDisabled(true). // PUBACK after the handler, see package doc
		SetResumeSubs(false).
		SetStore(noStore{}).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			l.connected.Store(false)
			l.markDown()
			select {
			case l.lost <- err:
			default:
			}
		}).
		SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
			// A message for a subscription the persistent session kept from
			// an older configuration: acknowledge and ignore it.
			l.log.Debug("message on a topic nothing handles", "topic", m.Topic())
			m.Ack()
		})
	if dial := dialer(u, 15*time.Second); dial != nil {
		po.SetCustomOpenConnectionFn(dial)
	}
	if o.Username != "" {
		po.SetUsername(o.Username).SetPassword(o.Password)
	}
	if o.TLS != nil {
		po.SetTLSConfig(o.TLS)
	}
	if o.Presence.Topic != "" {
		po.SetBinaryWill(o.Presence.Topic, o.Presence.Offline, 1, true)
	}
	l.client = mqtt.NewClient(po)
	return l, nil
}

// Handle registers h for messages matching filter (QoS 1). It is subscribed
// on every connect, before OnConnect functions run. Call before Run.
func (l *Link) Handle(filter string, h Handler) { l.HandleShed(filter, h, nil) }

// HandleOptional is Handle for a subscription the session can do without:
// when the broker refuses it (SUBACK failure, as AWS IoT Core answers for a
// topic filter its policy does not allow), the session stays up without it,
// the refusal is logged and Refused reports it, until a later session gets
// it. Call before Run.
func (l *Link) HandleOptional(filter string, h Handler) {
	l.handle(subscription{filter: filter, h: h, optional: true})
}

// Refused reports whether the broker refused the optional subscription to
// filter in the current (or last) session.
func (l *Link) Refused(filter string) bool {
	if r := l.refused.Load(); r != nil {
		for _, f := range *r {
			if f == filter {
				return true
			}
		}
	}
	return false
}

// HandleShed is Handle with an answer for messages that arrive while the
// queue is full (a service answering 429 instead of making the broker
// deliver again). Call before Run.
func (l *Link) HandleShed(filter string, h Handler, shed Shed) {
	l.handle(subscription{filter: filter, h: h, shed: shed})
}

func (l *Link) handle(sub subscription) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.subs = append(l.subs, sub)
	// Route now, not at SUBSCRIBE: a persistent session's queued messages
	// arrive right after CONNACK, before this run has subscribed again.
	l.client.AddRoute(sub.filter, func(_ mqtt.Client, m mqtt.Message) { l.enqueue(m, sub) })
}

// OnConnect registers fn to run after every (re)connect, once every
// subscription is in place. Call before Run.
func (l *Link) OnConnect(fn func(ctx context.Context)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.onConnect = append(l.onConnect, fn)
}

// Connected reports whether the session is up.
func (l *Link) Connected() bool { return l.connected.Load() && l.client.IsConnectionOpen() }

// Stats describes the link for status views.
type Stats struct {
	Broker      string
	Connected   bool
	Connects    int64
	LastConnect time.Time // zero if never
	LastError   string
	Queued      int
	// Published counts the QoS 1 publishes handed to paho (presence
	// included, paho's resends after a reconnect not), Received the
	// messages the broker delivered, since New.
	Published, Received int64
	Shed                int64 // received while the queue was full, answered by the subscriber
	Overflowed          int64 // received while the queue was full, queued all the same
	// Refused are the optional subscriptions the broker refused in the
	// current session (HandleOptional).
	Refused []string
}

// Stats returns the link's state.
func (l *Link) Stats() Stats {
	st := Stats{Broker: l.opts.Broker, Connected: l.Connected(), Connects: l.connects.Load(),
		Published: l.published.Load(), Received: l.received.Load(), Shed: l.shed.Load(), Overflowed: l.overflowed.Load()}
	if ns := l.lastConnect.Load(); ns != 0 {
		st.LastConnect = time.Unix(0, ns)
	}
	if e := l.lastError.Load(); e != nil {
		st.LastError = *e
	}
	if r := l.refused.Load(); r != nil {
		st.Refused = append([]string(nil), *r...)
	}
	l.mu.Lock()
	st.Queued = len(l.queue)
	l.mu.Unlock()
	return st
}

// Run connects and keeps the session up until ctx ends, then publishes the
// offline presence and disconnects cleanly. It returns ctx's error.
func (l *Link) Run(ctx context.Context) error {
	var wg gosync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); l.dispatch(ctx) }()
	defer wg.Wait()

	backoff := l.opts.MinBackoff
	for {
		var clockChanged <-chan struct{}
		if l.opts.Clock != nil {
			clockChanged = l.opts.Clock.Changed() // before the attempt: no change is missed
		}
		connects := l.connects.Load()
		err := l.session(ctx)
		if ctx.Err() != nil {
			l.shutdown()
			return ctx.Err()
		}
		if l.connects.Load() != connects && time.Since(time.Unix(0, l.lastConnect.Load())) >= l.opts.StableAfter {
			backoff = l.opts.MinBackoff // the session held: this outage starts over
		}
		var ce *ClockError
		clockWait := errors.As(err, &ce)
		if err != nil {
			msg := err.Error()
			l.lastError.Store(&msg)
			if clockWait {
				l.log.Error(ce.Error(), "retry_in", backoff.Round(time.Millisecond))
			} else {
				l.log.Warn("mqtt link down", "err", err, "retry_in", backoff.Round(time.Millisecond))
			}
		}
		if !clockWait {
			clockChanged = nil
		}
		// Full jitter between half and all of the backoff, capped.
		wait := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-ctx.Done():
			l.shutdown()
			return ctx.Err()
		case <-time.After(wait):
		case <-clockChanged:
			l.log.Info("the clock changed; connecting again")
		}
		backoff = min(backoff*2, l.opts.MaxBackoff)
	}
}

// session connects, subscribes, runs the OnConnect functions and waits for
// the connection to drop, or for ctx to end (then it returns nil).
func (l *Link) session(ctx context.Context) error {
	select { // forget a loss signalled by a previous session
	case <-l.lost:
	default:
	}
	down := make(chan struct{})
	l.down.Store(&down)
	l.once.Store(new(gosync.Once))
	l.dropping.Store(false)
	if err := wait(ctx, l.client.Connect(), down); err != nil {
		l.markDown()
		if ce := l.clockError(err); ce != nil {
			err = ce
		}
		return fmt.Errorf("connect to broker %s: %w", l.opts.Broker, err)
	}
	l.mu.Lock()
	subs := append([]subscription(nil), l.subs...)
	hooks := append([]func(context.Context){}, l.onConnect...)
	l.mu.Unlock()
	// Every SUBSCRIBE goes out at once and only then are their SUBACKs
	// awaited: one round trip for them all, not one per subscription
	// (waiting for each made 18 of them 5.4 s over a 300 ms cellular
	// link before the gateway was up).
	type batch struct {
		subs []subscription
		tok  mqtt.Token
	}
	var batches []batch
	for chunk := range slices.Chunk(subs, maxFiltersPerSubscribe) {
		filters := make(map[string]byte, len(chunk))
		for _, s := range chunk {
			filters[s.filter] = 1
		}
		batches = append(batches, batch{chunk, l.client.SubscribeMultiple(filters, nil)}) // routed by Handle
	}
	var refused []string
	for _, b := range batches {
		if err := wait(ctx, b.tok, down); err != nil {
			l.markDown()
			l.client.Disconnect(0)
			return fmt.Errorf("subscribe %s (and %d more) on %s: %w", b.subs[0].filter, len(b.subs)-1, l.opts.Broker, err)
		}
		st, _ := b.tok.(*mqtt.SubscribeToken)
		for _, s := range b.subs {
			code, ok := st.Result()[s.filter]
			switch {
			case ok && code != 0x80:
			case s.optional:
				refused = append(refused, s.filter)
				l.log.Warn("subscription refused by the broker (check the policy); going on without it", "filter", s.filter)
			default:
				l.markDown()
				l.client.Disconnect(0)
				return fmt.Errorf("subscribe %s on %s: refused by the broker (check the policy)", s.filter, l.opts.Broker)
			}
		}
	}
	l.refused.Store(&refused)
	l.connected.Store(true)
	l.connects.Add(1)
	l.lastConnect.Store(time.Now().UnixNano())
	l.lastError.Store(nil)
	l.log.Info("mqtt link up", "client_id", l.opts.ClientID, "subscriptions", len(subs))
	if p := l.opts.Presence; p.Topic != "" {
		// Not awaited: it goes out ahead of all that the OnConnect
		// functions send on this connection either way, and waiting would
		// cost every connect a round trip.
		pend, err := l.PublishAsync(p.Topic, true, p.Online)
		if err != nil {
			l.log.Warn("publish online presence", "topic", p.Topic, "err", err)
		} else {
			go func() {
				if err := pend.Wait(ctx); err != nil && ctx.Err() == nil {
					l.log.Warn("publish online presence", "topic", p.Topic, "err", fmt.Errorf("publish %s: %w", p.Topic, err))
				}
			}()
		}
	}
	for _, h := range hooks {
		h(ctx)
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-l.lost:
		l.connected.Store(false)
		l.markDown()
		return fmt.Errorf("connection to %s lost: %w", l.opts.Broker, err)
	}
}

// markDown ends every wait on the current connection.
func (l *Link) markDown() {
	if o, d := l.once.Load(), l.down.Load(); o != nil && d != nil {
		o.Do(func() { close(*d) })
	}
}

// currentDown is the down channel of the current connection.
func (l *Link) currentDown() chan struct{} {
	if d := l.down.Load(); d != nil {
		return *d
	}
	closed := make(chan struct{})
	close(closed)
	return closed
}

func (l *Link) shutdown() {
	if p := l.opts.Presence; l.client.IsConnectionOpen() && p.Topic != "" {
		tok := l.publish(p.Topic, true, p.Offline)
		if !tok.WaitTimeout(2*time.Second) || tok.Error() != nil {
			// Sent before the DISCONNECT on the same connection, the broker
			// still reads it first if it arrives at all.
			l.log.Warn("offline presence not acknowledged before disconnecting", "topic", p.Topic, "err", tok.Error())
		}
	}
	l.connected.Store(false)
	l.client.Disconnect(250)
}

// Publish sends payload with QoS 1 and waits for the broker's PUBACK.
func (l *Link) Publish(ctx context.Context, topic string, retain bool, payload []byte) error {
	if !l.client.IsConnectionOpen() || l.dropping.Load() {
		return ErrNotConnected
	}
	down := l.currentDown()
	if err := wait(ctx, l.publish(topic, retain, payload), down); err != nil {
		return fmt.Errorf("publish %s: %w", topic, err)
	}
	return nil
}

// Pending is a publish in flight.
type Pending struct {
	tok  mqtt.Token
	down chan struct{}
}

// Wait waits for the PUBACK; it fails with ErrNotConnected if the
// connection the message went out on is lost first.
func (p Pending) Wait(ctx context.Context) error { return wait(ctx, p.tok, p.down) }

// Lost is closed when the connection the message went out on is lost
// (Wait then fails with ErrNotConnected unless the PUBACK came first).
func (p Pending) Lost() <-chan struct{} { return p.down }

// Done is closed when the publish ended (PUBACK or error; Wait then returns
// at once), so that a caller can skip setting a deadline for it.
func (p Pending) Done() <-chan struct{} { return p.tok.Done() }

// PublishAsync sends payload with QoS 1 without waiting, so that a caller
// can keep a window of messages in flight; messages go out in call order.
func (l *Link) PublishAsync(topic string, retain bool, payload []byte) (Pending, error) {
	if !l.client.IsConnectionOpen() || l.dropping.Load() {
		return Pending{}, ErrNotConnected
	}
	down := l.currentDown()
	return Pending{l.publish(topic, retain, payload), down}, nil
}

// publish hands a QoS 1 message to paho and counts it.
func (l *Link) publish(topic string, retain bool, payload []byte) mqtt.Token {
	l.published.Add(1)
	return l.client.Publish(topic, 1, retain, payload)
}

func wait(ctx context.Context, tok mqtt.Token, down <-chan struct{}) error {
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	case <-down:
		select {
		case <-tok.Done(): // it made it after all
			return tok.Error()
		default:
			return fmt.Errorf("%w: connection lost before the broker acknowledged", ErrNotConnected)
		}
	}
}

// enqueue runs on paho's reader, which also reads the PUBACKs of our own
// publishes: it never waits.
func (l *Link) enqueue(m mqtt.Message, sub subscription) {
	l.received.Add(1)
	msg := &Message{Topic: m.Topic(), Payload: m.Payload(), Retained: m.Retained(), Duplicate: m.Duplicate(), ack: m.Ack, link: l}
	l.mu.Lock()
	full := len(l.queue) >= l.opts.QueueDepth
	if full && sub.shed != nil {
		l.mu.Unlock()
		l.shedMessage(msg, sub.shed)
		return
	}
	l.queue = append(l.queue, queued{msg, sub.h})
	l.mu.Unlock()
	if full {
		l.overflowed.Add(1)
		if l.warned.CompareAndSwap(false, true) {
			l.log.Warn("receive queue over its depth: handlers are slower than the broker sends", "depth", l.opts.QueueDepth, "topic", msg.Topic)
		}
	}
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// shedMessage answers a message the queue has no room for.
func (l *Link) shedMessage(m *Message, shed Shed) {
	l.shed.Add(1)
	defer m.ack()
	defer func() {
		if r := recover(); r != nil {
			l.log.Error("shed handler panicked", "topic", m.Topic, "panic", r)
		}
	}()
	shed(m)
}

func (l *Link) dispatch(ctx context.Context) {
	for {
		l.mu.Lock()
		if len(l.queue) == 0 {
			l.mu.Unlock()
			l.warned.Store(false)
			select {
			case <-ctx.Done():
				return
			case <-l.wake:
				continue
			}
		}
		q := l.queue[0]
		l.queue[0] = queued{}
		l.queue = l.queue[1:]
		l.mu.Unlock()
		l.run(ctx, q)
	}
}

func (l *Link) run(ctx context.Context, q queued) {
	l.opts.Tracker.Begin()
	defer l.opts.Tracker.End()
	defer func() {
		if r := recover(); r != nil {
			// A handler bug must not take the daemon down with it.
			l.log.Error("message handler panicked", "topic", q.m.Topic, "panic", r)
		}
		switch {
		case q.m.deferred:
		case q.m.redeliver:
			l.redeliver(q.m.Topic)
		default:
			q.m.ack()
		}
	}()
	q.h(ctx, q.m)
}

// redeliver drops the session without acknowledging a message, so that the
// broker delivers it again on reconnect.
func (l *Link) redeliver(topic string) {
	l.log.Warn("message not acknowledged; reconnecting so that the broker delivers it again", "topic", topic)
	// Publishing on a connection paho is taking down waits for its write
	// timeout: refuse from now on.
	l.dropping.Store(true)
	// A clean DISCONNECT with time for the acknowledgements already queued
	// to leave: with no quiesce time paho may close the socket first, and
	// the broker would deliver messages already handled again too (paho
	// does not order acks before the DISCONNECT, so it still may).
	l.client.Disconnect(250)
	l.connected.Store(false)
	l.markDown()
	select {
	case l.lost <- errors.New("a message must be delivered again"):
	default:
	}
}
