package config

import (
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// decoder walks a yaml.Node tree into Go values strictly: unknown keys,
// duplicate keys and wrong types are problems, all of them are collected, and
// the line of every key path is remembered for later validation messages.
//
// A struct field tagged `yaml:",remain"` of type *yaml.Node receives the keys
// the struct does not know, as a mapping node with their lines intact: that is
// how a driver's own options reach the driver.
type decoder struct {
	r *Reporter
}

// unmarshaler is implemented by leaf types with their own syntax (durations,
// sizes); the error message is shown to the technician as it is.
type unmarshaler interface {
	UnmarshalYAML(n *yaml.Node) error
}

var (
	nodeType        = reflect.TypeOf((*yaml.Node)(nil))
	unmarshalerType = reflect.TypeOf((*unmarshaler)(nil)).Elem()
)

func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	d.r.lines[path] = n.Line
	if v.Type() == nodeType {
		v.Set(reflect.ValueOf(n))
		return
	}
	if reflect.PointerTo(v.Type()).Implements(unmarshalerType) {
		if isNull(n) {
			return
		}
		if err := v.Addr().Interface().(unmarshaler).UnmarshalYAML(n); err != nil {
			d.r.Addf(n.Line, path, "%v", err)
		}
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		if isNull(n) {
			return
		}
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.decode(n, v.Elem(), path)
	case reflect.Struct:
		d.decodeStruct(n, v, path)
	case reflect.Map:
		d.decodeMap(n, v, path)
	case reflect.Slice:
		d.decodeSlice(n, v, path)
	case reflect.Interface:
		d.decodeAny(n, v, path)
	default:
		d.decodeScalar(n, v, path)
	}
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if isNull(n) {
			return "nothing"
		}
		return fmt.Sprintf("%q", n.Value)
	}
	return "something else"
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	if isNull(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.r.Addf(n.Line, path, "want a mapping of keys, got %s", kindName(n))
		return
	}
	t := v.Type()
	fields := map[string]int{}
	remain := -1
	var known []string
	for i := 0; i < t.NumField(); i++ {
		name, opt, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		switch {
		case opt == "remain":
			remain = i
		case name != "" && name != "-":
			fields[name] = i
			known = append(known, name)
		}
	}
	var rest *yaml.Node
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		sub := join(path, k.Value)
		if first, dup := seen[k.Value]; dup {
			d.r.Addf(k.Line, sub, "duplicate key (first written at line %d)", first)
			continue
		}
		seen[k.Value] = k.Line
		idx, ok := fields[k.Value]
		if !ok {
			if remain >= 0 {
				if rest == nil {
					rest = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: n.Line, Column: n.Column}
				}
				rest.Content = append(rest.Content, k, val)
				d.r.lines[sub] = k.Line
				continue
			}
			msg := fmt.Sprintf("unknown key %q", k.Value)
			if s := suggest(k.Value, known); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			d.r.Addf(k.Line, path, "%s", msg)
			continue
		}
		d.r.lines[sub] = k.Line
		d.decode(val, v.Field(idx), sub)
		d.r.lines[sub] = k.Line
	}
	if remain >= 0 {
		if rest == nil {
			rest = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: n.Line, Column: n.Column}
		}
		v.Field(remain).Set(reflect.ValueOf(rest))
	}
}

func (d *decoder) decodeMap(n *yaml.Node, v reflect.Value, path string) {
	if isNull(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.r.Addf(n.Line, path, "want a mapping, got %s", kindName(n))
		return
	}
	if v.IsNil() {
		v.Set(reflect.MakeMap(v.Type()))
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		sub := join(path, k.Value)
		if first, dup := seen[k.Value]; dup {
			d.r.Addf(k.Line, sub, "duplicate key (first written at line %d)", first)
			continue
		}
		seen[k.Value] = k.Line
		elem := reflect.New(v.Type().Elem()).Elem()
		d.decode(val, elem, sub)
		d.r.lines[sub] = k.Line
		v.SetMapIndex(reflect.ValueOf(k.Value).Convert(v.Type().Key()), elem)
	}
}

