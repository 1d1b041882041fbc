package i2c_test

import (
	"context"
	"strings"
	"testing"

	"periph.io/x/conn/v3/i2c/i2ctest"

	"github.com/shadowgate/shadowgate/agent/config"
	"github.com/shadowgate/shadowgate/drivers"
	"github.com/shadowgate/shadowgate/drivers/i2c"
)

func TestPrescaleFromTheDatasheet(t *testing.T) {
	// PRE_SCALE = round(25 MHz / (4096 × f)) − 1: 200 Hz is 0x1E (the
	// datasheet's example), 50 Hz is 121, and the limits are 3 and 255.
	for f, want := range map[int]byte{200: 0x1E, 50: 121, 1526: 3, 24: 253, 1000: 5} {
		if got := i2c.Prescale(f); got != want {
			t.Errorf("%d Hz: %d, want %d", f, got, want)
		}
	}
}

// The exact register traffic of initialising a chip at 1 kHz and driving
// a dimmer and a servo on two channels of it.
func TestRegisterWrites(t *testing.T) {
	bus := &i2ctest.Playback{Ops: []i2ctest.IO{
		{Addr: 0x40, W: []byte{0x01, 0x04}},             // MODE2: OUTDRV
		{Addr: 0x40, W: []byte{0x00}, R: []byte{0x11}},  // read MODE1 (power-on: SLEEP|ALLCALL)
		{Addr: 0x40, W: []byte{0x00, 0x11}},             // sleep
		{Addr: 0x40, W: []byte{0xFE, 121}},              // PRE_SCALE for 50 Hz
		{Addr: 0x40, W: []byte{0x00, 0x21}},             // wake, auto-increment
		{Addr: 0x40, W: []byte{0x00, 0xA1}},             // restart
		{Addr: 0x40, W: []byte{0x06, 0, 0, 0x66, 0x06}}, // ch0 40%: OFF = 1638 (0x666)
		{Addr: 0x40, W: []byte{0x06}, R: []byte{0, 0, 0x66, 0x06}},
		{Addr: 0x40, W: []byte{0x06, 0, 0x10, 0, 0}},    // ch0 100%: full on
		{Addr: 0x40, W: []byte{0x06, 0, 0, 0, 0x10}},    // ch0 0%: full off
		{Addr: 0x40, W: []byte{0x0A, 0, 0, 0x33, 0x01}}, // ch1 servo 90°: 1500 µs of 20 ms = 307
		{Addr: 0x40, W: []byte{0x0A}, R: []byte{0, 0, 0x33, 0x01}},
	}}
	chip := i2c.NewChip(bus, 0x40)
	ctx := context.Background()
	ch0, err := i2c.NewChannel(chip, 0, i2c.Options{Mode: "led", Frequency: 50})
	if err != nil {
		t.Fatal(err)
	}
	ch1, err := i2c.NewChannel(chip, 1, i2c.Options{Mode: "servo", Frequency: 50, MinPulseUS: 500, MaxPulseUS: 2500})
	if err != nil {
		t.Fatal(err) // a second channel does not initialise the chip again
	}
	if err := ch0.Apply(ctx, drivers.State{"brightness": int64(40)}); err != nil {
		t.Fatal(err)
	}
	if st, err := ch0.Read(ctx); err != nil || st["brightness"] != int64(40) {
		t.Fatalf("read back %v %v", st, err)
	}
	ch0.Apply(ctx, drivers.State{"brightness": int64(100)})
	ch0.Apply(ctx, drivers.State{"brightness": int64(0)})
	ch1.Apply(ctx, drivers.State{"angle": int64(90)})
	if st, _ := ch1.Read(ctx); st["angle"] != int64(90) {
		t.Fatalf("servo read back %v", st)
	}
	if err := bus.Close(); err != nil {
		t.Fatal(err) // every expected operation happened
	}
	if _, err := i2c.NewChannel(chip, 2, i2c.Options{Mode: "led", Frequency: 1000}); err == nil || !strings.Contains(err.Error(), "share one frequency") {
		t.Fatalf("a second frequency on one chip: %v", err)
	}
}

func TestOptionProblems(t *testing.T) {
	y := `
gateway: {thing: gw}
cloud: {broker: "tcp://127.0.0.1:1883"}
actuators:
  a: {driver: i2c.pca9685, channel: 16}
  b: {driver: i2c.pca9685, channel: 0, address: 0x80}
  c: {driver: i2c.pca9685}
  d: {driver: i2c.pca9685, channel: 1, mode: strobe}
  e: {driver: i2c.pca9685, channel: 2, frequency: 2000}
  f: {driver: i2c.pca9685, channel: 3, mode: servo, min_pulse_us: 2500, max_pulse_us: 500}
`
	_, err := config.Parse("t.yaml", []byte(y), drivers.Check)
	if err == nil {
		t.Fatal("accepted")
	}
	for _, w := range []string{
		"t.yaml:5: actuators.a.channel: must be 0 to 15, got 16",
		"t.yaml:6: actuators.b.address: must be a 7-bit I2C address from 0x03 to 0x77, got 0x80",
		"t.yaml:7: actuators.c.channel: is required",
		`t.yaml:8: actuators.d.mode: must be led (brightness 0-100) or servo (angle 0-180), got "strobe"`,
		"t.yaml:9: actuators.e.frequency: must be 24 to 1526 Hz, got 2000",
		"t.yaml:10: actuators.f.max_pulse_us: servo pulses need",
	} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("missing %q in\n%v", w, err)
		}
	}
}
