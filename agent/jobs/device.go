package jobs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/shadowgate/shadowgate/store"
)

// Device operations on the MQTT topics under the root.
type deviceOp string

const (
	opGetPending deviceOp = "get"        // {thing}/jobs/get
	opStartNext  deviceOp = "start-next" // {thing}/jobs/start-next
	opDescribe   deviceOp = "describe"   // {thing}/jobs/{jobId}/get
	opUpdate     deviceOp = "update"     // {thing}/jobs/{jobId}/update
)

// request is one parsed device request.
type request struct {
	thing, jobID string
	op           deviceOp
	topic        string // the request topic without the root; answers go to topic+"/accepted|rejected"
	payload      []byte
}

// parseTopic reads a request topic under root. A topic of the service's
// subscriptions whose names AWS would refuse is an error with the topic to
// answer InvalidTopic on (ok true), or none (ok false) when not even that
// is known.
func parseTopic(root, topic string) (r request, err error) {
	rest, found := strings.CutPrefix(topic, root)
	if !found {
		return r, fmt.Errorf("topic %q is not under %q", topic, root)
	}
	r.topic = rest
	parts := strings.Split(rest, "/")
	if len(parts) < 3 || parts[1] != "jobs" {
		return r, fmt.Errorf("topic %q is not a jobs topic", topic)
	}
	r.thing = parts[0]
	switch {
	case len(parts) == 3 && parts[2] == "get":
		r.op = opGetPending
	case len(parts) == 3 && parts[2] == "start-next":
		r.op = opStartNext
	case len(parts) == 4 && parts[3] == "get":
		r.op, r.jobID = opDescribe, parts[2]
	case len(parts) == 4 && parts[3] == "update":
		r.op, r.jobID = opUpdate, parts[2]
	default:
		return r, fmt.Errorf("topic %q maps to no jobs API", topic)
	}
	if !validThingName(r.thing) {
		return r, fmt.Errorf("thing name %q must be 1 to %d characters of [a-zA-Z0-9:_-]", r.thing, maxThingNameLen)
	}
	if r.jobID != "" && !validJobID(r.jobID) && !(r.op == opDescribe && r.jobID == "$next") {
		return r, fmt.Errorf("job id %q must be 1 to %d characters of [a-zA-Z0-9_-]", r.jobID, maxJobIDLen)
	}
	return r, nil
}

// rejection is a device error to answer.
type rejection struct {
	code  ErrorCode
	msg   string
	state *JobExecutionState
}

func reject(code ErrorCode, format string, args ...any) *rejection {
	return &rejection{code: code, msg: fmt.Sprintf(format, args...)}
}

// decode reads a request payload: UTF-8 JSON of an object (an empty payload
// is {}). A payload that is not JSON is InvalidJson; one of the wrong shape
// InvalidRequest. The clientToken is read first, so that even a rejected
// request is answered with it.
func decode(payload []byte, v any) (token string, rej *rejection) {
	p := bytes.TrimSpace(payload)
	if len(p) == 0 {
		p = []byte("{}")
	}
	if !utf8.Valid(p) || !json.Valid(p) {
		return "", reject(CodeInvalidJSON, "Payload is not valid UTF-8 JSON")
	}
	var probe struct {
		ClientToken json.RawMessage `json:"clientToken"`
	}
	if p[0] != '{' || json.Unmarshal(p, &probe) != nil {
		return "", reject(CodeInvalidRequest, "Payload must be a JSON object")
	}
	if len(probe.ClientToken) > 0 && string(probe.ClientToken) != "null" {
		if err := json.Unmarshal(probe.ClientToken, &token); err != nil {
			return "", reject(CodeInvalidRequest, "clientToken must be a string")
		}
		if len(token) > maxClientTokenLen {
			return "", reject(CodeInvalidRequest, "clientToken is longer than %d bytes", maxClientTokenLen)
		}
	}
	if err := json.Unmarshal(p, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return token, reject(CodeInvalidRequest, "Field %s has the wrong type", te.Field)
		}
		return token, reject(CodeInvalidRequest, "Invalid request: %v", err)
	}
	return token, nil
}

