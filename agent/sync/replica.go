package sync

import (
	"maps"
	"slices"

	"github.com/shadowgate/shadowgate/agent/shadow"
)

// replica is what the gateway knows of one cloud shadow, persisted in the
// store so that it survives restarts and offline periods.
//
// Messages arrive in any order (AWS does not order deltas, accepted and GET
// answers), so every top-level key of desired and of reported carries the
// rank of the message it was last taken from, and no message older than
// that rank changes it: an older version never overrides a newer one. A
// message of version V that holds part of a section (a delta, an
// update/accepted) ranks 2V; one that holds the whole section (a GET
// answer) ranks 2V+1, so it also corrects what partial messages of its own
// version left out (a delta omits desired leaves equal to reported).
type replica struct {
	Desired      map[string]any `json:"desired,omitempty"`
	Reported     map[string]any `json:"reported,omitempty"`
	DesiredRank  ranks          `json:"desired_rank,omitzero"`
	ReportedRank ranks          `json:"reported_rank,omitzero"`
	// Version is the highest shadow version seen in any message.
	Version int64               `json:"version"`
	Pending map[string]*pending `json:"pending,omitempty"`
}

// ranks are the message ranks of one section's keys. A key without an
// entry has Floor, the rank of the last whole section taken.
type ranks struct {
	Keys  map[string]int64 `json:"keys,omitempty"`
	Floor int64            `json:"floor,omitempty"`
}

// pending is a change made at the gateway on purpose (a command, a
// rollback, a technician's change) that the cloud has not accepted yet: it
// is written as desired and reported, so that no delta stands against it.
type pending struct {
	Value map[string]any `json:"value"`
	// Base is the cloud's desired for the key when the change was made;
	// when the cloud's desired has moved from it, the cloud changed its
	// mind meanwhile and the conflict rules decide.
	Base any `json:"base"`
	// Ours are values the gateway wrote for the key before this one, which
	// the cloud may hold without having moved from Base.
	Ours   []any  `json:"ours,omitempty"`
	Source string `json:"source"`
}

// setPending records a change made at the gateway for key; an older one
// waiting for the same key keeps its base (the cloud's desired before
// either) and becomes one of ours.
func (rep *replica) setPending(key string, value map[string]any, source string) {
	if rep.Pending == nil {
		rep.Pending = map[string]*pending{}
	}
	p := &pending{Value: value, Base: rep.Desired[key], Source: source}
	if old := rep.Pending[key]; old != nil {
		p.Base, p.Ours = old.Base, append(slices.Clone(old.Ours), any(old.Value))
	}
	rep.Pending[key] = p
}

// cloudMoved says whether the cloud's desired for key, cur, changed since
// the pending change was made (by another hand than the gateway's).
func (p *pending) cloudMoved(cur any) bool {
	if cur == nil || shadow.Equal(cur, p.Base) || shadow.Equal(cur, any(p.Value)) {
		return false
	}
	for _, o := range p.Ours {
		if shadow.Equal(cur, o) {
			return false
		}
	}
	return true
}

// setKey sets or deletes key in *vals without changing the map in place:
// Syncer.Shadow hands the maps out, so they are replaced, never mutated.
func setKey(vals *map[string]any, key string, v any, has bool) {
	m := maps.Clone(*vals)
	if has {
		if m == nil {
			m = map[string]any{}
		}
		m[key] = v
	} else {
		delete(m, key)
		if len(m) == 0 {
			m = nil
		}
	}
	*vals = m
}

func partialRank(version int64) int64 { return 2 * version }
func wholeRank(version int64) int64   { return 2*version + 1 }

func (r *ranks) of(key string) int64 {
	if v, ok := r.Keys[key]; ok {
		return v
	}
	return r.Floor
}

// patchSection merges part of a section, seen at rank rk, into vals: each
// key the part names is merged (objects recursively, null deletes) unless
// the key holds a newer rank. It returns the keys whose value changed and
// whether some key was older than what the replica holds.
func patchSection(vals *map[string]any, r *ranks, part map[string]any, rk int64) (changed []string, stale bool) {
	for k, pv := range part {
		if rk < r.of(k) {
			stale = true
			continue
		}
		old, had := (*vals)[k]
		base := map[string]any{}
		if had {
			base[k] = old
		}
		nv, has := shadow.Merge(base, map[string]any{k: pv})[k]
		if r.Keys == nil {
			r.Keys = map[string]int64{}
		}
		r.Keys[k] = rk
		if has == had && (!has || shadow.Equal(old, nv)) {
			continue
		}
		setKey(vals, k, nv, has)
		changed = append(changed, k)
	}
	return changed, stale
}

// replaceSection takes a whole section seen at rank rk: every key not held
// at a newer rank takes the section's value, or goes if the section has
// none. A section older than the last whole one is ignored (stale).
func replaceSection(vals *map[string]any, r *ranks, whole map[string]any, rk int64) (changed []string, stale bool) {
	if rk < r.Floor {
		return nil, true
	}
	keys := map[string]bool{}
	for k := range *vals {
		keys[k] = true
	}
	for k := range whole {
		keys[k] = true
	}
	for k := range keys {
		if r.of(k) > rk {
			continue
		}
		delete(r.Keys, k)
		old, had := (*vals)[k]
		nv, has := whole[k]
		if has == had && (!has || shadow.Equal(old, nv)) {
			continue
		}
		setKey(vals, k, nv, has)
		changed = append(changed, k)
	}
	for k, v := range r.Keys {
		if v <= rk {
			delete(r.Keys, k)
		}
	}
	r.Floor = rk
	return changed, false
}
