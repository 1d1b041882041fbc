package drivers

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// State is an actuator's state as it appears under its key in the shadow:
// {"on":true,"brightness":60}, {"locked":true}, {"position":40}. Numbers are
// json.Number (or float64/int from Go callers).
type State map[string]any

// Clone returns a copy of s (values are scalars).
func (s State) Clone() State {
	if s == nil {
		return nil
	}
	c := make(State, len(s))
	for k, v := range s {
		c[k] = v
	}
	return c
}

// Merge returns s with the keys of patch written over it.
func (s State) Merge(patch State) State {
	c := s.Clone()
	if c == nil {
		c = State{}
	}
	for k, v := range patch {
		c[k] = v
	}
	return c
}

// Kind is the type of one state key.
type Kind string

// Kinds of state values.
const (
	Bool   Kind = "bool"
	Int    Kind = "int"
	Number Kind = "number"
	String Kind = "string"
)

// Field describes one key of a state.
type Field struct {
	Kind     Kind
	Min, Max *float64 // for Int and Number
}

// Schema is the keys an actuator accepts.
type Schema map[string]Field

// ErrBadState is wrapped by every schema violation.
var ErrBadState = errors.New("invalid state")

// Keys returns the schema's keys, sorted.
func (sc Schema) Keys() []string {
	ks := make([]string, 0, len(sc))
	for k := range sc {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// Check validates s against the schema and returns it normalised: integers
// as int64, numbers as float64. Every key must be known and well typed.
func (sc Schema) Check(s State) (State, error) {
	out := make(State, len(s))
	var problems []string
	for _, k := range slices.Sorted(maps.Keys(s)) {
		f, ok := sc[k]
		if !ok {
			problems = append(problems, fmt.Sprintf("unknown key %q (accepts %s)", k, strings.Join(sc.Keys(), ", ")))
			continue
		}
		v, err := f.normalise(s[k])
		if err != nil {
			problems = append(problems, fmt.Sprintf("%q %v", k, err))
			continue
		}
		out[k] = v
	}
	if problems != nil {
		return nil, fmt.Errorf("%w: %s", ErrBadState, strings.Join(problems, "; "))
	}
	return out, nil
}

func (f Field) normalise(v any) (any, error) {
	switch f.Kind {
	case Bool:
		b, ok := v.(bool)
		if !ok {
			return nil, fmt.Errorf("wants true or false, got %s", show(v))
		}
		return b, nil
	case String:
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("wants a string, got %s", show(v))
		}
		return s, nil
	case Int, Number:
		n, err := readNumber(v)
		if err != nil {
			return nil, err
		}
		if f.Kind == Int && n.f != math.Trunc(n.f) {
			return nil, fmt.Errorf("wants a whole number, got %v", n.f)
		}
		if f.Min != nil && n.f < *f.Min || f.Max != nil && n.f > *f.Max {
			return nil, fmt.Errorf("must be within %s, got %s", f.rangeText(), show(v))
		}
		if f.Kind == Int {
			i, ok := n.int64()
			if !ok {
				return nil, fmt.Errorf("is out of range: wants a whole number from %d to %d, got %s", int64(math.MinInt64), int64(math.MaxInt64), show(v))
			}
			return i, nil
		}
		return n.f, nil
	}
	return nil, fmt.Errorf("has unknown kind %q", f.Kind)
}

// num is a number read from a state: f always, and i when the value is an
// integer that i holds exactly (written as digits, or a Go integer), so
// that 9223372036854775807 is not rounded through float64.
type num struct {
	f     float64
	i     int64
	exact bool
	big   bool // digits beyond the int64 range (float64 may round them in)
}

// int64 returns the number as an int64 if one holds it: never a wrapped
// value (float64 → int64 is undefined outside ±2^63 and gives MinInt64).
func (n num) int64() (int64, bool) {
	if n.exact {
		return n.i, true
	}
	if n.big {
		return 0, false
	}
	// -2^63 and 2^63 are exact float64s; the int64 range is [-2^63, 2^63).
	if n.f >= -(1<<63) && n.f < 1<<63 {
		return int64(n.f), true
	}
	return 0, false
}

// readNumber reads a finite number; one too large for any number (1e400,
// ±Inf) is out of range, something else is not a number.
func readNumber(v any) (num, error) {
	outOfRange := func() (num, error) {
		return num{}, fmt.Errorf("is out of range: got %s, beyond what a number can hold", show(v))
	}
	switch n := v.(type) {
	case json.Number:
		i, err := strconv.ParseInt(string(n), 10, 64)
		if err == nil {
			return num{f: float64(i), i: i, exact: true}, nil
		}
		big := errors.Is(err, strconv.ErrRange)
		f, err := strconv.ParseFloat(string(n), 64)
		if math.IsInf(f, 0) {
			return outOfRange()
		}
		if err != nil && !errors.Is(err, strconv.ErrRange) {
			return num{}, fmt.Errorf("wants a number, got %s", show(v))
		}
		return num{f: f, big: big}, nil
	case float64, float32:
		f, _ := toFloat(n)
		if math.IsNaN(f) {
			return num{}, errors.New("wants a number, got NaN")
		}
		if math.IsInf(f, 0) {
			return num{}, fmt.Errorf("is out of range: got %v, beyond what a number can hold", f)
		}
		return num{f: f}, nil
	case int:
		return num{f: float64(n), i: int64(n), exact: true}, nil
	case int64:
		return num{f: float64(n), i: n, exact: true}, nil
	case int32:
		return num{f: float64(n), i: int64(n), exact: true}, nil
	case int16:
		return num{f: float64(n), i: int64(n), exact: true}, nil
	case int8:
		return num{f: float64(n), i: int64(n), exact: true}, nil
	case uint8:
		return num{f: float64(n), i: int64(n), exact: true}, nil
	case uint16:
		return num{f: float64(n), i: int64(n), exact: true}, nil
	case uint32:
		return num{f: float64(n), i: int64(n), exact: true}, nil
	case uint:
		return readNumber(uint64(n))
	case uint64:
		if n <= math.MaxInt64 {
			return num{f: float64(n), i: int64(n), exact: true}, nil
		}
		return num{f: float64(n)}, nil
	}
	return num{}, fmt.Errorf("wants a number, got %s", show(v))
}

func (f Field) rangeText() string {
	lo, hi := "-∞", "∞"
	if f.Min != nil {
		lo = fmt.Sprint(*f.Min)
	}
	if f.Max != nil {
		hi = fmt.Sprint(*f.Max)
	}
	return lo + ".." + hi
}

func toFloat(v any) (float64, bool) {
	switch n := v.(type) {
	case json.Number:
		f, err := n.Float64()
		return f, err == nil
	case float64:
		return n, true
	case float32:
		return float64(n), true
	case int:
		return float64(n), true
	case int64:
		return float64(n), true
	case int32:
		return float64(n), true
	case uint8:
		return float64(n), true
	}
	return 0, false
}

func show(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%v", v)
	}
	return string(b)
}

// Equal reports whether two states hold the same values (numbers by value).
func Equal(a, b State) bool {
	if len(a) != len(b) {
		return false
	}
	for k, av := range a {
		bv, ok := b[k]
		if !ok {
			return false
		}
		af, aNum := toFloat(av)
		bf, bNum := toFloat(bv)
		if aNum && bNum {
			if af != bf {
				return false
			}
			continue
		}
		if !reflect.DeepEqual(av, bv) {
			return false
		}
	}
	return true
}

// Ptr returns a pointer to f, for Field bounds.
func Ptr(f float64) *float64 { return &f }
