package shadow_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/shadowgate/shadowgate/agent/shadow"
	"github.com/shadowgate/shadowgate/agent/shadow/shadowtest"
)

var epoch = time.Unix(1700000000, 0)

func TestConformance(t *testing.T) {
	shadowtest.RunCorpus(t, &shadowtest.EngineDoor{Now: func() time.Time { return epoch }}, shadowtest.Options{})
}

func TestDepthLimitIsSixLevels(t *testing.T) {
	six := `{"state":{"reported":{"a":{"b":{"c":{"d":{"e":{"f":1}}}}}}}}`
	if _, err := shadow.ParseUpdate([]byte(six)); err != nil {
		t.Fatalf("6 levels rejected: %v", err)
	}
	seven := `{"state":{"reported":{"a":{"b":{"c":{"d":{"e":{"f":{"g":1}}}}}}}}}`
	if _, err := shadow.ParseUpdate([]byte(seven)); !shadow.IsCode(err, 400) {
		t.Fatalf("7 levels: want 400, got %v", err)
	}
}

func TestRejectedUpdateLeavesShadowUnchanged(t *testing.T) {
	var sh shadow.Shadow
	mustUpdate(t, &sh, `{"state":{"reported":{"a":1}}}`)
	before, _ := json.Marshal(&sh)
	req, _ := shadow.ParseUpdate([]byte(`{"state":{"reported":{"a":"` + strings.Repeat("q", 9000) + `"}}}`))
	if _, err := sh.Update(req, epoch); !shadow.IsCode(err, 413) {
		t.Fatalf("want 413, got %v", err)
	}
	after, _ := json.Marshal(&sh)
	if string(before) != string(after) {
		t.Fatalf("rejected update changed the shadow:\n%s\n%s", before, after)
	}
}

func TestNumbersCompareByValue(t *testing.T) {
	var sh shadow.Shadow
	mustUpdate(t, &sh, `{"state":{"desired":{"level":60},"reported":{"level":60.0}}}`)
	if d := sh.Delta(); d != nil {
		t.Fatalf("60 and 60.0 differ: delta %v", d)
	}
	mustUpdate(t, &sh, `{"state":{"desired":{"big":9007199254740993},"reported":{"big":9007199254740992}}}`)
	if d := sh.Delta(); d == nil {
		t.Fatal("large integers that differ in the last digit compared equal")
	}
}

func TestStoredFormRoundTrips(t *testing.T) {
	var sh shadow.Shadow
	mustUpdate(t, &sh, `{"state":{"desired":{"a":{"b":[1,{"c":2}]}},"reported":{"n":1.5}}}`)
	b, err := json.Marshal(&sh)
	if err != nil {
		t.Fatal(err)
	}
	var back shadow.Shadow
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	b2, _ := json.Marshal(&back)
	if string(b) != string(b2) {
		t.Fatalf("round trip differs:\n%s\n%s", b, b2)
	}
	if err := back.UnmarshalJSON([]byte(`{"state":`)); err == nil {
		t.Fatal("truncated stored shadow decoded without error")
	}
}

func TestDeltaOnlyWhenDesiredTouched(t *testing.T) {
	var sh shadow.Shadow
	mustUpdate(t, &sh, `{"state":{"desired":{"on":true}}}`)
	res := mustUpdate(t, &sh, `{"state":{"reported":{"on":false}}}`)
	if res.Delta() != nil {
		t.Fatalf("reported-only update published a delta: %s", res.Delta())
	}
	res = mustUpdate(t, &sh, `{"state":{"desired":{"other":1}}}`)
	var d shadow.DeltaMessage
	if err := json.Unmarshal(res.Delta(), &d); err != nil {
		t.Fatal(err)
	}
	if len(d.State) != 2 {
		t.Fatalf("delta must carry every differing desired key, got %v", d.State)
	}
}

