package localapi

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/shadowgate/shadowgate/agent/actuate"
	"github.com/shadowgate/shadowgate/agent/clock"
	"github.com/shadowgate/shadowgate/agent/command"
	"github.com/shadowgate/shadowgate/agent/config"
	"github.com/shadowgate/shadowgate/agent/jobrun"
	"github.com/shadowgate/shadowgate/agent/link"
	"github.com/shadowgate/shadowgate/agent/outbox"
	"github.com/shadowgate/shadowgate/agent/resident"
	"github.com/shadowgate/shadowgate/agent/sync"
	"github.com/shadowgate/shadowgate/agent/version"
	"github.com/shadowgate/shadowgate/drivers"
	"github.com/shadowgate/shadowgate/store"
)

// Backend is the running daemon as the API sees it.
type Backend struct {
	Config   *config.Config
	Store    *store.Store
	Manager  *actuate.Manager
	Sync     *sync.Syncer
	Commands *command.Processor
	Jobs     *jobrun.Client // nil: no jobs
	Link     *link.Link
	Outbox   *outbox.Drainer
	Clock    *clock.Clock // nil: not shown
	Started  time.Time
	Memory   *resident.Releaser // nil: start-up's memory is not given back
	// Reload reads and checks the configuration file again and switches
	// to it: the parts whose configuration changed are built beside the
	// running ones and replace them once they started. It returns what
	// changed (nothing: the file is the running configuration). An invalid
	// file, or a part that cannot start, changes nothing; the error says
	// why.
	Reload func(ctx context.Context) (changes []string, err error)
}

func (s *Server) routes() []route {
	return []route{
		{"GET", "/v1/status", s.status},
		{"GET", "/v1/shadows", s.shadows},
		{"GET", "/v1/actuators", s.actuators},
		{"GET", "/v1/history", s.history},
		{"POST", "/v1/rollback", s.rollback},
		{"POST", "/v1/set", s.set},
		{"GET", "/v1/commands", s.commands},
		{"POST", "/v1/commands/{tid}/approve", s.decide(true)},
		{"POST", "/v1/commands/{tid}/reject", s.decide(false)},
		{"GET", "/v1/jobs", s.jobs},
		{"POST", "/v1/reload", s.reload},
	}
}

