package serial_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/shadowgate/shadowgate/drivers"
	"github.com/shadowgate/shadowgate/drivers/serial"
)

// A register holds 16 bits (32 with words: 2): a value it cannot hold is
// refused by the schema, with or without a configured min/max, instead of
// being written wrapped (70000 as 4464, -1 as 65535).
func TestModbusSchemaHasTheRegisterRange(t *testing.T) {
	reg := func(words int, scale float64, lo, hi *float64) serial.Register {
		h := 1
		return serial.Register{Holding: &h, Words: words, Scale: scale, Min: lo, Max: hi}
	}
	m := serial.NewModbus(&drivers.Hardware{}, serial.ModbusOptions{Baud: 9600, Registers: map[string]serial.Register{
		"speed":  reg(1, 1, nil, nil),
		"temp":   reg(1, 10, nil, nil),
		"count":  reg(2, 1, nil, nil),
		"narrow": reg(1, 1, drivers.Ptr(10), drivers.Ptr(20)),
		"wide":   reg(1, 1, drivers.Ptr(-5), drivers.Ptr(1e9)),
	}})
	sc := m.Schema()
	for key, bad := range map[string][]string{
		"speed":  {"65536", "-1", "1e19"},
		"temp":   {"6553.6", "-0.1"},
		"count":  {"2147483648", "-2147483649"},
		"narrow": {"9", "21"},
		"wide":   {"-1", "65536"},
	} {
		for _, v := range bad {
			if _, err := sc.Check(drivers.State{key: json.Number(v)}); !errors.Is(err, drivers.ErrBadState) || !strings.Contains(err.Error(), "must be within") {
				t.Errorf("%s=%s: want a range error, got %v", key, v, err)
			}
		}
	}
	for key, good := range map[string][]string{
		"speed": {"0", "65535"}, "temp": {"6553.5", "0"}, "count": {"-2147483648", "2147483647"}, "narrow": {"10", "20"}, "wide": {"0", "65535"},
	} {
		for _, v := range good {
			if _, err := sc.Check(drivers.State{key: json.Number(v)}); err != nil {
				t.Errorf("%s=%s: %v", key, v, err)
			}
		}
	}
}
