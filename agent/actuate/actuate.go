// Package actuate is the only way an actuator changes. Each actuator has one
// slot: whoever holds it works the device, so changes to one device are
// serialised and never concurrent, in arrival order (no idle goroutine per
// actuator). Every change reads the current state, records {before, after}
// in history, applies, and verifies by reading back. A change of several
// actuators is atomic: a journal entry is written first, and if one Apply
// fails the actuators already changed are driven back to their prior state.
package actuate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shadowgate/shadowgate/agent/watchdog"
	"github.com/shadowgate/shadowgate/drivers"
	"github.com/shadowgate/shadowgate/store"
)

// Sentinel errors callers branch on.
var (
	ErrUnknownActuator = errors.New("unknown actuator")
	ErrVerify          = errors.New("hardware did not reach the state")
	ErrStopped         = errors.New("actuators are shut down")
)

// Change asks for one actuator to be driven to State (the keys given; the
// others keep their value).
type Change struct {
	Actuator      string
	State         drivers.State
	Source        string // store.Source*
	ShadowVersion int64
	TID           string
	// OnRecord, when set, runs in the transaction that records the change,
	// before the hardware is touched (the command pipeline marks the
	// command started there, in the same fsync).
	OnRecord func(tx *store.Tx) error
}

// Result is what one actuator went through.
type Result struct {
	Actuator  string
	Before    drivers.State
	After     drivers.State
	HistoryID uint64 // 0 when nothing changed
	Changed   bool
}

// Event tells observers that an actuator changed.
type Event struct {
	Actuator string
	State    drivers.State // the whole state after the change
	Source   string
	TID      string
}

// GroupError is a failed multi-actuator change: which actuator failed and
// which were driven back.
type GroupError struct {
	Failed   string
	Err      error
	Restored []string
	// NotRestored lists actuators whose restore failed too (needs a human).
	NotRestored []string
}

func (e *GroupError) Error() string {
	msg := fmt.Sprintf("actuator %s failed: %v", e.Failed, e.Err)
	if len(e.Restored) > 0 {
		msg += "; restored " + strings.Join(e.Restored, ", ")
	}
	if len(e.NotRestored) > 0 {
		msg += "; could not restore " + strings.Join(e.NotRestored, ", ")
	}
	return msg
}

func (e *GroupError) Unwrap() error { return e.Err }

// Options configure a Manager.
type Options struct {
	Store *store.Store
	// ApplyTimeout bounds one Apply when the caller's context has no
	// earlier deadline. Default 30s.
	ApplyTimeout time.Duration
	Logger       *slog.Logger
	Now          func() time.Time
	// Stamp, when set, is the time a change is recorded with and whether
	// it is trusted (agent/clock); an untrusted one is marked in history.
	// Without it, Now, trusted.
	Stamp func() (time.Time, bool)
	// Watchdog, when set, tracks every worker: a job that outlasts twice
	// ApplyTimeout (a driver ignoring its deadline) counts as stuck.
	Watchdog *watchdog.Watchdog
}

// Manager owns the actuators and their workers. A Manager from Share works
// the same actuators and has observers of its own.
type Manager struct {
	*core
	obs *observerSet
}

type core struct {
	opts Options
	log  *slog.Logger
	set  atomic.Pointer[workerSet]
	// reconf serialises Reconfigure and Close.
	reconf sync.Mutex

	mu        sync.Mutex
	views     []*observerSet // the root's and every share's
	followUps map[string]*time.Timer
	groupSeq  uint64
	stop      context.CancelFunc
	closeOnce sync.Once
	stopped   <-chan struct{}
}

// observerSet is one Manager's observers (guarded by core.mu).
type observerSet struct{ fns []func(Event) }

// workerSet is the actuators at one time; Reconfigure replaces it whole.
type workerSet struct {
	byName map[string]*worker
	names  []string // sorted
}

