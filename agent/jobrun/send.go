package jobrun

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/shadowgate/shadowgate/agent/config"
	"github.com/shadowgate/shadowgate/agent/link"
	"github.com/shadowgate/shadowgate/store"
)

// Pseudo statuses of Run.Cloud for an execution the service no longer
// shows: ended (a terminal status it did not name) or gone.
const (
	cloudEnded    = "ENDED"
	cloudNotFound = "NOT_FOUND"
)

// retryDelay is the wait before the tries'th retry: doubling from
// minRetry, capped, jittered between half and all of it.
func retryDelay(tries int) time.Duration {
	d := min(minRetry<<min(max(tries-1, 0), 12), maxRetry)
	return d/2 + rand.N(d/2+1)
}

type outgoing struct {
	topic   string
	payload []byte
}

// sendDue sends what is due and returns when it must run next: each open
// execution's unsettled status (or a re-read first, when its version is
// not known), the re-reads asked for, start-next when the gateway is free,
// and again what got no answer in time.
func (c *Client) sendDue() time.Time {
	now := c.o.Now()
	next := now.Add(time.Hour)
	if !c.o.Link.Connected() {
		return next // woken on connect
	}
	var out []outgoing
	c.mu.Lock()
	s := &c.mu
	if !s.loaded || s.refused != "" {
		c.mu.Unlock()
		return next
	}
	send := func(q *req) {
		q.deadline = now.Add(q.timeout)
		if q.firstSent.IsZero() {
			q.firstSent = time.Now()
		}
		out = append(out, outgoing{q.topic, q.payload})
	}
	// Requests without an answer go again, waiting longer; same token, so
	// that an answer to the first copy still counts.
	for _, q := range s.inflight {
		if !now.Before(q.deadline) {
			s.resent++
			c.log.Info("no answer from the jobs service; sending again", "kind", q.kind, "tid", q.tid, "waited", q.timeout)
			q.timeout = min(2*q.timeout, maxAnswerTimeout)
			send(q)
		}
		next = earliest(next, q.deadline)
	}
	if q := s.start; q != nil {
		if !now.Before(q.deadline) {
			s.resent++
			q.timeout = min(2*q.timeout, maxAnswerTimeout)
			send(q)
		}
		next = earliest(next, q.deadline)
	}
	tids := slices.Sorted(maps.Keys(s.runs))
	for _, tid := range tids {
		r := s.runs[tid]
		if s.inflight[tid] != nil || s.handling[tid] {
			continue
		}
		if at, ok := s.retryAt[tid]; ok && now.Before(at) {
			next = earliest(next, at)
			continue
		}
		check, checking := s.checkAt[tid]
		switch {
		case r.Unsent && (r.Version == 0 || s.needRead[tid]):
			send(c.getReq(tid, r))
		case r.Unsent:
			send(c.updateReq(tid, r))
		case checking && !terminal(r.Status) && !now.Before(check):
			delete(s.checkAt, tid)
			send(c.getReq(tid, r))
		case checking && !terminal(r.Status):
			next = earliest(next, check)
		}
	}
	if s.wantStart && s.start == nil && !s.busy() {
		if now.Before(s.startAt) {
			next = earliest(next, s.startAt)
		} else {
			s.wantStart = false
			tok := c.token("start")
			payload, _ := json.Marshal(map[string]string{"clientToken": tok})
			s.start = &req{kind: reqStart, token: tok, topic: c.t.startNext(), payload: payload, timeout: c.o.AnswerTimeout}
			send(s.start)
			next = earliest(next, s.start.deadline)
		}
	}
	c.mu.Unlock()
	for _, o := range out {
		// The PUBACK settles nothing: the answer does. A lost publish is
		// sent again after the answer timeout.
		if _, err := c.o.Link.PublishAsync(o.topic, false, o.payload); err != nil {
			c.log.Debug("publish jobs request", "topic", o.topic, "err", err)
		}
	}
	return next
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// updateReq is the update that reports r's status with the version known.
// c.mu held.
func (c *Client) updateReq(tid string, r *Run) *req {
	tok := c.token("upd")
	body := updateRequest{Status: r.Status, StatusDetails: r.Details, ExpectedVersion: max(r.Version, c.mu.known[tid]),
		ExecutionNumber: r.ExecutionNumber, IncludeJobExecutionState: true, ClientToken: tok}
	if r.Status == StatusInProgress {
		body.StepTimeoutInMinutes = r.StepTimeout
	}
	payload, _ := json.Marshal(body)
	q := &req{kind: reqUpdate, tid: tid, token: tok, status: r.Status, details: r.Details, step: body.StepTimeoutInMinutes, expected: body.ExpectedVersion,
		topic: c.t.update(r.JobID), payload: payload, timeout: c.o.AnswerTimeout}
	c.mu.inflight[tid], c.mu.byToken[tok] = q, tid
	return q
}

// getReq re-reads r's execution. c.mu held.
func (c *Client) getReq(tid string, r *Run) *req {
	tok := c.token("get")
	payload, _ := json.Marshal(describeRequest{ExecutionNumber: r.ExecutionNumber, IncludeJobDocument: false, ClientToken: tok})
	q := &req{kind: reqGet, tid: tid, token: tok, topic: c.t.get(r.JobID), payload: payload, timeout: c.o.AnswerTimeout}
	c.mu.inflight[tid], c.mu.byToken[tok] = q, tid
	return q
}

// modify changes the record of tid in one transaction; fn may run more
// than once and acts only through tx and r.
func (c *Client) modify(tid string, fn func(tx *store.Tx, r *Run, now time.Time) error) error {
	now := c.o.Now()
	err := c.o.Store.Update(func(tx *store.Tx) error {
		r, err := loadRun(tx, tid)
		if err != nil {
			return err
		}
		if err := fn(tx, r, now); err != nil {
			return err
		}
		return c.save(tx, r)
	})
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		c.log.Error("record a job execution's answer; it is asked again", "tid", tid, "err", err)
		c.mu.Lock()
		c.mu.retryAt[tid] = now.Add(retryDelay(1))
		c.mu.Unlock()
		c.kick()
	}
	return err
}

