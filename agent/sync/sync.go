// Package sync keeps the gateway's actuators and their cloud shadows in
// step, the device side of the AWS IoT Device Shadow protocol, so that the
// gateway always ends where the last desired state says and the cloud ends
// with what the gateway has:
//
//  1. On every (re)connect the link subscribes to delta, accepted and
//     rejected first; then each shadow is fetched with GET, again until it
//     is answered (a broker can acknowledge a request that no shadow service
//     receives).
//  2. GET 404 creates the shadow with the actuators' current state.
//  3. Every message that carries desired or reported state (delta,
//     update/accepted, the GET answer) updates a replica of the shadow,
//     key by key in version order, whatever the order of arrival.
//  4. After every such message, every apply and every accepted report the
//     shadow is reconciled: what differs from the replica's desired is
//     applied (one atomic group), what the cloud's reported lacks is
//     reported. Acting on deltas alone is not enough: a desired change
//     reversed while the first one is applied produces no delta.
//  5. A change made at the gateway on purpose (a command, a rollback, a
//     technician's change) is written as desired and reported with the
//     shadow version, so that no delta stands against it and reconciling
//     never undoes it. Offline, the conflict policy decides on reconnect.
//  6. Reports and local writes are settled by the service's answer, not by
//     the broker's PUBACK: sent again with the same clientToken when no
//     answer comes, retried with backoff after 429/500/503, never more than
//     MaxInFlight requests waiting at once (AWS answers 429 above 10).
//  7. A missed version, or a delta that stands unchanged for StaleAfter,
//     fetches the shadow again: a broker that drops messages must not
//     leave the gateway wrong for ever.
package sync

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sort"
	gosync "sync"
	"sync/atomic"
	"time"

	"github.com/shadowgate/shadowgate/agent/actuate"
	"github.com/shadowgate/shadowgate/agent/config"
	"github.com/shadowgate/shadowgate/agent/link"
	"github.com/shadowgate/shadowgate/agent/shadow"
	"github.com/shadowgate/shadowgate/store"
)

// Link is what sync needs of the MQTT session.
type Link interface {
	Handle(filter string, h link.Handler)
	OnConnect(fn func(ctx context.Context))
	Connected() bool
	PublishAsync(topic string, retain bool, payload []byte) (link.Pending, error)
}

// Defaults of the Options.
const (
	DefaultStaleAfter    = 30 * time.Second
	DefaultAnswerTimeout = 5 * time.Second
	// DefaultMaxInFlight keeps the gateway under AWS's limit of 10 shadow
	// requests in flight per connection, with room for a request that was
	// sent again while its first copy was still being served.
	DefaultMaxInFlight = shadow.MaxInFlightPerConn - 2
)

// Options configure a Syncer.
type Options struct {
	Thing     string
	Root      string
	Conflict  string // config.CloudWins or config.LocalWins
	Actuators map[string]*config.Actuator
	Store     *store.Store
	Manager   *actuate.Manager
	Link      Link
	Logger    *slog.Logger
	// StaleAfter is how long a delta may stand unchanged in the replica,
	// the uplink up, before the shadow is fetched again (default 30s; it
	// then backs off, doubling up to 32 times this).
	StaleAfter time.Duration
	// AnswerTimeout is how long a shadow request waits for its answer
	// before it is sent again (default 5s; it doubles for each copy, up to
	// a minute).
	AnswerTimeout time.Duration
	// MaxInFlight bounds the shadow requests awaiting an answer
	// (default DefaultMaxInFlight).
	MaxInFlight int
	// CloudTime, when set, is given the timestamp (Unix seconds) of every
	// shadow response, and when the request it answers was first sent
	// (zero when it answers none of ours): the gateway estimates the
	// cloud's clock from them (agent/clock).
	CloudTime func(unixSec int64, sent time.Time)
}

// Stats counts what sync did and refused.
type Stats struct {
	Malformed     int64 // payloads that could not be read
	StaleDeltas   int64 // deltas older than what the replica holds, ignored
	Applied       int64 // reconciliations that changed something
	ApplyFailures int64
	Conflicts     int64 // local changes that met a changed cloud desired
	Resent        int64 // requests sent again with the same clientToken after no answer
	Retried       int64 // requests sent again after 429, 500 or 503
	Rejected      int64 // reports and local writes the cloud refused for good
	Gaps          int64 // missed shadow versions noticed (each fetches the shadow)
	SafetyGets    int64 // fetches of a shadow whose delta stood for StaleAfter
	InFlight      int   // shadow requests awaiting their answer now
}