type worker struct {
	name string
	act  atomic.Pointer[device] // replaced only while the slot is held
	slot chan struct{}          // capacity 1: held while the device is worked
	tr   *watchdog.Tracker
	gone bool // removed by Reconfigure; read and written with the slot held
}

type device struct{ drivers.Actuator }

// New makes a manager for the opened actuators and starts their workers.
// Call Close to stop them.
func New(acts map[string]drivers.Actuator, o Options) *Manager {
	if o.ApplyTimeout <= 0 {
		o.ApplyTimeout = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Stamp == nil {
		now := o.Now
		o.Stamp = func() (time.Time, bool) { return now(), true }
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &core{opts: o, log: o.Logger, stop: cancel, stopped: ctx.Done()}
	set := &workerSet{byName: map[string]*worker{}}
	for name, a := range acts {
		set.byName[name] = c.newWorker(name, a)
	}
	set.sortNames()
	c.set.Store(set)
	m := &Manager{core: c, obs: &observerSet{}}
	c.views = append(c.views, m.obs)
	return m
}

func (c *core) newWorker(name string, a drivers.Actuator) *worker {
	w := &worker{name: name, slot: make(chan struct{}, 1)}
	w.act.Store(&device{a})
	if c.opts.Watchdog != nil {
		// A job that outlasts twice ApplyTimeout (a driver ignoring its
		// deadline) counts as stuck.
		w.tr = c.opts.Watchdog.Track("actuator "+name, 2*c.opts.ApplyTimeout+10*time.Second)
	}
	return w
}

func (s *workerSet) sortNames() {
	s.names = make([]string, 0, len(s.byName))
	for n := range s.byName {
		s.names = append(s.names, n)
	}
	sort.Strings(s.names)
}

func (c *core) worker(name string) (*worker, bool) {
	w, ok := c.set.Load().byName[name]
	return w, ok
}

func (c *core) has(name string) bool {
	_, ok := c.worker(name)
	return ok
}

// Share returns a Manager of the same actuators whose observers are its
// own and go with Release. A part that a reload replaces (shadow sync)
// observes through a share, so that the old part stops hearing of changes
// when the new one starts.
func (m *Manager) Share() *Manager {
	s := &Manager{core: m.core, obs: &observerSet{}}
	m.mu.Lock()
	m.views = append(m.views, s.obs)
	m.mu.Unlock()
	return s
}

// Release drops the observers registered through m (a share).
func (m *Manager) Release() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.views = slices.DeleteFunc(m.views, func(o *observerSet) bool { return o == m.obs })
	m.obs.fns = nil
}

// Names returns the actuator names, sorted.
func (m *Manager) Names() []string { return m.set.Load().names }

// Schema returns an actuator's schema.
func (m *Manager) Schema(name string) (drivers.Schema, error) {
	w, ok := m.worker(name)
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownActuator, name)
	}
	return w.act.Load().Schema(), nil
}

// Observe registers fn to be told of every change, after it is verified.
// fn runs on the actuator's worker and must not block.
func (m *Manager) Observe(fn func(Event)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.obs.fns = append(m.obs.fns, fn)
}

// Close waits for the jobs in flight, refuses new ones (ErrStopped) and
// closes the actuators (of every share: they are the same).
func (m *Manager) Close() error {
	var err error
	m.closeOnce.Do(func() { err = m.close() })
	return err
}

func (m *Manager) close() error {
	m.reconf.Lock()
	defer m.reconf.Unlock()
	m.mu.Lock()
	for _, t := range m.followUps {
		t.Stop()
	}
	m.mu.Unlock()
	m.stop()
	// Take every slot: this waits for the jobs in flight, and nobody gets
	// a slot after (they see the stop and return ErrStopped).
	set := m.set.Load()
	for _, n := range set.names {
		set.byName[n].slot <- struct{}{}
	}
	var errs []error
	for _, n := range set.names {
		if err := set.byName[n].act.Load().Close(); err != nil {
			errs = append(errs, fmt.Errorf("close %s: %w", n, err))
		}
	}
	return errors.Join(errs...)
}