func TestTopics(t *testing.T) {
	for _, tc := range []struct {
		root, topic string
		want        shadow.Topic
		err         bool
	}{
		{"$aws/things/", "$aws/things/gw-1/shadow/update", shadow.Topic{Thing: "gw-1", Op: shadow.OpUpdate}, false},
		{"$aws/things/", "$aws/things/gw-1/shadow/update/delta", shadow.Topic{Thing: "gw-1", Op: shadow.OpUpdate, Suffix: shadow.SuffixDelta}, false},
		{"$aws/things/", "$aws/things/gw-1/shadow/name/doors/get/accepted", shadow.Topic{Thing: "gw-1", Name: "doors", Op: shadow.OpGet, Suffix: shadow.SuffixAccepted}, false},
		{"things/", "things/gw:1/shadow/name/a_b-c/delete/rejected", shadow.Topic{Thing: "gw:1", Name: "a_b-c", Op: shadow.OpDelete, Suffix: shadow.SuffixRejected}, false},
		{"things/", "things/gw/shadow/get/delta", shadow.Topic{}, true},
		{"things/", "things/gw/shadow/patch", shadow.Topic{}, true},
		{"things/", "things/gw/shadow/name/doors", shadow.Topic{}, true},
		{"things/", "things/g w/shadow/get", shadow.Topic{}, true},
		{"things/", "$aws/things/gw/shadow/get", shadow.Topic{}, true},
		{"things/", "things/gw/shadow/update/accepted/extra", shadow.Topic{}, true},
		{"things/", "things/gw/shadow/name/" + strings.Repeat("n", 65) + "/get", shadow.Topic{}, true},
		{"things/", "things/gw/shadow/name/$cfg/get", shadow.Topic{Thing: "gw", Name: "$cfg", Op: shadow.OpGet}, false},
		{"things/", "things/g$w/shadow/get", shadow.Topic{}, true},
	} {
		got, err := shadow.ParseTopic(tc.root, tc.topic)
		if (err != nil) != tc.err {
			t.Errorf("%s: err %v", tc.topic, err)
			continue
		}
		if err == nil {
			if got != tc.want {
				t.Errorf("%s: got %+v want %+v", tc.topic, got, tc.want)
			}
			if back := got.Build(tc.root); back != tc.topic {
				t.Errorf("build %+v = %s, want %s", got, back, tc.topic)
			}
		}
	}
}

// TestMergeKeepsEmptyObjects holds the gateway's replica (which merges
// deltas and accepted states with Merge) to the service's rules.
func TestMergeKeepsEmptyObjects(t *testing.T) {
	base := map[string]any{"a": json.Number("1"), "b": map[string]any{"c": json.Number("3")}}
	got := shadow.Merge(base, map[string]any{"b": map[string]any{"c": map[string]any{}}, "d": map[string]any{}, "e": map[string]any{"f": nil}})
	want := map[string]any{"a": json.Number("1"), "b": map[string]any{"c": map[string]any{}}, "d": map[string]any{}}
	if !shadow.Equal(got, want) {
		t.Fatalf("Merge = %v, want %v", got, want)
	}
	got = shadow.Merge(want, map[string]any{"b": map[string]any{"c": nil}, "a": nil, "d": nil})
	if want := map[string]any{"b": map[string]any{}}; !shadow.Equal(got, want) {
		t.Fatalf("deleting the last key of b: Merge = %v, want %v", got, want)
	}
	if got := shadow.Merge(map[string]any{"a": json.Number("1")}, map[string]any{"a": nil}); got != nil {
		t.Fatalf("an emptied section: Merge = %v, want nil", got)
	}
}

func mustUpdate(t testing.TB, sh *shadow.Shadow, payload string) *shadow.UpdateResult {
	t.Helper()
	req, err := shadow.ParseUpdate([]byte(payload))
	if err != nil {
		t.Fatalf("parse %s: %v", payload, err)
	}
	res, err := sh.Update(req, epoch)
	if err != nil {
		t.Fatalf("update %s: %v", payload, err)
	}
	return res
}