// landed settles r's status: the service holds it (accepted, or found so
// on a re-read). tx is the record's transaction; step is the
// stepTimeoutInMinutes that went with it.
func landed(tx *store.Tx, r *Run, sent string, details map[string]string, step int64, now time.Time, how string) error {
	if !r.Unsent || r.Status != sent || !maps.Equal(r.Details, details) || sent == StatusInProgress && r.StepTimeout != step {
		return nil // a newer status waits; it goes next, with the version just learnt
	}
	if err := unqueue(tx, r); err != nil {
		return err
	}
	r.event(now, "%s %s (version %d)", how, sent, r.Version)
	if terminal(r.Status) {
		r.Finished = now
	}
	return nil
}

func (c *Client) clearRead(tid string) {
	c.mu.Lock()
	delete(c.mu.needRead, tid)
	delete(c.mu.mismatch, tid)
	delete(c.mu.retryAt, tid)
	delete(c.mu.tries, tid)
	c.mu.Unlock()
}

// onUpdateAccepted settles the status an update carried.
func (c *Client) onUpdateAccepted(_ context.Context, m *link.Message) {
	var a answer
	if err := json.Unmarshal(m.Payload, &a); err != nil {
		c.log.Warn("unreadable job update answer", "topic", m.Topic, "err", err)
		return
	}
	var v int64
	if st := a.ExecutionState; st != nil {
		v = st.VersionNumber
	}
	// A newer status waiting (the action ended while this answer was on
	// its way) may go before this answer's record commits: with the
	// version this answer gives.
	q := c.takeAnswer(a.ClientToken, reqUpdate, v)
	c.cloudTime(a.Timestamp, q)
	if q == nil {
		return
	}
	defer c.handled(q)
	c.clearRead(q.tid)
	c.modify(q.tid, func(tx *store.Tx, r *Run, now time.Time) error {
		r.Version, r.Cloud = max(r.Version, q.expected+1), q.status
		if st := a.ExecutionState; st != nil {
			r.Version, r.Cloud = st.VersionNumber, st.Status
		}
		return landed(tx, r, q.status, q.details, q.step, now, "accepted:")
	})
	c.log.Info("job status accepted", "tid", q.tid, "status", q.status)
	c.kick()
}

