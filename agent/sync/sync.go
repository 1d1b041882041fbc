// Package sync keeps the gateway's actuators and their cloud shadows in
// step, the device side of the AWS IoT Device Shadow protocol:
//
//  1. On every (re)connect the link subscribes to delta, accepted and
//     rejected first; then each shadow is fetched with GET.
//  2. GET 404 creates the shadow with the actuators' current state.
//  3. Desired state (from GET and from deltas newer than the last applied
//     version) is reconciled: what differs from the hardware is applied, as
//     one atomic group, and the new state reported.
//  4. Reports go through the store's outbox, coalesced per shadow key, so
//     that offline changes arrive after reconnect, newest value last.
//  5. A local change (rollback, a technician's set) is kept as pending in
//     the replica and sent as desired+reported with the shadow version, so
//     that the cloud does not re-apply what was undone. Offline, the
//     conflict policy decides on reconnect: cloud_wins applies a desired the
//     cloud changed meanwhile, local_wins writes the local state over it.
package sync

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	gosync "sync"
	"sync/atomic"
	"time"

	"github.com/shadowgate/shadowgate/agent/actuate"
	"github.com/shadowgate/shadowgate/agent/config"
	"github.com/shadowgate/shadowgate/agent/link"
	"github.com/shadowgate/shadowgate/agent/shadow"
	"github.com/shadowgate/shadowgate/drivers"
	"github.com/shadowgate/shadowgate/store"
)

// Link is what sync needs of the MQTT session.
type Link interface {
	Handle(filter string, h link.Handler)
	OnConnect(fn func(ctx context.Context))
	Connected() bool
	Publish(ctx context.Context, topic string, retain bool, payload []byte) error
	PublishAsync(topic string, retain bool, payload []byte) (link.Pending, error)
}

// Kicker is told when the outbox has something new.
type Kicker interface{ Kick() }

// Options configure a Syncer.
type Options struct {
	Thing     string
	Root      string
	Conflict  string // config.CloudWins or config.LocalWins
	Actuators map[string]*config.Actuator
	Store     *store.Store
	Manager   *actuate.Manager
	Link      Link
	Outbox    Kicker
	Logger    *slog.Logger
}

// Stats counts what sync did and refused.
type Stats struct {
	Malformed     int64 // payloads that could not be read
	StaleDeltas   int64 // deltas at or below the applied version, ignored
	Applied       int64 // reconciliations that changed something
	ApplyFailures int64
	Conflicts     int64 // local changes that met a changed cloud desired
}

// Syncer syncs every shadow the configured actuators use.
type Syncer struct {
	o       Options
	log     *slog.Logger
	shadows map[string]*shadowSync // by shadow name, "" = classic
	binding map[string]binding     // actuator → shadow and key
	seq     atomic.Uint64
	tag     string

	malformed, stale, applied, applyFailures, conflicts atomic.Int64

	genMu gosync.Mutex
	gens  map[string]uint64

	// Reconcilers run on demand, one per shadow with work, so that a gateway
	// with 100 shadows does not keep 100 idle goroutines.
	runMu   gosync.Mutex
	runCtx  context.Context
	stopped bool
	runWG   gosync.WaitGroup
}

type binding struct {
	shadow string
	key    string
}

type shadowSync struct {
	name string
	keys map[string]string // shadow key → actuator

	mu       gosync.Mutex
	rep      replica
	getToken string
	dirty    bool // desired state arrived that is not reconciled yet
	running  bool // a reconciler goroutine is at work on this shadow
}

// replica is what the gateway knows of one cloud shadow, persisted in the
// store so that it survives restarts and offline periods.
type replica struct {
	Desired  map[string]any      `json:"desired,omitempty"`
	Reported map[string]any      `json:"reported,omitempty"`
	Version  int64               `json:"version"`
	Applied  int64               `json:"applied"` // version of the last desired state reconciled
	Pending  map[string]*pending `json:"pending,omitempty"`
}

// pending is a local change the cloud has not accepted yet.
type pending struct {
	Value  map[string]any `json:"value"`
	Base   any            `json:"base"` // the cloud's desired for the key when the change was made
	Token  string         `json:"token"`
	Source string         `json:"source"`
}

