package daemon

import (
	"context"
	"slices"
	gosync "sync"

	"github.com/shadowgate/shadowgate/agent/link"
)

// uplink is the MQTT session as the daemon's parts see it. It outlives the
// link beneath it (a reload with new cloud settings replaces that) and the
// handlers it routes to (a reload that changes shadow sync or commands
// replaces those), so that either replacement leaves the other alone: new
// command types do not drop the session, and a new broker address does not
// restart sync or commands.
//
// The outbox publishes through it, so it survives both. Shadow sync and
// commands register their handlers on a routes of their generation.
type uplink struct {
	// gate is held for reading while a handler or the connect hooks run,
	// and for writing while one generation of handlers replaces another:
	// a message that arrives meanwhile waits in the link's queue and goes
	// to the new generation, never to a stopped one.
	gate gosync.RWMutex

	mu       gosync.Mutex
	link     *link.Link
	filters  []string        // subscribed by link
	optional map[string]bool // of those, the ones the session can do without
	routes   map[string]link.Handler
	hooks    []func(context.Context) // the generation's OnConnect
	base     []func(context.Context) // the uplink's own (outbox), run first
	run      *task                   // link.Run
}

func newUplink() *uplink { return &uplink{routes: map[string]link.Handler{}} }

// current is the link beneath.
func (u *uplink) current() *link.Link {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.link
}

// filtersNow are the filters the current link subscribes, and which of
// them are optional.
func (u *uplink) filtersNow() ([]string, map[string]bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.filters), u.optional
}

// subscribed reports whether the current link subscribes every filter.
func (u *uplink) subscribed(filters []string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, f := range filters {
		if !slices.Contains(u.filters, f) {
			return false
		}
	}
	return true
}

// onConnect adds a hook of the uplink's own, run after every (re)connect
// before the generation's.
func (u *uplink) onConnect(fn func(context.Context)) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.base = append(u.base, fn)
}

// attach makes l the link beneath, subscribing filters (those in optional
// as optional subscriptions: a broker that refuses them leaves the session
// up); l must not run yet.
func (u *uplink) attach(l *link.Link, filters []string, optional map[string]bool) {
	for _, f := range filters {
		if optional[f] {
			l.HandleOptional(f, u.dispatcher(f))
		} else {
			l.Handle(f, u.dispatcher(f))
		}
	}
	l.OnConnect(u.connected)
	u.mu.Lock()
	u.link, u.filters, u.optional = l, slices.Clone(filters), optional
	u.mu.Unlock()
}

// Refused reports whether the broker refused the optional subscription to
// filter in the current session.
func (u *uplink) Refused(filter string) bool { return u.current().Refused(filter) }

// start runs the link beneath until stop or parent ends.
func (u *uplink) start(parent context.Context) {
	l := u.current()
	t := startTask(parent, func(ctx context.Context) { l.Run(ctx) })
	u.mu.Lock()
	u.run = t
	u.mu.Unlock()
}

// stop ends the link beneath (it publishes offline and disconnects); the
// handlers it was running finish first.
func (u *uplink) stop() {
	u.mu.Lock()
	t := u.run
	u.run = nil
	u.mu.Unlock()
	t.stop()
}

// install makes r's handlers and hooks the ones messages go to. Call with
// gate held for writing.
func (u *uplink) install(r *routes) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.routes = r.handlers
	u.hooks = r.hooks
}

func (u *uplink) dispatcher(filter string) link.Handler {
	return func(ctx context.Context, m *link.Message) {
		u.gate.RLock()
		defer u.gate.RUnlock()
		u.mu.Lock()
		h := u.routes[filter]
		u.mu.Unlock()
		if h != nil {
			h(ctx, m)
		} // else: no part of this configuration handles it; acknowledged
	}
}

func (u *uplink) connected(ctx context.Context) {
	u.mu.Lock()
	base := slices.Clone(u.base)
	u.mu.Unlock()
	for _, h := range base {
		h(ctx)
	}
	u.gate.RLock()
	defer u.gate.RUnlock()
	u.mu.Lock()
	hooks := slices.Clone(u.hooks)
	u.mu.Unlock()
	for _, h := range hooks {
		h(ctx)
	}
}

// Connected reports whether the session is up.
func (u *uplink) Connected() bool { return u.current().Connected() }

// Publish publishes on the current link.
func (u *uplink) Publish(ctx context.Context, topic string, retain bool, payload []byte) error {
	return u.current().Publish(ctx, topic, retain, payload)
}

// PublishAsync publishes on the current link without waiting.
func (u *uplink) PublishAsync(topic string, retain bool, payload []byte) (link.Pending, error) {
	return u.current().PublishAsync(topic, retain, payload)
}

// routes collects the handlers and connect hooks of one generation (shadow
// sync and commands); the uplink routes to them once installed.
type routes struct {
	*uplink
	handlers map[string]link.Handler
	order    []string
	optional map[string]bool
	hooks    []func(context.Context)
}

func newRoutes(u *uplink) *routes {
	return &routes{uplink: u, handlers: map[string]link.Handler{}, optional: map[string]bool{}}
}

// HandleOptional registers h for filter, a subscription the session can do
// without (the jobs topics: a policy without them turns jobs off only).
func (r *routes) HandleOptional(filter string, h link.Handler) {
	r.Handle(filter, h)
	r.optional[filter] = true
}

// Handle registers h for filter.
func (r *routes) Handle(filter string, h link.Handler) {
	if _, dup := r.handlers[filter]; !dup {
		r.order = append(r.order, filter)
	}
	r.handlers[filter] = h
}

// OnConnect registers fn to run after every (re)connect.
func (r *routes) OnConnect(fn func(context.Context)) { r.hooks = append(r.hooks, fn) }

// filters are the topic filters the generation needs subscribed.
func (r *routes) filters() []string { return slices.Clone(r.order) }

// task is the goroutines of one part, stopped on their own (a reload
// replaces the part) or with the daemon (their parent context ends).
type task struct {
	cancel context.CancelFunc
	wg     gosync.WaitGroup
}

func startTask(parent context.Context, fns ...func(context.Context)) *task {
	ctx, cancel := context.WithCancel(parent)
	t := &task{cancel: cancel}
	for _, fn := range fns {
		t.wg.Add(1)
		go func() { defer t.wg.Done(); fn(ctx) }()
	}
	return t
}

// stop ends the task's goroutines and waits for them; nil is stopped.
func (t *task) stop() {
	if t == nil {
		return
	}
	t.cancel()
	t.wg.Wait()
}
