package gpio_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"

	"github.com/shadowgate/shadowgate/agent/config"
	"github.com/shadowgate/shadowgate/drivers"
	sggpio "github.com/shadowgate/shadowgate/drivers/gpio"
)

func TestRelay(t *testing.T) {
	ctx := context.Background()
	pin := &gpiotest.Pin{N: "GPIO17", Num: 17, L: gpio.High} // active low: high = off
	r, err := sggpio.NewRelay(pin, true, 0)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := r.Read(ctx); st["on"] != false {
		t.Fatalf("initial %v", st)
	}
	r.Apply(ctx, drivers.State{"on": true})
	if pin.Read() != gpio.Low {
		t.Fatal("active-low relay not driven low for on")
	}
	if st, _ := r.Read(ctx); st["on"] != true {
		t.Fatalf("read %v", st)
	}
	r.Apply(ctx, drivers.State{"on": false})
	if pin.Read() != gpio.High {
		t.Fatal("not released")
	}
}

func TestPulseRelay(t *testing.T) {
	ctx := context.Background()
	pin := &gpiotest.Pin{N: "GPIO5", Num: 5}
	r, _ := sggpio.NewRelay(pin, false, 30*time.Millisecond)
	start := time.Now()
	if err := r.Apply(ctx, drivers.State{"on": true}); err != nil {
		t.Fatal(err)
	}
	if time.Since(start) < 30*time.Millisecond || pin.Read() != gpio.Low {
		t.Fatal("pulse did not last or did not end")
	}
	if st, _ := r.Read(ctx); st["on"] != true {
		t.Fatalf("a pulse relay reports the last request: %v", st)
	}
}

// bolt moves the sensor to follow the output after a delay, like a motor
// bolt; stuck bolts never move.
func bolt(out, sensor *gpiotest.Pin, delay time.Duration, stuck bool, stop chan struct{}) {
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			if stuck {
				continue
			}
			want := out.Read() // high = locked; sensor active low: low = locked
			time.Sleep(delay)
			sensor.Lock()
			sensor.L = !want
			sensor.Unlock()
		}
	}()
}

func TestLockConfirmedAndNotConfirmed(t *testing.T) {
	ctx := context.Background()
	out := &gpiotest.Pin{N: "GPIO27", Num: 27, L: gpio.High}
	sensor := &gpiotest.Pin{N: "GPIO22", Num: 22, L: gpio.Low}
	stop := make(chan struct{})
	defer close(stop)
	bolt(out, sensor, 20*time.Millisecond, false, stop)
	l, err := sggpio.NewLock(out, false, sensor, true, 500*time.Millisecond, 0)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(60 * time.Millisecond) // the pull-up moved the fake sensor; the bolt puts it back
	if st, _ := l.Read(ctx); st["locked"] != true {
		t.Fatalf("initial %v", st)
	}
	if err := l.Apply(ctx, drivers.State{"locked": false}); err != nil {
		t.Fatal(err)
	}
	if st, _ := l.Read(ctx); st["locked"] != false {
		t.Fatalf("after unlock %v", st)
	}

	jammed := &gpiotest.Pin{N: "GPIO23", Num: 23, L: gpio.Low}
	l2, _ := sggpio.NewLock(&gpiotest.Pin{N: "GPIO24", Num: 24, L: gpio.High}, false, jammed, true, 100*time.Millisecond, 0)
	jammed.Lock()
	jammed.L = gpio.Low // the bolt is stuck in the locked position
	jammed.Unlock()
	err = l2.Apply(ctx, drivers.State{"locked": false})
	if !errors.Is(err, sggpio.ErrNotConfirmed) || !strings.Contains(err.Error(), "not confirmed") {
		t.Fatalf("jammed bolt: %v", err)
	}
}

func TestRelockFollowUp(t *testing.T) {
	l, _ := sggpio.NewLock(&gpiotest.Pin{N: "GPIO27"}, false, nil, false, time.Second, 10*time.Second)
	next, after, ok := l.FollowUp(drivers.State{"locked": false})
	if !ok || after != 10*time.Second || next["locked"] != true {
		t.Fatalf("follow-up %v %v %v", next, after, ok)
	}
	if _, _, ok := l.FollowUp(drivers.State{"locked": true}); ok {
		t.Fatal("relock after a lock")
	}
}

func TestOptionProblems(t *testing.T) {
	y := `
gateway: {thing: gw}
cloud: {broker: "tcp://127.0.0.1:1883"}
actuators:
  a: {driver: gpio.relay, pin: GPIO99}
  b: {driver: gpio.relay}
  c: {driver: gpio.lock, pin: GPIO27, sensor: GPIO27}
  d: {driver: gpio.lock, pin: GPIO4, confirm_timeout: 5m, pinn: 3}
  e: {driver: gpio.relay, pin: 17, pulse: -1s}
`
	_, err := config.Parse("t.yaml", []byte(y), drivers.Check)
	if err == nil {
		t.Fatal("accepted")
	}
	for _, w := range []string{
		`t.yaml:5: actuators.a.pin: no such GPIO "GPIO99"`,
		`t.yaml:6: actuators.b.pin: is required`,
		`t.yaml:7: actuators.c.sensor: is the same pin as the output (GPIO27)`,
		`t.yaml:8: actuators.d: unknown key "pinn" (did you mean "pin"?)`,
		`t.yaml:9: actuators.e.pulse: must be between 0s and 1m`,
	} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("missing %q in\n%v", w, err)
		}
	}
}

func TestOpenWithFakeHardware(t *testing.T) {
	y := `
gateway: {thing: gw}
cloud: {broker: "tcp://127.0.0.1:1883"}
actuators:
  light: {driver: gpio.relay, pin: "17", active_low: true}
`
	c, err := config.Parse("t.yaml", []byte(y), drivers.Check)
	if err != nil {
		t.Fatal(err)
	}
	p, err := drivers.Prepare(c)
	if err != nil {
		t.Fatal(err)
	}
	pins := map[string]*gpiotest.Pin{"GPIO17": {N: "GPIO17", Num: 17, L: gpio.High}}
	hw := &drivers.Hardware{GPIO: func(name string) (gpio.PinIO, error) {
		if p, ok := pins[name]; ok {
			return p, nil
		}
		return nil, errors.New("no such pin")
	}}
	a, err := p["light"].Open(context.Background(), hw)
	if err != nil {
		t.Fatal(err)
	}
	a.Apply(context.Background(), drivers.State{"on": true})
	if pins["GPIO17"].Read() != gpio.Low {
		t.Fatal("pin name 17 did not resolve to GPIO17")
	}
}
