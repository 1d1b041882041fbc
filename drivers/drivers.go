// Package drivers defines what an actuator is to the rest of shadowgate, the
// State it is driven to, the Schema of keys it accepts, and the registry that
// drivers join by name in init(). Import drivers/all for every driver.
package drivers

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/shadowgate/shadowgate/agent/config"
)

// Actuator is one device: a light, a lock, a motor.
type Actuator interface {
	// Apply drives the hardware to the keys present in s; keys left out
	// keep their value. s has been checked against Schema.
	Apply(ctx context.Context, s State) error
	// Read returns the whole state now (or as last set, where the hardware
	// cannot be read back).
	Read(ctx context.Context) (State, error)
	// Schema is the keys and types this actuator accepts.
	Schema() Schema
	Close() error
}

// Driver turns an actuator block of the config into something that can be
// opened. Prepare only reads and checks options (it touches no hardware), so
// `shadowctl config check` and the daemon share it.
type Driver interface {
	Prepare(opts *Options) Opener
}

// Opener opens a prepared actuator on the hardware.
type Opener interface {
	Open(ctx context.Context, hw *Hardware) (Actuator, error)
}

// OpenerFunc adapts a function to Opener.
type OpenerFunc func(ctx context.Context, hw *Hardware) (Actuator, error)

// Open calls f.
func (f OpenerFunc) Open(ctx context.Context, hw *Hardware) (Actuator, error) { return f(ctx, hw) }

// Options is one actuator's config block as its driver sees it.
type Options struct {
	Actuator *config.Actuator
	r        *config.Reporter
}

// Path is the key path of the actuator block, e.g. actuators.porch_light.
func (o *Options) Path() string { return "actuators." + o.Actuator.Name }

// Decode reads the driver's own keys strictly into v (a pointer to a struct
// with yaml tags). It reports false when a problem was found.
func (o *Options) Decode(v any) bool {
	o.r.Decode(o.Actuator.Options, o.Path(), v)
	return !o.r.Failed(o.Path())
}

// Problem reports a problem with one of the driver's keys.
func (o *Options) Problem(key, format string, args ...any) {
	o.r.At(o.Path()+"."+key, format, args...)
}

// Failed reports whether any problem was found in this actuator's block.
func (o *Options) Failed() bool { return o.r.Failed(o.Path()) }

var (
	mu       sync.RWMutex
	registry = map[string]Driver{}
)

// Register makes a driver available by name. It is called from init();
// registering a name twice is a programming error and panics.
func Register(name string, d Driver) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := registry[name]; dup {
		panic(fmt.Sprintf("drivers: driver %q registered twice", name))
	}
	registry[name] = d
}

// Names returns the registered driver names, sorted.
func Names() []string {
	mu.RLock()
	defer mu.RUnlock()
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// ErrUnknownDriver is wrapped when a config names a driver nobody registered.
var ErrUnknownDriver = errors.New("unknown driver")

func lookup(name string) (Driver, bool) {
	mu.RLock()
	defer mu.RUnlock()
	d, ok := registry[name]
	return d, ok
}

// Prepared is every actuator of a config, checked and ready to open.
type Prepared map[string]Opener

// Check is a config.Checker: it prepares every actuator so that its driver
// reports problems in its options. Use it with config.Load.
func Check(c *config.Config, r *config.Reporter) { prepare(c, r) }

// Prepare checks every actuator's options and returns the openers. Problems
// are reported through the config's Reporter; the error lists them all.
func Prepare(c *config.Config) (Prepared, error) {
	p := prepare(c, c.Reporter)
	if err := c.Reporter.Err(); err != nil {
		return nil, err
	}
	return p, nil
}

func prepare(c *config.Config, r *config.Reporter) Prepared {
	out := Prepared{}
	for _, name := range c.ActuatorNames() {
		a := c.Actuators[name]
		if a == nil || a.Driver == "" {
			continue // reported by config validation
		}
		d, ok := lookup(a.Driver)
		if !ok {
			r.At("actuators."+name+".driver", "%v %q (available: %v)", ErrUnknownDriver, a.Driver, Names())
			continue
		}
		opts := &Options{Actuator: a, r: r}
		if op := d.Prepare(opts); op != nil && !opts.Failed() {
			out[name] = op
		}
	}
	return out
}
