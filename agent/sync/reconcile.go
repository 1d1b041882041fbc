package sync

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"github.com/shadowgate/shadowgate/agent/actuate"
	"github.com/shadowgate/shadowgate/agent/shadow"
	"github.com/shadowgate/shadowgate/drivers"
	"github.com/shadowgate/shadowgate/store"
)

// track counts one more goroutine in runWG if sync is running.
func (s *Syncer) track() bool {
	s.runMu.Lock()
	defer s.runMu.Unlock()
	if s.runCtx == nil || s.stopped {
		return false
	}
	s.runWG.Add(1)
	return true
}

// start runs a reconciler for sh if it has work and none is running; the
// goroutine ends when the shadow has nothing left to do. Whatever arrives
// while it applies (a desired change reversed meanwhile) marks the shadow
// again, so it reconciles again after every apply.
func (s *Syncer) start(sh *shadowSync) {
	s.runMu.Lock()
	ctx := s.runCtx
	s.runMu.Unlock()
	if ctx == nil || ctx.Err() != nil {
		return
	}
	sh.mu.Lock()
	if sh.running || !sh.dirty {
		sh.mu.Unlock()
		return
	}
	sh.running = true
	sh.mu.Unlock()
	if !s.track() {
		sh.mu.Lock()
		sh.running = false
		sh.mu.Unlock()
		return
	}
	go func() {
		defer s.runWG.Done()
		for {
			sh.mu.Lock()
			if !sh.dirty || ctx.Err() != nil {
				sh.running = false
				sh.mu.Unlock()
				return
			}
			sh.dirty = false
			sh.mu.Unlock()
			s.reconcile(ctx, sh)
		}
	}()
}

// reconcile brings the hardware to the replica's desired state and the
// cloud's reported state to the hardware's: each key that differs from
// desired is applied (one atomic group); each key the cloud's reported
// lacks is reported (once the shadow was fetched on this connection). Keys
// with a local change waiting are left alone: that change is the truth
// until the cloud accepts or overrules it.
func (s *Syncer) reconcile(ctx context.Context, sh *shadowSync) {
	keys := slices.Sorted(maps.Keys(sh.keys))
	// A key with a local change waiting is left alone, so its actuator is
	// not read: the read would wait for the actuator's worker, behind the
	// commands queued on it, and hold up the next one.
	sh.mu.Lock()
	toRead := slices.DeleteFunc(slices.Clone(keys), func(key string) bool { return sh.rep.Pending[key] != nil })
	sh.mu.Unlock()
	cur := make(map[string]drivers.State, len(toRead))
	for _, key := range toRead {
		st, err := s.o.Manager.Read(ctx, sh.keys[key])
		if err != nil {
			s.log.Warn("read actuator", "actuator", sh.keys[key], "err", err)
			continue
		}
		cur[key] = st
	}
	sh.mu.Lock()
	version := sh.rep.Version
	var changes []actuate.Change
	for _, key := range keys {
		st, ok := cur[key]
		if !ok || sh.rep.Pending[key] != nil {
			continue
		}
		if patch := s.patchFor(sh, key, st); patch != nil {
			changes = append(changes, actuate.Change{Actuator: sh.keys[key], State: patch, Source: store.SourceDelta, ShadowVersion: version})
			continue // the apply reports it
		}
		if sh.synced {
			s.reportSide(sh, key, jsonValue(map[string]any(st)))
		}
	}
	if sh.name == "" && sh.synced {
		s.reportSide(sh, connectedKey, true)
	}
	sh.mu.Unlock()
	s.kick(sh)
	if len(changes) == 0 {
		return
	}
	if _, err := s.o.Manager.ApplyGroup(ctx, changes); err != nil {
		s.applyFailures.Add(1)
		s.log.Error("applying desired state failed", "shadow", label(sh.name), "version", version, "err", err)
		return
	}
	s.applied.Add(1)
}

