package shadow

import (
	"encoding/json"
	"math"
	"unicode/utf8"
)

// Values inside a shadow are what encoding/json produces with UseNumber:
// map[string]any, []any, json.Number, string, bool. Stored maps are never
// mutated in place: every change builds new maps along the touched path and
// shares the untouched subtrees, so a Shadow can be copied cheaply and a
// rejected update leaves nothing behind.

// Equal reports whether two JSON values are the same. Numbers compare by
// value, so 60 equals 60.0.
func Equal(a, b any) bool {
	switch av := a.(type) {
	case map[string]any:
		bv, ok := b.(map[string]any)
		if !ok || len(av) != len(bv) {
			return false
		}
		for k, x := range av {
			y, ok := bv[k]
			if !ok || !Equal(x, y) {
				return false
			}
		}
		return true
	case []any:
		bv, ok := b.([]any)
		if !ok || len(av) != len(bv) {
			return false
		}
		for i := range av {
			if !Equal(av[i], bv[i]) {
				return false
			}
		}
		return true
	case json.Number:
		bv, ok := b.(json.Number)
		return ok && numbersEqual(av, bv)
	case float64:
		bv, ok := b.(float64)
		return ok && av == bv
	default:
		return a == b
	}
}

func numbersEqual(a, b json.Number) bool {
	if a == b {
		return true
	}
	ai, aerr := a.Int64()
	bi, berr := b.Int64()
	if aerr == nil && berr == nil {
		return ai == bi
	}
	af, aerr := a.Float64()
	bf, berr := b.Float64()
	return aerr == nil && berr == nil && af == bf && !math.IsNaN(af)
}

// merge applies patch to base the AWS way and returns the result: objects
// merge recursively, arrays and scalars replace, null deletes the key, and
// only null deletes: an empty object is a value like any other, and an
// object emptied by deletes stays (as {}). base is not modified. meta is the
// metadata tree of base; the returned metadata has a {"timestamp":ts} for
// every leaf the patch wrote.
func merge(base, meta, patch map[string]any, ts int64) (map[string]any, map[string]any) {
	out := make(map[string]any, len(base)+len(patch))
	for k, v := range base {
		out[k] = v
	}
	outMeta := make(map[string]any, len(meta)+len(patch))
	for k, v := range meta {
		outMeta[k] = v
	}
	for k, pv := range patch {
		switch pv := pv.(type) {
		case nil:
			delete(out, k)
			delete(outMeta, k)
		case map[string]any:
			if bv, ok := out[k].(map[string]any); ok {
				bm, _ := outMeta[k].(map[string]any)
				out[k], outMeta[k] = merge(bv, bm, pv, ts)
				continue
			}
			// A new object (or one replacing a scalar or an array): the
			// nulls in it delete nothing and are dropped, and an object that
			// held only nulls is not created.
			v, ok := prune(pv)
			if !ok {
				continue
			}
			out[k], outMeta[k] = v, leafMeta(v, ts)
		default:
			out[k] = pv
			outMeta[k] = leafMeta(pv, ts)
		}
	}
	return out, outMeta
}

// prune drops the nulls of a new object, recursively. It returns false for
// an object that had nulls and nothing else (an empty object as such is
// kept: {} is a value).
func prune(m map[string]any) (map[string]any, bool) {
	out := make(map[string]any, len(m))
	hadNull := false
	for k, v := range m {
		switch v := v.(type) {
		case nil:
			hadNull = true
		case map[string]any:
			sub, ok := prune(v)
			if !ok {
				hadNull = true
				continue
			}
			out[k] = sub
		default:
			out[k] = v
		}
	}
	if hadNull && len(out) == 0 {
		return nil, false
	}
	return out, true
}

// leafMeta is the metadata of a value written at ts: {"timestamp":ts} for a
// scalar, the same shape for objects and arrays, element by element.
func leafMeta(v any, ts int64) any {
	switch v := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, x := range v {
			if x != nil {
				m[k] = leafMeta(x, ts)
			}
		}
		return m
	case []any:
		a := make([]any, len(v))
		for i, x := range v {
			a[i] = leafMeta(x, ts)
		}
		return a
	default:
		return map[string]any{"timestamp": ts}
	}
}

// touchedMeta is the metadata an accepted message carries for a patch: the
// patch's own shape with a timestamp on every leaf, null deletes included.
func touchedMeta(patch map[string]any, ts int64) map[string]any {
	m := make(map[string]any, len(patch))
	for k, v := range patch {
		if obj, ok := v.(map[string]any); ok {
			m[k] = touchedMeta(obj, ts)
			continue
		}
		if v == nil {
			m[k] = map[string]any{"timestamp": ts}
			continue
		}
		m[k] = leafMeta(v, ts)
	}
	return m
}

