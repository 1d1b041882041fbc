package actuate

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/shadowgate/shadowgate/drivers"
	"github.com/shadowgate/shadowgate/store"
)

// ErrNoHistory is returned when there is nothing recorded to roll back to.
var ErrNoHistory = errors.New("no recorded history")

// Rollback says what to undo. Exactly one form applies:
//   - Actuator and Steps: undo the actuator's last Steps changes (default 1);
//   - To (and optionally Actuator): back to the state right after change To;
//   - Group: undo every change of a multi-actuator group, atomically.
type Rollback struct {
	Actuator string
	Steps    int
	To       uint64
	Group    string
	TID      string
	// OnRecord is passed to every change the rollback makes.
	OnRecord func(tx *store.Tx) error
}

// Rollback drives actuators back to a recorded state. The change is itself
// recorded (source rollback), so a rollback can be rolled back.
func (m *Manager) Rollback(ctx context.Context, r Rollback) ([]Result, error) {
	if m.opts.Store == nil {
		return nil, ErrNoHistory
	}
	switch {
	case r.Group != "":
		return m.rollbackGroup(ctx, r)
	case r.To != 0:
		var c *store.Change
		err := m.opts.Store.View(func(tx *store.Tx) (err error) { c, err = tx.GetChange(r.To); return err })
		if err != nil {
			return nil, fmt.Errorf("roll back to history entry %d: %w", r.To, err)
		}
		if r.Actuator != "" && c.Actuator != r.Actuator {
			return nil, fmt.Errorf("history entry %d belongs to %s, not %s", r.To, c.Actuator, r.Actuator)
		}
		res, err := m.Apply(ctx, Change{Actuator: c.Actuator, State: c.After, Source: store.SourceRollback, TID: r.TID, OnRecord: r.OnRecord})
		return []Result{res}, err
	case r.Actuator != "":
		if !m.has(r.Actuator) {
			return nil, fmt.Errorf("%w %q", ErrUnknownActuator, r.Actuator)
		}
		steps := r.Steps
		if steps < 0 {
			return nil, fmt.Errorf("roll back %s by %d steps: steps must be 1 or more", r.Actuator, steps)
		}
		if steps == 0 {
			steps = 1
		}
		var h []*store.Change
		if err := m.opts.Store.View(func(tx *store.Tx) (err error) { h, err = tx.History(r.Actuator, steps); return err }); err != nil {
			return nil, err
		}
		if len(h) == 0 {
			return nil, fmt.Errorf("roll back %s: %w: it has not changed since history began", r.Actuator, ErrNoHistory)
		}
		if len(h) < steps {
			return nil, fmt.Errorf("roll back %s by %d steps: %w: only %d changes are recorded", r.Actuator, steps, ErrNoHistory, len(h))
		}
		res, err := m.Apply(ctx, Change{Actuator: r.Actuator, State: h[steps-1].Before, Source: store.SourceRollback, TID: r.TID, OnRecord: r.OnRecord})
		return []Result{res}, err
	}
	return nil, errors.New("rollback needs an actuator, a history id or a group")
}

func (m *Manager) rollbackGroup(ctx context.Context, r Rollback) ([]Result, error) {
	befores := map[string]drivers.State{}
	err := m.opts.Store.View(func(tx *store.Tx) error {
		for _, name := range m.Names() {
			h, err := tx.History(name, m.historyScan())
			if err != nil {
				return err
			}
			for _, c := range h { // newest first: the oldest change of the group wins
				if c.Group == r.Group {
					befores[name] = c.Before
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(befores) == 0 {
		return nil, fmt.Errorf("roll back group %s: %w", r.Group, ErrNoHistory)
	}
	var changes []Change
	for _, name := range slices.Sorted(maps.Keys(befores)) {
		changes = append(changes, Change{Actuator: name, State: befores[name], Source: store.SourceRollback, TID: r.TID, OnRecord: r.OnRecord})
	}
	return m.ApplyGroup(ctx, changes)
}

// historyScan bounds how far back a group is looked for.
func (m *Manager) historyScan() int { return 10000 }