func (d *decoder) decodeSlice(n *yaml.Node, v reflect.Value, path string) {
	if isNull(n) {
		return
	}
	if n.Kind != yaml.SequenceNode {
		d.r.Addf(n.Line, path, "want a list, got %s", kindName(n))
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		d.decode(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
	}
	v.Set(s)
}

// decodeAny reads free-form values (actuator states) as JSON values, the form
// the shadow and the drivers use: numbers become json.Number.
func (d *decoder) decodeAny(n *yaml.Node, v reflect.Value, path string) {
	var x any
	if err := n.Decode(&x); err != nil {
		d.r.Addf(n.Line, path, "%v", cleanYAMLError(err))
		return
	}
	b, err := json.Marshal(jsonable(x))
	if err != nil {
		d.r.Addf(n.Line, path, "value cannot be used as JSON: %v", err)
		return
	}
	var out any
	if err := unmarshalJSON(b, &out); err != nil {
		d.r.Addf(n.Line, path, "value cannot be used as JSON: %v", err)
		return
	}
	if out != nil {
		v.Set(reflect.ValueOf(out))
	}
}

// jsonable turns yaml.v3's map[any]any (non-string keys) into string keys.
func jsonable(x any) any {
	switch x := x.(type) {
	case map[string]any:
		for k, v := range x {
			x[k] = jsonable(v)
		}
		return x
	case map[any]any:
		m := make(map[string]any, len(x))
		for k, v := range x {
			m[fmt.Sprint(k)] = jsonable(v)
		}
		return m
	case []any:
		for i, v := range x {
			x[i] = jsonable(v)
		}
		return x
	}
	return x
}

func (d *decoder) decodeScalar(n *yaml.Node, v reflect.Value, path string) {
	if isNull(n) {
		return
	}
	if n.Kind != yaml.ScalarNode {
		d.r.Addf(n.Line, path, "want a single value, got %s", kindName(n))
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(n.Value)
	case reflect.Bool:
		b, err := strconv.ParseBool(n.Value)
		if err != nil || n.ShortTag() == "!!str" && n.Style != 0 {
			d.r.Addf(n.Line, path, "want true or false, got %q", n.Value)
			return
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		i, err := strconv.ParseInt(strings.ReplaceAll(n.Value, "_", ""), 0, v.Type().Bits())
		if err != nil {
			d.r.Addf(n.Line, path, "want a whole number, got %q", n.Value)
			return
		}
		v.SetInt(i)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		u, err := strconv.ParseUint(strings.ReplaceAll(n.Value, "_", ""), 0, v.Type().Bits())
		if err != nil {
			d.r.Addf(n.Line, path, "want a whole number ≥ 0, got %q", n.Value)
			return
		}
		v.SetUint(u)
	case reflect.Float32, reflect.Float64:
		f, err := strconv.ParseFloat(n.Value, v.Type().Bits())
		if err != nil {
			d.r.Addf(n.Line, path, "want a number, got %q", n.Value)
			return
		}
		v.SetFloat(f)
	default:
		d.r.Addf(n.Line, path, "cannot hold a value of kind %s", v.Kind())
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// cleanYAMLError strips yaml.v3's prefix from an error message.
func cleanYAMLError(err error) string {
	msg := err.Error()
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		return m[2]
	}
	return strings.TrimPrefix(msg, "yaml: ")
}

// Decode reads node strictly into v (a pointer to a struct with yaml tags),
// reporting problems under path. Drivers use it for their options, so that
// their keys get the same checks and messages as the rest of the file.
func (r *Reporter) Decode(node *yaml.Node, path string, v any) {
	if node == nil {
		return
	}
	(&decoder{r: r}).decode(node, reflect.ValueOf(v).Elem(), path)
}

// Failed reports whether any problem has been recorded under path.
func (r *Reporter) Failed(path string) bool {
	for _, p := range r.list {
		if p.Path == path || strings.HasPrefix(p.Path, path+".") {
			return true
		}
	}
	return false
}