// New makes a Syncer and loads the replicas from the store.
func New(o Options) (*Syncer, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Syncer{o: o, log: o.Logger.With("component", "sync"), shadows: map[string]*shadowSync{}, binding: map[string]binding{},
		tag: fmt.Sprintf("%04x", rand.Uint32()&0xffff)}
	s.shadows[""] = &shadowSync{name: "", keys: map[string]string{}}
	for name, a := range o.Actuators {
		sh := s.shadows[a.Shadow]
		if sh == nil {
			sh = &shadowSync{name: a.Shadow, keys: map[string]string{}}
			s.shadows[a.Shadow] = sh
		}
		sh.keys[a.Key] = name
		s.binding[name] = binding{a.Shadow, a.Key}
	}
	for _, sh := range s.shadows {
		doc, err := o.Store.GetShadow(s.storeKey(sh))
		if err != nil {
			continue // none yet
		}
		if err := unmarshal(doc, &sh.rep); err != nil {
			s.log.Warn("stored shadow replica unreadable; starting from the cloud's", "shadow", label(sh.name), "err", err)
			sh.rep = replica{}
		}
	}
	s.register()
	o.Manager.Observe(s.onChange)
	return s, nil
}

// Stats returns the counters.
func (s *Syncer) Stats() Stats {
	return Stats{Malformed: s.malformed.Load(), StaleDeltas: s.stale.Load(), Applied: s.applied.Load(),
		ApplyFailures: s.applyFailures.Load(), Conflicts: s.conflicts.Load()}
}