// onGetAccepted reconciles with the execution as the service has it.
func (c *Client) onGetAccepted(_ context.Context, m *link.Message) {
	var a answer
	if err := json.Unmarshal(m.Payload, &a); err != nil {
		c.log.Warn("unreadable job execution", "topic", m.Topic, "err", err)
		return
	}
	q := c.takeAnswer(a.ClientToken, reqGet)
	c.cloudTime(a.Timestamp, q)
	if q == nil {
		return
	}
	defer c.handled(q)
	e := a.Execution
	if e == nil {
		c.gone(q.tid, codeResourceNotFound, "the jobs service describes no such execution", nil)
		return
	}
	if terminal(e.Status) {
		c.gone(q.tid, codeTerminalStateReached, "the execution is "+e.Status, &execState{Status: e.Status, VersionNumber: e.VersionNumber})
		return
	}
	c.clearRead(q.tid)
	var waiting bool
	c.modify(q.tid, func(tx *store.Tx, r *Run, now time.Time) error {
		r.Version, r.Cloud = e.VersionNumber, e.Status
		waiting = r.Started.IsZero() && r.Operation != config.ConfigUpdateOperation
		// A step timeout does not show in the execution read: an
		// IN_PROGRESS that carries one goes again (it restarts the timer).
		if r.Unsent && r.Status == StatusInProgress && r.StepTimeout == 0 && e.Status == StatusInProgress && maps.Equal(r.Details, e.StatusDetails) {
			return landed(tx, r, r.Status, r.Details, 0, now, "the jobs service has it already:")
		}
		return nil // the status goes (again) with this version
	})
	if waiting {
		// Not started (awaiting approval, or its actuators): read again
		// now and then, in case the notify-next of its end is missed.
		c.mu.Lock()
		c.mu.checkAt[q.tid] = c.o.Now().Add(checkEvery)
		c.mu.Unlock()
	}
	c.kick()
}

// onRejected takes a …/rejected answer to a request of kind.
func (c *Client) onRejected(kind reqKind) link.Handler {
	return func(_ context.Context, m *link.Message) {
		var e errorResponse
		if err := json.Unmarshal(m.Payload, &e); err != nil {
			c.log.Warn("unreadable jobs rejection", "topic", m.Topic, "err", err)
			return
		}
		q := c.takeAnswer(e.ClientToken, kind)
		c.cloudTime(e.Timestamp, q)
		if q == nil {
			return
		}
		if kind != reqStart {
			defer c.handled(q)
		}
		switch kind {
		case reqStart:
			c.startRefused(&e)
		case reqUpdate:
			c.updateRefused(q, &e)
		case reqGet:
			c.getRefused(q, &e)
		}
		c.kick()
	}
}

func transient(code string) bool { return code == codeInternalError || code == codeRequestThrottled }

// backOff schedules tid's request again after a transient refusal.
func (c *Client) backOff(tid string, e *errorResponse, what string) {
	c.mu.Lock()
	c.mu.tries[tid]++
	n := c.mu.tries[tid]
	d := retryDelay(n)
	c.mu.retryAt[tid] = c.o.Now().Add(d)
	c.mu.retried++
	c.mu.Unlock()
	c.log.Info("the jobs service refused a request for now; retrying", "what", what, "tid", tid, "code", e.Code, "message", e.Message, "tries", n, "retry_in", d.Round(time.Millisecond))
}

func (c *Client) startRefused(e *errorResponse) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if transient(e.Code) {
		c.mu.startTries++
		c.mu.wantStart = true
		c.mu.startAt = c.o.Now().Add(retryDelay(c.mu.startTries))
		c.mu.retried++
		return
	}
	c.mu.startTries = 0
	c.log.Error("the jobs service refused start-next; asked again on the next notification or connect", "code", e.Code, "message", e.Message)
}

func (c *Client) updateRefused(q *req, e *errorResponse) {
	switch {
	case e.Code == codeVersionMismatch:
		// Re-read and reconcile: the status may have landed already (its
		// answer lost), or the execution moved on.
		c.mu.Lock()
		c.mu.needRead[q.tid] = true
		c.mu.mismatch[q.tid] = e.ExecutionState
		c.mu.Unlock()
		c.log.Info("job status met another version; re-reading the execution", "tid", q.tid, "status", q.status)
	case e.Code == codeResourceNotFound:
		c.mu.Lock()
		c.mu.needRead[q.tid] = true // confirm before giving up
		c.mu.Unlock()
	case e.Code == codeInvalidStateTransition && e.ExecutionState != nil && e.ExecutionState.Status == q.status:
		st := e.ExecutionState
		c.clearRead(q.tid)
		c.modify(q.tid, func(tx *store.Tx, r *Run, now time.Time) error {
			r.Version, r.Cloud = st.VersionNumber, st.Status
			return landed(tx, r, q.status, q.details, q.step, now, "the jobs service has it already:")
		})
	case transient(e.Code):
		c.backOff(q.tid, e, "update")
	default:
		c.gone(q.tid, e.Code, e.Message, e.ExecutionState)
	}
}

