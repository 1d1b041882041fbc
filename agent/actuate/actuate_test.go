package actuate_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/shadowgate/shadowgate/agent/actuate"
	"github.com/shadowgate/shadowgate/agent/config"
	"github.com/shadowgate/shadowgate/drivers"
	"github.com/shadowgate/shadowgate/drivers/sim"
	"github.com/shadowgate/shadowgate/store"
)

func rig(t *testing.T) (*actuate.Manager, *store.Store, map[string]*sim.Actuator) {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "s.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	sims := map[string]*sim.Actuator{
		"lamp":  sim.New(drivers.Schema{"on": {Kind: drivers.Bool}}, drivers.State{"on": false}, 0, 0),
		"motor": sim.New(drivers.Schema{"running": {Kind: drivers.Bool}, "speed": {Kind: drivers.Int, Min: drivers.Ptr(0), Max: drivers.Ptr(100)}}, drivers.State{"running": false, "speed": int64(0)}, 0, 0),
		"door":  sim.New(drivers.Schema{"locked": {Kind: drivers.Bool}}, drivers.State{"locked": true}, 0, 0),
	}
	acts := map[string]drivers.Actuator{}
	for k, v := range sims {
		acts[k] = v
	}
	m := actuate.New(acts, actuate.Options{Store: st})
	t.Cleanup(func() { m.Close(); st.Close() })
	return m, st, sims
}

func history(t *testing.T, st *store.Store, name string) []*store.Change {
	var h []*store.Change
	st.View(func(tx *store.Tx) (err error) { h, err = tx.History(name, 100); return err })
	return h
}

func TestApplyRecordsHistory(t *testing.T) {
	m, st, sims := rig(t)
	ctx := context.Background()
	var events []actuate.Event
	m.Observe(func(e actuate.Event) { events = append(events, e) })
	r, err := m.Apply(ctx, actuate.Change{Actuator: "lamp", State: drivers.State{"on": true}, Source: store.SourceDelta, ShadowVersion: 7})
	if err != nil || !r.Changed || r.HistoryID == 0 {
		t.Fatalf("%+v %v", r, err)
	}
	// The same state again changes nothing and records nothing.
	if r, _ := m.Apply(ctx, actuate.Change{Actuator: "lamp", State: drivers.State{"on": true}}); r.Changed {
		t.Fatal("a no-op change was applied")
	}
	h := history(t, st, "lamp")
	if len(h) != 1 || h[0].Before["on"] != false || h[0].After["on"] != true || h[0].Source != "delta" || h[0].ShadowVersion != 7 {
		t.Fatalf("history %+v", h)
	}
	if sims["lamp"].Applied() != 1 || len(events) != 1 || events[0].State["on"] != true {
		t.Fatalf("applied %d, events %v", sims["lamp"].Applied(), events)
	}
	if _, err := m.Apply(ctx, actuate.Change{Actuator: "lamp", State: drivers.State{"on": "yes"}}); !errors.Is(err, drivers.ErrBadState) {
		t.Fatalf("bad state: %v", err)
	}
	if _, err := m.Apply(ctx, actuate.Change{Actuator: "fan", State: drivers.State{}}); !errors.Is(err, actuate.ErrUnknownActuator) {
		t.Fatalf("unknown actuator: %v", err)
	}
}

func TestFailedApplyLeavesNoHistory(t *testing.T) {
	m, st, sims := rig(t)
	sims["lamp"].SetFailKeys("on")
	if _, err := m.Apply(context.Background(), actuate.Change{Actuator: "lamp", State: drivers.State{"on": true}}); !errors.Is(err, sim.ErrInjected) {
		t.Fatalf("want injected failure, got %v", err)
	}
	if h := history(t, st, "lamp"); len(h) != 0 {
		t.Fatalf("history of a change that did not happen: %+v", h)
	}
}

