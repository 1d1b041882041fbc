package actuate

import (
	"context"
	"errors"
	"fmt"

	"github.com/shadowgate/shadowgate/agent/config"
	"github.com/shadowgate/shadowgate/drivers"
	"github.com/shadowgate/shadowgate/store"
)

// PowerOn drives each actuator to its configured power-on state: restore
// (the newest recorded state), safe (safe_state), or nothing for keep and
// desired (the shadow's desired state arrives later). Errors are collected;
// one actuator failing does not keep the others from starting.
func (m *Manager) PowerOn(ctx context.Context, acts map[string]*config.Actuator) error {
	var errs []error
	for _, name := range m.Names() {
		a := acts[name]
		if a == nil {
			continue
		}
		var target drivers.State
		switch a.PowerOn {
		case config.PowerOnSafe:
			target = a.SafeState
		case config.PowerOnRestore:
			if m.opts.Store == nil {
				continue
			}
			var h []*store.Change
			if err := m.opts.Store.View(func(tx *store.Tx) (err error) { h, err = tx.History(name, 1); return err }); err != nil {
				errs = append(errs, fmt.Errorf("power-on restore %s: %w", name, err))
				continue
			}
			if len(h) == 0 {
				continue // nothing recorded yet: keep what the hardware has
			}
			target = h[0].After
		default:
			continue
		}
		if _, err := m.Apply(ctx, Change{Actuator: name, State: target, Source: store.SourcePowerOn}); err != nil {
			errs = append(errs, fmt.Errorf("power-on %s (%s): %w", name, a.PowerOn, err))
		}
	}
	return errors.Join(errs...)
}

// Shutdown drives the actuators with on_shutdown: safe to their safe_state
// (source shutdown: sync reports it, and never writes it into the cloud's
// desired state, as it does for a technician's local change).
func (m *Manager) Shutdown(ctx context.Context, acts map[string]*config.Actuator) error {
	var errs []error
	for _, name := range m.Names() {
		a := acts[name]
		if a == nil || a.OnShutdown != config.ShutdownSafe {
			continue
		}
		if _, err := m.Apply(ctx, Change{Actuator: name, State: a.SafeState, Source: store.SourceShutdown}); err != nil {
			errs = append(errs, fmt.Errorf("shutdown %s to safe state: %w", name, err))
		}
	}
	return errors.Join(errs...)
}
