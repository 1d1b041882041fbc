// Package i2c drives I2C devices: the PCA9685 16-channel PWM controller,
// for dimmable lights and servos, written on periph's conn/v3 i2c.
//
//	hall_dimmer:                  # {"brightness": 0..100} (whole percent)
//	  driver: i2c.pca9685
//	  bus: "1"                    # /dev/i2c-1 on a Raspberry Pi
//	  address: 0x40               # the board's jumpers
//	  channel: 0                  # 0..15
//	  mode: led
//	  frequency: 1000             # Hz, 24..1526; one value per chip
//	gate_servo:                   # {"angle": 0..180}
//	  driver: i2c.pca9685
//	  channel: 1
//	  mode: servo
//	  frequency: 50
//	  min_pulse_us: 500           # pulse at 0°
//	  max_pulse_us: 2500          # pulse at 180°
package i2c

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"periph.io/x/conn/v3/i2c"

	"github.com/shadowgate/shadowgate/drivers"
)

// PCA9685 registers and MODE1/MODE2 bits (NXP PCA9685 datasheet, §7.3).
const (
	regMode1    = 0x00
	regMode2    = 0x01
	regLED0OnL  = 0x06
	regPreScale = 0xFE

	mode1AI      = 0x20 // register auto-increment
	mode1Sleep   = 0x10 // oscillator off; PRE_SCALE is writable only now
	mode1Restart = 0x80
	mode2OutDrv  = 0x04 // totem-pole outputs

	fullBit   = 0x1000 // bit 4 of ON_H / OFF_H: fully on / fully off
	oscHz     = 25_000_000
	steps     = 4096
	minFreqHz = 24
	maxFreqHz = 1526
)

// DriverName is the registry name.
const DriverName = "i2c.pca9685"

func init() { drivers.Register(DriverName, driver{}) }

// Prescale is the PRE_SCALE value for a PWM frequency: round(25 MHz /
// (4096 × f)) − 1.
func Prescale(freqHz int) byte {
	return byte(math.Round(float64(oscHz)/(steps*float64(freqHz))) - 1)
}

// Chip is one PCA9685, shared by the actuators on its channels.
type Chip struct {
	dev  *i2c.Dev
	mu   sync.Mutex
	freq int
}

// NewChip addresses a PCA9685 on a bus (the bus is not owned).
func NewChip(bus i2c.Bus, addr uint16) *Chip { return &Chip{dev: &i2c.Dev{Bus: bus, Addr: addr}} }

// Init sets the PWM frequency with the datasheet's sequence: sleep, write
// PRE_SCALE, wake, wait 500 µs for the oscillator, restart with
// auto-increment. A chip already running at freqHz is left alone; another
// frequency is an error (all channels share one).
func (c *Chip) Init(freqHz int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.freq != 0 {
		if c.freq != freqHz {
			return fmt.Errorf("the PCA9685 at %#x runs at %d Hz, set by another channel; all channels of a chip share one frequency, not %d Hz", c.dev.Addr, c.freq, freqHz)
		}
		return nil
	}
	if err := c.dev.Tx([]byte{regMode2, mode2OutDrv}, nil); err != nil {
		return c.errf("write MODE2", err)
	}
	old := []byte{0}
	if err := c.dev.Tx([]byte{regMode1}, old); err != nil {
		return c.errf("read MODE1", err)
	}
	mode := old[0] &^ mode1Restart
	steps := [][]byte{
		{regMode1, mode | mode1Sleep},
		{regPreScale, Prescale(freqHz)},
		{regMode1, (mode &^ mode1Sleep) | mode1AI},
	}
	for _, w := range steps {
		if err := c.dev.Tx(w, nil); err != nil {
			return c.errf("initialise", err)
		}
	}
	time.Sleep(500 * time.Microsecond)
	if err := c.dev.Tx([]byte{regMode1, (mode &^ mode1Sleep) | mode1AI | mode1Restart}, nil); err != nil {
		return c.errf("restart", err)
	}
	c.freq = freqHz
	return nil
}

func (c *Chip) errf(what string, err error) error {
	return fmt.Errorf("PCA9685 at %#x: %s: %w (is I2C enabled and the address right? i2cdetect -y 1)", c.dev.Addr, what, err)
}

// SetDuty sets a channel's duty in 1/4096 (4096 = fully on, 0 = fully off).
func (c *Chip) SetDuty(ch int, duty int) error {
	on, off := 0, duty
	switch {
	case duty >= steps:
		on, off = fullBit, 0
	case duty <= 0:
		on, off = 0, fullBit
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	w := []byte{byte(regLED0OnL + 4*ch), byte(on), byte(on >> 8), byte(off), byte(off >> 8)}
	if err := c.dev.Tx(w, nil); err != nil {
		return c.errf(fmt.Sprintf("set channel %d", ch), err)
	}
	return nil
}

// Duty reads a channel's duty back from its registers.
func (c *Chip) Duty(ch int) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := make([]byte, 4)
	if err := c.dev.Tx([]byte{byte(regLED0OnL + 4*ch)}, r); err != nil {
		return 0, c.errf(fmt.Sprintf("read channel %d", ch), err)
	}
	on := int(r[0]) | int(r[1])<<8
	off := int(r[2]) | int(r[3])<<8
	switch {
	case off&fullBit != 0:
		return 0, nil
	case on&fullBit != 0:
		return steps, nil
	}
	return (off - on + steps) % steps, nil
}