// patchFor is what must change on key's actuator, in state cur, to reach
// the replica's desired; nil when nothing (or nothing valid) must. A
// problem is logged and counted once per desired value. sh.mu held.
func (s *Syncer) patchFor(sh *shadowSync, key string, cur drivers.State) drivers.State {
	raw, present := sh.rep.Desired[key]
	if !present {
		return nil
	}
	act := sh.keys[key]
	want, ok := raw.(map[string]any)
	if !ok {
		s.warnOnce(sh, key, raw, false, "desired value is not an object; ignored", "shadow", label(sh.name), "key", key, "value", raw)
		return nil
	}
	schema, _ := s.o.Manager.Schema(act)
	patch := drivers.State{}
	for _, k := range slices.Sorted(maps.Keys(want)) {
		v := want[k]
		if _, known := schema[k]; !known {
			s.warnOnce(sh, key+"."+k, v, false, "desired key unknown to the actuator; ignored", "actuator", act, "key", k)
			continue
		}
		if !drivers.Equal(drivers.State{k: cur[k]}, drivers.State{k: v}) {
			patch[k] = v
		}
	}
	if len(patch) == 0 {
		return nil
	}
	if _, err := schema.Check(patch); err != nil {
		s.warnOnce(sh, key, raw, true, "desired state refused", "actuator", act, "err", err)
		return nil
	}
	delete(sh.warned, key)
	return patch
}

// warnOnce logs a problem with a desired value once per value (a
// reconciliation runs after every message). failure counts it as an apply
// failure. sh.mu held.
func (s *Syncer) warnOnce(sh *shadowSync, what string, v any, failure bool, msg string, args ...any) {
	b, _ := json.Marshal(v)
	if sh.warned[what] == string(b) {
		return
	}
	sh.warned[what] = string(b)
	if failure {
		s.applyFailures.Add(1)
	}
	s.log.Warn(msg, args...)
}

// reportSide makes the cloud's reported follow the hardware for key: a
// value the cloud has (and no update in flight changes) is settled, any
// other is to be reported. sh.mu held.
func (s *Syncer) reportSide(sh *shadowSync, key string, v any) {
	rv, has := sh.rep.Reported[key]
	if has && shadow.Equal(rv, v) && !sh.carried(key) {
		s.dropWant(sh, key)
		return
	}
	s.setWant(sh, key, v)
}

// onChange is told of every verified actuator change (on the actuator's
// worker, inside its slot: it only records and wakes). A change made at
// the gateway on purpose (a command, a rollback, a group, a technician's
// change) becomes a local write of desired and reported, kept in the
// replica; one that followed the desired state, the power-on policy or a
// shutdown's safe state is a report. After Run (a reload's commands
// finishing) it still records: the next Syncer reads the replica.
func (s *Syncer) onChange(e actuate.Event) {
	b, ok := s.binding[e.Actuator]
	if !ok {
		return
	}
	sh := s.shadows[b.shadow]
	v := jsonValue(map[string]any(e.State))
	sh.mu.Lock()
	switch e.Source {
	case store.SourceLocal, store.SourceRollback, store.SourceCommand:
		value, _ := v.(map[string]any)
		sh.rep.setPending(b.key, value, e.Source)
		s.dropWant(sh, b.key) // the write reports it too
		s.persist(sh)
	default:
		s.setWant(sh, b.key, v)
	}
	sh.dirty = true // after every apply: reconcile
	sh.mu.Unlock()
	s.start(sh)
	s.kick(sh)
}

// jsonValue is v as encoding/json decodes it (json.Number for numbers),
// the form the replica holds, so that values compare alike.
func jsonValue(v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("sync: encode %T: %v", v, err)) // states are JSON by construction
	}
	var out any
	if err := unmarshal(b, &out); err != nil {
		panic(fmt.Sprintf("sync: decode own JSON: %v", err))
	}
	return out
}