func TestGroupFailureRestoresTheOthers(t *testing.T) {
	m, st, sims := rig(t)
	ctx := context.Background()
	sims["motor"].SetFailKeys("speed")
	_, err := m.ApplyGroup(ctx, []actuate.Change{
		{Actuator: "lamp", State: drivers.State{"on": true}, Source: store.SourceCommand, TID: "t1"},
		{Actuator: "door", State: drivers.State{"locked": false}, Source: store.SourceCommand, TID: "t1"},
		{Actuator: "motor", State: drivers.State{"speed": 50}, Source: store.SourceCommand, TID: "t1"},
	})
	var ge *actuate.GroupError
	if !errors.As(err, &ge) || ge.Failed != "motor" || len(ge.Restored) != 2 {
		t.Fatalf("group error %v", err)
	}
	for name, want := range map[string]drivers.State{"lamp": {"on": false}, "door": {"locked": true}} {
		got, _ := m.Read(ctx, name)
		if !drivers.Equal(got, want) {
			t.Fatalf("%s not restored: %v", name, got)
		}
	}
	var j []*store.JournalEntry
	st.View(func(tx *store.Tx) (err error) { j, err = tx.Journal(); return err })
	if len(j) != 0 {
		t.Fatalf("journal left behind: %v", j)
	}
	if h := history(t, st, "lamp"); len(h) != 2 || h[0].Source != store.SourceRollback {
		t.Fatalf("restore not in history: %+v", h)
	}
}

func TestRecoverFromJournal(t *testing.T) {
	m, st, _ := rig(t)
	ctx := context.Background()
	// A crash left a journal entry after lamp was switched on.
	m.Apply(ctx, actuate.Change{Actuator: "lamp", State: drivers.State{"on": true}})
	st.Update(func(tx *store.Tx) error {
		return tx.PutJournal(&store.JournalEntry{Group: "g1", Before: map[string]map[string]any{"lamp": {"on": false}, "door": {"locked": true}, "gone": {"x": 1}}})
	})
	if err := m.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := m.Read(ctx, "lamp"); got["on"] != false {
		t.Fatalf("lamp not restored: %v", got)
	}
	var j []*store.JournalEntry
	st.View(func(tx *store.Tx) (err error) { j, err = tx.Journal(); return err })
	if len(j) != 0 {
		t.Fatalf("journal not cleared: %v", j)
	}
}

// After a crash mid-group the hardware may come back in its default state;
// power-on restore must then not re-apply the interrupted group.
func TestRecoverForgetsTheInterruptedGroup(t *testing.T) {
	m, st, _ := rig(t)
	ctx := context.Background()
	st.Update(func(tx *store.Tx) error {
		if _, err := tx.RecordChange(&store.Change{Actuator: "lamp", Before: map[string]any{"on": false}, After: map[string]any{"on": true}, Group: "g9"}); err != nil {
			return err
		}
		return tx.PutJournal(&store.JournalEntry{Group: "g9", Before: map[string]map[string]any{"lamp": {"on": false}}})
	})
	if err := m.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.PowerOn(ctx, map[string]*config.Actuator{"lamp": {PowerOn: config.PowerOnRestore}}); err != nil {
		t.Fatal(err)
	}
	if got, _ := m.Read(ctx, "lamp"); got["on"] != false {
		t.Fatalf("power-on restore brought the interrupted group back: %v", got)
	}
}

