// Package shadowtest holds the shadow protocol conformance table: request
// sequences and the exact responses AWS IoT Device Shadow publishes for them.
// The same table checks agent/shadow in-process and the shadow service over a
// real broker, so both are held to one definition of "like AWS".
package shadowtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/shadowgate/shadowgate/agent/shadow"
)

// Step is one request and every response it must produce (by suffix).
type Step struct {
	Op      shadow.Op
	Payload string
	Want    map[shadow.Suffix]string // suffix → expected JSON, timestamps as 0
}

// Case is a sequence of requests on one thing and shadow name. Thing names
// are unique per case so cases may run against one shared service.
type Case struct {
	Name  string
	Thing string
	// Shadow is the named shadow, empty for the classic shadow.
	Shadow string
	Steps  []Step
}

// Exchange sends one request and returns the responses it caused, by suffix.
type Exchange func(t *testing.T, topic shadow.Topic, payload []byte, want int) map[shadow.Suffix][]byte

// Run runs every case through exchange and compares responses exactly,
// with every "timestamp" number normalised to 0.
func Run(t *testing.T, cases []Case, exchange Exchange) {
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			for i, st := range c.Steps {
				topic := shadow.Topic{Thing: c.Thing, Name: c.Shadow, Op: st.Op}
				got := exchange(t, topic, []byte(st.Payload), len(st.Want))
				for sfx, want := range st.Want {
					g, ok := got[sfx]
					if !ok {
						t.Fatalf("step %d %s %s: no %q response; got %s", i, st.Op, st.Payload, sfx, keys(got))
					}
					if err := SameJSON(g, []byte(want)); err != nil {
						t.Fatalf("step %d %s %s → %s:\n got %s\nwant %s\n%v", i, st.Op, st.Payload, sfx, g, want, err)
					}
				}
				for sfx, g := range got {
					if _, ok := st.Want[sfx]; !ok {
						t.Fatalf("step %d %s %s: unexpected %q response %s", i, st.Op, st.Payload, sfx, g)
					}
				}
			}
		})
	}
}

func keys(m map[shadow.Suffix][]byte) string {
	var ks []string
	for k := range m {
		ks = append(ks, string(k))
	}
	return "[" + strings.Join(ks, ",") + "]"
}

// SameJSON compares two JSON documents with every "timestamp" set to 0.
func SameJSON(got, want []byte) error {
	g, err := decode(got)
	if err != nil {
		return fmt.Errorf("got: %w", err)
	}
	w, err := decode(want)
	if err != nil {
		return fmt.Errorf("want (test table): %w", err)
	}
	if !shadow.Equal(zeroTimestamps(g), zeroTimestamps(w)) {
		return fmt.Errorf("documents differ")
	}
	return nil
}

func decode(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	err := dec.Decode(&v)
	return v, err
}

func zeroTimestamps(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, x := range v {
			if _, isNum := x.(json.Number); isNum && k == "timestamp" {
				out[k] = json.Number("0")
				continue
			}
			out[k] = zeroTimestamps(x)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = zeroTimestamps(x)
		}
		return out
	}
	return v
}

