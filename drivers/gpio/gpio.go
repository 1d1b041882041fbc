// Package gpio drives on/off loads and locks from GPIO pins (periph).
//
//	porch_light:                 # {"on": bool}
//	  driver: gpio.relay
//	  pin: GPIO17                # BCM name or number
//	  active_low: true           # most relay boards switch on a low level
//	  pulse: 500ms               # optional: momentary output (a door buzzer)
//
//	front_door:                  # {"locked": bool}
//	  driver: gpio.lock
//	  pin: GPIO27                # drives the strike/bolt: high = locked
//	  active_low: false
//	  sensor: GPIO22             # optional input confirming the bolt position
//	  sensor_active_low: true    # sensor reads low when locked
//	  confirm_timeout: 2s        # no confirmation by then: "not confirmed"
//	  relock_after: 10s          # optional: lock again after an unlock
package gpio

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"periph.io/x/conn/v3/gpio"

	"github.com/shadowgate/shadowgate/agent/config"
	"github.com/shadowgate/shadowgate/drivers"
)

// Registry names.
const (
	RelayDriver = "gpio.relay"
	LockDriver  = "gpio.lock"
)

func init() {
	drivers.Register(RelayDriver, relayDriver{})
	drivers.Register(LockDriver, lockDriver{})
}

// ErrNotConfirmed is returned when a lock's sensor does not confirm.
var ErrNotConfirmed = errors.New("not confirmed")

// RelayOptions are gpio.relay's keys.
type RelayOptions struct {
	Pin       string          `yaml:"pin"`
	ActiveLow bool            `yaml:"active_low"`
	Pulse     config.Duration `yaml:"pulse"`
}

type relayDriver struct{}

func (relayDriver) Prepare(o *drivers.Options) drivers.Opener {
	var opts RelayOptions
	if !o.Decode(&opts) {
		return nil
	}
	pin, ok := pinName(o, "pin", opts.Pin, true)
	if opts.Pulse.D() < 0 || opts.Pulse.D() > time.Minute {
		o.Problem("pulse", "must be between 0s and 1m, got %s", opts.Pulse)
		ok = false
	}
	if !ok {
		return nil
	}
	return drivers.OpenerFunc(func(_ context.Context, hw *drivers.Hardware) (drivers.Actuator, error) {
		p, err := hw.GPIO(pin)
		if err != nil {
			return nil, err
		}
		return NewRelay(p, opts.ActiveLow, opts.Pulse.D())
	})
}

func pinName(o *drivers.Options, key, value string, required bool) (string, bool) {
	if value == "" {
		if required {
			o.Problem(key, "is required: the BCM pin, e.g. GPIO17")
			return "", false
		}
		return "", true
	}
	name, err := drivers.ValidPinName(value)
	if err != nil {
		o.Problem(key, "%v", err)
		return "", false
	}
	return name, true
}

func level(on, activeLow bool) gpio.Level { return gpio.Level(on != activeLow) }

// Relay is an on/off output.
type Relay struct {
	pin       gpio.PinIO
	activeLow bool
	pulse     time.Duration

	mu   sync.Mutex
	last bool
}

// NewRelay drives pin as a relay. The output keeps the level it has, so
// that a restart of the daemon does not switch a load (power_on decides).
func NewRelay(pin gpio.PinIO, activeLow bool, pulse time.Duration) (*Relay, error) {
	r := &Relay{pin: pin, activeLow: activeLow, pulse: pulse}
	on := pin.Read() == level(true, activeLow)
	if pulse > 0 {
		on = false
	}
	if err := pin.Out(level(on, activeLow)); err != nil {
		return nil, fmt.Errorf("set %s as an output: %w", pin, err)
	}
	r.last = on
	return r, nil
}

// Schema is {"on": bool}.
func (r *Relay) Schema() drivers.Schema { return drivers.Schema{"on": {Kind: drivers.Bool}} }

