package drivers_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/shadowgate/shadowgate/agent/config"
	"github.com/shadowgate/shadowgate/drivers"
	_ "github.com/shadowgate/shadowgate/drivers/all"
)

func TestRegisterTwicePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("registering sim twice did not panic")
		}
	}()
	drivers.Register("sim", nil)
}

func TestExampleConfigsPassDriverChecks(t *testing.T) {
	for _, f := range []string{"../configs/shadowgate.yaml", "../configs/demo.yaml"} {
		c, err := config.Load(f, drivers.Check)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		p, err := drivers.Prepare(c)
		if err != nil || len(p) != len(c.Actuators) {
			t.Fatalf("%s: prepared %d of %d: %v", f, len(p), len(c.Actuators), err)
		}
		for name, op := range p {
			a, err := op.Open(context.Background(), &drivers.Hardware{})
			if err != nil {
				t.Fatalf("%s: open %s: %v", f, name, err)
			}
			if _, err := a.Read(context.Background()); err != nil {
				t.Fatal(err)
			}
			a.Close()
		}
	}
}

func TestDriverOptionProblems(t *testing.T) {
	y := `
gateway: {thing: gw}
cloud: {broker: "tcp://127.0.0.1:1883"}
actuators:
  a: {driver: sim, state: {on: false}, latncy: 5ms}
  b: {driver: sim}
  c: {driver: sim, state: {on: false}, fail_rate: 2}
  d: {driver: gpio.banana}
  e: {driver: sim, state: {x: [1]}}
`
	_, err := config.Parse("t.yaml", []byte(y), drivers.Check)
	if err == nil {
		t.Fatal("accepted")
	}
	for _, w := range []string{
		`t.yaml:5: actuators.a: unknown key "latncy" (did you mean "latency"?)`,
		`t.yaml:6: actuators.b.state: is required`,
		`t.yaml:7: actuators.c.fail_rate: must be between 0 and 1`,
		`t.yaml:8: actuators.d.driver: unknown driver "gpio.banana"`,
		`t.yaml:9: actuators.e.state: key "x": sim states hold booleans, numbers and strings`,
	} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("missing %q in\n%v", w, err)
		}
	}
}

func TestSchemaCheck(t *testing.T) {
	sc := drivers.Schema{
		"on":         {Kind: drivers.Bool},
		"brightness": {Kind: drivers.Int, Min: drivers.Ptr(0), Max: drivers.Ptr(100)},
		"label":      {Kind: drivers.String},
	}
	got, err := sc.Check(drivers.State{"on": true, "brightness": json.Number("60")})
	if err != nil || got["brightness"] != int64(60) {
		t.Fatalf("good state: %v %v", got, err)
	}
	for _, bad := range []drivers.State{
		{"on": "yes"}, {"brightness": json.Number("101")}, {"brightness": json.Number("2.5")},
		{"colour": "red"}, {"label": 3}, {"brightness": nil},
	} {
		if _, err := sc.Check(bad); !errors.Is(err, drivers.ErrBadState) {
			t.Errorf("%v: want ErrBadState, got %v", bad, err)
		}
	}
}

// The hardware examples in configs/shadowgate.yaml are commented out (a
// fresh install has no such hardware); uncommented, they must be valid.
func TestCommentedHardwareExamplesAreValid(t *testing.T) {
	data, err := os.ReadFile("../configs/shadowgate.yaml")
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	start := strings.Index(text, "  # Hardware drivers")
	end := strings.Index(text, "\ncommands:")
	if start < 0 || end < start {
		t.Fatal("hardware examples not found in configs/shadowgate.yaml")
	}
	var b strings.Builder
	b.WriteString("gateway: {thing: gw}\ncloud: {broker: \"tcp://127.0.0.1:1883\"}\nactuators:\n")
	for _, l := range strings.Split(text[start:end], "\n")[1:] {
		rest, ok := strings.CutPrefix(l, "  # ")
		if !ok || strings.TrimSpace(rest) == "" || strings.HasPrefix(strings.TrimSpace(rest), "#") {
			continue
		}
		b.WriteString("  " + rest + "\n")
	}
	c, err := config.Parse("hardware-examples.yaml", []byte(b.String()), drivers.Check)
	if err != nil {
		t.Fatalf("%v\n%s", err, b.String())
	}
	for _, d := range []string{"gpio.relay", "gpio.lock", "serial.line", "serial.modbus", "i2c.pca9685"} {
		found := false
		for _, a := range c.Actuators {
			found = found || a.Driver == d
		}
		if !found {
			t.Errorf("no example for %s", d)
		}
	}
}