// Reconfigure changes the set of actuators while the others keep working,
// untouched: each of open is added, or replaces the actuator of its name
// (which is closed); each of remove is closed and goes. A replaced or
// removed actuator's job in flight ends first; callers queued for it then
// get the new one, or ErrUnknownActuator. open's actuators are the
// Manager's from now on, also when an error (closing an old one) is
// returned.
func (m *Manager) Reconfigure(open map[string]drivers.Actuator, remove []string) error {
	m.reconf.Lock()
	defer m.reconf.Unlock()
	select {
	case <-m.stopped:
		for _, a := range open {
			a.Close()
		}
		return ErrStopped
	default:
	}
	old := m.set.Load()
	next := &workerSet{byName: maps.Clone(old.byName)}
	var errs []error
	for _, name := range slices.Sorted(slices.Values(remove)) {
		w, ok := old.byName[name]
		if !ok {
			continue
		}
		w.slot <- struct{}{}
		w.gone = true
		m.stopFollowUp(name)
		if err := w.act.Load().Close(); err != nil {
			errs = append(errs, fmt.Errorf("close removed actuator %s: %w", name, err))
		}
		<-w.slot
		delete(next.byName, name)
	}
	for _, name := range slices.Sorted(maps.Keys(open)) {
		w, ok := next.byName[name]
		if !ok {
			next.byName[name] = m.newWorker(name, open[name])
			continue
		}
		w.slot <- struct{}{}
		was := w.act.Swap(&device{open[name]})
		m.stopFollowUp(name)
		<-w.slot
		if err := was.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close replaced actuator %s: %w", name, err))
		}
	}
	next.sortNames()
	m.set.Store(next)
	return errors.Join(errs...)
}

func (m *Manager) stopFollowUp(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if t := m.followUps[name]; t != nil {
		t.Stop()
		delete(m.followUps, name)
	}
}

// do runs fn with the actuator's slot held: one job at a time per device,
// in the order callers arrived (Go queues blocked senders first in, first
// out).
func (m *Manager) do(ctx context.Context, name string, fn func(a drivers.Actuator) error) error {
	w, ok := m.worker(name)
	if !ok {
		return fmt.Errorf("%w %q", ErrUnknownActuator, name)
	}
	select {
	case <-m.stopped:
		return ErrStopped
	default:
	}
	select {
	case w.slot <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	case <-m.stopped:
		return ErrStopped
	}
	defer func() { <-w.slot }()
	if w.gone {
		return fmt.Errorf("%w %q (removed from the configuration)", ErrUnknownActuator, name)
	}
	w.tr.Begin()
	defer w.tr.End()
	return fn(w.act.Load().Actuator)
}

// Read returns an actuator's current state (through its worker, so it
// never interleaves with a change).
func (m *Manager) Read(ctx context.Context, name string) (st drivers.State, err error) {
	err = m.do(ctx, name, func(a drivers.Actuator) error {
		st, err = a.Read(ctx)
		return err
	})
	return st, err
}

// Apply drives one actuator: read, record, apply, verify.
func (m *Manager) Apply(ctx context.Context, c Change) (Result, error) {
	var res Result
	err := m.do(ctx, c.Actuator, func(a drivers.Actuator) error {
		var err error
		res, err = m.apply(ctx, a, c, "")
		return err
	})
	return res, err
}