// Cases is the conformance table. Expected payloads follow the examples of
// AWS's Device Shadow documentation (message shapes, field names, codes and
// messages).
var Cases = []Case{
	{
		Name: "create with reported, set desired, delta, report back", Thing: "conf-basic",
		Steps: []Step{
			{Op: shadow.OpGet, Payload: `{"clientToken":"g0"}`, Want: map[shadow.Suffix]string{
				shadow.SuffixRejected: `{"code":404,"message":"No shadow exists with name: conf-basic","timestamp":0,"clientToken":"g0"}`,
			}},
			{Op: shadow.OpUpdate, Payload: `{"state":{"reported":{"color":"red","power":11.9}},"clientToken":"t1"}`, Want: map[shadow.Suffix]string{
				shadow.SuffixAccepted:  `{"state":{"reported":{"color":"red","power":11.9}},"metadata":{"reported":{"color":{"timestamp":0},"power":{"timestamp":0}}},"version":1,"timestamp":0,"clientToken":"t1"}`,
				shadow.SuffixDocuments: `{"current":{"state":{"reported":{"color":"red","power":11.9}},"metadata":{"reported":{"color":{"timestamp":0},"power":{"timestamp":0}}},"version":1},"timestamp":0,"clientToken":"t1"}`,
			}},
			{Op: shadow.OpUpdate, Payload: `{"state":{"desired":{"color":"green"}},"clientToken":"t2"}`, Want: map[shadow.Suffix]string{
				shadow.SuffixAccepted:  `{"state":{"desired":{"color":"green"}},"metadata":{"desired":{"color":{"timestamp":0}}},"version":2,"timestamp":0,"clientToken":"t2"}`,
				shadow.SuffixDocuments: `{"previous":{"state":{"reported":{"color":"red","power":11.9}},"metadata":{"reported":{"color":{"timestamp":0},"power":{"timestamp":0}}},"version":1},"current":{"state":{"desired":{"color":"green"},"reported":{"color":"red","power":11.9}},"metadata":{"desired":{"color":{"timestamp":0}},"reported":{"color":{"timestamp":0},"power":{"timestamp":0}}},"version":2},"timestamp":0,"clientToken":"t2"}`,
				shadow.SuffixDelta:     `{"version":2,"timestamp":0,"state":{"color":"green"},"metadata":{"color":{"timestamp":0}},"clientToken":"t2"}`,
			}},
			{Op: shadow.OpGet, Payload: `{"clientToken":"g1"}`, Want: map[shadow.Suffix]string{
				shadow.SuffixAccepted: `{"state":{"desired":{"color":"green"},"reported":{"color":"red","power":11.9},"delta":{"color":"green"}},"metadata":{"desired":{"color":{"timestamp":0}},"reported":{"color":{"timestamp":0},"power":{"timestamp":0}}},"version":2,"timestamp":0,"clientToken":"g1"}`,
			}},
			{Op: shadow.OpUpdate, Payload: `{"state":{"reported":{"color":"green"}}}`, Want: map[shadow.Suffix]string{
				shadow.SuffixAccepted:  `{"state":{"reported":{"color":"green"}},"metadata":{"reported":{"color":{"timestamp":0}}},"version":3,"timestamp":0}`,
				shadow.SuffixDocuments: `{"previous":{"state":{"desired":{"color":"green"},"reported":{"color":"red","power":11.9}},"metadata":{"desired":{"color":{"timestamp":0}},"reported":{"color":{"timestamp":0},"power":{"timestamp":0}}},"version":2},"current":{"state":{"desired":{"color":"green"},"reported":{"color":"green","power":11.9}},"metadata":{"desired":{"color":{"timestamp":0}},"reported":{"color":{"timestamp":0},"power":{"timestamp":0}}},"version":3},"timestamp":0}`,
			}},
			{Op: shadow.OpGet, Payload: ``, Want: map[shadow.Suffix]string{
				shadow.SuffixAccepted: `{"state":{"desired":{"color":"green"},"reported":{"color":"green","power":11.9}},"metadata":{"desired":{"color":{"timestamp":0}},"reported":{"color":{"timestamp":0},"power":{"timestamp":0}}},"version":3,"timestamp":0}`,
			}},
		},
	},
	{
		Name: "nested merge, arrays replace, null deletes", Thing: "conf-merge",
		Steps: []Step{
			{Op: shadow.OpUpdate, Payload: `{"state":{"reported":{"light":{"on":true,"level":3},"tags":["a","b"],"old":1}}}`, Want: map[shadow.Suffix]string{
				shadow.SuffixAccepted:  `{"state":{"reported":{"light":{"on":true,"level":3},"tags":["a","b"],"old":1}},"metadata":{"reported":{"light":{"on":{"timestamp":0},"level":{"timestamp":0}},"tags":[{"timestamp":0},{"timestamp":0}],"old":{"timestamp":0}}},"version":1,"timestamp":0}`,
				shadow.SuffixDocuments: `{"current":{"state":{"reported":{"light":{"on":true,"level":3},"tags":["a","b"],"old":1}},"metadata":{"reported":{"light":{"on":{"timestamp":0},"level":{"timestamp":0}},"tags":[{"timestamp":0},{"timestamp":0}],"old":{"timestamp":0}}},"version":1},"timestamp":0}`,
			}},
			{Op: shadow.OpUpdate, Payload: `{"state":{"reported":{"light":{"level":5},"tags":["c"],"old":null}},"clientToken":"m"}`, Want: map[shadow.Suffix]string{
				shadow.SuffixAccepted:  `{"state":{"reported":{"light":{"level":5},"tags":["c"],"old":null}},"metadata":{"reported":{"light":{"level":{"timestamp":0}},"tags":[{"timestamp":0}],"old":{"timestamp":0}}},"version":2,"timestamp":0,"clientToken":"m"}`,
				shadow.SuffixDocuments: `{"previous":{"state":{"reported":{"light":{"on":true,"level":3},"tags":["a","b"],"old":1}},"metadata":{"reported":{"light":{"on":{"timestamp":0},"level":{"timestamp":0}},"tags":[{"timestamp":0},{"timestamp":0}],"old":{"timestamp":0}}},"version":1},"current":{"state":{"reported":{"light":{"on":true,"level":5},"tags":["c"]}},"metadata":{"reported":{"light":{"on":{"timestamp":0},"level":{"timestamp":0}},"tags":[{"timestamp":0}]}},"version":2},"timestamp":0,"clientToken":"m"}`,
			}},
			{Op: shadow.OpUpdate, Payload: `{"state":{"desired":{"light":{"on":false,"level":5}}}}`, Want: map[shadow.Suffix]string{
				shadow.SuffixAccepted:  `{"state":{"desired":{"light":{"on":false,"level":5}}},"metadata":{"desired":{"light":{"on":{"timestamp":0},"level":{"timestamp":0}}}},"version":3,"timestamp":0}`,
				shadow.SuffixDocuments: `{"previous":{"state":{"reported":{"light":{"on":true,"level":5},"tags":["c"]}},"metadata":{"reported":{"light":{"on":{"timestamp":0},"level":{"timestamp":0}},"tags":[{"timestamp":0}]}},"version":2},"current":{"state":{"desired":{"light":{"on":false,"level":5}},"reported":{"light":{"on":true,"level":5},"tags":["c"]}},"metadata":{"desired":{"light":{"on":{"timestamp":0},"level":{"timestamp":0}}},"reported":{"light":{"on":{"timestamp":0},"level":{"timestamp":0}},"tags":[{"timestamp":0}]}},"version":3},"timestamp":0}`,
				shadow.SuffixDelta:     `{"version":3,"timestamp":0,"state":{"light":{"on":false}},"metadata":{"light":{"on":{"timestamp":0}}}}`,
			}},
			{Op: shadow.OpUpdate, Payload: `{"state":{"desired":null}}`, Want: map[shadow.Suffix]string{
				shadow.SuffixAccepted:  `{"state":{"desired":null},"metadata":{"desired":null},"version":4,"timestamp":0}`,
				shadow.SuffixDocuments: `{"previous":{"state":{"desired":{"light":{"on":false,"level":5}},"reported":{"light":{"on":true,"level":5},"tags":["c"]}},"metadata":{"desired":{"light":{"on":{"timestamp":0},"level":{"timestamp":0}}},"reported":{"light":{"on":{"timestamp":0},"level":{"timestamp":0}},"tags":[{"timestamp":0}]}},"version":3},"current":{"state":{"reported":{"light":{"on":true,"level":5},"tags":["c"]}},"metadata":{"reported":{"light":{"on":{"timestamp":0},"level":{"timestamp":0}},"tags":[{"timestamp":0}]}},"version":4},"timestamp":0}`,
			}},
		},
	},
	{
		Name: "version conflicts and delete", Thing: "conf-version",
		Steps: []Step{
			{Op: shadow.OpDelete, Payload: `{"clientToken":"d0"}`, Want: map[shadow.Suffix]string{
				shadow.SuffixRejected: `{"code":404,"message":"No shadow exists with name: conf-version","timestamp":0,"clientToken":"d0"}`,
			}},
			{Op: shadow.OpUpdate, Payload: `{"state":{"reported":{"x":1}},"version":0}`, Want: map[shadow.Suffix]string{
				shadow.SuffixAccepted:  `{"state":{"reported":{"x":1}},"metadata":{"reported":{"x":{"timestamp":0}}},"version":1,"timestamp":0}`,
				shadow.SuffixDocuments: `{"current":{"state":{"reported":{"x":1}},"metadata":{"reported":{"x":{"timestamp":0}}},"version":1},"timestamp":0}`,
			}},
			{Op: shadow.OpUpdate, Payload: `{"state":{"reported":{"x":2}},"version":7,"clientToken":"c"}`, Want: map[shadow.Suffix]string{
				shadow.SuffixRejected: `{"code":409,"message":"Version conflict","timestamp":0,"clientToken":"c"}`,
			}},
			{Op: shadow.OpDelete, Payload: `{"version":3,"clientToken":"dv"}`, Want: map[shadow.Suffix]string{
				shadow.SuffixRejected: `{"code":409,"message":"Version conflict","timestamp":0,"clientToken":"dv"}`,
			}},
			{Op: shadow.OpDelete, Payload: `{"clientToken":"d1"}`, Want: map[shadow.Suffix]string{
				shadow.SuffixAccepted: `{"version":1,"timestamp":0,"clientToken":"d1"}`,
			}},
			{Op: shadow.OpGet, Payload: `{}`, Want: map[shadow.Suffix]string{
				shadow.SuffixRejected: `{"code":404,"message":"No shadow exists with name: conf-version","timestamp":0}`,
			}},
			{Op: shadow.OpUpdate, Payload: `{"state":{"reported":{"y":true}}}`, Want: map[shadow.Suffix]string{
				shadow.SuffixAccepted:  `{"state":{"reported":{"y":true}},"metadata":{"reported":{"y":{"timestamp":0}}},"version":2,"timestamp":0}`,
				shadow.SuffixDocuments: `{"current":{"state":{"reported":{"y":true}},"metadata":{"reported":{"y":{"timestamp":0}}},"version":2},"timestamp":0}`,
			}},
		},
	},
	{
		Name: "named shadow", Thing: "conf-named", Shadow: "doors",
		Steps: []Step{
			{Op: shadow.OpGet, Payload: `{"clientToken":"n0"}`, Want: map[shadow.Suffix]string{
				shadow.SuffixRejected: `{"code":404,"message":"No shadow exists with name: doors","timestamp":0,"clientToken":"n0"}`,
			}},
			{Op: shadow.OpUpdate, Payload: `{"state":{"desired":{"locked":true}},"clientToken":"n1"}`, Want: map[shadow.Suffix]string{
				shadow.SuffixAccepted:  `{"state":{"desired":{"locked":true}},"metadata":{"desired":{"locked":{"timestamp":0}}},"version":1,"timestamp":0,"clientToken":"n1"}`,
				shadow.SuffixDocuments: `{"current":{"state":{"desired":{"locked":true}},"metadata":{"desired":{"locked":{"timestamp":0}}},"version":1},"timestamp":0,"clientToken":"n1"}`,
				shadow.SuffixDelta:     `{"version":1,"timestamp":0,"state":{"locked":true},"metadata":{"locked":{"timestamp":0}},"clientToken":"n1"}`,
			}},
		},
	},
	{
		Name: "bad requests", Thing: "conf-bad",
		Steps: []Step{
			{Op: shadow.OpUpdate, Payload: `{"state":`, Want: map[shadow.Suffix]string{
				shadow.SuffixRejected: `{"code":400,"message":"Invalid JSON","timestamp":0}`}},
			{Op: shadow.OpUpdate, Payload: `[1,2]`, Want: map[shadow.Suffix]string{
				shadow.SuffixRejected: `{"code":400,"message":"Invalid JSON","timestamp":0}`}},
			{Op: shadow.OpUpdate, Payload: `{"clientToken":"b1"}`, Want: map[shadow.Suffix]string{
				shadow.SuffixRejected: `{"code":400,"message":"Missing required node: state","timestamp":0,"clientToken":"b1"}`}},
			{Op: shadow.OpUpdate, Payload: `{"state":"on","clientToken":"b2"}`, Want: map[shadow.Suffix]string{
				shadow.SuffixRejected: `{"code":400,"message":"State node must be an object","timestamp":0,"clientToken":"b2"}`}},
			{Op: shadow.OpUpdate, Payload: `{"state":{"desired":5}}`, Want: map[shadow.Suffix]string{
				shadow.SuffixRejected: `{"code":400,"message":"Desired node must be an object","timestamp":0}`}},
			{Op: shadow.OpUpdate, Payload: `{"state":{"reported":[true]}}`, Want: map[shadow.Suffix]string{
				shadow.SuffixRejected: `{"code":400,"message":"Reported node must be an object","timestamp":0}`}},
			{Op: shadow.OpUpdate, Payload: `{"state":{"delta":{"a":1}}}`, Want: map[shadow.Suffix]string{
				shadow.SuffixRejected: `{"code":400,"message":"State contains an invalid node","timestamp":0}`}},
			{Op: shadow.OpUpdate, Payload: `{"state":{"reported":{}},"version":"3"}`, Want: map[shadow.Suffix]string{
				shadow.SuffixRejected: `{"code":400,"message":"Invalid version","timestamp":0}`}},
			{Op: shadow.OpUpdate, Payload: `{"state":{"reported":{}},"clientToken":"` + strings.Repeat("x", 65) + `"}`, Want: map[shadow.Suffix]string{
				shadow.SuffixRejected: `{"code":400,"message":"Invalid clientToken","timestamp":0}`}},
			{Op: shadow.OpUpdate, Payload: `{"state":{"reported":{"a":{"b":{"c":{"d":{"e":{"f":{"g":{"h":{"i":1}}}}}}}}}}}`, Want: map[shadow.Suffix]string{
				shadow.SuffixRejected: `{"code":400,"message":"JSON contains too many levels of nesting; maximum is 8","timestamp":0}`}},
			{Op: shadow.OpUpdate, Payload: `{"state":{"reported":{"blob":"` + strings.Repeat("z", 9000) + `"}},"clientToken":"big"}`, Want: map[shadow.Suffix]string{
				shadow.SuffixRejected: `{"code":413,"message":"The payload exceeds the maximum size allowed","timestamp":0,"clientToken":"big"}`}},
			{Op: shadow.OpGet, Payload: `nonsense`, Want: map[shadow.Suffix]string{
				shadow.SuffixRejected: `{"code":400,"message":"Invalid JSON","timestamp":0}`}},
		},
	},
}