// Shadow returns the replica of a shadow: desired, reported, delta, version.
func (s *Syncer) Shadow(name string) (desired, reported, delta map[string]any, version int64, ok bool) {
	sh := s.shadows[name]
	if sh == nil {
		return nil, nil, nil, 0, false
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.rep.Desired, sh.rep.Reported, shadow.Delta(sh.rep.Desired, sh.rep.Reported), sh.rep.Version, true
}

// ShadowNames returns the synced shadows' names ("" is classic), sorted.
func (s *Syncer) ShadowNames() []string {
	var names []string
	for n := range s.shadows {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func label(name string) string {
	if name == "" {
		return "(classic)"
	}
	return name
}

func (s *Syncer) storeKey(sh *shadowSync) store.ShadowKey {
	return store.ShadowKey{Thing: s.o.Thing, Name: sh.name}
}

func (s *Syncer) topic(sh *shadowSync, op shadow.Op, sfx shadow.Suffix) string {
	return shadow.Topic{Thing: s.o.Thing, Name: sh.name, Op: op, Suffix: sfx}.Build(s.o.Root)
}

func (s *Syncer) token(kind string) string {
	return fmt.Sprintf("sg-%s-%s-%d", s.tag, kind, s.seq.Add(1))
}

// register subscribes before anything is requested: the link subscribes on
// every connect before it runs OnConnect, which sends the GETs.
func (s *Syncer) register() {
	bases := []string{s.o.Root + s.o.Thing + "/shadow/"}
	for n := range s.shadows {
		if n != "" {
			bases = append(bases, s.o.Root+s.o.Thing+"/shadow/name/+/")
			break
		}
	}
	for _, b := range bases {
		for _, t := range []string{"update/delta", "update/accepted", "update/rejected", "get/accepted", "get/rejected"} {
			s.o.Link.Handle(b+t, s.onMessage)
		}
	}
	s.o.Link.OnConnect(s.onConnect)
}

// Run lets reconcilers run until ctx ends, then waits for the ones at work.
func (s *Syncer) Run(ctx context.Context) {
	s.runMu.Lock()
	s.runCtx = ctx
	s.runMu.Unlock()
	for _, sh := range s.shadows {
		s.start(sh) // work that arrived before Run
	}
	<-ctx.Done()
	s.runMu.Lock()
	s.stopped = true // no goroutine joins runWG from now on
	s.runMu.Unlock()
	s.runWG.Wait()
}

// track counts one more goroutine in runWG if sync is running.
func (s *Syncer) track() bool {
	s.runMu.Lock()
	defer s.runMu.Unlock()
	if s.runCtx == nil || s.stopped {
		return false
	}
	s.runWG.Add(1)
	return true
}

// poke marks a shadow as having desired state to reconcile.
func (s *Syncer) poke(sh *shadowSync) {
	sh.mu.Lock()
	sh.dirty = true
	sh.mu.Unlock()
	s.start(sh)
}

// start runs a reconciler for sh if it has work and none is running; the
// goroutine ends when the shadow has nothing left to do.
func (s *Syncer) start(sh *shadowSync) {
	s.runMu.Lock()
	ctx := s.runCtx
	s.runMu.Unlock()
	if ctx == nil || ctx.Err() != nil {
		return
	}
	sh.mu.Lock()
	if sh.running || !sh.dirty {
		sh.mu.Unlock()
		return
	}
	sh.running = true
	sh.mu.Unlock()
	if !s.track() {
		sh.mu.Lock()
		sh.running = false
		sh.mu.Unlock()
		return
	}
	go func() {
		defer s.runWG.Done()
		for {
			sh.mu.Lock()
			if !sh.dirty || ctx.Err() != nil {
				sh.running = false
				sh.mu.Unlock()
				return
			}
			sh.dirty = false
			sh.mu.Unlock()
			s.reconcile(ctx, sh)
		}
	}()
}

func (s *Syncer) onConnect(ctx context.Context) {
	for _, name := range s.ShadowNames() {
		sh := s.shadows[name]
		tok := s.token("get")
		sh.mu.Lock()
		sh.getToken = tok
		sh.mu.Unlock()
		payload, _ := json.Marshal(map[string]string{"clientToken": tok})
		if err := s.o.Link.Publish(ctx, s.topic(sh, shadow.OpGet, shadow.Request), false, payload); err != nil {
			s.log.Warn("shadow get", "shadow", label(name), "err", err)
		}
	}
}

func (s *Syncer) onMessage(ctx context.Context, m *link.Message) {
	t, err := shadow.ParseTopic(s.o.Root, m.Topic)
	if err != nil || t.Thing != s.o.Thing {
		s.bad(m, fmt.Errorf("unexpected topic: %v", err))
		return
	}
	sh := s.shadows[t.Name]
	if sh == nil {
		return // a named shadow of this thing that no actuator uses
	}
	switch {
	case t.Op == shadow.OpUpdate && t.Suffix == shadow.SuffixDelta:
		s.onDelta(sh, m)
	case t.Op == shadow.OpUpdate && t.Suffix == shadow.SuffixAccepted:
		s.onUpdateAccepted(sh, m)
	case t.Op == shadow.OpUpdate && t.Suffix == shadow.SuffixRejected:
		s.onUpdateRejected(ctx, sh, m)
	case t.Op == shadow.OpGet && t.Suffix == shadow.SuffixAccepted:
		s.onGetAccepted(ctx, sh, m)
	case t.Op == shadow.OpGet && t.Suffix == shadow.SuffixRejected:
		s.onGetRejected(ctx, sh, m)
	}
}

func (s *Syncer) bad(m *link.Message, err error) {
	s.malformed.Add(1)
	s.log.Warn("ignoring malformed message", "topic", m.Topic, "err", err, "bytes", len(m.Payload))
}

func (s *Syncer) onDelta(sh *shadowSync, m *link.Message) {
	d, err := shadow.ParseDelta(m.Payload)
	if err != nil {
		s.bad(m, err)
		return
	}
	sh.mu.Lock()
	if d.Version <= sh.rep.Applied {
		sh.mu.Unlock()
		s.stale.Add(1)
		s.log.Debug("ignoring stale delta", "shadow", label(sh.name), "version", d.Version, "applied", sh.rep.Applied)
		return
	}
	sh.rep.Desired = shadow.Merge(sh.rep.Desired, d.State)
	sh.rep.Version = max(sh.rep.Version, d.Version)
	sh.rep.Applied = d.Version
	sh.mu.Unlock()
	s.poke(sh)
}

// fullDoc is the state part of accepted and get responses.
type fullDoc struct {
	State struct {
		Desired  map[string]any `json:"desired"`
		Reported map[string]any `json:"reported"`
	} `json:"state"`
	Version     int64  `json:"version"`
	ClientToken string `json:"clientToken"`
}

func (s *Syncer) onUpdateAccepted(sh *shadowSync, m *link.Message) {
	var a fullDoc
	if err := unmarshal(m.Payload, &a); err != nil || a.Version <= 0 {
		s.bad(m, fmt.Errorf("update/accepted: %v", err))
		return
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	settled := false
	for key, p := range sh.rep.Pending {
		if p.Token == a.ClientToken {
			delete(sh.rep.Pending, key)
			settled = true
		}
	}
	if a.Version > sh.rep.Version {
		sh.rep.Desired = shadow.Merge(sh.rep.Desired, a.State.Desired)
		sh.rep.Reported = shadow.Merge(sh.rep.Reported, a.State.Reported)
		sh.rep.Version = a.Version
	}
	if settled {
		s.persist(sh)
	}
}

func (s *Syncer) onUpdateRejected(ctx context.Context, sh *shadowSync, m *link.Message) {
	e, err := shadow.ParseRejected(m.Payload)
	if err != nil {
		s.bad(m, err)
		return
	}
	sh.mu.Lock()
	var mine *pending
	var key string
	for k, p := range sh.rep.Pending {
		if p.Token == e.ClientToken {
			mine, key = p, k
		}
	}
	if mine != nil && e.Code != 409 {
		delete(sh.rep.Pending, key)
		s.persist(sh)
	}
	sh.mu.Unlock()
	switch {
	case mine != nil && e.Code == 409:
		// The cloud moved on since the version we sent: fetch it and let the
		// conflict policy decide.
		s.log.Info("local change met a newer shadow version; fetching it", "shadow", label(sh.name), "key", key)
		s.get(ctx, sh)
	case mine != nil:
		s.log.Error("cloud rejected a local change", "shadow", label(sh.name), "key", key, "code", e.Code, "message", e.Message)
	case strings.HasPrefix(e.ClientToken, "sg-"):
		s.log.Error("cloud rejected a report", "shadow", label(sh.name), "code", e.Code, "message", e.Message)
	}
}

func (s *Syncer) get(ctx context.Context, sh *shadowSync) {
	tok := s.token("get")
	sh.mu.Lock()
	sh.getToken = tok
	sh.mu.Unlock()
	payload, _ := json.Marshal(map[string]string{"clientToken": tok})
	if _, err := s.o.Link.PublishAsync(s.topic(sh, shadow.OpGet, shadow.Request), false, payload); err != nil {
		s.log.Warn("shadow get", "shadow", label(sh.name), "err", err)
	}
}

func (s *Syncer) onGetAccepted(ctx context.Context, sh *shadowSync, m *link.Message) {
	var g fullDoc
	if err := unmarshal(m.Payload, &g); err != nil || g.Version <= 0 {
		s.bad(m, fmt.Errorf("get/accepted: %v", err))
		return
	}
	sh.mu.Lock()
	if g.ClientToken != sh.getToken {
		sh.mu.Unlock()
		return // another client's GET
	}
	// The document is the truth, even at a version equal to the one held:
	// never skip a GET response after a reconnect.
	sh.rep.Desired, sh.rep.Reported, sh.rep.Version, sh.rep.Applied = g.State.Desired, g.State.Reported, g.Version, g.Version
	s.resolvePending(sh)
	s.persist(sh)
	sh.mu.Unlock()
	s.reportDifferences(ctx, sh, false)
	s.poke(sh)
}

func (s *Syncer) onGetRejected(ctx context.Context, sh *shadowSync, m *link.Message) {
	e, err := shadow.ParseRejected(m.Payload)
	if err != nil {
		s.bad(m, err)
		return
	}
	sh.mu.Lock()
	mine := e.ClientToken == sh.getToken
	sh.mu.Unlock()
	if !mine {
		return
	}
	if e.Code != 404 {
		s.log.Error("shadow get rejected", "shadow", label(sh.name), "code", e.Code, "message", e.Message)
		return
	}
	s.log.Info("shadow does not exist; creating it with the actuators' state", "shadow", label(sh.name))
	sh.mu.Lock()
	sh.rep.Desired, sh.rep.Reported = nil, nil
	s.resolvePending(sh)
	s.persist(sh)
	sh.mu.Unlock()
	s.reportDifferences(ctx, sh, true)
}

// resolvePending decides each local change against the document just
// fetched, by the conflict policy, and sends the ones that stand. sh.mu held.
func (s *Syncer) resolvePending(sh *shadowSync) {
	for key, p := range sh.rep.Pending {
		cur := sh.rep.Desired[key]
		cloudMoved := cur != nil && !shadow.Equal(cur, p.Base) && !shadow.Equal(cur, any(p.Value))
		if cloudMoved {
			s.conflicts.Add(1)
			if s.o.Conflict != config.LocalWins {
				s.log.Warn("conflict: the cloud's desired changed while a local change waited; cloud_wins applies the cloud's",
					"shadow", label(sh.name), "key", key, "local", p.Value, "cloud", cur)
				delete(sh.rep.Pending, key)
				continue
			}
			s.log.Warn("conflict: the cloud's desired changed while a local change waited; local_wins writes the local state",
				"shadow", label(sh.name), "key", key, "local", p.Value, "cloud", cur)
		}
		s.sendPending(sh, key, p)
	}
}

// sendPending publishes a local change as desired and reported, checked
// against the shadow version. sh.mu held.
func (s *Syncer) sendPending(sh *shadowSync, key string, p *pending) {
	if !s.o.Link.Connected() {
		return
	}
	body := map[string]any{
		"state":       map[string]any{"desired": map[string]any{key: p.Value}, "reported": map[string]any{key: p.Value}},
		"clientToken": p.Token,
	}
	if sh.rep.Version > 0 {
		body["version"] = sh.rep.Version
	}
	payload, _ := json.Marshal(body)
	if _, err := s.o.Link.PublishAsync(s.topic(sh, shadow.OpUpdate, shadow.Request), false, payload); err != nil {
		s.log.Warn("send local change", "shadow", label(sh.name), "key", key, "err", err)
	}
}

// reportDifferences reports every actuator whose state differs from the
// cloud's reported (all of them when create is set), and connected:true in
// the classic shadow.
func (s *Syncer) reportDifferences(ctx context.Context, sh *shadowSync, create bool) {
	sh.mu.Lock()
	reported := sh.rep.Reported
	pendingKeys := map[string]bool{}
	for k := range sh.rep.Pending {
		pendingKeys[k] = true
	}
	sh.mu.Unlock()
	for _, key := range slices.Sorted(maps.Keys(sh.keys)) {
		if pendingKeys[key] {
			continue // sent as desired+reported already
		}
		cur, err := s.o.Manager.Read(ctx, sh.keys[key])
		if err != nil {
			s.log.Warn("read actuator for report", "actuator", sh.keys[key], "err", err)
			continue
		}
		rv, _ := reported[key].(map[string]any)
		if create || rv == nil || !drivers.Equal(cur, drivers.State(rv)) {
			s.report(sh, key, cur)
		}
	}
	if sh.name == "" && (create || reported["connected"] != true) {
		s.enqueueReport(sh, "connected", true)
	}
}

// onChange is told of every verified actuator change (on the actuator's
// worker: it only queues).
func (s *Syncer) onChange(e actuate.Event) {
	b, ok := s.binding[e.Actuator]
	if !ok {
		return
	}
	sh := s.shadows[b.shadow]
	switch e.Source {
	case store.SourceLocal, store.SourceRollback:
		sh.mu.Lock()
		if sh.rep.Pending == nil {
			sh.rep.Pending = map[string]*pending{}
		}
		base := sh.rep.Desired[b.key]
		if old := sh.rep.Pending[b.key]; old != nil {
			base = old.Base // still relative to what the cloud had before
		}
		p := &pending{Value: e.State, Base: base, Token: s.token("local"), Source: e.Source}
		sh.rep.Pending[b.key] = p
		s.persist(sh)
		s.sendPending(sh, b.key, p)
		sh.mu.Unlock()
	default:
		s.report(sh, b.key, e.State)
	}
}

func (s *Syncer) report(sh *shadowSync, key string, st drivers.State) {
	s.enqueueReport(sh, key, map[string]any(st))
}

// enqueueReport sends a report. While the link is up and no older report
// of the same key waits in the outbox (which it must not overtake), it is
// published directly, saving an fsync on the round trip; otherwise, or if
// that publish fails, it goes to the outbox, coalesced per key. Reports of
// different keys are independent partial updates, so command acks or other
// keys' reports waiting in the outbox do not hold it back. A report lost
// to a crash is not lost for good: every reconnect reports each key whose
// state differs from the cloud's reported.
func (s *Syncer) enqueueReport(sh *shadowSync, key string, v any) {
	payload, err := json.Marshal(map[string]any{
		"state":       map[string]any{"reported": map[string]any{key: v}},
		"clientToken": s.token("rep"),
	})
	if err != nil {
		s.log.Error("encode report", "key", key, "err", err)
		return
	}
	item := store.OutItem{
		Kind: store.KindReport, Topic: s.topic(sh, shadow.OpUpdate, shadow.Request), Payload: payload, QoS: 1,
		Key: s.o.Thing + "/" + sh.name + "/" + key,
	}
	gen := s.nextGen(item.Key)
	if s.o.Link.Connected() && !s.o.Store.Queued(item.Key) && s.track() {
		if p, err := s.o.Link.PublishAsync(item.Topic, false, payload); err != nil {
			s.runWG.Done()
		} else {
			go func() {
				defer s.runWG.Done()
				// Bounded by the PUBACK, the connection dropping, or 30 s;
				// Run waits for it, so the store is still open here.
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				if p.Wait(ctx) != nil && s.currentGen(item.Key) == gen {
					s.queue(item) // not acknowledged and nothing newer sent since
				}
			}()
			return
		}
	}
	s.queue(item)
}

func (s *Syncer) queue(item store.OutItem) {
	if _, err := s.o.Store.Enqueue(item); err != nil {
		s.log.Error("queue report", "key", item.Key, "err", err)
		return
	}
	s.o.Outbox.Kick()
}

// nextGen and currentGen number the reports of each key, so that a failed
// direct publish never queues a value older than one sent after it.
func (s *Syncer) nextGen(key string) uint64 {
	s.genMu.Lock()
	defer s.genMu.Unlock()
	if s.gens == nil {
		s.gens = map[string]uint64{}
	}
	s.gens[key]++
	return s.gens[key]
}

func (s *Syncer) currentGen(key string) uint64 {
	s.genMu.Lock()
	defer s.genMu.Unlock()
	return s.gens[key]
}

// reconcile applies the desired state that differs from the hardware.
func (s *Syncer) reconcile(ctx context.Context, sh *shadowSync) {
	sh.mu.Lock()
	desired := sh.rep.Desired
	version := sh.rep.Applied
	pendingKeys := map[string]bool{}
	for k := range sh.rep.Pending {
		pendingKeys[k] = true
	}
	sh.mu.Unlock()
	var changes []actuate.Change
	for _, key := range slices.Sorted(maps.Keys(sh.keys)) {
		act := sh.keys[key]
		raw, present := desired[key]
		if !present || pendingKeys[key] {
			continue
		}
		want, ok := raw.(map[string]any)
		if !ok {
			s.log.Warn("desired value is not an object; ignored", "shadow", label(sh.name), "key", key, "value", raw)
			continue
		}
		cur, err := s.o.Manager.Read(ctx, act)
		if err != nil {
			s.log.Warn("read actuator", "actuator", act, "err", err)
			continue
		}
		schema, _ := s.o.Manager.Schema(act)
		patch := drivers.State{}
		for k, v := range want {
			if _, known := schema[k]; !known {
				s.log.Warn("desired key unknown to the actuator; ignored", "actuator", act, "key", k)
				continue
			}
			if !drivers.Equal(drivers.State{k: cur[k]}, drivers.State{k: v}) {
				patch[k] = v
			}
		}
		if len(patch) == 0 {
			continue
		}
		if _, err := schema.Check(patch); err != nil {
			s.applyFailures.Add(1)
			s.log.Warn("desired state refused", "actuator", act, "err", err)
			continue
		}
		changes = append(changes, actuate.Change{Actuator: act, State: patch, Source: store.SourceDelta, ShadowVersion: version})
	}
	if len(changes) == 0 {
		return
	}
	if _, err := s.o.Manager.ApplyGroup(ctx, changes); err != nil {
		s.applyFailures.Add(1)
		s.log.Error("applying desired state failed", "shadow", label(sh.name), "version", version, "err", err)
		return
	}
	s.applied.Add(1)
}

// persist saves the replica (unchanged bytes are not rewritten). sh.mu held.
// It is called when pending local changes change and after a GET: what
// deltas and accepted messages teach between GETs is fetched again on every
// reconnect, so it is not worth an fsync (and SD-card wear) each time.
func (s *Syncer) persist(sh *shadowSync) {
	b, err := json.Marshal(&sh.rep)
	if err != nil {
		s.log.Error("encode shadow replica", "err", err)
		return
	}
	if _, err := s.o.Store.PutShadow(s.storeKey(sh), b); err != nil {
		s.log.Error("save shadow replica", "shadow", label(sh.name), "err", err)
	}
}
