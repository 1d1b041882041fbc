// Package shadow implements the AWS IoT Device Shadow document and its rules:
// update with recursive merge and null deletes, version checks, delta, per-leaf
// metadata, get and delete, and the exact JSON of every response. It does no
// I/O and reads no clock (callers pass now), so one code serves the gateway's
// local replica, the self-hosted shadow service and the tests' cloud.
package shadow

import (
	"encoding/json"
	"fmt"
	"time"
)

// State is the desired and reported sections of a shadow (or their metadata).
type State struct {
	Desired  map[string]any `json:"desired,omitempty"`
	Reported map[string]any `json:"reported,omitempty"`
}

// Shadow is one shadow document. The zero value is a shadow that does not
// exist yet. A deleted shadow keeps its version (one up, for the deletion)
// so that a shadow created again continues from it, as AWS does.
type Shadow struct {
	State     State
	Metadata  State
	Version   int64
	Timestamp int64 // unix seconds of the last accepted change
	Deleted   bool
}

// Exists reports whether the shadow has a document (created and not deleted).
func (s *Shadow) Exists() bool { return s.Version > 0 && !s.Deleted }

// Delta is the desired state that differs from reported, nil when none.
func (s *Shadow) Delta() map[string]any { return Delta(s.State.Desired, s.State.Reported) }

// UpdateResult is an accepted update. Its payloads are built on demand: the
// device's own replica needs none of them, the shadow service all three.
type UpdateResult struct {
	req        *UpdateRequest
	prev, next *Shadow
	ts         int64
}

// Accepted is the …/update/accepted payload.
func (r *UpdateResult) Accepted() []byte {
	return mustJSON(acceptedMessage(r.req, r.next.Version, r.ts))
}

// Documents is the …/update/documents payload.
func (r *UpdateResult) Documents() []byte {
	return mustJSON(documentsMessage(r.prev, r.next, r.req.ClientToken, r.ts))
}

// Delta is the …/update/delta payload, or nil when none is due: only an
// update that touched desired and left it different from reported has one.
func (r *UpdateResult) Delta() []byte {
	if !r.req.TouchesDesired() {
		return nil
	}
	delta := r.next.Delta()
	if delta == nil {
		return nil
	}
	return mustJSON(DeltaMessage{
		Version:     r.next.Version,
		Timestamp:   r.ts,
		State:       delta,
		Metadata:    project(r.next.Metadata.Desired, delta),
		ClientToken: r.req.ClientToken,
	})
}

// Update applies req at time now. On success the shadow changes and the
// result gives the response payloads; on failure the shadow is unchanged and
// the error is an *Error for …/update/rejected.
func (s *Shadow) Update(req *UpdateRequest, now time.Time) (*UpdateResult, error) {
	ts := now.Unix()
	if req.Version != nil && *req.Version != s.Version {
		return nil, reject(409, MsgVersionConflict, req.ClientToken)
	}
	next := *s
	if next.Deleted || req.ClearState {
		next.State, next.Metadata, next.Deleted = State{}, State{}, false
	}
	if req.ClearDesired {
		next.State.Desired, next.Metadata.Desired = nil, nil
	}
	if req.ClearReported {
		next.State.Reported, next.Metadata.Reported = nil, nil
	}
	if req.Desired != nil {
		d, m := merge(next.State.Desired, next.Metadata.Desired, req.Desired, ts)
		next.State.Desired, next.Metadata.Desired = emptyToNil(d), emptyToNil(m)
	}
	if req.Reported != nil {
		r, m := merge(next.State.Reported, next.Metadata.Reported, req.Reported, ts)
		next.State.Reported, next.Metadata.Reported = emptyToNil(r), emptyToNil(m)
	}
	if next.State.Desired == nil {
		next.Metadata.Desired = nil
	}
	if next.State.Reported == nil {
		next.Metadata.Reported = nil
	}
	if stateSize(next.State) > MaxStateBytes {
		return nil, reject(413, MsgTooLarge, req.ClientToken)
	}
	next.Version++
	next.Timestamp = ts
	prev := *s
	*s = next
	return &UpdateResult{req: req, prev: &prev, next: &next, ts: ts}, nil
}

