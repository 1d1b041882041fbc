// Package pipeline is the request pipeline of the self-hosted services
// (agent/shadowsvc, agent/jobs): it runs each piece of work inside the
// store's next group commit, answers it once that commit is durable, and
// sheds what it has no room for.
//
// It guarantees:
//
//   - order: work is handed to the store (store.Submit) under one mutex, so
//     it commits in the order Submit admitted it, and it is finished (Finish
//     called, its answers published) in that same order, one at a time;
//   - durability before answers: Finish runs only after the work's commit
//     ended, with that commit's error; a read of a key with no write
//     waiting runs at once in a read transaction instead, without a commit
//     of its own;
//   - a bounded queue: work for a thing beyond MaxPerThing waiting, or
//     beyond MaxQueued or MaxBytes in all, is refused with ErrFull at once;
//   - on ctx end, Run finishes the work already handed to the store before
//     it returns, so that nothing is committed and left unanswered.
//
// It does not: decide what work does in the transaction or what it
// answers (the service's Run and Finish do), retry a failed commit (Finish
// gets the error), wait for the broker's PUBACKs before going on (Publish
// returns at once; a reaper counts the lost ones), or keep anything across
// a restart (work admitted but not committed is lost with the process).
package pipeline

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shadowgate/shadowgate/agent/link"
	"github.com/shadowgate/shadowgate/agent/watchdog"
	"github.com/shadowgate/shadowgate/store"
)

// ErrFull is Submit's error when the work was shed because of the limits.
var ErrFull = errors.New("pipeline full")

// Publisher is what the pipeline needs of the MQTT session.
type Publisher interface {
	PublishAsync(topic string, retain bool, payload []byte) (link.Pending, error)
}

// Options configure a Pipeline.
type Options struct {
	Store *store.Store
	// Link publishes the answers; nil: Publish does nothing.
	Link   Publisher
	Logger *slog.Logger
	Now    func() time.Time // the clock of Work's now (default time.Now)
	// What names a published message in the log ("shadow response").
	What string
	// MaxPerThing, MaxQueued and MaxBytes bound the work with a Thing: how
	// much may wait for one thing, in all, and in Work.Bytes in all (0: no
	// limit).
	MaxPerThing, MaxQueued, MaxBytes int
	// Tracker, when set, is told when the finisher works, so that a commit
	// that never ends shows as a stuck loop to the watchdog.
	Tracker *watchdog.Tracker
	// ReadsHold makes a read that goes to a commit (because a write to its
	// key waits) hold its key as a write does, so that the reads after it
	// commit too until it is finished.
	ReadsHold bool
}

// Work is one unit of work; K keys the reads that may skip the commit.
type Work[K comparable] struct {
	// Thing, when set, counts the work against the limits.
	Thing string
	// Key and Write order reads behind writes: a read (Write false) of a
	// key with no write waiting runs at once in a read transaction. A
	// write's Key (see Options.ReadsHold), unless it is the zero K, counts
	// as waiting until it is finished.
	Key   K
	Write bool
	Bytes int // counted against MaxBytes
	// Run acts inside the transaction; now is the clock when the work was
	// admitted. It may run more than once (the store retries a group
	// without a writer that failed).
	Run func(tx *store.Tx, now time.Time) error
	// Finish is told the outcome once the transaction is durable (err is
	// the commit's, or Run's); it runs on the finisher, in order.
	Finish func(now time.Time, err error)
}

// Pipeline queues work, runs it in the store's group commits and finishes
// it in order.
type Pipeline[K comparable] struct {
	o   Options
	log *slog.Logger

	mu       sync.Mutex
	work     []*item[K]     // handed to the store, waiting for the finisher
	perThing map[string]int // work with a Thing in the pipeline, per thing
	things   int            // the sum of perThing
	writes   map[K]int      // writes in the pipeline per key
	bytes    int            // Work.Bytes in the pipeline
	wake     chan struct{}  // work was added
	tracked  chan link.Pending
	lost     atomic.Int64
}

type item[K comparable] struct {
	w       Work[K]
	now     time.Time
	wait    func() error
	counted bool // holds a count in writes
}

// New makes a pipeline; Run finishes its work.
func New[K comparable](o Options) *Pipeline[K] {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Pipeline[K]{o: o, log: o.Logger, perThing: map[string]int{}, writes: map[K]int{},
		wake: make(chan struct{}, 1), tracked: make(chan link.Pending, 4096)}
}