func TestPowerOnPolicies(t *testing.T) {
	m, _, _ := rig(t)
	ctx := context.Background()
	m.Apply(ctx, actuate.Change{Actuator: "lamp", State: drivers.State{"on": true}})
	m.Apply(ctx, actuate.Change{Actuator: "motor", State: drivers.State{"running": true, "speed": 30}})
	// Simulate a restart: the hardware came up in its default state.
	m.Apply(ctx, actuate.Change{Actuator: "lamp", State: drivers.State{"on": false}, Source: store.SourceLocal})
	err := m.PowerOn(ctx, map[string]*config.Actuator{
		"lamp":  {PowerOn: config.PowerOnRestore},
		"motor": {PowerOn: config.PowerOnSafe, SafeState: map[string]any{"running": false, "speed": 0}},
		"door":  {PowerOn: config.PowerOnKeep},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := m.Read(ctx, "lamp"); got["on"] != false {
		// restore uses the newest entry: the local switch-off
		t.Fatalf("lamp %v", got)
	}
	if got, _ := m.Read(ctx, "motor"); got["running"] != false || got["speed"] != int64(0) {
		t.Fatalf("motor not safe: %v", got)
	}
}

func TestClosedManager(t *testing.T) {
	m, _, _ := rig(t)
	m.Close()
	if _, err := m.Apply(context.Background(), actuate.Change{Actuator: "lamp", State: drivers.State{"on": true}}); !errors.Is(err, actuate.ErrStopped) {
		t.Fatalf("want ErrStopped, got %v", err)
	}
}

func TestRollback(t *testing.T) {
	m, st, _ := rig(t)
	ctx := context.Background()
	for _, s := range []int{10, 20, 30} {
		if _, err := m.Apply(ctx, actuate.Change{Actuator: "motor", State: drivers.State{"speed": s}, Source: store.SourceCommand}); err != nil {
			t.Fatal(err)
		}
	}
	speed := func() any { s, _ := m.Read(ctx, "motor"); return s["speed"] }
	if _, err := m.Rollback(ctx, actuate.Rollback{Actuator: "motor"}); err != nil || speed() != int64(20) {
		t.Fatalf("1 step: %v %v", speed(), err)
	}
	if _, err := m.Rollback(ctx, actuate.Rollback{Actuator: "motor", Steps: 3}); err != nil || speed() != int64(10) {
		// history: 0→10, 10→20, 20→30, 30→20 (rollback); 3 steps back: before of 10→20
		t.Fatalf("3 steps: %v %v", speed(), err)
	}
	h := history(t, st, "motor")
	first := h[len(h)-1] // 0→10
	if _, err := m.Rollback(ctx, actuate.Rollback{To: first.ID}); err != nil || speed() != int64(10) {
		t.Fatalf("to id: %v %v", speed(), err)
	}
	if h := history(t, st, "motor"); h[0].Source != store.SourceRollback {
		t.Fatalf("rollback not recorded as such: %+v", h[0])
	}
	if _, err := m.Rollback(ctx, actuate.Rollback{Actuator: "lamp"}); !errors.Is(err, actuate.ErrNoHistory) {
		t.Fatalf("no history: %v", err)
	}
	if _, err := m.Rollback(ctx, actuate.Rollback{Actuator: "motor", Steps: 99}); !errors.Is(err, actuate.ErrNoHistory) {
		t.Fatalf("too many steps: %v", err)
	}
	if _, err := m.Rollback(ctx, actuate.Rollback{Actuator: "door", To: first.ID}); err == nil {
		t.Fatal("an id of another actuator was accepted")
	}
	if _, err := m.Rollback(ctx, actuate.Rollback{To: 99999}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown id: %v", err)
	}
}

func TestRollbackGroup(t *testing.T) {
	m, st, _ := rig(t)
	ctx := context.Background()
	_, err := m.ApplyGroup(ctx, []actuate.Change{
		{Actuator: "lamp", State: drivers.State{"on": true}, Source: store.SourceCommand},
		{Actuator: "door", State: drivers.State{"locked": false}, Source: store.SourceCommand},
	})
	if err != nil {
		t.Fatal(err)
	}
	group := history(t, st, "lamp")[0].Group
	if group == "" {
		t.Fatal("group id not recorded")
	}
	if _, err := m.Rollback(ctx, actuate.Rollback{Group: group}); err != nil {
		t.Fatal(err)
	}
	if l, _ := m.Read(ctx, "lamp"); l["on"] != false {
		t.Fatalf("lamp %v", l)
	}
	if d, _ := m.Read(ctx, "door"); d["locked"] != true {
		t.Fatalf("door %v", d)
	}
}

// Reconfigure adds, replaces and removes actuators while the others keep
// working untouched; a share's observers go with Release.
func TestReconfigureLeavesTheOthersAlone(t *testing.T) {
	m, st, sims := rig(t)
	ctx := context.Background()
	if _, err := m.Apply(ctx, actuate.Change{Actuator: "motor", State: drivers.State{"running": true, "speed": 40}, Source: store.SourceLocal}); err != nil {
		t.Fatal(err)
	}
	var rootEvents, shareEvents []string
	m.Observe(func(e actuate.Event) { rootEvents = append(rootEvents, e.Actuator) })
	share := m.Share()
	share.Observe(func(e actuate.Event) { shareEvents = append(shareEvents, e.Actuator) })

	newLamp := sim.New(drivers.Schema{"on": {Kind: drivers.Bool}, "level": {Kind: drivers.Int}}, drivers.State{"on": false, "level": int64(0)}, 0, 0)
	fan := sim.New(drivers.Schema{"on": {Kind: drivers.Bool}}, drivers.State{"on": false}, 0, 0)
	if err := m.Reconfigure(map[string]drivers.Actuator{"lamp": newLamp, "fan": fan}, []string{"door"}); err != nil {
		t.Fatal(err)
	}
	if got := m.Names(); len(got) != 3 || got[0] != "fan" || got[1] != "lamp" || got[2] != "motor" {
		t.Fatalf("names %v", got)
	}
	if st, _ := m.Read(ctx, "motor"); st["running"] != true || sims["motor"].Applied() != 1 {
		t.Fatalf("motor touched: %v, applied %d", st, sims["motor"].Applied())
	}
	if h := history(t, st, "motor"); len(h) != 1 {
		t.Fatalf("motor history %+v", h)
	}
	if _, err := m.Apply(ctx, actuate.Change{Actuator: "door", State: drivers.State{"locked": false}}); !errors.Is(err, actuate.ErrUnknownActuator) {
		t.Fatalf("removed actuator: %v", err)
	}
	if _, err := m.Apply(ctx, actuate.Change{Actuator: "lamp", State: drivers.State{"level": 5}}); err != nil || newLamp.Applied() != 1 || sims["lamp"].Applied() != 0 {
		t.Fatalf("replaced lamp: %v, new %d, old %d", err, newLamp.Applied(), sims["lamp"].Applied())
	}
	share.Release()
	if _, err := m.Apply(ctx, actuate.Change{Actuator: "fan", State: drivers.State{"on": true}}); err != nil {
		t.Fatal(err)
	}
	if len(rootEvents) != 2 || len(shareEvents) != 1 || shareEvents[0] != "lamp" {
		t.Fatalf("events: root %v, share %v", rootEvents, shareEvents)
	}
}

// A job in flight on an actuator being removed ends first; a caller queued
// behind it is told the actuator is gone.
func TestReconfigureWaitsForTheJobInFlight(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "s.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	slow := sim.New(drivers.Schema{"on": {Kind: drivers.Bool}}, drivers.State{"on": false}, 300*time.Millisecond, 0)
	m := actuate.New(map[string]drivers.Actuator{"slow": slow}, actuate.Options{Store: st})
	t.Cleanup(func() { m.Close(); st.Close() })
	ctx := context.Background()
	first := make(chan error, 1)
	go func() {
		_, err := m.Apply(ctx, actuate.Change{Actuator: "slow", State: drivers.State{"on": true}})
		first <- err
	}()
	for slow.Applied() == 0 && len(history(t, st, "slow")) == 0 {
		time.Sleep(time.Millisecond)
	}
	if err := m.Reconfigure(nil, []string{"slow"}); err != nil {
		t.Fatal(err)
	}
	if err := <-first; err != nil {
		t.Fatalf("the job in flight: %v", err)
	}
	if slow.Applied() != 1 {
		t.Fatalf("applied %d", slow.Applied())
	}
	if _, err := m.Read(ctx, "slow"); !errors.Is(err, actuate.ErrUnknownActuator) {
		t.Fatalf("after removal: %v", err)
	}
}
