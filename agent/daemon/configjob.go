package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	gosync "sync"
	"syscall"
	"time"

	"github.com/shadowgate/shadowgate/agent/config"
	"github.com/shadowgate/shadowgate/agent/jobrun"
	"github.com/shadowgate/shadowgate/drivers"
)

// CONFIG_UPDATE: a job replaces the configuration file. The new file is
// checked with the rules of shadowctl config check, the file it replaces
// must be the one the job was made for (its SHA-256), the previous file is
// kept as <file>.previous, the daemon reloads, and unless it is healthy
// (connected, every actuator initialised) within jobs.config_update.
// health_deadline it goes back to the previous file by itself. A marker,
// <file>.update, says an update is under way: a gateway that stops before
// the update is decided starts on the previous file (RecoverConfigUpdate),
// also when the new one cannot even start.

// configUpdate is the marker's content.
type configUpdate struct {
	TID      string `json:"tid"`
	Previous string `json:"previous_sha256"`
	New      string `json:"new_sha256"`
	// Decided is "" while the new file is on trial, then "kept" or
	// "rolled back: <why>".
	Decided string `json:"decided,omitempty"`
}

func markerPath(file string) string   { return file + ".update" }
func previousPath(file string) string { return file + ".previous" }

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// writeFileAtomic replaces path with data: a temporary file in the same
// directory, fsynced, renamed over it, the directory fsynced. The mode of
// the file it replaces is kept.
func writeFileAtomic(path string, data []byte) error {
	mode := os.FileMode(0o640)
	if fi, err := os.Stat(path); err == nil {
		mode = fi.Mode().Perm()
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// writeHint says what a write refused in the configuration directory
// usually means on a packaged gateway.
func writeHint(err error, file string) string {
	switch {
	case errors.Is(err, syscall.EROFS):
		return " (read-only: the systemd unit needs ReadWritePaths=/etc/shadowgate, as the package's has)"
	case errors.Is(err, fs.ErrPermission):
		return " (the service must own its configuration file and may create files in its directory: the package makes /etc/shadowgate root:shadowgate 1770 and the file shadowgate's; after a copy as root: sudo chown shadowgate: " + file + ")"
	}
	return ""
}

func readMarker(file string) (*configUpdate, error) {
	b, err := os.ReadFile(markerPath(file))
	if err != nil {
		return nil, err
	}
	var m configUpdate
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s is unreadable: %w", markerPath(file), err)
	}
	return &m, nil
}

func writeMarker(file string, m *configUpdate) error {
	b, _ := json.Marshal(m)
	return writeFileAtomic(markerPath(file), b)
}

// RecoverConfigUpdate runs before the configuration is loaded: if a
// CONFIG_UPDATE was on trial when the gateway stopped (a crash, a kill, a
// new file that does not start), the previous file is put back, and the
// daemon reports the execution FAILED once it runs. It returns what it did
// ("" when there was nothing to do).
func RecoverConfigUpdate(path string) (string, error) {
	m, err := readMarker(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if m.Decided != "" {
		return "", nil // decided; the daemon reports it
	}
	cur, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	if sha(cur) == m.New {
		prev, err := os.ReadFile(previousPath(path))
		if err != nil {
			return "", fmt.Errorf("CONFIG_UPDATE %s was on trial: read the previous file: %w", m.TID, err)
		}
		if err := writeFileAtomic(path, prev); err != nil {
			return "", err
		}
	}
	m.Decided = "rolled back: interrupted (the gateway stopped before the new configuration proved healthy)"
	if err := writeMarker(path, m); err != nil {
		return "", err
	}
	return fmt.Sprintf("CONFIG_UPDATE %s was on trial when the gateway stopped: %s is the previous file again", m.TID, path), nil
}

// configJobs runs CONFIG_UPDATE executions one at a time, outside the
// generations they replace.
type configJobs struct {
	mu    gosync.Mutex
	queue []configJob
	wake  chan struct{}
}

type configJob struct {
	tid  string
	args map[string]json.RawMessage
}

// submitConfigUpdate is jobrun's ConfigUpdate hook: it never blocks.
func (d *Daemon) submitConfigUpdate(tid string, args map[string]json.RawMessage) {
	d.cfgJobs.mu.Lock()
	d.cfgJobs.queue = append(d.cfgJobs.queue, configJob{tid, args})
	d.cfgJobs.mu.Unlock()
	select {
	case d.cfgJobs.wake <- struct{}{}:
	default:
	}
}

// runConfigJobs settles what a stop left and runs the submitted updates
// until ctx ends.
func (d *Daemon) runConfigJobs(ctx context.Context) {
	d.settleConfigUpdates()
	for {
		d.cfgJobs.mu.Lock()
		var j *configJob
		if len(d.cfgJobs.queue) > 0 {
			j = &d.cfgJobs.queue[0]
			d.cfgJobs.queue = d.cfgJobs.queue[1:]
		}
		d.cfgJobs.mu.Unlock()
		if j == nil {
			select {
			case <-ctx.Done():
				return
			case <-d.cfgJobs.wake:
			}
			continue
		}
		d.runConfigUpdate(ctx, j.tid, j.args)
	}
}

func (d *Daemon) config() *config.Config {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	return d.cfg
}

func (d *Daemon) finishConfigUpdate(tid, status string, details map[string]string) {
	if err := d.jobs.Load().Finish(tid, status, details); err != nil {
		d.log.Error("record the end of a CONFIG_UPDATE", "tid", tid, "status", status, "err", err)
	}
	lvl := d.log.Info
	if status != jobrun.StatusSucceeded {
		lvl = d.log.Warn
	}
	lvl("CONFIG_UPDATE done", "tid", tid, "status", status, "details", details)
}

// settleConfigUpdates reports the CONFIG_UPDATE executions a stop left:
// the marker says how the trial was decided; one with no marker never got
// to change anything.
func (d *Daemon) settleConfigUpdates() {
	file := d.config().File
	m, err := readMarker(file)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		d.log.Error("CONFIG_UPDATE marker", "err", err)
	}
	if m != nil {
		switch {
		case m.Decided == "kept":
			d.finishConfigUpdate(m.TID, jobrun.StatusSucceeded, map[string]string{"result": "the new configuration is in use"})
		case m.Decided != "":
			d.finishConfigUpdate(m.TID, jobrun.StatusFailed, map[string]string{"reason": m.Decided + "; the previous configuration is in use"})
		}
		if m.Decided != "" {
			os.Remove(markerPath(file))
		}
	}
	open, err := d.jobs.Load().OpenConfigUpdates()
	if err != nil {
		d.log.Error("read CONFIG_UPDATE executions", "err", err)
	}
	for _, r := range open {
		if m != nil && r.TID == m.TID {
			continue
		}
		d.finishConfigUpdate(r.TID, jobrun.StatusFailed, map[string]string{"reason": "interrupted before the new configuration was applied; nothing was changed"})
	}
}

// runConfigUpdate runs one CONFIG_UPDATE to its end.
func (d *Daemon) runConfigUpdate(ctx context.Context, tid string, raw map[string]json.RawMessage) {
	cur := d.config()
	reject := func(details map[string]string) { d.finishConfigUpdate(tid, jobrun.StatusRejected, details) }
	if !cur.Jobs.ConfigUpdate.Enabled {
		reject(map[string]string{"reason": "CONFIG_UPDATE is off on this gateway (jobs.config_update.enabled: false)"})
		return
	}
	var args jobrun.ConfigUpdateArgs
	for k, v := range raw {
		var err error
		switch k {
		case "config":
			err = json.Unmarshal(v, &args.Config)
		case "sha256":
			err = json.Unmarshal(v, &args.SHA256)
		default:
			reject(map[string]string{"reason": fmt.Sprintf("invalid args: unknown arg %q for CONFIG_UPDATE (config, sha256)", k)})
			return
		}
		if err != nil {
			reject(map[string]string{"reason": fmt.Sprintf("invalid args: %s must be a string", k)})
			return
		}
	}
	switch {
	case strings.TrimSpace(args.Config) == "":
		reject(map[string]string{"reason": "invalid args: config is required: the whole new configuration file"})
		return
	case len(args.SHA256) != 64 || strings.Trim(strings.ToLower(args.SHA256), "0123456789abcdef") != "":
		reject(map[string]string{"reason": "invalid args: sha256 is required: the hex SHA-256 of the configuration file this job replaces (sha256sum " + cur.File + ")"})
		return
	}
	file := cur.File
	old, err := os.ReadFile(file)
	if err != nil {
		d.finishConfigUpdate(tid, jobrun.StatusFailed, map[string]string{"reason": "read the configuration file: " + err.Error()})
		return
	}
	if got := sha(old); got != strings.ToLower(args.SHA256) {
		d.finishConfigUpdate(tid, jobrun.StatusFailed, map[string]string{"reason": fmt.Sprintf(
			"the configuration file on the gateway (sha256 %s) is not the one this job was made for (sha256 %s): a local edit is never overwritten; nothing was changed", got, strings.ToLower(args.SHA256))})
		return
	}
	next, err := config.Parse(file, []byte(args.Config), drivers.Check)
	if err != nil {
		var ps config.Problems
		if errors.As(err, &ps) {
			reject(problemDetails(ps))
		} else {
			reject(map[string]string{"reason": err.Error()})
		}
		return
	}
	if next.Gateway.Thing != cur.Gateway.Thing {
		reject(map[string]string{"reason": fmt.Sprintf("gateway.thing may not change by a job (%q → %q)", cur.Gateway.Thing, next.Gateway.Thing)})
		return
	}
	d.reloadMu.Lock()
	p, err := d.plan(next)
	d.reloadMu.Unlock()
	switch {
	case err != nil:
		reject(map[string]string{"reason": "the new configuration: " + err.Error()})
		return
	case len(p.restart) > 0:
		reject(map[string]string{"reason": strings.Join(p.restart, ", ") + " would change: that takes a restart of shadowgated, which a job does not do; nothing was changed"})
		return
	}
	deadline := cur.Jobs.ConfigUpdate.HealthDeadline.D()
	m := &configUpdate{TID: tid, Previous: sha(old), New: sha([]byte(args.Config))}
	if err := writeMarker(file, m); err == nil {
		err = writeFileAtomic(previousPath(file), old)
		if err == nil {
			err = writeFileAtomic(file, []byte(args.Config))
		}
		if err != nil {
			os.Remove(markerPath(file))
			d.finishConfigUpdate(tid, jobrun.StatusFailed, map[string]string{"reason": "write the configuration file: " + err.Error() + writeHint(err, file) + "; nothing was changed"})
			return
		}
	} else {
		d.finishConfigUpdate(tid, jobrun.StatusFailed, map[string]string{"reason": "write the configuration file: " + err.Error() + writeHint(err, file) + "; nothing was changed"})
		return
	}
	d.jobs.Load().Note(tid, "new configuration written; the previous one kept as "+previousPath(file)+"; reloading")
	changes, err := d.Reload(ctx)
	if errors.Is(err, errStopping) {
		d.log.Warn("stopping while a CONFIG_UPDATE is on trial; the next start uses the previous configuration", "tid", tid)
		return
	}
	if err != nil {
		d.rollBack(ctx, tid, file, old, m, "the new configuration did not start: "+err.Error())
		return
	}
	d.jobs.Load().Note(tid, fmt.Sprintf("reloaded; healthy within %s, or rolled back", deadline))
	why := d.awaitHealthy(ctx, next, deadline)
	if ctx.Err() != nil {
		// Stopping on trial: the next start goes back to the previous
		// file (RecoverConfigUpdate) and reports it.
		d.log.Warn("stopping while a CONFIG_UPDATE is on trial; the next start uses the previous configuration", "tid", tid)
		return
	}
	if why != "" {
		d.rollBack(ctx, tid, file, old, m, fmt.Sprintf("not healthy within %s (%s)", deadline, why))
		return
	}
	m.Decided = "kept"
	if err := writeMarker(file, m); err != nil {
		d.log.Error("CONFIG_UPDATE marker", "err", err)
	}
	result := "the new configuration is in use"
	if len(changes) > 0 {
		result += ": " + strings.Join(changes, "; ")
	}
	d.finishConfigUpdate(tid, jobrun.StatusSucceeded, map[string]string{"result": result})
	os.Remove(markerPath(file))
}

// rollBack puts the previous file back and reloads it.
func (d *Daemon) rollBack(ctx context.Context, tid, file string, old []byte, m *configUpdate, why string) {
	d.log.Warn("CONFIG_UPDATE: going back to the previous configuration", "tid", tid, "why", why)
	reason := why + "; rolled back to the previous configuration"
	if err := writeFileAtomic(file, old); err != nil {
		reason = why + "; and the previous file could not be put back (" + err.Error() + "): it is " + previousPath(file)
	} else if _, err := d.Reload(ctx); err != nil {
		reason = why + "; the previous file is back but did not reload (" + err.Error() + ")"
	}
	m.Decided = "rolled back: " + why
	if err := writeMarker(file, m); err != nil {
		d.log.Error("CONFIG_UPDATE marker", "err", err)
	}
	d.finishConfigUpdate(tid, jobrun.StatusFailed, map[string]string{"reason": reason})
	os.Remove(markerPath(file))
}

// awaitHealthy waits until the daemon is connected and every actuator of
// cfg reads, or the deadline passes; it returns what was wrong then ("":
// healthy).
func (d *Daemon) awaitHealthy(ctx context.Context, cfg *config.Config, deadline time.Duration) string {
	end := time.Now().Add(deadline)
	why := ""
	for {
		why = d.unhealthy(ctx, cfg)
		if why == "" || !time.Now().Before(end) || ctx.Err() != nil {
			return why
		}
		select {
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (d *Daemon) unhealthy(ctx context.Context, cfg *config.Config) string {
	if st := d.up.current().Stats(); !st.Connected {
		if st.LastError != "" {
			return "not connected: " + st.LastError
		}
		return "not connected to " + st.Broker
	}
	var bad []string
	for _, name := range cfg.ActuatorNames() {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := d.Manager.Read(rctx, name)
		cancel()
		if err != nil {
			bad = append(bad, name+": "+err.Error())
		}
	}
	if len(bad) > 0 {
		slices.Sort(bad)
		return "actuators not initialised: " + strings.Join(bad, "; ")
	}
	return ""
}

// problemDetails puts every problem of a refused file in statusDetails:
// a count in reason, then one key each (AWS allows ten keys of at most 1024
// characters), the last saying how many more there are.
func problemDetails(ps config.Problems) map[string]string {
	out := map[string]string{"reason": fmt.Sprintf("the new configuration has %d problem(s); nothing was changed", len(ps))}
	for i, p := range ps {
		if i == 8 && len(ps) > 9 {
			out["problem_9"] = fmt.Sprintf("and %d more", len(ps)-8)
			break
		}
		out[fmt.Sprintf("problem_%d", i+1)] = fmt.Sprint(p)
	}
	return out
}
