package shadow

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// randomValue makes a value as the decoder (and merge's metadata) would:
// objects, arrays, strings with characters JSON and HTML escape, numbers
// as json.Number, int64 timestamps, bools, nulls, empty and nil objects.
func randomValue(r *rand.Rand, depth int) any {
	strs := []string{"", "on", "a b", `q"uote`, `back\slash`, "<script>&amp;", "tab\tnl\n", "ünïcode", "line\u2028sep", "\x00\x1f", "\x7f", "bad\xffutf8", "emoji 🙂"}
	switch n := r.IntN(10); {
	case depth > 3 || n < 2:
		return json.Number([]string{"0", "-1", "3.25", "1e10", "12345678901234567890", "-0.5E-3"}[r.IntN(6)])
	case n == 2:
		return strs[r.IntN(len(strs))]
	case n == 3:
		return r.IntN(2) == 0
	case n == 4:
		return nil
	case n == 5:
		return int64(r.Int64N(1 << 40))
	case n == 6:
		a := make([]any, r.IntN(4))
		for i := range a {
			a[i] = randomValue(r, depth+1)
		}
		return a
	default:
		return randomObject(r, depth+1)
	}
}

func randomObject(r *rand.Rand, depth int) map[string]any {
	switch r.IntN(8) {
	case 0:
		return nil
	case 1:
		return map[string]any{}
	}
	keys := []string{"light", "on", "brightness", "z", "a", "<k>", "é", "timestamp", "key with space", `"q"`}
	m := map[string]any{}
	for range r.IntN(6) {
		m[keys[r.IntN(len(keys))]] = randomValue(r, depth)
	}
	return m
}

// TestMessagesEncodeAsEncodingJSON: every message the service sends, and
// the stored document, come out byte for byte as encoding/json writes
// them.
func TestMessagesEncodeAsEncodingJSON(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 3000 {
		st := State{Desired: randomObject(r, 0), Reported: randomObject(r, 0)}
		meta := State{Desired: randomObject(r, 0), Reported: randomObject(r, 0)}
		snap := DocumentSnapshot{State: st, Metadata: meta, Version: r.Int64N(100)}
		token := []string{"", "tok-1", "<&>"}[r.IntN(3)]
		var prev *DocumentSnapshot
		if r.IntN(2) == 0 {
			prev = &DocumentSnapshot{State: meta, Metadata: st, Version: 1}
		}
		accState := []any{nil, acceptedState{}, acceptedState{Desired: null{}, Reported: randomObject(r, 0)},
			acceptedState{Desired: randomValue(r, 0), Reported: map[string]any{}}}[r.IntN(4)]
		msgs := []appender{
			UpdateAccepted{State: accState, Metadata: []any{map[string]any{"timestamp": int64(5)}, acceptedState{Desired: randomObject(r, 0)}}[r.IntN(2)], Version: 3, Timestamp: 1700000000, ClientToken: token},
			DocumentSnapshot(snap),
			Documents{Previous: prev, Current: snap, Timestamp: 17, ClientToken: token},
			DeltaMessage{Version: 2, Timestamp: 9, State: randomObject(r, 0), Metadata: randomObject(r, 0), ClientToken: token},
			GetAccepted{State: GetState{Desired: st.Desired, Reported: st.Reported, Delta: randomObject(r, 0)}, Metadata: meta, Version: 4, Timestamp: 8, ClientToken: token},
			DeleteAccepted{Version: 6, Timestamp: 7, ClientToken: token},
			stored{State: st, Metadata: meta, Version: 5, Timestamp: 6, Deleted: r.IntN(2) == 0},
			st,
		}
		for _, m := range msgs {
			want, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			if got := m.appendJSON(nil); !bytes.Equal(got, want) {
				t.Fatalf("case %d, %T:\n got %s\nwant %s", i, m, got, want)
			}
		}
	}
}

// TestShadowEncodesAsBefore: the stored document and the update's answers,
// through the public API, are what encoding/json makes of them.
func TestShadowEncodesAsBefore(t *testing.T) {
	var sh Shadow
	now := time.Unix(1700000000, 0)
	for i, body := range []string{
		`{"state":{"desired":{"light":{"on":true,"brightness":60},"note":"<b>&"},"reported":{"light":{"on":false}}},"clientToken":"t1"}`,
		`{"state":{"desired":{"light":{"brightness":null}},"reported":{"arr":[1,"x",true],"e":{}}},"version":1}`,
		`{"state":{"desired":null}}`,
		`{"state":null,"clientToken":"x"}`,
	} {
		req, err := ParseUpdate([]byte(body))
		if err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		res, err := sh.Update(req, now)
		if err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		for name, pair := range map[string][2][]byte{
			"accepted":  {res.Accepted(), must(json.Marshal(acceptedMessage(res.req, res.next.Version, res.ts)))},
			"documents": {res.Documents(), must(json.Marshal(documentsMessage(res.prev, res.next, res.req.ClientToken, res.ts)))},
			"stored":    {must(sh.MarshalJSON()), must(json.Marshal(stored(sh)))},
		} {
			if !bytes.Equal(pair[0], pair[1]) {
				t.Errorf("%d %s:\n got %s\nwant %s", i, name, pair[0], pair[1])
			}
		}
		var back Shadow
		if err := json.Unmarshal(must(sh.MarshalJSON()), &back); err != nil || fmt.Sprint(back) != fmt.Sprint(sh) {
			t.Errorf("%d: stored document reads back as %v (%v), want %v", i, back, err, sh)
		}
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}