// randomValue makes a small random JSON value with nulls sprinkled in.
func randomValue(r *rand.Rand, depth int) any {
	switch n := r.IntN(10); {
	case n < 3 && depth < 4:
		m := map[string]any{}
		for i := 0; i < r.IntN(4); i++ {
			m[fmt.Sprintf("k%d", r.IntN(5))] = randomValue(r, depth+1)
		}
		return m
	case n < 4:
		return []any{json.Number(fmt.Sprint(r.IntN(3))), "s"}
	case n < 5:
		return nil
	case n < 7:
		return json.Number(fmt.Sprint(r.IntN(4)))
	case n < 8:
		return r.IntN(2) == 0
	default:
		return fmt.Sprintf("v%d", r.IntN(3))
	}
}

// checkInvariants holds after every accepted update.
func checkInvariants(t *testing.T, sh *shadow.Shadow) {
	t.Helper()
	// Every leaf has a metadata timestamp, and metadata has no extra keys.
	checkMeta(t, "desired", sh.State.Desired, sh.Metadata.Desired)
	checkMeta(t, "reported", sh.State.Reported, sh.Metadata.Reported)
	// Delta is the recursive difference of desired and reported.
	if !shadow.Equal(sh.Delta(), refDelta(sh.State.Desired, sh.State.Reported)) {
		t.Fatalf("delta %v is not the difference of %v and %v", sh.Delta(), sh.State.Desired, sh.State.Reported)
	}
	// The state size the 8 KB limit is checked with is the compact JSON of
	// desired plus reported, strings written as a minimal encoder writes
	// them: encoding/json's output less what it alone escapes.
	if got, want := shadow.StateSize(sh.State), minimalSize(t, sh.State.Desired)+minimalSize(t, sh.State.Reported); got != want {
		t.Fatalf("StateSize %d, want %d: %v", got, want, sh.State)
	}
	// The stored form round-trips.
	b, err := json.Marshal(sh)
	if err != nil {
		t.Fatal(err)
	}
	var back shadow.Shadow
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	b2, _ := json.Marshal(&back)
	if string(b) != string(b2) {
		t.Fatalf("round trip:\n%s\n%s", b, b2)
	}
}

// minimalSize is the length of v as compact JSON with only quote,
// backslash and control characters escaped (0 for a nil section).
func minimalSize(t *testing.T, v map[string]any) int {
	t.Helper()
	if v == nil {
		return 0
	}
	var buf strings.Builder
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	out := strings.TrimSuffix(buf.String(), "\n")
	// encoding/json also writes U+2028, U+2029 and invalid UTF-8 (as
	// U+FFFD) escaped: 6 bytes where a minimal encoder writes 3.
	return len(out) - 3*(strings.Count(out, `\u2028`)+strings.Count(out, `\u2029`)+strings.Count(out, `\ufffd`))
}

func checkMeta(t *testing.T, path string, v map[string]any, meta map[string]any) {
	t.Helper()
	if len(v) != len(meta) {
		t.Fatalf("%s: %d keys but %d metadata entries (%v vs %v)", path, len(v), len(meta), v, meta)
	}
	for k, x := range v {
		m, ok := meta[k]
		if !ok {
			t.Fatalf("%s.%s has no metadata", path, k)
		}
		if obj, isObj := x.(map[string]any); isObj {
			mm, _ := m.(map[string]any)
			checkMeta(t, path+"."+k, obj, mm)
			continue
		}
		if _, isArr := x.([]any); isArr {
			continue
		}
		if mm, _ := m.(map[string]any); mm == nil || mm["timestamp"] == nil {
			t.Fatalf("%s.%s: metadata %v has no timestamp", path, k, m)
		}
	}
}