func (c *Client) getRefused(q *req, e *errorResponse) {
	switch {
	case transient(e.Code):
		c.backOff(q.tid, e, "get")
	case e.Code == codeTerminalStateReached:
		c.mu.Lock()
		st := c.mu.mismatch[q.tid]
		c.mu.Unlock()
		if st == nil || !terminal(st.Status) {
			st = e.ExecutionState
		}
		c.gone(q.tid, e.Code, e.Message, st)
	default:
		c.gone(q.tid, e.Code, e.Message, e.ExecutionState)
	}
}

// gone takes a permanent refusal: the status is recorded as refused and
// dropped. When it says the execution ended in the cloud, the gateway's
// own end is recorded and not sent, and its command is canceled: one not
// started (awaiting approval, waiting for its actuators) never starts; one
// started runs to its end. A status that reached the cloud before (its
// answer lost) is settled instead.
func (c *Client) gone(tid, code, msg string, st *execState) {
	c.clearRead(tid)
	ended := ""
	switch {
	case code == codeResourceNotFound:
		ended = cloudNotFound
	case st != nil && terminal(st.Status):
		ended = st.Status
	case code == codeTerminalStateReached:
		ended = cloudEnded
	}
	var cancel, refused bool
	var status string
	c.modify(tid, func(tx *store.Tx, r *Run, now time.Time) error {
		knew := terminal(r.Cloud)
		cancel, refused, status = false, false, r.Status
		if st != nil {
			r.Version = st.VersionNumber
		}
		if ended != "" {
			r.Cloud = ended
		}
		if r.Unsent && ended == r.Status {
			return landed(tx, r, r.Status, r.Details, r.StepTimeout, now, "the jobs service has it already:")
		}
		if r.Unsent {
			refused = true
			r.Refused = code
			r.event(now, "the jobs service refused %s for good: %s: %s", r.Status, code, msg)
			if err := unqueue(tx, r); err != nil {
				return err
			}
		}
		switch {
		case terminal(r.Status):
			if r.Finished.IsZero() {
				r.Finished = now
			}
		case ended != "" && !knew:
			r.event(now, "the execution ended in the cloud: %s", cloudName(ended))
			cancel = r.Operation != config.ConfigUpdateOperation
		}
		return nil
	})
	if refused {
		c.mu.Lock()
		c.mu.refusedForGood++
		c.mu.Unlock()
		c.log.Warn("the jobs service refused a job status for good; recorded and dropped", "tid", tid, "status", status, "code", code, "message", msg)
	}
	if cancel {
		c.cancelCommand(tid, ended)
	}
}

// cancelCommand cancels the command of an execution that ended in the
// cloud (ended: its status there): through the pipeline's durable cancel,
// so that one not started never starts.
func (c *Client) cancelCommand(tid, ended string) {
	if c.cmds == nil {
		return
	}
	reason := ReasonEndedInCloud + " before its action started; not run"
	if ended != cloudEnded && ended != cloudNotFound {
		reason = ReasonEndedInCloud + " (" + ended + ") before its action started; not run"
	}
	c.log.Info("job execution ended in the cloud; canceling its command", "tid", tid, "cloud", ended)
	if !c.cmds.Cancel(tid, reason, func(ok bool) {
		if !ok {
			c.log.Warn("cancel of an execution that ended in the cloud not written", "tid", tid)
		}
	}) {
		c.log.Warn("cannot cancel the command of an execution that ended in the cloud", "tid", tid)
	}
}

// cancelEnded cancels again, after a restart, the commands of executions
// known to have ended in the cloud whose cancel may not have been written
// (the gateway stopped in between): not started, not ended on the gateway.
func (c *Client) cancelEnded() {
	type ended struct{ tid, cloud string }
	var todo []ended
	c.mu.Lock()
	for tid, r := range c.mu.runs {
		if terminal(r.Cloud) && !terminal(r.Status) && r.Started.IsZero() && r.Operation != config.ConfigUpdateOperation {
			todo = append(todo, ended{tid, r.Cloud})
		}
	}
	c.mu.Unlock()
	for _, e := range todo {
		c.cancelCommand(e.tid, e.cloud)
	}
}
