package drivers_test

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/shadowgate/shadowgate/drivers"
)

// Numbers outside what a field can hold are refused like 2.5 for an int,
// with or without a configured range: float64 → int64 must never wrap
// (1e19 once drove a motor to -9223372036854775808).
func TestSchemaCheckRefusesOutOfRange(t *testing.T) {
	sc := drivers.Schema{
		"speed": {Kind: drivers.Int},
		"duty":  {Kind: drivers.Int, Min: drivers.Ptr(0), Max: drivers.Ptr(100)},
		"level": {Kind: drivers.Number},
	}
	for _, tc := range []struct {
		key  string
		v    any
		want string
	}{
		{"speed", json.Number("1e19"), "out of range"},
		{"speed", json.Number("1e308"), "out of range"},
		{"speed", json.Number("-1e300"), "out of range"},
		{"speed", json.Number("9223372036854775808"), "out of range"},
		{"speed", json.Number("-9223372036854775809"), "out of range"},
		{"speed", json.Number("1e400"), "out of range"},
		{"speed", 1e19, "out of range"},
		{"speed", math.Inf(1), "out of range"},
		{"speed", math.NaN(), "wants a number"},
		{"speed", uint64(1 << 63), "out of range"},
		{"duty", json.Number("1e19"), "must be within 0..100, got 1e19"},
		{"level", json.Number("1e400"), "out of range"},
		{"level", json.Number("-1e400"), "out of range"},
		{"level", math.Inf(-1), "out of range"},
		{"level", math.NaN(), "wants a number"},
		{"speed", json.Number("2.5"), "whole number"},
	} {
		_, err := sc.Check(drivers.State{tc.key: tc.v})
		if !errors.Is(err, drivers.ErrBadState) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s=%v: want ErrBadState with %q, got %v", tc.key, tc.v, tc.want, err)
		}
	}
	// What an int64 holds is accepted exactly, however it is written.
	for in, want := range map[json.Number]int64{
		"9223372036854775807":  math.MaxInt64,
		"-9223372036854775808": math.MinInt64,
		"40":                   40,
		"40.0":                 40,
		"1e3":                  1000,
		"-0":                   0,
	} {
		got, err := sc.Check(drivers.State{"speed": in})
		if err != nil || got["speed"] != want {
			t.Errorf("speed=%s: got %v (%T), %v; want %d", in, got["speed"], got["speed"], err, want)
		}
	}
	if got, err := sc.Check(drivers.State{"level": json.Number("1e308")}); err != nil || got["level"] != 1e308 {
		t.Errorf("level=1e308 is a float64: got %v, %v", got, err)
	}
}