// Get returns the …/get/accepted payload, or a 404 *Error when the shadow does
// not exist. name is the shadow name used in the 404 message.
func (s *Shadow) Get(name, clientToken string, now time.Time) ([]byte, error) {
	ts := now.Unix()
	if !s.Exists() {
		return nil, reject(404, MsgNoShadow(name), clientToken)
	}
	return mustJSON(GetAccepted{
		State: GetState{
			Desired:  s.State.Desired,
			Reported: s.State.Reported,
			Delta:    s.Delta(),
		},
		Metadata:    s.Metadata,
		Version:     s.Version,
		Timestamp:   ts,
		ClientToken: clientToken,
	}), nil
}

// Delete removes the document and returns the …/delete/accepted payload,
// which carries the version of the document deleted. As AWS does, the
// deletion itself takes a version (the shadow's version goes one up), so a
// shadow created again continues after it. AWS ignores the content of a
// delete request: only its clientToken is echoed.
func (s *Shadow) Delete(name string, req *TokenRequest, now time.Time) ([]byte, error) {
	ts := now.Unix()
	if !s.Exists() {
		return nil, reject(404, MsgNoShadow(name), req.ClientToken)
	}
	out := mustJSON(DeleteAccepted{Version: s.Version, Timestamp: ts, ClientToken: req.ClientToken})
	*s = Shadow{Version: s.Version + 1, Timestamp: ts, Deleted: true}
	return out, nil
}

func acceptedMessage(req *UpdateRequest, version, ts int64) UpdateAccepted {
	if req.ClearState {
		// AWS answers "state": null with a metadata that holds only the
		// timestamp.
		return UpdateAccepted{State: nil, Metadata: map[string]any{"timestamp": ts}, Version: version, Timestamp: ts, ClientToken: req.ClientToken}
	}
	var st, meta acceptedState
	if req.ClearDesired {
		st.Desired, meta.Desired = null{}, map[string]any{"timestamp": ts}
	} else if req.Desired != nil {
		st.Desired, meta.Desired = req.Desired, touchedMeta(req.Desired, ts)
	}
	if req.ClearReported {
		st.Reported, meta.Reported = null{}, map[string]any{"timestamp": ts}
	} else if req.Reported != nil {
		st.Reported, meta.Reported = req.Reported, touchedMeta(req.Reported, ts)
	}
	return UpdateAccepted{State: st, Metadata: meta, Version: version, Timestamp: ts, ClientToken: req.ClientToken}
}

func documentsMessage(prev, cur *Shadow, token string, ts int64) Documents {
	d := Documents{Current: cur.snapshot(), Timestamp: ts, ClientToken: token}
	if prev.Exists() {
		p := prev.snapshot()
		d.Previous = &p
	}
	return d
}

func (s *Shadow) snapshot() DocumentSnapshot {
	return DocumentSnapshot{State: s.State, Metadata: s.Metadata, Version: s.Version}
}

// stored is the persisted form of a Shadow.
type stored struct {
	State     State `json:"state"`
	Metadata  State `json:"metadata"`
	Version   int64 `json:"version"`
	Timestamp int64 `json:"timestamp"`
	Deleted   bool  `json:"deleted,omitempty"`
}

// MarshalJSON is the form a Shadow is stored in.
func (s *Shadow) MarshalJSON() ([]byte, error) {
	return stored{s.State, s.Metadata, s.Version, s.Timestamp, s.Deleted}.appendJSON(make([]byte, 0, 512)), nil
}

// UnmarshalJSON reads a stored Shadow, keeping numbers exact.
func (s *Shadow) UnmarshalJSON(b []byte) error {
	var st stored
	if err := unmarshal(b, &st); err != nil {
		return fmt.Errorf("decode shadow document: %w", err)
	}
	*s = Shadow(st)
	return nil
}

func mustJSON(v any) []byte {
	if a, ok := v.(appender); ok {
		return a.appendJSON(make([]byte, 0, 512))
	}
	b, err := json.Marshal(v)
	if err != nil {
		// Every value here came out of encoding/json; failing to encode it
		// again is a programming error.
		panic(fmt.Sprintf("shadow: encode %T: %v", v, err))
	}
	return b
}
