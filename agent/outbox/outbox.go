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
	// The window in flight, oldest first (Run's goroutine only), and
	// whether the last peek may have left messages behind.
	inflight    []flight
	more        bool
	last        uint64 // the newest seq put in flight on this connection
	unsubmitted int    // acknowledged, marked removing, removal not yet submitted
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

type flight struct {
	seq uint64
	p   link.Pending
}

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
//
// The window slides: a message goes out as soon as it is in the outbox and
// fewer than a window are in flight, without waiting for the PUBACKs of the
// messages before it (an ack enqueued while a window is in flight is not
// held up by that window's round trip). PUBACKs are taken in order; the
// removals of the acknowledged share commits (remove).
func (d *Drainer) Run(ctx context.Context) {
	// A slow poll catches anything a missed kick left behind.
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	defer d.reap(true)
	defer func() { d.inflight, d.more = nil, false }()
	fill := true
	for {
		if fill {
			d.fill()
		}
		fill = false
		var acked, lost <-chan struct{}
		if len(d.inflight) > 0 {
			acked, lost = d.inflight[0].p.Done(), d.inflight[0].p.Lost()
		}
		select {
		case <-ctx.Done():
			if d.unsubmitted > 0 {
				d.remove() // acknowledged: not sent again after the restart
			}
			return
		case <-d.kick:
			// Something new waits: taken now, or once the window has room.
			fill, d.more = true, true
		case <-acked:
			d.settle()
			// More waits in the outbox than was taken: take it once half a
			// window has room (a peek per half window, not per message).
			fill = d.more && len(d.inflight) <= d.window/2
		case <-lost:
			// The connection the window went out on is gone: the messages
			// stay in the outbox and go out again after the reconnect (its
			// OnConnect kicks), at least once, in order.
			d.settle()
			d.inflight, d.more, d.last = nil, false, 0
			d.Tracker.End()
		case <-tick.C:
			if len(d.removals) == 0 && len(d.removing) > 0 {
				d.remove() // the removal failed: try it again
			}
			fill = true
		}
		d.reap(false)
	}
}

// fill publishes the oldest messages not yet in flight, up to a window in
// flight.
func (d *Drainer) fill() {
	room := d.window - len(d.inflight)
	if room <= 0 || !d.pub.Connected() {
		return
	}
	items, more, err := d.next(room)
	if err != nil {
		d.log.Warn("outbox read", "err", err)
		return
	}
	d.more = more
	for _, it := range items {
		p, err := d.pub.PublishAsync(it.Topic, it.Retain, it.Payload)
		if err != nil {
			if !errors.Is(err, link.ErrNotConnected) {
				d.log.Warn("outbox publish", "err", err)
			}
			d.more = false // the reconnect kicks
			break
		}
		if len(d.inflight) == 0 {
			d.Tracker.Begin()
		}
		d.inflight = append(d.inflight, flight{seq: it.Seq, p: p})
		d.last = it.Seq
	}
}

// settle takes the PUBACKs that arrived, oldest first, and starts removing
// their messages. It stops at the first message not yet acknowledged, or
// at one whose publish failed (the connection went: see Run). The
// watchdog's outbox tracker counts from the last PUBACK while messages are
// in flight: a broker that takes messages and never acknowledges them is
// stuck work.
func (d *Drainer) settle() {
	var done []uint64
take:
	for len(d.inflight) > 0 {
		f := d.inflight[0]
		select {
		case <-f.p.Done():
		default:
			break take
		}
		if err := f.p.Wait(context.Background()); err != nil {
			if !errors.Is(err, link.ErrNotConnected) {
				d.log.Warn("outbox publish", "err", err)
			}
			d.inflight, d.more, d.last = nil, false, 0
			break
		}
		done = append(done, f.seq)
		d.inflight[0] = flight{}
		d.inflight = d.inflight[1:]
	}
	switch {
	case len(d.inflight) == 0:
		d.Tracker.End()
	case len(done) > 0:
		d.Tracker.Begin()
	}
	if len(done) == 0 {
		return
	}
	d.sent.Add(int64(len(done)))
	d.acknowledged(done)
	// Their removal is submitted per half window acknowledged, or once
	// nothing is in flight: one commit's worth, not one per PUBACK.
	if d.unsubmitted >= d.window/2 || len(d.inflight) == 0 {
		d.remove()
	}
}

// acknowledged marks messages the broker acknowledged for removal (next
// skips them); remove submits it.
func (d *Drainer) acknowledged(seqs []uint64) {
	if d.removing == nil {
		d.removing = map[uint64]bool{}
	}
	for _, seq := range seqs {
		d.removing[seq] = true
	}
	d.unsubmitted += len(seqs)
}

// next returns up to n of the oldest items that are neither in flight,
// being removed, nor reports or job statuses (see the package doc), and
// whether the outbox may hold more. Reports are coalesced per key, so few
// of them sit among the rest; the peek grows until it finds n or the
// outbox's end.
func (d *Drainer) next(n int) (items []store.OutItem, more bool, err error) {
	// After the newest in flight: what is before it is in flight, being
	// removed, or passed by. After a lost connection (last 0) the removals
	// still pending are skipped.
	skip := 0
	if d.last == 0 {
		skip = len(d.removing)
	}
	for want := n + skip; ; want *= 2 {
		items, err := d.store.PeekAfter(d.last, want)
		if err != nil {
			return nil, false, err
		}
		all := len(items)
		items = slices.DeleteFunc(items, func(it store.OutItem) bool {
			return d.removing[it.Seq] || it.Kind == store.KindReport || it.Kind == store.KindJob
		})
		if len(items) >= n || all < want {
			return items[:min(len(items), n)], all == want, nil
		}
	}
}

// remove starts committing the removal of the acknowledged items, every
// one whose removal is not known durable yet (one that failed is
// tried again, never sent again while the drainer runs): a removal that
// lands takes all before it along, so the outbox never loses an earlier ack
// and keeps a later one (after a crash that one would arrive last). While
// fewer than a window's items wait for their removal, it waits up to
// RemoveWithin for company (see there); past that (a backlog draining) it
// commits at once, taking the waiting ones along.
func (d *Drainer) remove() {
	d.unsubmitted = 0
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
