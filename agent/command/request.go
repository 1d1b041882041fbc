package command

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/shadowgate/shadowgate/agent/actuate"
	"github.com/shadowgate/shadowgate/agent/config"
	"github.com/shadowgate/shadowgate/drivers"
)

// Request is a command request as operators send it on commands/<thing>.
type Request struct {
	Cmd       string                     `json:"cmd"`
	TID       string                     `json:"tid"`
	Status    string                     `json:"status"`
	Args      map[string]json.RawMessage `json:"args,omitempty"`
	ExpiresAt string                     `json:"expires_at,omitempty"`
}

// Ack is what the gateway answers on commands/<thing>/ack.
type Ack struct {
	TID    string         `json:"tid"`
	Status string         `json:"status"`
	Reason string         `json:"reason,omitempty"`
	Result map[string]any `json:"result,omitempty"`
	TS     string         `json:"ts"`
}

// Statuses. REQUEST and CANCEL are the requester's, the others the
// gateway's.
const (
	StatusRequest = "REQUEST"
	StatusRunning = "RUNNING"
	StatusSuccess = "SUCCESS"
	StatusFailure = "FAILURE"
	// StatusCancel withdraws the request with the same tid:
	// {"tid":"…","status":"CANCEL"}. It is a step in that request's
	// transaction, not a command of its own (see cancel.go).
	StatusCancel = "CANCEL"
)

// Reasons a command fails or waits, stable for operators' scripts.
const (
	ReasonAwaitingApproval = "awaiting approval"
	ReasonInterrupted      = "interrupted"
	ReasonTimeout          = "timeout"
	ReasonRejected         = "rejected at the gateway"
	ReasonShuttingDown     = "gateway shutting down"
	// ReasonCanceled ends a command that a cancel reached before it
	// touched any hardware (or before it arrived at all).
	ReasonCanceled = "canceled"
	// ReasonCancelTooLate answers a cancel (with RUNNING) for a command
	// that is already driving hardware; its own final ack follows.
	ReasonCancelTooLate = "too late to cancel: the command is running"
	// ReasonCancelNotRecorded starts the answer to a cancel of an unknown
	// tid that the inbox has no room to remember.
	ReasonCancelNotRecorded = "cancel not recorded"
)

// MaxTIDLen bounds a transaction id.
const MaxTIDLen = 128

// Bounds of what a request can put into an answer: a value quoted in a
// reason, and a whole reason.
const (
	maxQuoted = 64
	maxReason = 1024
)

// clip shortens s to at most n bytes, on a character boundary, marking the
// cut with "…".
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// q quotes a value from a request for a reason, shortened.
func q(s string) string { return strconv.Quote(clip(s, maxQuoted)) }

var tidRE = regexp.MustCompile(`^[\x21-\x7e]+$`)

// errNoTID marks a request nobody can be answered for.
var errNoTID = errors.New("request has no usable tid")

// parse reads a request; an error wrapping errNoTID means there is no tid to
// answer to, any other error is a FAILURE reason for that tid.
func parse(payload []byte) (*Request, error) {
	var r Request
	if err := json.Unmarshal(payload, &r); err != nil {
		// Try to save the tid to answer on, from an otherwise bad request.
		var probe struct {
			TID string `json:"tid"`
		}
		if json.Unmarshal(payload, &probe) == nil && validTID(probe.TID) {
			return &Request{TID: probe.TID}, fmt.Errorf("invalid request JSON: %v", err)
		}
		return nil, fmt.Errorf("%w: invalid JSON: %v", errNoTID, err)
	}
	if !validTID(r.TID) {
		return nil, fmt.Errorf("%w: tid %s must be 1 to %d printable characters", errNoTID, q(r.TID), MaxTIDLen)
	}
	return &r, nil
}

func validTID(tid string) bool {
	return len(tid) > 0 && len(tid) <= MaxTIDLen && tidRE.MatchString(tid)
}

// plan is a validated request: what to change, or what to roll back.
type plan struct {
	changes  []actuate.Change
	rollback *actuate.Rollback
	typ      *config.CommandType
	expires  time.Time
}

// validate checks a request against the configuration and returns what to
// do, or the FAILURE reason.
func validate(r *Request, cfg *config.Config, schemas func(string) (drivers.Schema, error), now time.Time) (*plan, error) {
	if r.Status != StatusRequest {
		return nil, fmt.Errorf("status must be %q, got %s", StatusRequest, q(r.Status))
	}
	p := &plan{}
	if r.ExpiresAt != "" {
		exp, err := time.Parse(time.RFC3339, r.ExpiresAt)
		if err != nil {
			return nil, fmt.Errorf("expires_at %s is not an RFC 3339 time", q(r.ExpiresAt))
		}
		if !now.Before(exp) {
			return nil, fmt.Errorf("expired at %s", exp.UTC().Format(time.RFC3339))
		}
		p.expires = exp
	}
	if r.Cmd == config.RollbackCommand {
		rb, err := rollbackArgs(r.Args, cfg)
		if err != nil {
			return nil, err
		}
		rb.TID = r.TID
		p.rollback = rb
		p.typ = &config.CommandType{Timeout: config.Duration(config.DefaultCommandTimeout)}
		return p, nil
	}
	typ, ok := cfg.Commands.Types[r.Cmd]
	if !ok || typ == nil {
		names := make([]string, 0, len(cfg.Commands.Types)+1)
		for n := range cfg.Commands.Types {
			names = append(names, n)
		}
		names = append(names, config.RollbackCommand)
		sort.Strings(names)
		return nil, fmt.Errorf("unknown command type %s (known: %s)", q(r.Cmd), strings.Join(names, ", "))
	}
	p.typ = typ
	args, err := checkArgs(r.Args, typ.Args)
	if err != nil {
		return nil, fmt.Errorf("invalid args: %v", err)
	}
	targets := map[string]map[string]any{}
	if typ.Actuator != "" {
		targets[typ.Actuator] = typ.Set
	} else {
		for act, st := range typ.Set {
			targets[act], _ = st.(map[string]any)
		}
	}
	for _, act := range slices.Sorted(maps.Keys(targets)) {
		schema, err := schemas(act)
		if err != nil {
			return nil, fmt.Errorf("unknown actuator %q", act)
		}
		st := substitute(targets[act], args)
		checked, err := schema.Check(st)
		if err != nil {
			return nil, fmt.Errorf("invalid args for %s: %v", act, err)
		}
		p.changes = append(p.changes, actuate.Change{Actuator: act, State: checked})
	}
	return p, nil
}