func checkStep(v *flexInt, allowCancel bool) *rejection {
	if v == nil {
		return nil
	}
	if allowCancel && *v == -1 {
		return nil
	}
	if *v < 1 || *v > maxTimeoutMinutes {
		return reject(CodeInvalidRequest, "stepTimeoutInMinutes must be between 1 and %d", maxTimeoutMinutes)
	}
	return nil
}

// handle runs one device request inside a transaction and queues its
// answer; a transaction error is a store failure (InternalError).
func (t *txn) handle(r *request) error {
	token, ans, rej, err := t.run(r)
	if err != nil {
		return err
	}
	if rej != nil {
		t.publish(r.topic+"/rejected", ErrorResponse{Code: rej.code, Message: rej.msg, ClientToken: token, Timestamp: t.now.Unix(), ExecutionState: rej.state})
		return nil
	}
	t.publish(r.topic+"/accepted", ans)
	return nil
}

// run runs one device request, from either door: its answer, or its
// rejection, or a store failure.
func (t *txn) run(r *request) (token string, ans any, rej *rejection, err error) {
	switch r.op {
	case opGetPending:
		var req struct{}
		if token, rej = decode(r.payload, &req); rej == nil {
			ans, err = t.getPending(token, r.thing)
		}
	case opStartNext:
		var req startNextRequest
		if token, rej = decode(r.payload, &req); rej == nil {
			ans, rej, err = t.startNext(token, r.thing, &req)
		}
	case opDescribe:
		var req describeRequest
		if token, rej = decode(r.payload, &req); rej == nil {
			ans, rej, err = t.describe(token, r.thing, r.jobID, &req)
		}
	case opUpdate:
		var req updateRequest
		if token, rej = decode(r.payload, &req); rej == nil {
			ans, rej, err = t.update(token, r.thing, r.jobID, &req)
		}
	}
	return token, ans, rej, err
}

func (t *txn) getPending(token, thing string) (any, error) {
	v, err := t.pending(thing)
	if err != nil {
		return nil, err
	}
	resp := GetPendingResponse{InProgressJobs: []JobExecutionSummary{}, QueuedJobs: []JobExecutionSummary{}, Timestamp: t.now.Unix(), ClientToken: token}
	for _, e := range v {
		if e.Status == InProgress {
			resp.InProgressJobs = append(resp.InProgressJobs, e.summary())
		} else {
			resp.QueuedJobs = append(resp.QueuedJobs, e.summary())
		}
	}
	return resp, nil
}

func (t *txn) startNext(token, thing string, req *startNextRequest) (any, *rejection, error) {
	if err := checkDetails(req.StatusDetails); err != nil {
		return nil, reject(CodeInvalidRequest, "%v", err), nil
	}
	if rej := checkStep(req.StepTimeoutInMinutes, false); rej != nil {
		return nil, rej, nil
	}
	v, err := t.pending(thing)
	if err != nil {
		return nil, nil, err
	}
	resp := ExecutionResponse{Timestamp: t.now.Unix(), ClientToken: token}
	if len(v) == 0 {
		return resp, nil, nil
	}
	e := v[0]
	if e.Status == Queued {
		j, err := t.loadJob(e.JobID)
		if err != nil {
			return nil, nil, err
		}
		if req.StatusDetails != nil {
			e.StatusDetails = req.StatusDetails
		}
		if req.StepTimeoutInMinutes != nil {
			e.StepDeadline = t.now.Add(time.Duration(*req.StepTimeoutInMinutes) * time.Minute)
		}
		if err := t.transition(j, e, InProgress); err != nil {
			return nil, nil, err
		}
	}
	resp.Execution = e.data(t.document(e.JobID))
	return resp, nil, nil
}

