package jobrun

import (
	"errors"
	"maps"
	"math"
	"time"

	"github.com/shadowgate/shadowgate/agent/config"
	"github.com/shadowgate/shadowgate/store"
)

// CONFIG_UPDATE is not a command: it replaces the configuration file, which
// the command pipeline itself runs under. Its execution is recorded
// IN_PROGRESS (with the outbox copy) before anything else, as a command's
// is, then handed to Options.ConfigUpdate, which reports the end through
// Finish.

// acceptConfigUpdate records a CONFIG_UPDATE execution IN_PROGRESS and
// hands it on; one already known is not handed on again (the worker has
// it, or settles it after a restart).
func (c *Client) acceptConfigUpdate(tid string, doc *document) {
	now := c.o.Now()
	var saved *Run
	err := c.o.Store.Update(func(tx *store.Tx) error {
		saved = nil
		if _, err := loadRun(tx, tid); err == nil {
			return nil
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		r, err := c.newRun(tid, now)
		if err != nil {
			return err
		}
		if c.o.ConfigUpdate == nil {
			r.Status, r.Details = StatusRejected, map[string]string{"reason": "this gateway cannot replace its configuration"}
		} else {
			// The step timeout covers the health deadline and the reload.
			d := c.o.Config.Jobs.ConfigUpdate.HealthDeadline.D()
			r.Status, r.StepTimeout = StatusInProgress, min(int64(math.Ceil(d.Minutes()))+2, maxStepMinutes)
		}
		r.event(now, "%s: %s", r.Status, describe(r.Details))
		if err := c.report(tx, r); err != nil {
			return err
		}
		saved = r
		return saveRun(tx, r)
	})
	if err != nil {
		c.log.Error("record a CONFIG_UPDATE execution; asked again on the next start-next", "tid", tid, "err", err)
	} else if saved != nil {
		c.committed(saved)
		if saved.Status == StatusInProgress {
			c.o.ConfigUpdate(tid, doc.Args)
		} else {
			c.count(saved.Status, false)
		}
	}
	c.offerDone(tid, err == nil)
}

// Note adds an event to an execution's history.
func (c *Client) Note(tid, what string) error {
	return c.modify(tid, func(_ *store.Tx, r *Run, now time.Time) error {
		r.event(now, "%s", what)
		return nil
	})
}

// Finish records the end of an execution the client does not run as a
// command (CONFIG_UPDATE) and reports it: status SUCCEEDED, FAILED or
// REJECTED with its details. An execution already ended is left alone.
func (c *Client) Finish(tid, status string, details map[string]string) error {
	for k, v := range details {
		details[k] = detailValue(v)
	}
	var final bool
	err := c.modify(tid, func(tx *store.Tx, r *Run, now time.Time) error {
		final = false
		if terminal(r.Status) {
			return nil
		}
		final = true
		r.Status, r.Details, r.StepTimeout = status, maps.Clone(details), 0
		r.event(now, "%s: %s", status, describe(r.Details))
		if terminal(r.Cloud) {
			r.event(now, "not reported: the jobs service had ended the execution as %s", r.Cloud)
			r.Finished = now
			return unqueue(tx, r)
		}
		return c.report(tx, r)
	})
	if err == nil && final {
		c.count(status, false)
	}
	return err
}

// ConfigUpdateArgs are CONFIG_UPDATE's args.
type ConfigUpdateArgs struct {
	// Config is the new configuration file, whole.
	Config string `json:"config"`
	// SHA256 is the hex SHA-256 of the file it replaces: a file edited on
	// the gateway since is not overwritten.
	SHA256 string `json:"sha256"`
}

// OpenConfigUpdates are the CONFIG_UPDATE executions not yet ended (a
// restart interrupted them).
func (c *Client) OpenConfigUpdates() ([]*Run, error) {
	runs, err := c.Runs(math.MaxInt)
	var out []*Run
	for _, r := range runs {
		if r.Operation == config.ConfigUpdateOperation && !terminal(r.Status) {
			out = append(out, r)
		}
	}
	return out, err
}
