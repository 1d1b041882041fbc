package pipeline

import (
	"context"
	"errors"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/shadowgate/shadowgate/store"
)

func openStore(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "p.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// outcome is what one piece of work saw and was told.
type outcome struct {
	i    int
	seen string // the value a read found
	err  error
}

type recorder struct {
	mu  sync.Mutex
	got []outcome
}

func (r *recorder) add(o outcome) {
	r.mu.Lock()
	r.got = append(r.got, o)
	r.mu.Unlock()
}

func (r *recorder) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got)
}

func (r *recorder) all() []outcome {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]outcome(nil), r.got...)
}

var key = store.ShadowKey{Thing: "t1"}

// put is work that stores v under key; fail makes its Run fail instead.
func put(rec *recorder, i int, v string, fail error) Work[store.ShadowKey] {
	return Work[store.ShadowKey]{Thing: key.Thing, Key: key, Write: true, Bytes: len(v),
		Run: func(tx *store.Tx, _ time.Time) error {
			if fail != nil {
				return fail
			}
			_, err := tx.PutShadow(key, []byte(v))
			return err
		},
		Finish: func(_ time.Time, err error) { rec.add(outcome{i: i, err: err}) }}
}

// get is work that reads key.
func get(rec *recorder, i int) Work[store.ShadowKey] {
	var seen string
	return Work[store.ShadowKey]{Thing: key.Thing, Key: key,
		Run: func(tx *store.Tx, _ time.Time) error {
			b, err := tx.GetShadow(key)
			if errors.Is(err, store.ErrNotFound) {
				seen = ""
				return nil
			}
			seen = string(b)
			return err
		},
		Finish: func(_ time.Time, err error) { rec.add(outcome{i: i, seen: seen, err: err}) }}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// run runs p until the returned stop is called.
func run(p *Pipeline[store.ShadowKey]) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx) }()
	return func() { cancel(); <-done }
}

// Work finishes in the order it was submitted, each read sees the writes
// submitted before it and none after, and every count is released.
func TestOrder(t *testing.T) {
	p := New[store.ShadowKey](Options{Store: openStore(t)})
	defer run(p)()
	rec := &recorder{}
	const n = 200
	for i := range n {
		var w Work[store.ShadowKey]
		if i%3 == 2 {
			w = get(rec, i)
		} else {
			w = put(rec, i, strconv.Itoa(i), nil)
		}
		if err := p.Submit(w); err != nil {
			t.Fatalf("submit %d: %v", i, err)
		}
	}
	waitFor(t, "every piece of work finished", func() bool { return rec.len() == n })
	for i, o := range rec.all() {
		if o.i != i {
			t.Fatalf("finished #%d is work %d: not in submission order", i, o.i)
		}
		if o.err != nil {
			t.Fatalf("work %d: %v", i, o.err)
		}
		if i%3 == 2 && o.seen != strconv.Itoa(i-1) {
			t.Fatalf("read %d saw %q, want the write just before it (%d)", i, o.seen, i-1)
		}
	}
	waitFor(t, "counts released", func() bool { return p.InFlight() == 0 && p.Queued() == 0 })
}

// Past MaxPerThing for one thing, MaxQueued or MaxBytes in all, work is
// refused at once; work without a Thing is never; finished work makes room.
func TestShedAtLimits(t *testing.T) {
	p := New[store.ShadowKey](Options{Store: openStore(t), MaxPerThing: 2, MaxQueued: 3, MaxBytes: 10})
	rec := &recorder{}
	other := func(thing string, bytes int) Work[store.ShadowKey] {
		w := get(rec, -1)
		w.Thing, w.Bytes = thing, bytes
		return w
	}
	// The finisher is not running: everything admitted stays queued.
	for i, c := range []struct {
		w    Work[store.ShadowKey]
		want error
	}{
		{put(rec, 0, "a", nil), nil},
		{put(rec, 1, "b", nil), nil},
		{put(rec, 2, "c", nil), ErrFull}, // a third for t1
		{other("t2", 9), ErrFull},        // 1+1+9 bytes
		{other("t2", 8), nil},            // exactly 10 bytes
		{other("t3", 0), ErrFull},        // a fourth in all
		{Work[store.ShadowKey]{Run: func(*store.Tx, time.Time) error { return nil }, Finish: func(time.Time, error) { rec.add(outcome{i: -2}) }}, nil},
	} {
		if err := p.Submit(c.w); !errors.Is(err, c.want) {
			t.Fatalf("submit #%d: err %v, want %v", i, err, c.want)
		}
	}
	if got := p.InFlight(); got != 3 {
		t.Fatalf("InFlight %d, want 3 (the work without a thing is not counted)", got)
	}
	if got := p.Queued(); got != 4 {
		t.Fatalf("Queued %d, want 4", got)
	}
	defer run(p)()
	waitFor(t, "the admitted work finished", func() bool { return rec.len() == 4 })
	waitFor(t, "counts released", func() bool { return p.InFlight() == 0 })
	if err := p.Submit(put(rec, 3, "d", nil)); err != nil {
		t.Fatalf("submit after the queue drained: %v", err)
	}
}

// When ctx has ended, Run still finishes the work already handed to the
// store, and that work is durable.
func TestFinishOnCtxEnd(t *testing.T) {
	st := openStore(t)
	p := New[store.ShadowKey](Options{Store: st})
	rec := &recorder{}
	const n = 20
	for i := range n {
		if err := p.Submit(put(rec, i, strconv.Itoa(i), nil)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	p.Run(ctx) // returns only once the queue is empty
	if got := rec.len(); got != n {
		t.Fatalf("%d of %d finished before Run returned", got, n)
	}
	var doc []byte
	if err := st.View(func(tx *store.Tx) (err error) { doc, err = tx.GetShadow(key); return err }); err != nil {
		t.Fatal(err)
	}
	if string(doc) != strconv.Itoa(n-1) {
		t.Fatalf("stored %q, want the last write %d", doc, n-1)
	}
}

// A commit that fails is finished in its place with the error, for the
// service to answer; the work around it commits.
func TestFailedCommit(t *testing.T) {
	st := openStore(t)
	p := New[store.ShadowKey](Options{Store: st})
	defer run(p)()
	rec := &recorder{}
	boom := errors.New("boom")
	for _, w := range []Work[store.ShadowKey]{put(rec, 0, "a", nil), put(rec, 1, "b", boom), get(rec, 2), put(rec, 3, "d", nil)} {
		if err := p.Submit(w); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "all finished", func() bool { return rec.len() == 4 })
	got := rec.all()
	for i, o := range got {
		if o.i != i {
			t.Fatalf("finished #%d is work %d", i, o.i)
		}
	}
	if !errors.Is(got[1].err, boom) {
		t.Fatalf("failed write told %v, want %v", got[1].err, boom)
	}
	if got[0].err != nil || got[2].err != nil || got[3].err != nil {
		t.Fatalf("the others failed too: %+v", got)
	}
	if got[2].seen != "a" {
		t.Fatalf("read after the failed write saw %q, want %q", got[2].seen, "a")
	}
}