// Apply switches the output; with a pulse, on:true gives one pulse.
func (r *Relay) Apply(ctx context.Context, s drivers.State) error {
	on, ok := s["on"].(bool)
	if !ok {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pulse > 0 {
		if !on {
			return r.pin.Out(level(false, r.activeLow))
		}
		if err := r.pin.Out(level(true, r.activeLow)); err != nil {
			return fmt.Errorf("%s: %w", r.pin, err)
		}
		t := time.NewTimer(r.pulse)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
		// The pulse always ends, even when the context is cut short.
		if err := r.pin.Out(level(false, r.activeLow)); err != nil {
			return fmt.Errorf("%s: end pulse: %w", r.pin, err)
		}
		r.last = true
		return nil
	}
	if err := r.pin.Out(level(on, r.activeLow)); err != nil {
		return fmt.Errorf("%s: %w", r.pin, err)
	}
	r.last = on
	return nil
}

// Read returns the output's level; a pulse relay reports the last request
// (its output is back off between pulses).
func (r *Relay) Read(context.Context) (drivers.State, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pulse > 0 {
		return drivers.State{"on": r.last}, nil
	}
	return drivers.State{"on": r.pin.Read() == level(true, r.activeLow)}, nil
}

// Close leaves the pin as it is (on_shutdown decides what it should be).
func (r *Relay) Close() error { return nil }

// LockOptions are gpio.lock's keys.
type LockOptions struct {
	Pin             string          `yaml:"pin"`
	ActiveLow       bool            `yaml:"active_low"`
	Sensor          string          `yaml:"sensor"`
	SensorActiveLow bool            `yaml:"sensor_active_low"`
	ConfirmTimeout  config.Duration `yaml:"confirm_timeout"`
	RelockAfter     config.Duration `yaml:"relock_after"`
}

type lockDriver struct{}

func (lockDriver) Prepare(o *drivers.Options) drivers.Opener {
	var opts LockOptions
	if !o.Decode(&opts) {
		return nil
	}
	pin, ok1 := pinName(o, "pin", opts.Pin, true)
	sensor, ok2 := pinName(o, "sensor", opts.Sensor, false)
	ok := ok1 && ok2
	if ok && sensor != "" && sensor == pin {
		o.Problem("sensor", "is the same pin as the output (%s)", pin)
		ok = false
	}
	if opts.ConfirmTimeout == 0 {
		opts.ConfirmTimeout = config.Duration(2 * time.Second)
	}
	if opts.ConfirmTimeout.D() < 0 || opts.ConfirmTimeout.D() > time.Minute {
		o.Problem("confirm_timeout", "must be between 0s and 1m, got %s", opts.ConfirmTimeout)
		ok = false
	}
	if opts.RelockAfter.D() < 0 {
		o.Problem("relock_after", "must not be negative")
		ok = false
	}
	if !ok {
		return nil
	}
	return drivers.OpenerFunc(func(_ context.Context, hw *drivers.Hardware) (drivers.Actuator, error) {
		out, err := hw.GPIO(pin)
		if err != nil {
			return nil, err
		}
		var in gpio.PinIO
		if sensor != "" {
			if in, err = hw.GPIO(sensor); err != nil {
				return nil, err
			}
		}
		return NewLock(out, opts.ActiveLow, in, opts.SensorActiveLow, opts.ConfirmTimeout.D(), opts.RelockAfter.D())
	})
}

// Lock drives a strike or bolt and, with a sensor, confirms its position.
type Lock struct {
	out, sensor                gpio.PinIO
	activeLow, sensorActiveLow bool
	edges                      bool // the sensor reports edges; else it is polled
	confirm, relock            time.Duration
	mu                         sync.Mutex
}

// NewLock makes a lock; its output keeps its current level.
func NewLock(out gpio.PinIO, activeLow bool, sensor gpio.PinIO, sensorActiveLow bool, confirm, relock time.Duration) (*Lock, error) {
	l := &Lock{out: out, sensor: sensor, activeLow: activeLow, sensorActiveLow: sensorActiveLow, confirm: confirm, relock: relock}
	if err := out.Out(out.Read()); err != nil {
		return nil, fmt.Errorf("set %s as an output: %w", out, err)
	}
	if sensor != nil {
		// Edges where the pin has them, polling where it does not.
		l.edges = sensor.In(gpio.PullUp, gpio.BothEdges) == nil
		if !l.edges {
			if err := sensor.In(gpio.PullUp, gpio.NoEdge); err != nil {
				return nil, fmt.Errorf("set %s as the lock sensor input: %w", sensor, err)
			}
		}
	}
	return l, nil
}

// Schema is {"locked": bool}.
func (l *Lock) Schema() drivers.Schema { return drivers.Schema{"locked": {Kind: drivers.Bool}} }

// Apply drives the bolt and waits for the sensor to agree.
func (l *Lock) Apply(ctx context.Context, s drivers.State) error {
	locked, ok := s["locked"].(bool)
	if !ok {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.out.Out(level(locked, l.activeLow)); err != nil {
		return fmt.Errorf("%s: %w", l.out, err)
	}
	if l.sensor == nil {
		return nil
	}
	deadline := time.Now().Add(l.confirm)
	for l.sensed() != locked {
		left := time.Until(deadline)
		if left <= 0 || ctx.Err() != nil {
			return fmt.Errorf("%w: the sensor on %s does not show the door %s after %s", ErrNotConfirmed, l.sensor, lockWord(locked), l.confirm)
		}
		if l.edges {
			l.sensor.WaitForEdge(min(left, 50*time.Millisecond))
		} else {
			time.Sleep(min(left, 10*time.Millisecond))
		}
	}
	return nil
}

func lockWord(locked bool) string {
	if locked {
		return "locked"
	}
	return "unlocked"
}

func (l *Lock) sensed() bool { return l.sensor.Read() == level(true, l.sensorActiveLow) }

// Read returns the sensor's view when there is one, else the output's.
func (l *Lock) Read(context.Context) (drivers.State, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sensor != nil {
		return drivers.State{"locked": l.sensed()}, nil
	}
	return drivers.State{"locked": l.out.Read() == level(true, l.activeLow)}, nil
}

// FollowUp relocks relock_after an unlock.
func (l *Lock) FollowUp(applied drivers.State) (drivers.State, time.Duration, bool) {
	if locked, ok := applied["locked"].(bool); ok && !locked && l.relock > 0 {
		return drivers.State{"locked": true}, l.relock, true
	}
	return nil, 0, false
}

// Close leaves the pins as they are.
func (l *Lock) Close() error { return nil }