// Submit admits w and hands it to the store, or refuses it (ErrFull) when
// its thing or the pipeline has too much waiting.
func (p *Pipeline[K]) Submit(w Work[K]) error {
	it := &item[K]{w: w}
	run := func(tx *store.Tx) error { return w.Run(tx, it.now) }
	var zero K
	p.mu.Lock()
	if w.Thing != "" {
		if over(p.perThing[w.Thing], 1, p.o.MaxPerThing) || over(len(p.work), 1, p.o.MaxQueued) || over(p.bytes, w.Bytes, p.o.MaxBytes) {
			p.mu.Unlock()
			return ErrFull
		}
		p.perThing[w.Thing]++
		p.things++
		p.bytes += w.Bytes
	}
	it.now = p.o.Now()
	if !w.Write && p.writes[w.Key] == 0 {
		// Nothing for this key waits to commit: read it now, without a
		// commit of its own (a commit writes to the disk even when nothing
		// changed).
		err := p.o.Store.View(run)
		it.wait = func() error { return err }
	} else {
		if (w.Write || p.o.ReadsHold) && w.Key != zero {
			p.writes[w.Key]++
			it.counted = true
		}
		// Submitted under mu, so that work commits in the order it queues.
		it.wait = p.o.Store.Submit(run)
	}
	p.work = append(p.work, it)
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
	return nil
}

// over reports whether n+add passes max (0: no limit).
func over(n, add, max int) bool { return max > 0 && n+add > max }

// Run finishes work until ctx ends: it waits for each commit in turn, then
// calls Finish. When ctx ends, the work already handed to the store is
// finished too. A reaper beside it waits for the published messages'
// PUBACKs.
func (p *Pipeline[K]) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); p.reap(ctx) }()
	defer wg.Wait()
	for {
		p.mu.Lock()
		batch := p.work
		p.work = nil
		p.mu.Unlock()
		if len(batch) == 0 {
			if ctx.Err() != nil {
				return
			}
			select {
			case <-ctx.Done():
			case <-p.wake:
			}
			continue
		}
		p.o.Tracker.Begin()
		for _, it := range batch {
			p.finish(it)
		}
		p.o.Tracker.End()
	}
}

// finish waits for it's commit, releases its counts, then finishes it.
func (p *Pipeline[K]) finish(it *item[K]) {
	err := it.wait()
	w := it.w
	p.mu.Lock()
	if w.Thing != "" {
		p.bytes -= w.Bytes
		p.things--
		if p.perThing[w.Thing]--; p.perThing[w.Thing] <= 0 {
			delete(p.perThing, w.Thing)
		}
	}
	if it.counted {
		if p.writes[w.Key]--; p.writes[w.Key] <= 0 {
			delete(p.writes, w.Key)
		}
	}
	p.mu.Unlock()
	w.Finish(it.now, err)
}

// Queued is the work handed to the store that the finisher has not taken
// yet; InFlight is the work with a Thing admitted and not finished.
func (p *Pipeline[K]) Queued() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.work)
}

// InFlight: see Queued.
func (p *Pipeline[K]) InFlight() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.things
}

// Publish sends a message without waiting for its PUBACK; the reaper counts
// it lost if none comes.
func (p *Pipeline[K]) Publish(topic string, payload []byte) {
	if p.o.Link == nil {
		return
	}
	pd, err := p.o.Link.PublishAsync(topic, false, payload)
	if err != nil {
		p.lost.Add(1)
		p.log.Warn("publish "+p.o.What, "topic", topic, "err", err)
		return
	}
	p.Track(pd)
}

// Track hands a published message to the reaper; when the reaper is
// behind, it goes unwatched.
func (p *Pipeline[K]) Track(pd link.Pending) {
	select {
	case p.tracked <- pd:
	default:
	}
}

// Lost counts the published messages the broker never acknowledged (or
// that could not be sent).
func (p *Pipeline[K]) Lost() int64 { return p.lost.Load() }

// reap waits for the PUBACK of each tracked message, in order, and counts
// the ones lost with their connection.
func (p *Pipeline[K]) reap(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case pd := <-p.tracked:
			var err error
			select {
			case <-pd.Done(): // the usual case under load: no deadline to set up
				err = pd.Wait(ctx)
			default:
				wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				err = pd.Wait(wctx)
				cancel()
			}
			if err != nil && ctx.Err() == nil {
				p.lost.Add(1)
				p.log.Debug(p.o.What+" not acknowledged", "err", err)
			}
		}
	}
}
