package sync

import (
	"encoding/json"
	"testing"

	"github.com/shadowgate/shadowgate/agent/shadow"
)

func obj(t *testing.T, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := unmarshal([]byte(s), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func show(m map[string]any) string { b, _ := json.Marshal(m); return string(b) }

func num(v any) string { b, _ := json.Marshal(v); return string(b) }

// Whatever the order in which the messages of a desired change and its
// reversal arrive, the replica ends with the newest.
func TestReplicaOrderOfArrival(t *testing.T) {
	type msg struct {
		whole   bool
		version int64
		state   string
	}
	// v5: on:true (accepted + delta); v6: on:false (accepted, no delta);
	// v7: brightness 3 (accepted; its delta carries both differing leaves).
	msgs := []msg{
		{false, 5, `{"lamp":{"on":true}}`},
		{false, 5, `{"lamp":{"on":true}}`},
		{false, 6, `{"lamp":{"on":false}}`},
		{false, 7, `{"lamp":{"brightness":3}}`},
	}
	want := `{"lamp":{"brightness":3,"on":false}}`
	perms := [][]int{{0, 1, 2, 3}, {3, 2, 1, 0}, {2, 0, 3, 1}, {1, 3, 0, 2}, {2, 3, 0, 1}}
	for _, order := range perms {
		var vals map[string]any
		var rk ranks
		replaceSection(&vals, &rk, obj(t, `{"lamp":{"on":false,"brightness":0}}`), wholeRank(4))
		for _, i := range order {
			m := msgs[i]
			patchSection(&vals, &rk, obj(t, m.state), partialRank(m.version))
		}
		// A late GET answer of version 6 must not undo v7. (Ranks are per
		// top-level key: v6 arriving after v7 loses its leaf until a GET
		// of v7 or later, which the version gap has asked for.)
		replaceSection(&vals, &rk, obj(t, `{"lamp":{"on":false,"brightness":0}}`), wholeRank(6))
		if lamp, _ := vals["lamp"].(map[string]any); num(lamp["brightness"]) != "3" {
			t.Errorf("order %v: a late GET of v6 undid v7: %s", order, show(vals))
		}
		// The GET answer of version 7 is the truth at 7.
		replaceSection(&vals, &rk, obj(t, `{"lamp":{"on":false,"brightness":3}}`), wholeRank(7))
		if got := show(vals); got != want {
			t.Errorf("order %v, after GET v7: %s, want %s", order, got, want)
		}
	}
}

func TestReplicaStaleAndEqualVersions(t *testing.T) {
	var vals map[string]any
	var rk ranks
	if _, stale := patchSection(&vals, &rk, obj(t, `{"a":{"x":1}}`), partialRank(3)); stale {
		t.Fatal("first message stale")
	}
	if ch, stale := patchSection(&vals, &rk, obj(t, `{"a":{"x":2}}`), partialRank(2)); !stale || len(ch) != 0 {
		t.Fatalf("older delta applied: %v %v", ch, stale)
	}
	// A GET answer at an equal version is applied (never skipped).
	if ch, stale := replaceSection(&vals, &rk, obj(t, `{"a":{"x":9}}`), wholeRank(3)); stale || len(ch) != 1 {
		t.Fatalf("equal-version GET: %v %v", ch, stale)
	}
	if ch, _ := replaceSection(&vals, &rk, obj(t, `{"a":{"x":9}}`), wholeRank(3)); len(ch) != 0 {
		t.Fatalf("the same GET again changed %v", ch)
	}
	// A whole section without a key deletes it; null deletes too.
	patchSection(&vals, &rk, obj(t, `{"b":true}`), partialRank(4))
	replaceSection(&vals, &rk, obj(t, `{"b":true}`), wholeRank(4))
	if show(vals) != `{"b":true}` {
		t.Fatalf("after whole section: %s", show(vals))
	}
	patchSection(&vals, &rk, map[string]any{"b": nil}, partialRank(5))
	if vals != nil {
		t.Fatalf("null did not delete: %s", show(vals))
	}
}

// The maps handed out by Syncer.Shadow are never changed in place.
func TestReplicaMapsReplacedNotMutated(t *testing.T) {
	var vals map[string]any
	var rk ranks
	patchSection(&vals, &rk, obj(t, `{"a":1}`), partialRank(1))
	held := vals
	patchSection(&vals, &rk, obj(t, `{"a":2,"b":3}`), partialRank(2))
	replaceSection(&vals, &rk, obj(t, `{"c":4}`), wholeRank(3))
	if show(held) != `{"a":1}` {
		t.Fatalf("a map handed out changed: %s", show(held))
	}
}

func TestPendingCloudMoved(t *testing.T) {
	var rep replica
	rep.Desired = obj(t, `{"m":{"speed":5}}`)
	rep.setPending("m", obj(t, `{"speed":10}`), "command")
	rep.setPending("m", obj(t, `{"speed":20}`), "rollback")
	p := rep.Pending["m"]
	for _, c := range []struct {
		cur   string
		moved bool
	}{{`{"speed":5}`, false}, {`{"speed":10}`, false}, {`{"speed":20}`, false}, {`{"speed":50}`, true}} {
		if got := p.cloudMoved(obj(t, c.cur)); got != c.moved {
			t.Errorf("cloud at %s: moved %v, want %v", c.cur, got, c.moved)
		}
	}
	if p.cloudMoved(nil) {
		t.Error("a deleted desired counts as moved")
	}
	if !shadow.Equal(p.Base, obj(t, `{"speed":5}`)) {
		t.Errorf("base %v", p.Base)
	}
}
