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
		x, ok := toFloat(v)
		if !ok {
			return nil, fmt.Errorf("wants a number, got %s", show(v))
		}
		if f.Kind == Int && x != math.Trunc(x) {
			return nil, fmt.Errorf("wants a whole number, got %v", x)
		}
		if f.Min != nil && x < *f.Min || f.Max != nil && x > *f.Max {
			return nil, fmt.Errorf("must be within %s, got %v", f.rangeText(), x)
		}
		if f.Kind == Int {
			return int64(x), nil
		}
		return x, nil
	}
	return nil, fmt.Errorf("has unknown kind %q", f.Kind)
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
