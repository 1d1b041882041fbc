// Package sim is the simulated actuator: state in memory, a configurable
// latency per change and an injected failure rate. It runs the demo and the
// tests with no hardware, and accepts any schema: the keys and types of its
// initial state.
//
//	porch_light:
//	  driver: sim
//	  state: {on: false, brightness: 0}   # initial state; defines the schema
//	  latency: 20ms                       # time each change takes
//	  fail_rate: 0.1                      # chance that a change fails
package sim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/shadowgate/shadowgate/agent/config"
	"github.com/shadowgate/shadowgate/drivers"
)

// Name is the driver's registry name.
const Name = "sim"

func init() { drivers.Register(Name, driver{}) }

// ErrInjected is the failure a fail_rate produces.
var ErrInjected = errors.New("sim: injected failure")

// Options are the sim driver's keys.
type Options struct {
	State    map[string]any  `yaml:"state"`
	Latency  config.Duration `yaml:"latency"`
	FailRate float64         `yaml:"fail_rate"`
	// FailKeys makes every change that sets one of these keys fail, for
	// deterministic failure tests.
	FailKeys []string `yaml:"fail_keys"`
}

type driver struct{}

func (driver) Prepare(o *drivers.Options) drivers.Opener {
	var opts Options
	if !o.Decode(&opts) {
		return nil
	}
	if len(opts.State) == 0 {
		o.Problem("state", "is required: the initial state, e.g. {on: false}; its keys and types are what the actuator accepts")
		return nil
	}
	schema, err := SchemaOf(opts.State)
	if err != nil {
		o.Problem("state", "%v", err)
		return nil
	}
	if opts.Latency.D() < 0 || opts.Latency.D() > time.Minute {
		o.Problem("latency", "must be between 0s and 1m, got %s", opts.Latency)
	}
	if opts.FailRate < 0 || opts.FailRate > 1 || math.IsNaN(opts.FailRate) {
		o.Problem("fail_rate", "must be between 0 and 1, got %v", opts.FailRate)
	}
	for _, k := range opts.FailKeys {
		if _, ok := schema[k]; !ok {
			o.Problem("fail_keys", "key %q is not in state", k)
		}
	}
	if o.Failed() {
		return nil
	}
	initial, _ := schema.Check(opts.State)
	return drivers.OpenerFunc(func(context.Context, *drivers.Hardware) (drivers.Actuator, error) {
		return New(schema, initial, opts.Latency.D(), opts.FailRate, opts.FailKeys...), nil
	})
}

// SchemaOf derives a schema from an example state: booleans, whole numbers,
// other numbers and strings.
func SchemaOf(example map[string]any) (drivers.Schema, error) {
	sc := drivers.Schema{}
	for k, v := range example {
		switch v := v.(type) {
		case bool:
			sc[k] = drivers.Field{Kind: drivers.Bool}
		case string:
			sc[k] = drivers.Field{Kind: drivers.String}
		case json.Number:
			if _, err := v.Int64(); err == nil {
				sc[k] = drivers.Field{Kind: drivers.Int}
			} else {
				sc[k] = drivers.Field{Kind: drivers.Number}
			}
		case int, int64:
			sc[k] = drivers.Field{Kind: drivers.Int}
		case float64:
			sc[k] = drivers.Field{Kind: drivers.Number}
		default:
			return nil, fmt.Errorf("key %q: sim states hold booleans, numbers and strings, got %v", k, v)
		}
	}
	return sc, nil
}

// Actuator is a simulated actuator. It is safe for concurrent use and counts
// the changes applied, for tests.
type Actuator struct {
	schema   drivers.Schema
	latency  time.Duration
	failRate float64
	failKeys map[string]bool

	mu      sync.Mutex
	state   drivers.State
	applied int
	closed  bool
}

// New makes a simulated actuator with the given schema and initial state.
func New(schema drivers.Schema, initial drivers.State, latency time.Duration, failRate float64, failKeys ...string) *Actuator {
	fk := map[string]bool{}
	for _, k := range failKeys {
		fk[k] = true
	}
	return &Actuator{schema: schema, state: initial.Clone(), latency: latency, failRate: failRate, failKeys: fk}
}

// Apply waits the latency (or for ctx) and sets the keys of s.
func (a *Actuator) Apply(ctx context.Context, s drivers.State) error {
	if a.latency > 0 {
		t := time.NewTimer(a.latency)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return errors.New("sim: actuator closed")
	}
	for k := range s {
		if a.failKeys[k] {
			return fmt.Errorf("%w (fail_keys: %s)", ErrInjected, k)
		}
	}
	if a.failRate > 0 && rand.Float64() < a.failRate {
		return ErrInjected
	}
	a.state = a.state.Merge(s)
	a.applied++
	return nil
}

// Read returns the current state.
func (a *Actuator) Read(context.Context) (drivers.State, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.state.Clone(), nil
}

// Schema returns the schema derived from the initial state.
func (a *Actuator) Schema() drivers.Schema { return a.schema }

// Applied is the number of changes applied so far.
func (a *Actuator) Applied() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.applied
}

// SetFailKeys replaces the keys whose changes fail, for tests.
func (a *Actuator) SetFailKeys(keys ...string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.failKeys = map[string]bool{}
	for _, k := range keys {
		a.failKeys[k] = true
	}
}

// Close marks the actuator closed.
func (a *Actuator) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.closed = true
	return nil
}