// refDelta is a second, deliberately plain statement of the delta rule.
func refDelta(desired, reported map[string]any) map[string]any {
	out := map[string]any{}
	for k, dv := range desired {
		rv, has := reported[k]
		dm, dIsMap := dv.(map[string]any)
		rm, rIsMap := rv.(map[string]any)
		switch {
		case dIsMap && rIsMap:
			if sub := refDelta(dm, rm); len(sub) > 0 {
				out[k] = sub
			}
		case !has || !shadow.Equal(dv, rv):
			out[k] = dv
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func TestRandomUpdateSequences(t *testing.T) {
	for seed := uint64(0); seed < 200; seed++ {
		r := rand.New(rand.NewPCG(seed, 7))
		var sh shadow.Shadow
		for step := 0; step < 40; step++ {
			state := map[string]any{}
			if r.IntN(8) == 0 {
				// strings that need escaping, to hold the size computation to encoding/json
				state["reported"] = map[string]any{"esc": "a\"b\\c\n\x01<&>\u2028é\xff"}
			}
			switch r.IntN(6) {
			case 0:
				state["desired"] = nil
			case 1:
				state["reported"] = randomValue(r, 0)
			default:
				state["desired"], state["reported"] = randomValue(r, 0), randomValue(r, 0)
			}
			body := map[string]any{"state": state}
			if r.IntN(3) == 0 {
				body["version"] = sh.Version - int64(r.IntN(2))
			}
			payload, _ := json.Marshal(body)
			req, err := shadow.ParseUpdate(payload)
			if err != nil {
				continue // a random non-object section: rejected, fine
			}
			before := sh.Version
			_, err = sh.Update(req, epoch.Add(time.Duration(step)*time.Second))
			if err != nil {
				if sh.Version != before {
					t.Fatalf("seed %d: rejected update moved version", seed)
				}
				continue
			}
			if sh.Version != before+1 {
				t.Fatalf("seed %d: version %d after %d", seed, sh.Version, before)
			}
			checkInvariants(t, &sh)
		}
	}
}

func FuzzHandle(f *testing.F) {
	for _, e := range shadowtest.Entries() {
		for _, s := range e.Steps {
			p, _ := s.Bytes()
			f.Add(string(s.Op), string(p), string(p))
		}
	}
	f.Fuzz(func(t *testing.T, op, first, second string) {
		var sh shadow.Shadow
		topic := shadow.Topic{Thing: "fuzz", Op: shadow.Op(op)}
		for _, p := range []string{first, second} {
			out, changed := shadow.Handle(&sh, topic, []byte(p), epoch)
			for _, m := range out {
				if !json.Valid(m.Payload) {
					t.Fatalf("invalid JSON response %q", m.Payload)
				}
			}
			if changed {
				checkInvariants(t, &sh)
			}
		}
	})
}

// doc4K builds a reported section of about 4 KB and a desired that differs
// in a tenth of its keys.
func doc4K() (reported, desired string) {
	var rep, des []string
	for i := 0; i < 100; i++ {
		rep = append(rep, fmt.Sprintf(`"sensor_%02d":{"value":%d,"unit":"C"}`, i, i))
		if i%10 == 0 {
			des = append(des, fmt.Sprintf(`"sensor_%02d":{"value":%d}`, i, i+1))
		}
	}
	return `{"state":{"reported":{` + strings.Join(rep, ",") + `}}}`,
		`{"state":{"desired":{` + strings.Join(des, ",") + `}}}`
}

func BenchmarkUpdate4KB(b *testing.B) {
	rep, des := doc4K()
	var sh shadow.Shadow
	mustUpdate(b, &sh, rep)
	mustUpdate(b, &sh, des)
	payload := []byte(`{"state":{"reported":{"sensor_05":{"value":7}}},"clientToken":"bench"}`)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req, err := shadow.ParseUpdate(payload)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := sh.Update(req, epoch); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDelta4KB(b *testing.B) {
	rep, des := doc4K()
	var sh shadow.Shadow
	mustUpdate(b, &sh, rep)
	mustUpdate(b, &sh, des)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if sh.Delta() == nil {
			b.Fatal("no delta")
		}
	}
}