func rollbackArgs(raw map[string]json.RawMessage, cfg *config.Config) (*actuate.Rollback, error) {
	var rb actuate.Rollback
	for k, v := range raw {
		var err error
		switch k {
		case "actuator":
			err = json.Unmarshal(v, &rb.Actuator)
			if err == nil {
				if _, ok := cfg.Actuators[rb.Actuator]; !ok {
					return nil, fmt.Errorf("unknown actuator %s", q(rb.Actuator))
				}
			}
		case "group":
			err = json.Unmarshal(v, &rb.Group)
		case "steps":
			err = json.Unmarshal(v, &rb.Steps)
			if err == nil && (rb.Steps < 1 || rb.Steps > 10000) {
				err = errors.New("must be 1 to 10000")
			}
		case "to":
			err = json.Unmarshal(v, &rb.To)
		default:
			return nil, fmt.Errorf("invalid args: unknown arg %s for ROLLBACK (actuator, group, steps, to)", q(k))
		}
		if err != nil {
			return nil, fmt.Errorf("invalid args: %s: %v", k, err)
		}
	}
	if rb.Actuator == "" && rb.Group == "" && rb.To == 0 {
		return nil, errors.New("invalid args: ROLLBACK needs actuator (with steps or to), to, or group")
	}
	if rb.Group != "" && (rb.Actuator != "" || rb.Steps != 0 || rb.To != 0) {
		return nil, errors.New("invalid args: ROLLBACK takes group alone")
	}
	if rb.Steps != 0 && rb.To != 0 {
		return nil, errors.New("invalid args: ROLLBACK takes steps or to, not both")
	}
	return &rb, nil
}

// checkArgs validates args against the declared specs and returns them typed.
func checkArgs(raw map[string]json.RawMessage, specs map[string]config.ArgSpec) (map[string]any, error) {
	out := map[string]any{}
	for name := range raw {
		if _, ok := specs[name]; !ok {
			known := make([]string, 0, len(specs))
			for k := range specs {
				known = append(known, k)
			}
			sort.Strings(known)
			if len(known) == 0 {
				return nil, fmt.Errorf("unknown arg %s: this command takes no args", q(name))
			}
			return nil, fmt.Errorf("unknown arg %s (takes %s)", q(name), strings.Join(known, ", "))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(specs)) {
		spec := specs[name]
		v, ok := raw[name]
		if !ok || string(v) == "null" {
			if spec.Required {
				return nil, fmt.Errorf("%s is required", name)
			}
			continue
		}
		switch spec.Type {
		case "string":
			var s string
			if json.Unmarshal(v, &s) != nil {
				return nil, fmt.Errorf("%s must be a string", name)
			}
			out[name] = s
		case "bool":
			var b bool
			if json.Unmarshal(v, &b) != nil {
				return nil, fmt.Errorf("%s must be true or false", name)
			}
			out[name] = b
		case "int", "number":
			var f float64
			if json.Unmarshal(v, &f) != nil || math.IsNaN(f) {
				return nil, fmt.Errorf("%s must be a number", name)
			}
			if spec.Type == "int" && f != math.Trunc(f) {
				return nil, fmt.Errorf("%s must be a whole number", name)
			}
			if spec.Min != nil && f < *spec.Min {
				return nil, fmt.Errorf("%s must be ≥ %v, got %v", name, *spec.Min, f)
			}
			if spec.Max != nil && f > *spec.Max {
				return nil, fmt.Errorf("%s must be ≤ %v, got %v", name, *spec.Max, f)
			}
			if spec.Type == "int" {
				// Exact from the digits where they fit; a float64 outside
				// int64 would wrap when converted (1e19 → -9223372036854775808).
				n, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
				if err != nil {
					if f < -(1<<63) || f >= 1<<63 {
						return nil, fmt.Errorf("%s is out of range: wants a whole number from %d to %d, got %v", name, int64(math.MinInt64), int64(math.MaxInt64), f)
					}
					n = int64(f)
				}
				out[name] = n
			} else {
				out[name] = f
			}
		}
	}
	return out, nil
}

var placeholder = regexp.MustCompile(`^\{([A-Za-z0-9_]+)\}$`)

// substitute fills "{name}" values from args; a placeholder for an arg not
// given drops the key.
func substitute(set map[string]any, args map[string]any) drivers.State {
	out := drivers.State{}
	for k, v := range set {
		if s, ok := v.(string); ok {
			if m := placeholder.FindStringSubmatch(s); m != nil {
				if a, given := args[m[1]]; given {
					out[k] = a
				}
				continue
			}
		}
		out[k] = v
	}
	return out
}