func (m *Manager) apply(ctx context.Context, a drivers.Actuator, c Change, group string) (Result, error) {
	res := Result{Actuator: c.Actuator}
	patch, err := a.Schema().Check(c.State)
	if err != nil {
		return res, fmt.Errorf("%s: %w", c.Actuator, err)
	}
	before, err := a.Read(ctx)
	if err != nil {
		return res, fmt.Errorf("%s: read before change: %w", c.Actuator, err)
	}
	res.Before, res.After = before, before.Merge(patch)
	if drivers.Equal(before, res.After) {
		return res, nil // nothing to do, nothing to record
	}
	var id uint64
	if m.opts.Store != nil {
		at, trusted := m.opts.Stamp()
		err = m.opts.Store.Update(func(tx *store.Tx) error {
			id, err = tx.RecordChange(&store.Change{
				Actuator: c.Actuator, Before: before, After: res.After, Source: c.Source,
				ShadowVersion: c.ShadowVersion, TID: c.TID, Group: group, Time: at.UTC(), TimeUntrusted: !trusted,
			})
			if err == nil && c.OnRecord != nil {
				err = c.OnRecord(tx)
			}
			return err
		})
		if err != nil {
			return res, fmt.Errorf("%s: record history: %w", c.Actuator, err)
		}
	}
	actx, cancel := context.WithTimeout(ctx, m.opts.ApplyTimeout)
	err = a.Apply(actx, patch)
	cancel()
	if err == nil {
		var now drivers.State
		if now, err = a.Read(ctx); err == nil {
			for k, want := range patch {
				if !drivers.Equal(drivers.State{k: now[k]}, drivers.State{k: want}) {
					err = fmt.Errorf("%w: %s reads %v after setting %v", ErrVerify, k, now[k], want)
					break
				}
			}
			res.After = now
		}
	}
	if err != nil {
		if m.opts.Store != nil && id != 0 {
			if derr := m.opts.Store.Update(func(tx *store.Tx) error { return tx.DeleteChange(id) }); derr != nil {
				m.log.Error("drop history of a failed change", "actuator", c.Actuator, "err", derr)
			}
		}
		return res, fmt.Errorf("%s: %w", c.Actuator, err)
	}
	res.HistoryID, res.Changed = id, true
	m.notify(Event{Actuator: c.Actuator, State: res.After.Clone(), Source: c.Source, TID: c.TID})
	m.scheduleFollowUp(a, c.Actuator, patch)
	return res, nil
}

// scheduleFollowUp arms the change an actuator asks for after this one (a
// lock relocking itself); a newer change of the actuator replaces it.
func (m *Manager) scheduleFollowUp(a drivers.Actuator, name string, applied drivers.State) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if t := m.followUps[name]; t != nil {
		t.Stop()
		delete(m.followUps, name)
	}
	f, ok := a.(drivers.FollowUp)
	if !ok {
		return
	}
	next, after, ok := f.FollowUp(applied)
	if !ok {
		return
	}
	if m.followUps == nil {
		m.followUps = map[string]*time.Timer{}
	}
	m.followUps[name] = time.AfterFunc(after, func() {
		ctx, cancel := context.WithTimeout(context.Background(), m.opts.ApplyTimeout)
		defer cancel()
		if _, err := m.Apply(ctx, Change{Actuator: name, State: next, Source: store.SourceLocal, TID: "auto"}); err != nil && !errors.Is(err, ErrStopped) {
			m.log.Error("automatic follow-up change failed", "actuator", name, "state", next, "err", err)
		}
	})
}

func (m *Manager) notify(e Event) {
	m.mu.Lock()
	var obs []func(Event)
	for _, v := range m.views {
		obs = append(obs, v.fns...)
	}
	m.mu.Unlock()
	for _, fn := range obs {
		fn(e)
	}
}