// Options are i2c.pca9685's keys.
type Options struct {
	Bus        string `yaml:"bus"`
	Address    int    `yaml:"address"`
	Channel    *int   `yaml:"channel"`
	Mode       string `yaml:"mode"`
	Frequency  int    `yaml:"frequency"`
	MinPulseUS int    `yaml:"min_pulse_us"`
	MaxPulseUS int    `yaml:"max_pulse_us"`
}

type driver struct{}

func (driver) Prepare(o *drivers.Options) drivers.Opener {
	opts := Options{Bus: "1", Address: 0x40, Mode: "led", MinPulseUS: 500, MaxPulseUS: 2500}
	if !o.Decode(&opts) {
		return nil
	}
	if opts.Address < 0x03 || opts.Address > 0x77 {
		o.Problem("address", "must be a 7-bit I2C address from 0x03 to 0x77, got %#x", opts.Address)
	}
	if opts.Channel == nil {
		o.Problem("channel", "is required: 0 to 15")
	} else if *opts.Channel < 0 || *opts.Channel > 15 {
		o.Problem("channel", "must be 0 to 15, got %d", *opts.Channel)
	}
	switch opts.Mode {
	case "led":
		if opts.Frequency == 0 {
			opts.Frequency = 1000
		}
	case "servo":
		if opts.Frequency == 0 {
			opts.Frequency = 50
		}
		period := 1e6 / float64(opts.Frequency)
		if opts.MinPulseUS <= 0 || opts.MaxPulseUS <= opts.MinPulseUS || float64(opts.MaxPulseUS) >= period {
			o.Problem("max_pulse_us", "servo pulses need 0 < min_pulse_us (%d) < max_pulse_us (%d) < the period (%.0f µs)", opts.MinPulseUS, opts.MaxPulseUS, period)
		}
	default:
		o.Problem("mode", "must be led (brightness 0-100) or servo (angle 0-180), got %q", opts.Mode)
	}
	if opts.Frequency < minFreqHz || opts.Frequency > maxFreqHz {
		o.Problem("frequency", "must be %d to %d Hz, got %d", minFreqHz, maxFreqHz, opts.Frequency)
	}
	if o.Failed() {
		return nil
	}
	return drivers.OpenerFunc(func(_ context.Context, hw *drivers.Hardware) (drivers.Actuator, error) {
		v, err := hw.Shared(fmt.Sprintf("pca9685/%s/%#x", opts.Bus, opts.Address), func() (any, error) {
			bus, err := hw.I2C(opts.Bus)
			if err != nil {
				return nil, err
			}
			return NewChip(bus, uint16(opts.Address)), nil
		})
		if err != nil {
			return nil, err
		}
		return NewChannel(v.(*Chip), *opts.Channel, opts)
	})
}

// Channel is one output of a PCA9685: a dimmable light or a servo.
type Channel struct {
	chip *Chip
	ch   int
	opts Options
}

// NewChannel initialises the chip (once) and returns the channel.
func NewChannel(chip *Chip, ch int, opts Options) (*Channel, error) {
	if err := chip.Init(opts.Frequency); err != nil {
		return nil, err
	}
	return &Channel{chip: chip, ch: ch, opts: opts}, nil
}

func (c *Channel) key() string {
	if c.opts.Mode == "servo" {
		return "angle"
	}
	return "brightness"
}

// Schema is {"brightness": 0..100} or {"angle": 0..180}.
func (c *Channel) Schema() drivers.Schema {
	if c.opts.Mode == "servo" {
		return drivers.Schema{"angle": {Kind: drivers.Int, Min: drivers.Ptr(0), Max: drivers.Ptr(180)}}
	}
	// Whole percent and whole degrees: both survive the 12-bit round trip
	// through the registers exactly, so Read verifies what Apply set.
	return drivers.Schema{"brightness": {Kind: drivers.Int, Min: drivers.Ptr(0), Max: drivers.Ptr(100)}}
}

// Apply sets the duty for the brightness or angle.
func (c *Channel) Apply(_ context.Context, s drivers.State) error {
	v, ok := s[c.key()].(int64)
	if !ok {
		return nil
	}
	return c.chip.SetDuty(c.ch, c.duty(float64(v)))
}

// duty converts a brightness (percent) or an angle (degrees) to 1/4096.
func (c *Channel) duty(v float64) int {
	if c.opts.Mode == "servo" {
		pulse := float64(c.opts.MinPulseUS) + v/180*float64(c.opts.MaxPulseUS-c.opts.MinPulseUS)
		period := 1e6 / float64(c.opts.Frequency)
		return int(math.Round(pulse / period * steps))
	}
	return int(math.Round(v / 100 * steps))
}

// Read reads the channel's registers back.
func (c *Channel) Read(context.Context) (drivers.State, error) {
	d, err := c.chip.Duty(c.ch)
	if err != nil {
		return nil, err
	}
	if c.opts.Mode == "servo" {
		period := 1e6 / float64(c.opts.Frequency)
		pulse := float64(d) / steps * period
		angle := (pulse - float64(c.opts.MinPulseUS)) / float64(c.opts.MaxPulseUS-c.opts.MinPulseUS) * 180
		return drivers.State{"angle": int64(math.Round(math.Max(0, math.Min(180, angle))))}, nil
	}
	return drivers.State{"brightness": int64(math.Round(float64(d) / steps * 100))}, nil
}

// Close leaves the output as it is.
func (c *Channel) Close() error { return nil }