// Delta returns the part of desired that differs from reported: keys of
// desired missing from reported or with another value, with the path from
// the root kept; objects compare key by key (so an empty desired object
// differs only from a reported value that is missing or not an object),
// arrays as a whole, numbers by value. It returns nil when they agree.
func Delta(desired, reported map[string]any) map[string]any {
	var d map[string]any
	for k, dv := range desired {
		rv, ok := reported[k]
		var diff any
		if dm, isMap := dv.(map[string]any); isMap {
			if rm, rIsMap := rv.(map[string]any); rIsMap {
				if sub := Delta(dm, rm); sub != nil {
					diff = sub
				}
			} else {
				diff = dv
			}
		} else if !ok || !Equal(dv, rv) {
			diff = dv
		}
		if diff != nil {
			if d == nil {
				d = make(map[string]any)
			}
			d[k] = diff
		}
	}
	return d
}

// project keeps the parts of meta whose keys appear in shape.
func project(meta, shape map[string]any) map[string]any {
	out := make(map[string]any, len(shape))
	for k, sv := range shape {
		mv, ok := meta[k]
		if !ok {
			continue
		}
		sm, sIsMap := sv.(map[string]any)
		mm, mIsMap := mv.(map[string]any)
		if sIsMap && mIsMap && !isLeafMeta(mm) {
			out[k] = project(mm, sm)
			continue
		}
		out[k] = mv
	}
	return out
}

// isLeafMeta tells a leaf's {"timestamp":T} from the metadata of an object
// that happens to have a key named timestamp (whose metadata is an object).
func isLeafMeta(m map[string]any) bool {
	if len(m) != 1 {
		return false
	}
	switch m["timestamp"].(type) {
	case nil, map[string]any, []any:
		return false
	}
	return true
}

// depth is the number of nested object and array levels in v.
func depth(v any) int {
	max := 0
	switch v := v.(type) {
	case map[string]any:
		for _, x := range v {
			if d := depth(x); d > max {
				max = d
			}
		}
		return max + 1
	case []any:
		for _, x := range v {
			if d := depth(x); d > max {
				max = d
			}
		}
		return max + 1
	}
	return 0
}

// emptyToNil returns nil for an empty map: a desired or reported section
// left empty is removed from the document, as AWS removes it (an empty
// object below a section is a value and stays).
func emptyToNil(m map[string]any) map[string]any {
	if len(m) == 0 {
		return nil
	}
	return m
}

// stateSize is what counts toward the 8 KB limit: the compact JSON of
// desired plus that of reported, as AWS's own shadow service counts it
// (metadata does not count). Strings are counted as a minimal JSON encoder
// writes them (UTF-8 as is; quote, backslash and control characters
// escaped), not as encoding/json writes them (it also escapes <, > and &).
// It walks the values instead of encoding them (no allocation).
func stateSize(st State) int {
	n := 0
	if st.Desired != nil {
		n += jsonSize(st.Desired)
	}
	if st.Reported != nil {
		n += jsonSize(st.Reported)
	}
	return n
}

func jsonSize(v any) int {
	switch v := v.(type) {
	case map[string]any:
		n := 2 + max(len(v)-1, 0)
		for k, x := range v {
			n += stringSize(k) + 1 + jsonSize(x)
		}
		return n
	case []any:
		n := 2 + max(len(v)-1, 0)
		for _, x := range v {
			n += jsonSize(x)
		}
		return n
	case string:
		return stringSize(v)
	case json.Number:
		return len(v)
	case bool:
		if v {
			return 4
		}
		return 5
	case nil:
		return 4
	default:
		b, _ := json.Marshal(v)
		return len(b)
	}
}

func stringSize(s string) int {
	n := 2
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		i += size
		switch {
		case r == utf8.RuneError && size == 1:
			n += 3 // invalid UTF-8 would be written as U+FFFD
		case r == '"' || r == '\\' || r == '\n' || r == '\r' || r == '\t' || r == '\b' || r == '\f':
			n += 2
		case r < 0x20:
			n += 6
		default:
			n += size
		}
	}
	return n
}

// Merge applies patch to base with the update rules (objects merge
// recursively, arrays and scalars replace, only null deletes) and returns
// the result, nil when nothing is left; base is not modified. A nil patch
// returns base.
func Merge(base, patch map[string]any) map[string]any {
	if patch == nil {
		return base
	}
	out, _ := merge(base, nil, patch, 0)
	return emptyToNil(out)
}