// lookup finds the execution a device request names: executionNumber or
// the latest.
func (t *txn) lookup(thing, jobID string, number *flexInt) (*execution, *rejection, error) {
	var k store.JobExecKey
	if number != nil {
		k = store.JobExecKey{Thing: thing, JobID: jobID, Number: int64(*number)}
	} else {
		var err error
		k, _, err = t.tx.LatestJobExecution(thing, jobID)
		if errors.Is(err, store.ErrNotFound) {
			return nil, reject(CodeResourceNotFound, "Job execution %s for thing %s not found", jobID, thing), nil
		}
		if err != nil {
			return nil, nil, err
		}
	}
	e, err := t.loadExec(k)
	if errors.Is(err, store.ErrNotFound) {
		return nil, reject(CodeResourceNotFound, "Job execution %s for thing %s not found", jobID, thing), nil
	}
	return e, nil, err
}

func (t *txn) describe(token, thing, jobID string, req *describeRequest) (any, *rejection, error) {
	resp := ExecutionResponse{Timestamp: t.now.Unix(), ClientToken: token}
	var e *execution
	if jobID == "$next" {
		v, err := t.pending(thing)
		if err != nil || len(v) == 0 {
			return resp, nil, err
		}
		e = v[0]
	} else {
		var rej *rejection
		var err error
		if e, rej, err = t.lookup(thing, jobID, req.ExecutionNumber); rej != nil || err != nil {
			return nil, rej, err
		}
		if e.Status.Terminal() {
			return nil, reject(CodeTerminalStateReached, "Job execution %s for thing %s is in the terminal state %s", jobID, thing, e.Status), nil
		}
	}
	var doc json.RawMessage
	if req.IncludeJobDocument == nil || *req.IncludeJobDocument {
		doc = t.document(e.JobID)
	}
	resp.Execution = e.data(doc)
	return resp, nil, nil
}

func (t *txn) update(token, thing, jobID string, req *updateRequest) (any, *rejection, error) {
	switch {
	case req.Status == "":
		return nil, reject(CodeInvalidRequest, "Missing required field: status"), nil
	case !req.Status.valid():
		return nil, reject(CodeInvalidRequest, "Invalid status %q", req.Status), nil
	case !req.Status.deviceMaySet():
		return nil, reject(CodeInvalidRequest, "A device may set status IN_PROGRESS, SUCCEEDED, FAILED or REJECTED, not %s", req.Status), nil
	}
	if err := checkDetails(req.StatusDetails); err != nil {
		return nil, reject(CodeInvalidRequest, "%v", err), nil
	}
	if rej := checkStep(req.StepTimeoutInMinutes, true); rej != nil {
		return nil, rej, nil
	}
	e, rej, err := t.lookup(thing, jobID, req.ExecutionNumber)
	if rej != nil || err != nil {
		return nil, rej, err
	}
	if req.ExpectedVersion != nil && int64(*req.ExpectedVersion) != e.VersionNumber {
		return nil, &rejection{code: CodeVersionMismatch, msg: "The expected version does not match the job execution's version", state: e.state()}, nil
	}
	if e.Status.Terminal() {
		return nil, &rejection{code: CodeInvalidStateTransition, msg: fmt.Sprintf("Job execution %s for thing %s is %s and cannot become %s", jobID, thing, e.Status, req.Status), state: e.state()}, nil
	}
	j, err := t.loadJob(jobID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, reject(CodeResourceNotFound, "Job %s not found", jobID), nil
	}
	if err != nil {
		return nil, nil, err
	}
	if req.StatusDetails != nil {
		e.StatusDetails = req.StatusDetails
	}
	if s := req.StepTimeoutInMinutes; s != nil && req.Status == InProgress {
		if *s == -1 {
			e.StepDeadline = time.Time{}
		} else {
			e.StepDeadline = t.now.Add(time.Duration(*s) * time.Minute)
		}
	}
	if err := t.transition(j, e, req.Status); err != nil {
		return nil, nil, err
	}
	resp := UpdateResponse{Timestamp: t.now.Unix(), ClientToken: token}
	if req.IncludeJobExecutionState {
		resp.ExecutionState = e.state()
	}
	if req.IncludeJobDocument {
		resp.JobDocument = t.document(jobID)
	}
	return resp, nil, nil
}