// Syncer syncs every shadow the configured actuators use.
type Syncer struct {
	o       Options
	log     *slog.Logger
	shadows map[string]*shadowSync // by shadow name, "" = classic
	names   []string               // sorted
	order   []*shadowSync          // the shadows in names' order
	binding map[string]binding     // actuator → shadow and key
	seq     atomic.Uint64
	tag     string
	wake    chan struct{} // the request sender has something to do

	malformed, stale, applied, applyFailures, conflicts atomic.Int64
	resent, retried, rejected, gaps, safetyGets         atomic.Int64

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

// connectedKey is the classic shadow's presence key.
const connectedKey = "connected"

type shadowSync struct {
	name string
	keys map[string]string // shadow key → actuator

	mu  gosync.Mutex
	rep replica

	// The reconciler.
	dirty   bool // something arrived that is not reconciled yet
	running bool // a reconciler goroutine is at work on this shadow
	warned  map[string]string

	// Requests (see requests.go).
	synced    bool             // a GET was answered on this connection
	get       *request         // the GET to send, or awaiting its answer
	upd       *request         // the one update awaiting its answer
	updHold   time.Time        // no new update before (429/5xx backoff)
	updTries  int              // consecutive 429/5xx answers to updates
	reports   map[string]*want // reported values the cloud has not accepted yet
	refused   map[string]any   // values the cloud refused for good, not sent again
	oldMirror map[string]uint64
	unmirror  []uint64 // outbox copies of settled reports, to remove
	net       safetyNet
	// The sender visits the shadow when kicked (something changed) or at
	// due (a deadline, a retry, the safety net); otherwise it skips it, so
	// that one shadow's round trip does not cost a pass over all of them.
	kicked atomic.Bool
	due    atomic.Int64 // unix nanoseconds; 0: at once

	// The replica's writer (persist): saving is a write under way, again
	// that the replica changed since that write encoded it.
	saving, saveAgain bool
}

// New makes a Syncer and loads the replicas from the store.
func New(o Options) (*Syncer, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.StaleAfter <= 0 {
		o.StaleAfter = DefaultStaleAfter
	}
	if o.AnswerTimeout <= 0 {
		o.AnswerTimeout = DefaultAnswerTimeout
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = DefaultMaxInFlight
	}
	s := &Syncer{o: o, log: o.Logger.With("component", "sync"), shadows: map[string]*shadowSync{}, binding: map[string]binding{},
		tag: fmt.Sprintf("%04x", rand.Uint32()&0xffff), wake: make(chan struct{}, 1)}
	s.shadows[""] = newShadowSync("")
	for name, a := range o.Actuators {
		sh := s.shadows[a.Shadow]
		if sh == nil {
			sh = newShadowSync(a.Shadow)
			s.shadows[a.Shadow] = sh
		}
		sh.keys[a.Key] = name
		s.binding[name] = binding{a.Shadow, a.Key}
	}
	for n := range s.shadows {
		s.names = append(s.names, n)
	}
	sort.Strings(s.names)
	for _, n := range s.names {
		s.order = append(s.order, s.shadows[n])
	}
	for _, sh := range s.shadows {
		if doc, err := o.Store.GetShadow(s.storeKey(sh)); err == nil {
			if err := unmarshal(doc, &sh.rep); err != nil {
				s.log.Warn("stored shadow replica unreadable; starting from the cloud's", "shadow", label(sh.name), "err", err)
				sh.rep = replica{}
			}
		}
		// Reports queued while offline by an earlier run: the reconnect
		// compares the hardware with the cloud's reported again, so they
		// are only removed once that is settled.
		for _, key := range s.reportKeys(sh) {
			if seq, ok := o.Store.QueuedSeq(s.outboxKey(sh, key)); ok {
				sh.oldMirror[key] = seq
			}
		}
	}
	s.register()
	o.Manager.Observe(s.onChange)
	return s, nil
}

// UndoInterruptedGroups prepares, for every group change a crash
// interrupted, a write of the state before the group as desired and
// reported: the group never happened, but its first half may have written
// its desired state to the cloud already, which reconciling would
// otherwise apply again. Call it at start, before Run and before
// actuate.Manager.Recover drives the hardware back (which may change
// nothing: hardware that lost its state).
func (s *Syncer) UndoInterruptedGroups() error {
	changed := map[*shadowSync]bool{}
	defer func() {
		for sh := range changed {
			s.persist(sh) // Run has not started: this waits for the disk
		}
	}()
	return s.o.Store.View(func(tx *store.Tx) error {
		journal, err := tx.Journal()
		if err != nil {
			return fmt.Errorf("read group journal: %w", err)
		}
		for _, e := range journal {
			for act, before := range e.Before {
				b, ok := s.binding[act]
				if !ok {
					continue
				}
				// Only the actuators the group changed: what it wrote, and
				// might have sent, is ours; the others' desired is the cloud's.
				h, err := tx.History(act, 16)
				if err != nil {
					return fmt.Errorf("read history of %s: %w", act, err)
				}
				i := slices.IndexFunc(h, func(c *store.Change) bool { return c.Group == e.Group })
				if i < 0 {
					continue
				}
				sh := s.shadows[b.shadow]
				sh.rep.setPending(b.key, jsonValue(map[string]any(h[i].After)).(map[string]any), e.Source)
				sh.rep.setPending(b.key, jsonValue(before).(map[string]any), store.SourceRollback)
				changed[sh] = true
				s.log.Info("a group change was interrupted; its prior state is written to the shadow", "actuator", act, "group", e.Group)
			}
		}
		return nil
	})
}

func newShadowSync(name string) *shadowSync {
	return &shadowSync{name: name, keys: map[string]string{}, warned: map[string]string{}, reports: map[string]*want{},
		refused: map[string]any{}, oldMirror: map[string]uint64{}}
}

// Stats returns the counters.
func (s *Syncer) Stats() Stats {
	st := Stats{Malformed: s.malformed.Load(), StaleDeltas: s.stale.Load(), Applied: s.applied.Load(),
		ApplyFailures: s.applyFailures.Load(), Conflicts: s.conflicts.Load(), Resent: s.resent.Load(),
		Retried: s.retried.Load(), Rejected: s.rejected.Load(), Gaps: s.gaps.Load(), SafetyGets: s.safetyGets.Load()}
	for _, sh := range s.shadows {
		sh.mu.Lock()
		st.InFlight += sh.inFlight()
		sh.mu.Unlock()
	}
	return st
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

// Settled says whether a shadow is at rest: fetched on this connection,
// nothing to apply or to report, no request awaiting its answer, and no
// delta in the replica for the gateway's keys. Nothing changes at the
// gateway until a new message arrives.
func (s *Syncer) Settled(name string) bool {
	sh := s.shadows[name]
	if sh == nil {
		return false
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.synced && !sh.dirty && !sh.running && sh.get == nil && sh.upd == nil && len(sh.reports) == 0 &&
		len(sh.rep.Pending) == 0 && s.standing(sh) == ""
}

// ShadowNames returns the synced shadows' names ("" is classic), sorted.
func (s *Syncer) ShadowNames() []string { return slices.Clone(s.names) }

func label(name string) string {
	if name == "" {
		return "(classic)"
	}
	return name
}

func (s *Syncer) storeKey(sh *shadowSync) store.ShadowKey {
	return store.ShadowKey{Thing: s.o.Thing, Name: sh.name}
}

// outboxKey is the coalescing key of a report's copy in the outbox.
func (s *Syncer) outboxKey(sh *shadowSync, key string) string {
	return s.o.Thing + "/" + sh.name + "/" + key
}

// reportKeys are the keys the gateway reports in a shadow, sorted.
func (s *Syncer) reportKeys(sh *shadowSync) []string {
	keys := make([]string, 0, len(sh.keys)+1)
	for k := range sh.keys {
		keys = append(keys, k)
	}
	if sh.name == "" {
		keys = append(keys, connectedKey)
	}
	sort.Strings(keys)
	return keys
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

// Run lets reconcilers and the request sender run until ctx ends, then
// waits for them.
func (s *Syncer) Run(ctx context.Context) {
	s.runMu.Lock()
	s.runCtx = ctx
	s.runMu.Unlock()
	s.runWG.Add(1)
	go func() { defer s.runWG.Done(); s.sender(ctx) }()
	for _, sh := range s.shadows {
		s.start(sh) // work that arrived before Run
	}
	<-ctx.Done()
	s.runMu.Lock()
	s.stopped = true // no goroutine joins runWG from now on
	s.runMu.Unlock()
	s.runWG.Wait()
}

// onConnect starts every shadow over on the new connection: what was in
// flight on the old one is forgotten (its answers, if they come, still
// update the replica), and each shadow is fetched before anything else is
// sent. It only marks and wakes the sender: it runs on the link's goroutine.
func (s *Syncer) onConnect(context.Context) {
	for _, name := range s.names {
		sh := s.shadows[name]
		sh.mu.Lock()
		sh.synced = false
		sh.upd = nil
		sh.updHold, sh.updTries = time.Time{}, 0
		sh.get = nil
		s.wantGet(sh)
		sh.net = safetyNet{}
		sh.mu.Unlock()
	}
	s.kick(nil)
}

func (s *Syncer) onMessage(_ context.Context, m *link.Message) {
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
		s.onUpdateRejected(sh, m)
	case t.Op == shadow.OpGet && t.Suffix == shadow.SuffixAccepted:
		s.onGetAccepted(sh, m)
	case t.Op == shadow.OpGet && t.Suffix == shadow.SuffixRejected:
		s.onGetRejected(sh, m)
	}
}

// cloudTime passes a response's timestamp on: with when r was first sent
// if the response answers it (its clientToken), else as a message that
// answers nothing of ours. sh.mu held when r is a shadow's.
func (s *Syncer) cloudTime(ts int64, r *request, token string) {
	if s.o.CloudTime == nil || ts <= 0 {
		return
	}
	var sent time.Time
	if r != nil && token != "" && r.token == token {
		sent = r.firstSent
	}
	s.o.CloudTime(ts, sent)
}

func (s *Syncer) bad(m *link.Message, err error) {
	s.malformed.Add(1)
	s.log.Warn("ignoring malformed message", "topic", m.Topic, "err", err, "bytes", len(m.Payload))
}

// seen notes a message's version and fetches the shadow when versions were
// skipped: every accepted update of a shadow is published on its
// update/accepted, so a gap means messages were lost. sh.mu held.
func (s *Syncer) seen(sh *shadowSync, version int64) {
	if sh.synced && version > sh.rep.Version+1 && sh.get == nil {
		s.gaps.Add(1)
		s.log.Info("shadow versions were skipped (messages lost); fetching the shadow", "shadow", label(sh.name),
			"held", sh.rep.Version, "received", version)
		s.wantGet(sh)
	}
	sh.rep.Version = max(sh.rep.Version, version)
}

func (s *Syncer) onDelta(sh *shadowSync, m *link.Message) {
	d, err := shadow.ParseDelta(m.Payload)
	if err != nil {
		s.bad(m, err)
		return
	}
	s.cloudTime(d.Timestamp, nil, "")
	sh.mu.Lock()
	changed, stale := patchSection(&sh.rep.Desired, &sh.rep.DesiredRank, d.State, partialRank(d.Version))
	s.seen(sh, d.Version)
	sh.dirty = true
	sh.mu.Unlock()
	if stale && len(changed) == 0 {
		s.stale.Add(1)
		s.log.Debug("ignoring stale delta", "shadow", label(sh.name), "version", d.Version)
	}
	s.start(sh)
	s.kick(sh)
}

// updateAccepted is an update/accepted payload. A section is kept raw so
// that an explicit "desired": null (clear) can be told from its absence.
type updateAccepted struct {
	State struct {
		Desired  json.RawMessage `json:"desired"`
		Reported json.RawMessage `json:"reported"`
	} `json:"state"`
	Version     int64  `json:"version"`
	Timestamp   int64  `json:"timestamp"`
	ClientToken string `json:"clientToken"`
}

// section reads one section of an accepted update: clear says it was null.
func section(raw json.RawMessage) (part map[string]any, clear bool, err error) {
	if len(raw) == 0 {
		return nil, false, nil
	}
	if string(raw) == "null" {
		return nil, true, nil
	}
	err = unmarshal(raw, &part)
	return part, false, err
}

func (s *Syncer) onUpdateAccepted(sh *shadowSync, m *link.Message) {
	var a updateAccepted
	err := unmarshal(m.Payload, &a)
	if err == nil && a.Version <= 0 {
		err = fmt.Errorf("missing version")
	}
	var desired, reported map[string]any
	var clearD, clearR bool
	if err == nil {
		desired, clearD, err = section(a.State.Desired)
	}
	if err == nil {
		reported, clearR, err = section(a.State.Reported)
	}
	if err != nil {
		s.bad(m, fmt.Errorf("update/accepted: %w", err))
		return
	}
	sh.mu.Lock()
	s.cloudTime(a.Timestamp, sh.upd, a.ClientToken)
	rk := partialRank(a.Version)
	switch {
	case clearD:
		replaceSection(&sh.rep.Desired, &sh.rep.DesiredRank, nil, rk)
	case desired != nil:
		patchSection(&sh.rep.Desired, &sh.rep.DesiredRank, desired, rk)
	}
	switch {
	case clearR:
		replaceSection(&sh.rep.Reported, &sh.rep.ReportedRank, nil, rk)
	case reported != nil:
		patchSection(&sh.rep.Reported, &sh.rep.ReportedRank, reported, rk)
	}
	s.seen(sh, a.Version)
	s.settleUpdate(sh, a.ClientToken)
	sh.dirty = true // after every accepted update: reconcile
	sh.mu.Unlock()
	s.start(sh)
	s.kick(sh)
}

func (s *Syncer) onUpdateRejected(sh *shadowSync, m *link.Message) {
	e, err := shadow.ParseRejected(m.Payload)
	if err != nil {
		s.bad(m, err)
		return
	}
	sh.mu.Lock()
	s.cloudTime(e.Timestamp, sh.upd, e.ClientToken)
	s.updateRefused(sh, e)
	sh.mu.Unlock()
	s.kick(sh)
}

// getAccepted is the part of a get/accepted payload sync reads.
type getAccepted struct {
	State struct {
		Desired  map[string]any `json:"desired"`
		Reported map[string]any `json:"reported"`
	} `json:"state"`
	Version     int64  `json:"version"`
	Timestamp   int64  `json:"timestamp"`
	ClientToken string `json:"clientToken"`
}

func (s *Syncer) onGetAccepted(sh *shadowSync, m *link.Message) {
	var g getAccepted
	if err := unmarshal(m.Payload, &g); err != nil || g.Version <= 0 {
		s.bad(m, fmt.Errorf("get/accepted: %v", err))
		return
	}
	sh.mu.Lock()
	s.cloudTime(g.Timestamp, sh.get, g.ClientToken)
	if sh.get == nil || g.ClientToken != sh.get.token {
		sh.mu.Unlock()
		return // another client's GET, or an answer to one given up
	}
	// The document is the truth, even at a version equal to the one held:
	// never skip a GET response after a reconnect.
	rk := wholeRank(g.Version)
	replaceSection(&sh.rep.Desired, &sh.rep.DesiredRank, g.State.Desired, rk)
	replaceSection(&sh.rep.Reported, &sh.rep.ReportedRank, g.State.Reported, rk)
	sh.rep.Version = max(sh.rep.Version, g.Version)
	s.fetched(sh)
	s.settledByDocument(sh)
	s.resolvePending(sh)
	s.persist(sh)
	sh.dirty = true
	sh.mu.Unlock()
	s.start(sh)
	s.kick(sh)
}

func (s *Syncer) onGetRejected(sh *shadowSync, m *link.Message) {
	e, err := shadow.ParseRejected(m.Payload)
	if err != nil {
		s.bad(m, err)
		return
	}
	sh.mu.Lock()
	s.cloudTime(e.Timestamp, sh.get, e.ClientToken)
	switch {
	case sh.get == nil || e.ClientToken != sh.get.token:
		sh.mu.Unlock()
		return
	case e.Code != 404:
		s.log.Warn("shadow get rejected; asking again", "shadow", label(sh.name), "code", e.Code, "message", e.Message)
		s.backOff(sh.get)
		sh.mu.Unlock()
		s.kick(sh)
		return
	}
	s.log.Info("shadow does not exist; creating it with the actuators' state", "shadow", label(sh.name))
	sh.rep.Desired, sh.rep.Reported = nil, nil
	sh.rep.DesiredRank, sh.rep.ReportedRank = ranks{}, ranks{}
	s.fetched(sh)
	s.resolvePending(sh)
	s.persist(sh)
	sh.dirty = true
	sh.mu.Unlock()
	s.start(sh)
	s.kick(sh)
}

// resolvePending decides each local change against the document just
// fetched. A command's change and the cloud's desired follow the order the
// gateway applied them: a desired that changed after the command was
// applied wins. For a local change (rollback, technician) the conflict
// policy decides: cloud_wins applies the cloud's desired, local_wins
// writes the local state over it. The changes that stand are sent by the
// request sender. sh.mu held.
func (s *Syncer) resolvePending(sh *shadowSync) {
	for key, p := range sh.rep.Pending {
		cur := sh.rep.Desired[key]
		if !p.cloudMoved(cur) {
			continue
		}
		s.conflicts.Add(1)
		if p.Source == store.SourceCommand || s.o.Conflict != config.LocalWins {
			why := "cloud_wins applies the cloud's"
			if p.Source == store.SourceCommand {
				why = "the desired state came after the command; it is applied"
			}
			s.log.Warn("conflict: the cloud's desired changed while a change made at the gateway waited; "+why,
				"shadow", label(sh.name), "key", key, "source", p.Source, "local", p.Value, "cloud", cur)
			delete(sh.rep.Pending, key)
			continue
		}
		s.log.Warn("conflict: the cloud's desired changed while a local change waited; local_wins writes the local state",
			"shadow", label(sh.name), "key", key, "local", p.Value, "cloud", cur)
		p.Base = cur // written over the cloud's, knowingly
	}
}

// persistWithin bounds how long a replica write waits for company in the
// store's next commit (store.SubmitWithin).
const persistWithin = 50 * time.Millisecond

// persist saves the replica (unchanged bytes are not rewritten) without
// waiting for the disk: writes land in the order submitted, and a crash
// before this one lands fetches the shadow again anyway. sh.mu held. It is
// called when pending local changes change and after a GET: what deltas
// and accepted messages teach between GETs is fetched again on every
// reconnect, so it is not worth a write (and SD-card wear) each time.
//
// While Run runs, one writer per shadow encodes the replica and waits for
// its write; changes meanwhile are encoded once, by its next round, not
// each on its own (a busy actuator changes the replica with every command,
// and a replica holds the whole shadow).
func (s *Syncer) persist(sh *shadowSync) {
	if !s.track() {
		if err := s.saveReplica(sh)(); err != nil {
			s.log.Error("save shadow replica", "shadow", label(sh.name), "err", err)
		}
		return
	}
	sh.saveAgain = true
	if sh.saving {
		s.runWG.Done() // the writer at work takes this change too
		return
	}
	sh.saving = true
	go func() {
		defer s.runWG.Done()
		for {
			sh.mu.Lock()
			if !sh.saveAgain {
				sh.saving = false
				sh.mu.Unlock()
				return
			}
			sh.saveAgain = false
			wait := s.saveReplica(sh)
			sh.mu.Unlock()
			if err := wait(); err != nil {
				s.log.Error("save shadow replica", "shadow", label(sh.name), "err", err)
			}
		}
	}()
}

// saveReplica encodes the replica and submits its write (sh.mu held);
// wait waits for it.
func (s *Syncer) saveReplica(sh *shadowSync) (wait func() error) {
	b, err := json.Marshal(&sh.rep)
	if err != nil {
		return func() error { return fmt.Errorf("encode shadow replica: %w", err) }
	}
	key := s.storeKey(sh)
	// Not urgent: it waits up to persistWithin to share a commit (and its
	// pages) with another writer, a command's next step say.
	return s.o.Store.SubmitWithin(persistWithin, func(tx *store.Tx) error { _, err := tx.PutShadow(key, b); return err })
}