// Status is GET /v1/status.
type Status struct {
	Version     string    `json:"version"`
	Thing       string    `json:"thing"`
	Broker      string    `json:"broker"`
	Connected   bool      `json:"connected"`
	Connects    int64     `json:"connects"`
	LastConnect time.Time `json:"last_connect,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	// Published and Received count MQTT messages on the current link
	// (a reload that changes the broker starts a new one).
	Published      int64            `json:"messages_published"`
	Received       int64            `json:"messages_received"`
	OutboxItems    int64            `json:"outbox_items"`
	OutboxBytes    int64            `json:"outbox_bytes"`
	OutboxDropped  uint64           `json:"outbox_dropped"`
	OutboxSent     int64            `json:"outbox_sent"`
	PendingCmds    int              `json:"pending_commands"`
	StoreBytes     int64            `json:"store_bytes"`
	StorePath      string           `json:"store_path"`
	StoreWrites    store.WriteStats `json:"store_writes"`
	Uptime         time.Duration    `json:"uptime_ns"`
	Started        time.Time        `json:"started"`
	Sync           sync.Stats       `json:"sync"`
	CommandsStats  command.Stats    `json:"commands"`
	Jobs           *jobrun.Stats    `json:"jobs,omitempty"`
	ActuatorsCount int              `json:"actuators"`
	Goroutines     int              `json:"goroutines"`
	// Clock is the trusted time: its source and the system clock's offset.
	Clock *clock.Status `json:"clock,omitempty"`
	// Memory is the daemon's resident memory, and what it gave back once
	// start-up was over.
	Memory resident.Stats `json:"memory"`
}

func (s *Server) status(r *http.Request) (any, error) {
	d := s.d()
	ls := d.Link.Stats()
	ob := d.Store.OutboxStats()
	var pending int
	d.Store.View(func(tx *store.Tx) error {
		un, err := tx.Unfinished()
		pending = len(un)
		return err
	})
	var clk *clock.Status
	if d.Clock != nil {
		st := d.Clock.Status()
		clk = &st
	}
	var js *jobrun.Stats
	if d.Jobs != nil {
		st := d.Jobs.Stats()
		js = &st
	}
	return Status{
		Clock: clk, Jobs: js,
		Version: version.Version, Thing: d.Config.Gateway.Thing, Broker: ls.Broker, Connected: ls.Connected,
		Connects: ls.Connects, LastConnect: ls.LastConnect, LastError: ls.LastError,
		Published: ls.Published, Received: ls.Received,
		OutboxItems: ob.Items, OutboxBytes: ob.Bytes, OutboxDropped: ob.Dropped, OutboxSent: d.Outbox.Sent(),
		PendingCmds: pending, StoreBytes: d.Store.Size(), StorePath: d.Store.Path(), StoreWrites: d.Store.WriteStats(),
		Uptime: time.Since(d.Started).Round(time.Second), Started: d.Started,
		Sync: d.Sync.Stats(), CommandsStats: d.Commands.Stats(), ActuatorsCount: len(d.Config.Actuators),
		Goroutines: runtime.NumGoroutine(), Memory: d.Memory.Stats(),
	}, nil
}

// ShadowView is one shadow's local replica.
type ShadowView struct {
	Name     string         `json:"name"` // "" is the classic shadow
	Version  int64          `json:"version"`
	Desired  map[string]any `json:"desired,omitempty"`
	Reported map[string]any `json:"reported,omitempty"`
	Delta    map[string]any `json:"delta,omitempty"`
}

func (s *Server) shadows(r *http.Request) (any, error) {
	d := s.d()
	var out []ShadowView
	for _, n := range d.Sync.ShadowNames() {
		d, rep, delta, v, _ := d.Sync.Shadow(n)
		out = append(out, ShadowView{Name: n, Version: v, Desired: d, Reported: rep, Delta: delta})
	}
	return out, nil
}

// ActuatorView is one actuator.
type ActuatorView struct {
	Name    string            `json:"name"`
	Driver  string            `json:"driver"`
	Shadow  string            `json:"shadow"`
	Key     string            `json:"key"`
	State   map[string]any    `json:"state,omitempty"`
	Healthy bool              `json:"healthy"`
	Error   string            `json:"error,omitempty"`
	Schema  map[string]string `json:"schema"`
}

func (s *Server) actuators(r *http.Request) (any, error) {
	d := s.d()
	var out []ActuatorView
	for _, n := range d.Manager.Names() {
		a := d.Config.Actuators[n]
		v := ActuatorView{Name: n, Driver: a.Driver, Shadow: a.Shadow, Key: a.Key, Schema: map[string]string{}}
		if sc, err := d.Manager.Schema(n); err == nil {
			for k, f := range sc {
				v.Schema[k] = string(f.Kind)
			}
		}
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		st, err := d.Manager.Read(ctx, n)
		cancel()
		if err != nil {
			v.Error = err.Error()
		} else {
			v.State, v.Healthy = st, true
		}
		out = append(out, v)
	}
	return out, nil
}

func intParam(r *http.Request, name string, def, max int) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > max {
		return 0, badRequest("%s must be a whole number from 1 to %d, got %q", name, max, v)
	}
	return n, nil
}

func (s *Server) history(r *http.Request) (any, error) {
	d := s.d()
	n, err := intParam(r, "n", 20, 10000)
	if err != nil {
		return nil, err
	}
	names := d.Manager.Names()
	gone := false // an actuator a reload removed: its history is kept
	if a := r.URL.Query().Get("actuator"); a != "" {
		_, ok := d.Config.Actuators[a]
		gone = !ok
		names = []string{a}
	}
	out := []*store.Change{}
	err = d.Store.View(func(tx *store.Tx) error {
		for _, name := range names {
			h, err := tx.History(name, n)
			if err != nil {
				return err
			}
			out = append(out, h...)
		}
		return nil
	})
	if gone && err == nil && len(out) == 0 {
		return nil, notFound("no actuator named %q", names[0])
	}
	// newest first across actuators
	slices.SortFunc(out, func(a, b *store.Change) int { return cmp.Compare(b.ID, a.ID) })
	if len(out) > n {
		out = out[:n]
	}
	return out, err
}

// RollbackRequest is POST /v1/rollback.
type RollbackRequest struct {
	Actuator string `json:"actuator,omitempty"`
	Steps    int    `json:"steps,omitempty"`
	To       uint64 `json:"to,omitempty"`
	Group    string `json:"group,omitempty"`
}

// ChangeResult is what a set or rollback did to one actuator.
type ChangeResult struct {
	Actuator  string         `json:"actuator"`
	Before    map[string]any `json:"before"`
	After     map[string]any `json:"after"`
	Changed   bool           `json:"changed"`
	HistoryID uint64         `json:"history_id,omitempty"`
}

func results(rs []actuate.Result) []ChangeResult {
	out := make([]ChangeResult, len(rs))
	for i, r := range rs {
		out[i] = ChangeResult{r.Actuator, r.Before, r.After, r.Changed, r.HistoryID}
	}
	return out
}

func changeError(err error) error {
	switch {
	case errors.Is(err, actuate.ErrUnknownActuator), errors.Is(err, store.ErrNotFound):
		return notFound("%v", err)
	case errors.Is(err, actuate.ErrNoHistory), errors.Is(err, drivers.ErrBadState):
		return failed("%v", err)
	}
	return failed("%v", err)
}

// maxSteps bounds a rollback's steps, as the ROLLBACK command does.
const maxSteps = 10000

func (s *Server) rollback(r *http.Request) (any, error) {
	d := s.d()
	var req RollbackRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	if req.Actuator == "" && req.To == 0 && req.Group == "" {
		return nil, badRequest("give an actuator (with steps or to), a history id (to) or a group")
	}
	if req.Steps < 0 || req.Steps > maxSteps {
		return nil, badRequest("steps must be 1 to %d, got %d", maxSteps, req.Steps)
	}
	if req.Steps != 0 && req.To != 0 {
		return nil, badRequest("give steps or to, not both")
	}
	if req.Group != "" && (req.Actuator != "" || req.Steps != 0 || req.To != 0) {
		return nil, badRequest("a group is rolled back alone: give group without actuator, steps or to")
	}
	if req.Actuator != "" {
		if _, ok := d.Config.Actuators[req.Actuator]; !ok {
			return nil, notFound("no actuator named %q", req.Actuator)
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), time.Minute)
	defer cancel()
	rs, err := d.Manager.Rollback(ctx, actuate.Rollback{Actuator: req.Actuator, Steps: req.Steps, To: req.To, Group: req.Group})
	if err != nil {
		return nil, changeError(err)
	}
	return results(rs), nil
}

// SetRequest is POST /v1/set: drive an actuator locally.
type SetRequest struct {
	Actuator string         `json:"actuator"`
	State    map[string]any `json:"state"`
}

func (s *Server) set(r *http.Request) (any, error) {
	d := s.d()
	var req SetRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	if _, ok := d.Config.Actuators[req.Actuator]; !ok {
		return nil, notFound("no actuator named %q", req.Actuator)
	}
	if len(req.State) == 0 {
		return nil, badRequest("state is empty: give at least one key=value")
	}
	if err := checkArgRanges(d.Config, req.Actuator, req.State); err != nil {
		return nil, failed("%v", err)
	}
	ctx, cancel := context.WithTimeout(r.Context(), time.Minute)
	defer cancel()
	res, err := d.Manager.Apply(ctx, actuate.Change{Actuator: req.Actuator, State: req.State, Source: store.SourceLocal})
	if err != nil {
		return nil, changeError(err)
	}
	return results([]actuate.Result{res})[0], nil
}

// checkArgRanges holds a local set to the ranges the command types allow
// for the same keys (SET_SPEED's speed: 0 to 100 holds for set too); the
// actuator's own schema is checked when the change is applied.
func checkArgRanges(cfg *config.Config, actuator string, st map[string]any) error {
	ranges := cfg.ArgRanges()[actuator]
	var problems []string
	for _, k := range slices.Sorted(maps.Keys(st)) {
		rg, ok := ranges[k]
		if !ok {
			continue
		}
		f := drivers.Field{Kind: drivers.Number, Min: rg.Min, Max: rg.Max}
		if _, err := (drivers.Schema{k: f}).Check(drivers.State{k: st[k]}); err != nil && isNumber(st[k]) {
			problems = append(problems, fmt.Sprintf("%s (the range of command %s)", strings.TrimPrefix(err.Error(), drivers.ErrBadState.Error()+": "), strings.Join(rg.Commands, ", ")))
		}
	}
	if problems != nil {
		return fmt.Errorf("%s: %w: %s", actuator, drivers.ErrBadState, strings.Join(problems, "; "))
	}
	return nil
}

func isNumber(v any) bool {
	switch v.(type) {
	case json.Number, float64, int, int64:
		return true
	}
	return false
}

// maxCommands bounds GET /v1/commands?n=.
const maxCommands = 10000

func (s *Server) commands(r *http.Request) (any, error) {
	d := s.d()
	n, err := intParam(r, "n", 50, maxCommands)
	if err != nil {
		return nil, err
	}
	var out []*store.Command
	err = d.Store.View(func(tx *store.Tx) (err error) { out, err = tx.RecentCommands(n); return err })
	if out == nil {
		out = []*store.Command{}
	}
	return out, err
}

func (s *Server) decide(ok bool) handlerFunc {
	return func(r *http.Request) (any, error) {
		d := s.d()
		tid := r.PathValue("tid")
		decide := d.Commands.Reject
		if ok {
			decide = d.Commands.Approve
		}
		err := decide(tid)
		if errors.Is(err, command.ErrNotAwaiting) && d.Jobs != nil {
			// A job id names the gateway's newest execution of that job.
			if jt, found := d.Jobs.TIDOf(tid); found {
				tid, err = jt, decide(jt)
			}
		}
		if errors.Is(err, command.ErrNotAwaiting) {
			return nil, conflict("%v", err)
		}
		if err != nil {
			return nil, err
		}
		return map[string]string{"tid": tid, "decision": map[bool]string{true: "approved", false: "rejected"}[ok]}, nil
	}
}

// maxJobs bounds GET /v1/jobs?n=.
const maxJobs = 10000

// jobs is GET /v1/jobs: the job executions the gateway knows, newest first;
// ?job=ID only that job's.
func (s *Server) jobs(r *http.Request) (any, error) {
	d := s.d()
	n, err := intParam(r, "n", 50, maxJobs)
	if err != nil {
		return nil, err
	}
	if d.Jobs == nil {
		return []*jobrun.Run{}, nil
	}
	all, err := d.Jobs.Runs(maxJobs)
	if err != nil {
		return nil, err
	}
	out := []*jobrun.Run{}
	job := r.URL.Query().Get("job")
	for _, run := range all {
		if (job == "" || run.JobID == job || run.TID == job) && len(out) < n {
			out = append(out, run)
		}
	}
	if job != "" && len(out) == 0 {
		return nil, notFound("the gateway knows no execution of job %q", job)
	}
	return out, nil
}

// ReloadResult is POST /v1/reload's answer.
type ReloadResult struct {
	Result  string   `json:"result"` // "reloaded" or "unchanged"
	Changes []string `json:"changes,omitempty"`
}

func (s *Server) reload(r *http.Request) (any, error) {
	d := s.d()
	if d.Reload == nil {
		return nil, failed("reload is not available")
	}
	changes, err := d.Reload(r.Context())
	if err != nil {
		var ps config.Problems
		if errors.As(err, &ps) {
			return nil, failed("the configuration has %d problem(s); the running one is kept:\n%v", len(ps), err)
		}
		return nil, failed("%v", err)
	}
	if len(changes) == 0 {
		return ReloadResult{Result: "unchanged"}, nil
	}
	return ReloadResult{Result: "reloaded", Changes: changes}, nil
}
