package shadowtest

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shadowgate/shadowgate/agent/shadow"
)

// Options tune RunCorpus.
type Options struct {
	// ThingPrefix starts the thing name made for each entry (default
	// "conf-"), so that several runs can share one service.
	ThingPrefix string
	// Timeout bounds one request (default 20s).
	Timeout time.Duration
}

// RunCorpus runs every corpus entry through d, one subtest per entry. A
// difference fails with the entry's name, its source and both bodies.
func RunCorpus(t *testing.T, d Door, o Options) {
	t.Helper()
	entries := Entries()
	if len(entries) == 0 {
		t.Fatal("empty conformance corpus")
	}
	for i, e := range entries {
		t.Run(e.Name, func(t *testing.T) { runEntry(t, d, o, i, e) })
	}
}

func runEntry(t *testing.T, d Door, o Options, i int, e Entry) {
	if o.ThingPrefix == "" {
		o.ThingPrefix = "conf-"
	}
	if o.Timeout == 0 {
		o.Timeout = 20 * time.Second
	}
	thing := ThingFor(o.ThingPrefix, i, e)
	for n, st := range e.Steps {
		payload, err := st.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), o.Timeout)
		got, err := d.Send(ctx, Request{Thing: thing, Shadow: e.Shadow, Op: st.Op, Payload: payload})
		cancel()
		if err != nil {
			t.Fatalf("%s\nstep %d: %s %s: %v", e.describe(), n, st.Op, abbrev(payload), err)
		}
		if err := CheckStep(st, got, thing, e.Shadow); err != nil {
			t.Fatalf("%s\nstep %d: %s %s\n%v", e.describe(), n, st.Op, abbrev(payload), err)
		}
	}
}

// ThingFor is the thing name the runner uses for entry i.
func ThingFor(prefix string, i int, e Entry) string {
	if e.Thing != "" {
		s, _ := expand(e.Thing).(string)
		return s
	}
	return fmt.Sprintf("%s%03d", prefix, i)
}

func (e *Entry) describe() string {
	s := fmt.Sprintf("entry %q (%s)\nsource: %s", e.Name, e.File, strings.Join(e.Source, "\n        "))
	if e.Note != "" {
		s += "\nnote: " + e.Note
	}
	return s
}

func abbrev(b []byte) string {
	if len(b) > 300 {
		return fmt.Sprintf("%s… (%d bytes)", b[:300], len(b))
	}
	return string(b)
}

// CheckStep compares the responses of one step with what the corpus
// expects. thing and name fill in "${thing}" and "${shadow}".
func CheckStep(st Step, got []Response, thing, name string) error {
	bySuffix := map[shadow.Suffix][]byte{}
	for _, r := range got {
		if _, dup := bySuffix[r.Suffix]; dup {
			return fmt.Errorf("two %q responses:\n got: %s\n and: %s", r.Suffix, bySuffix[r.Suffix], r.Payload)
		}
		bySuffix[r.Suffix] = r.Payload
	}
	var problems []string
	for _, sfx := range sortedSuffixes(st.Expect) {
		g, ok := bySuffix[sfx]
		if !ok {
			problems = append(problems, fmt.Sprintf("no %q response\nwant: %s", sfx, st.Expect[sfx]))
			continue
		}
		if err := Match(g, st.Expect[sfx], thing, name); err != nil {
			problems = append(problems, fmt.Sprintf("%q differs: %v\n got: %s\nwant: %s", sfx, err, g, st.Expect[sfx]))
		}
	}
	for _, sfx := range sortedSuffixes(bySuffix) {
		if _, ok := st.Expect[sfx]; !ok {
			problems = append(problems, fmt.Sprintf("unexpected %q response\n got: %s", sfx, bySuffix[sfx]))
		}
	}
	if problems != nil {
		return fmt.Errorf("%s", strings.Join(problems, "\n"))
	}
	return nil
}

func sortedSuffixes[V any](m map[shadow.Suffix]V) []shadow.Suffix {
	var out []shadow.Suffix
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Match compares a response body with an expected one: numbers by value,
// every numeric "timestamp" as any number, "${any}" as any value, and
// "${thing}" / "${shadow}" inside strings as the names used (the shadow
// name is the thing name for a classic shadow, as in AWS's 404 message).
func Match(got, want []byte, thing, name string) error {
	g, err := decode(got)
	if err != nil {
		return fmt.Errorf("response is not JSON: %w", err)
	}
	w, err := decode(want)
	if err != nil {
		return fmt.Errorf("expected body (corpus) is not JSON: %w", err)
	}
	if name == "" {
		name = thing
	}
	r := strings.NewReplacer("${thing}", thing, "${shadow}", name)
	return match("", g, expand(w), r)
}

func match(path string, g, w any, r *strings.Replacer) error {
	if s, ok := w.(string); ok {
		if s == "${any}" {
			return nil
		}
		w = r.Replace(s)
	}
	switch wv := w.(type) {
	case map[string]any:
		gv, ok := g.(map[string]any)
		if !ok {
			return fmt.Errorf("at %s: got %s, want an object", root(path), kind(g))
		}
		for k := range wv {
			if _, ok := gv[k]; !ok {
				return fmt.Errorf("at %s: key %q missing", root(path), k)
			}
		}
		for k := range gv {
			if _, ok := wv[k]; !ok {
				return fmt.Errorf("at %s: unexpected key %q", root(path), k)
			}
		}
		for _, k := range sortedKeys(wv) {
			if k == "timestamp" {
				if _, wNum := wv[k].(json.Number); wNum {
					if _, gNum := gv[k].(json.Number); !gNum {
						return fmt.Errorf("at %s.timestamp: got %s, want a number", root(path), kind(gv[k]))
					}
					continue
				}
			}
			if err := match(path+"."+k, gv[k], wv[k], r); err != nil {
				return err
			}
		}
		return nil
	case []any:
		gv, ok := g.([]any)
		if !ok || len(gv) != len(wv) {
			return fmt.Errorf("at %s: got %s, want an array of %d", root(path), kind(g), len(wv))
		}
		for i := range wv {
			if err := match(fmt.Sprintf("%s[%d]", path, i), gv[i], wv[i], r); err != nil {
				return err
			}
		}
		return nil
	}
	if !shadow.Equal(g, w) {
		gb, _ := json.Marshal(g)
		wb, _ := json.Marshal(w)
		return fmt.Errorf("at %s: got %s, want %s", root(path), gb, wb)
	}
	return nil
}

func root(path string) string {
	if path == "" {
		return "the top"
	}
	return strings.TrimPrefix(path, ".")
}

func kind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	case json.Number:
		return "a number"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	}
	return fmt.Sprintf("%T", v)
}

func sortedKeys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
