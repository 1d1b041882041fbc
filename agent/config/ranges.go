package config

import "sort"

// ArgRange is the range of values the declared command types may set one
// actuator key to through an argument: a key set to "{speed}" takes the
// min and max of arg speed. Nil is unbounded.
type ArgRange struct {
	Min, Max *float64
	// Commands names the command types the range comes from.
	Commands []string
}

// ArgRanges returns, per actuator and key, the range the command types'
// arguments allow, so that a technician's local set is held to the same
// limits as SET_SPEED. A key several types set through ranged arguments
// gets the widest range of them; a type whose argument has no bound leaves
// that side unbounded. Keys no argument sets are absent.
func (c *Config) ArgRanges() map[string]map[string]ArgRange {
	out := map[string]map[string]ArgRange{}
	names := make([]string, 0, len(c.Commands.Types))
	for n := range c.Commands.Types {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		ct := c.Commands.Types[name]
		if ct == nil {
			continue
		}
		targets := map[string]map[string]any{}
		if ct.Actuator != "" {
			targets[ct.Actuator] = ct.Set
		} else {
			for act, st := range ct.Set {
				if m, ok := st.(map[string]any); ok {
					targets[act] = m
				}
			}
		}
		for act, st := range targets {
			for key, v := range st {
				s, ok := v.(string)
				if !ok {
					continue
				}
				m := placeholderRE.FindStringSubmatch(s)
				if m == nil {
					continue
				}
				spec, ok := ct.Args[m[1]]
				if !ok || spec.Type != "int" && spec.Type != "number" || spec.Min == nil && spec.Max == nil {
					continue
				}
				if out[act] == nil {
					out[act] = map[string]ArgRange{}
				}
				r, seen := out[act][key]
				if !seen {
					r = ArgRange{Min: spec.Min, Max: spec.Max}
				} else {
					r.Min = wider(r.Min, spec.Min, func(a, b float64) bool { return a < b })
					r.Max = wider(r.Max, spec.Max, func(a, b float64) bool { return a > b })
				}
				r.Commands = append(r.Commands, name)
				out[act][key] = r
			}
		}
	}
	return out
}

// wider is the wider of two bounds (nil, unbounded, is widest).
func wider(a, b *float64, beyond func(a, b float64) bool) *float64 {
	if a == nil || b == nil {
		return nil
	}
	if beyond(*b, *a) {
		return b
	}
	return a
}