// ApplyGroup applies changes to several actuators atomically: all succeed,
// or the ones already changed are driven back and a *GroupError says which
// failed. A journal entry makes the restore survive a crash (see Recover).
// Changes are applied in actuator-name order, so two groups never interleave
// on the same actuators in different orders.
func (m *Manager) ApplyGroup(ctx context.Context, changes []Change) ([]Result, error) {
	if len(changes) == 1 {
		r, err := m.Apply(ctx, changes[0])
		return []Result{r}, err
	}
	sort.Slice(changes, func(i, j int) bool { return changes[i].Actuator < changes[j].Actuator })
	befores := map[string]map[string]any{}
	for _, c := range changes {
		if !m.has(c.Actuator) {
			return nil, fmt.Errorf("%w %q", ErrUnknownActuator, c.Actuator)
		}
		st, err := m.Read(ctx, c.Actuator)
		if err != nil {
			return nil, fmt.Errorf("%s: read before group change: %w", c.Actuator, err)
		}
		befores[c.Actuator] = st
	}
	m.mu.Lock()
	m.groupSeq++
	group := fmt.Sprintf("g%d-%d", m.opts.Now().UnixNano(), m.groupSeq)
	m.mu.Unlock()
	entry := &store.JournalEntry{Group: group, Before: befores, Source: changes[0].Source, TID: changes[0].TID}
	if m.opts.Store != nil {
		if err := m.opts.Store.Update(func(tx *store.Tx) error { return tx.PutJournal(entry) }); err != nil {
			return nil, fmt.Errorf("journal group change: %w", err)
		}
	}
	var results []Result
	var failed *GroupError
	for _, c := range changes {
		var r Result
		err := m.do(ctx, c.Actuator, func(a drivers.Actuator) error {
			var err error
			r, err = m.apply(ctx, a, c, group)
			return err
		})
		if err != nil {
			failed = &GroupError{Failed: c.Actuator, Err: err}
			break
		}
		results = append(results, r)
	}
	if failed != nil {
		for i := len(results) - 1; i >= 0; i-- {
			r := results[i]
			if !r.Changed {
				continue
			}
			// Restoring must not be cut short by the caller's (maybe
			// expired) context.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.opts.ApplyTimeout)
			_, err := m.Apply(rctx, Change{Actuator: r.Actuator, State: r.Before, Source: store.SourceRollback, TID: changes[0].TID})
			cancel()
			if err != nil {
				failed.NotRestored = append(failed.NotRestored, r.Actuator)
				m.log.Error("restore after failed group change", "actuator", r.Actuator, "err", err)
				continue
			}
			failed.Restored = append(failed.Restored, r.Actuator)
		}
	}
	if m.opts.Store != nil && (failed == nil || len(failed.NotRestored) == 0) {
		if err := m.opts.Store.Update(func(tx *store.Tx) error { return tx.DeleteJournal(group) }); err != nil {
			m.log.Error("clear group journal", "group", group, "err", err)
		}
	}
	if failed != nil {
		return results, failed
	}
	return results, nil
}

// Recover finishes the restore of groups a crash interrupted: every
// actuator of a journalled group is driven back to its recorded state.
func (m *Manager) Recover(ctx context.Context) error {
	if m.opts.Store == nil {
		return nil
	}
	var entries []*store.JournalEntry
	if err := m.opts.Store.View(func(tx *store.Tx) (err error) { entries, err = tx.Journal(); return err }); err != nil {
		return fmt.Errorf("read group journal: %w", err)
	}
	var errs []error
	for _, e := range entries {
		m.log.Warn("restoring a group change interrupted by a crash", "group", e.Group, "actuators", len(e.Before))
		// The group never happened: its records go, so that power-on
		// restore (which runs next) does not bring it back.
		if err := m.opts.Store.Update(func(tx *store.Tx) error { return tx.DeleteGroup(e.Group, slices.Sorted(maps.Keys(e.Before))) }); err != nil {
			errs = append(errs, fmt.Errorf("forget interrupted group %s: %w", e.Group, err))
			continue
		}
		ok := true
		for _, name := range slices.Sorted(maps.Keys(e.Before)) {
			if !m.has(name) {
				continue // actuator removed from the config since
			}
			if _, err := m.Apply(ctx, Change{Actuator: name, State: e.Before[name], Source: store.SourceRollback, TID: e.TID}); err != nil {
				ok = false
				errs = append(errs, fmt.Errorf("restore %s of group %s: %w", name, e.Group, err))
			}
		}
		if ok {
			if err := m.opts.Store.Update(func(tx *store.Tx) error { return tx.DeleteJournal(e.Group) }); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
