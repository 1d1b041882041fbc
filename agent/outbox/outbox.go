// Package outbox publishes the store's outbox over the link: oldest first,
// a window of messages in flight, each removed only after the broker's
// PUBACK. While the link is down nothing is lost: producers keep enqueueing
// and the drainer resumes on reconnect, in order.
//
// Reported state is not the drainer's: a report is settled by the shadow
// service's answer, not by the broker's PUBACK (a broker acknowledges a
// report that no service receives). agent/sync sends reports, keeps their
// outbox copies while they are unanswered and removes them once accepted;
// the drainer passes them by. So are AWS IoT Jobs status updates
// (store.KindJob): agent/jobrun sends them and removes each once the jobs
// service answered it.
package outbox

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"sync/atomic"
	"time"

	"github.com/shadowgate/shadowgate/agent/link"
	"github.com/shadowgate/shadowgate/agent/watchdog"
	"github.com/shadowgate/shadowgate/store"
)

// Publisher is the part of the link the drainer uses.
type Publisher interface {
	Connected() bool
	PublishAsync(topic string, retain bool, payload []byte) (link.Pending, error)
}

// Drainer moves items from the store to the broker.
type Drainer struct {
	store  *store.Store
	pub    Publisher
	log    *slog.Logger
	window int
	kick   chan struct{}
	sent   atomic.Int64

	// The removals of acknowledged windows not yet durable, oldest first,
	// committing while the next windows go out (and sharing a commit with
	// other writers); their items are skipped until they end. Only Run's
	// goroutine touches these.
	removing map[uint64]bool
	removals []*removal
	// Tracker, when set, is told when each window is published.
	Tracker *watchdog.Tracker
}

// DefaultWindow is how many messages await PUBACK at once. The removals of
// a window share one fsync, so a larger window drains a backlog faster
// (100,000 messages: 512 costs ~200 fsyncs, 64 ~1,600).
const DefaultWindow = 512

// RemoveWithin bounds how long the removal of acknowledged messages waits
// for a commit another writer makes (a command's next step, the next
// request), so as not to cost an fsync and its pages of its own. A crash
// meanwhile sends those messages again, as a crash between PUBACK and
// removal always could (at least once); acks carry their tid, and a
// requester takes one twice as once.
const RemoveWithin = 50 * time.Millisecond

type removal struct {
	seqs []uint64
	done chan error
}

// New makes a drainer; window is how many messages may await PUBACK at once
// (0: DefaultWindow).
func New(st *store.Store, pub Publisher, window int, log *slog.Logger) *Drainer {
	if window <= 0 {
		window = DefaultWindow
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Drainer{store: st, pub: pub, log: log, window: window, kick: make(chan struct{}, 1)}
}

// Kick tells the drainer there is something to send (after an enqueue or a
// reconnect). It never blocks.
func (d *Drainer) Kick() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// Sent is the number of messages published and removed so far.
func (d *Drainer) Sent() int64 { return d.sent.Load() }

// Run drains until ctx ends.
func (d *Drainer) Run(ctx context.Context) {
	// A slow poll catches anything a missed kick left behind.
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	defer d.reap(true)
	for {
		for d.pub.Connected() {
			d.Tracker.Begin()
			n, err := d.drainOnce(ctx)
			d.Tracker.End()
			if err != nil {
				if ctx.Err() == nil && !errors.Is(err, link.ErrNotConnected) {
					d.log.Warn("outbox publish", "err", err)
				}
				break
			}
			if n == 0 {
				break
			}
		}
		d.reap(false)
		select {
		case <-ctx.Done():
			return
		case <-d.kick:
		case <-tick.C:
			if len(d.removals) == 0 && len(d.removing) > 0 {
				d.remove(nil) // the removal failed: try it again
			}
		}
	}
}

// drainOnce publishes one window and removes what the broker acknowledged.
func (d *Drainer) drainOnce(ctx context.Context) (int, error) {
	items, err := d.next()
	if err != nil {
		return 0, err
	}
	if len(items) == 0 {
		return 0, nil
	}
	pending := make([]link.Pending, 0, len(items))
	var pubErr error
	for _, it := range items {
		p, err := d.pub.PublishAsync(it.Topic, it.Retain, it.Payload)
		if err != nil {
			pubErr = err
			break
		}
		pending = append(pending, p)
	}
	var done []uint64
	// One deadline for the whole window: a broker that stops acknowledging
	// without dropping the connection costs 30s, not 30s per message.
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for i, p := range pending {
		if err := p.Wait(wctx); err != nil {
			pubErr = err
			break
		}
		done = append(done, items[i].Seq)
	}
	if len(done) > 0 {
		d.reap(false)
		d.remove(done)
		d.sent.Add(int64(len(done)))
	}
	return len(done), pubErr
}

// next returns the next window: the oldest items that are neither being
// removed nor reports or job statuses (see the package doc). Reports are coalesced per key,
// so few of them sit among the rest; the peek grows until it finds a
// window's worth or the outbox's end.
func (d *Drainer) next() ([]store.OutItem, error) {
	for n := d.window + len(d.removing); ; n *= 2 {
		items, err := d.store.Peek(n)
		if err != nil {
			return nil, err
		}
		all := len(items)
		items = slices.DeleteFunc(items, func(it store.OutItem) bool {
			return d.removing[it.Seq] || it.Kind == store.KindReport || it.Kind == store.KindJob
		})
		if len(items) >= d.window || all < n {
			return items[:min(len(items), d.window)], nil
		}
	}
}

// remove starts committing the removal of acknowledged items, with every
// earlier one whose removal is not known durable yet (one that failed is
// tried again, never sent again while the drainer runs): a removal that
// lands takes all before it along, so the outbox never loses an earlier ack
// and keeps a later one (after a crash that one would arrive last). While
// fewer than a window's items wait for their removal, it waits up to
// RemoveWithin for company (see there); past that (a backlog draining) it
// commits at once, taking the waiting ones along.
func (d *Drainer) remove(seqs []uint64) {
	if d.removing == nil {
		d.removing = map[uint64]bool{}
	}
	for _, seq := range seqs {
		d.removing[seq] = true
	}
	all := slices.Sorted(maps.Keys(d.removing))
	if len(all) == 0 {
		return
	}
	fn := func(tx *store.Tx) error {
		for _, seq := range all {
			if err := tx.Remove(seq); err != nil {
				return err
			}
		}
		return nil
	}
	var wait func() error
	if len(all) < d.window {
		wait = d.store.SubmitWithin(RemoveWithin, fn)
	} else {
		wait = d.store.Submit(fn)
	}
	r := &removal{seqs: all, done: make(chan error, 1)}
	d.removals = append(d.removals, r)
	go func() { r.done <- wait() }()
}

// reap forgets the removals that ended (all of them, waiting, with block).
// What a failed one was to remove stays for the next removal.
func (d *Drainer) reap(block bool) {
	for len(d.removals) > 0 {
		r := d.removals[0]
		var err error
		if block {
			err = <-r.done
		} else {
			select {
			case err = <-r.done:
			default:
				return
			}
		}
		if err != nil {
			d.log.Warn("outbox remove sent messages; trying again", "count", len(r.seqs), "err", err)
		} else {
			for _, seq := range r.seqs {
				delete(d.removing, seq)
			}
		}
		d.removals[0] = nil
		d.removals = d.removals[1:]
	}
}
