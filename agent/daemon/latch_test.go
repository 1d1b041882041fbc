package daemon_test

import (
	"context"
	gosync "sync"

	"github.com/shadowgate/shadowgate/drivers"
	"github.com/shadowgate/shadowgate/drivers/sim"
)

// The test_latch driver is hardware whose changes a test can hold: while
// latch is closed, a change enters (entered is told) and waits for the
// test to open it. It lets a test hold an actuator's worker for as long
// as it needs, where a driver's latency would be a race against the
// machine's load.
//
//	latch: {driver: test_latch}   # state {open: false}
func init() { drivers.Register("test_latch", latchDriver{}) }

// latch is the one gate every test_latch actuator's changes pass (the
// daemon tests run one at a time).
var latch = &latchGate{}

type latchGate struct {
	mu      gosync.Mutex
	held    chan struct{} // closed to let changes through; nil: open
	entered chan struct{} // told of each change that waits
}

// hold makes the next changes wait until release is called; entered is
// told of each one as it starts waiting.
func (g *latchGate) hold() (entered <-chan struct{}, release func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	held, ent := make(chan struct{}), make(chan struct{}, 16)
	g.held, g.entered = held, ent
	var once gosync.Once
	return ent, func() {
		once.Do(func() {
			g.mu.Lock()
			g.held, g.entered = nil, nil
			g.mu.Unlock()
			close(held)
		})
	}
}

type latchDriver struct{}

func (latchDriver) Prepare(o *drivers.Options) drivers.Opener {
	var opts struct{}
	if !o.Decode(&opts) {
		return nil
	}
	return drivers.OpenerFunc(func(context.Context, *drivers.Hardware) (drivers.Actuator, error) {
		return &latchActuator{Actuator: sim.New(drivers.Schema{"open": {Kind: drivers.Bool}}, drivers.State{"open": false}, 0, 0)}, nil
	})
}

type latchActuator struct{ *sim.Actuator }

func (a *latchActuator) Apply(ctx context.Context, s drivers.State) error {
	latch.mu.Lock()
	held, entered := latch.held, latch.entered
	latch.mu.Unlock()
	if held != nil {
		select {
		case entered <- struct{}{}:
		default:
		}
		select {
		case <-held:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return a.Actuator.Apply(ctx, s)
}
