package ctl

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// parseArgs parses flags wherever they stand among the arguments (so that
// `rollback porch_light --steps 2` works) and returns the positional ones.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	if described(fs, args) {
		return nil, errDescribed
	}
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, usagef("%v", err)
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if rest[0] == "--" {
			return append(pos, rest[1:]...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// parseAssignments turns key=value arguments into a JSON object. Values are
// JSON where they parse as JSON (true, 12, 1.5, null, "x", {...}), strings
// otherwise; a dotted key (porch_light.on=true) builds nested objects.
func parseAssignments(args []string) (map[string]any, error) {
	out := map[string]any{}
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			return nil, usagef("%q is not key=value", a)
		}
		val := parseValue(v)
		parts := strings.Split(k, ".")
		m := out
		for i, p := range parts {
			if p == "" {
				return nil, usagef("%q has an empty key part", a)
			}
			if i == len(parts)-1 {
				m[p] = val
				break
			}
			next, ok := m[p].(map[string]any)
			if !ok {
				if _, taken := m[p]; taken {
					return nil, usagef("%q: %s is already a value", a, strings.Join(parts[:i+1], "."))
				}
				next = map[string]any{}
				m[p] = next
			}
			m = next
		}
	}
	return out, nil
}

func parseValue(v string) any {
	if v == "" {
		return ""
	}
	if _, err := strconv.ParseFloat(v, 64); err == nil {
		return json.Number(v)
	}
	var x any
	if json.Unmarshal([]byte(v), &x) == nil {
		return x
	}
	return v
}

// printJSON writes v indented.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// compact renders a value as one line of JSON.
func compact(v any) string {
	if v == nil {
		return "-"
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}
