package jobrun

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/shadowgate/shadowgate/agent/command"
	"github.com/shadowgate/shadowgate/agent/config"
	"github.com/shadowgate/shadowgate/store"
)

// Run is the gateway's record of one job execution, kept in the store
// (job_runs) beside the command it runs as: what the gateway decided to
// report, what the jobs service last said, and what happened, in order.
type Run struct {
	TID             string    `json:"tid"`
	JobID           string    `json:"jobId"`
	ExecutionNumber int64     `json:"executionNumber"`
	Operation       string    `json:"operation,omitempty"`
	Received        time.Time `json:"received"`
	// Status and Details are the status the gateway reports (IN_PROGRESS,
	// SUCCEEDED, FAILED, REJECTED) and its statusDetails; StepTimeout the
	// stepTimeoutInMinutes sent with IN_PROGRESS once the action started.
	Status      string            `json:"status"`
	Details     map[string]string `json:"statusDetails,omitempty"`
	StepTimeout int64             `json:"stepTimeoutInMinutes,omitempty"`
	// Started is when the action started (its first change recorded,
	// before it touched hardware); zero while it waits (for approval, for
	// its actuators) or if it never ran.
	Started time.Time `json:"started,omitzero"`
	// Unsent: the jobs service has not accepted Status yet; it waits in the
	// outbox (item Seq) and is sent until it is answered.
	Unsent bool   `json:"unsent,omitempty"`
	Seq    uint64 `json:"outboxSeq,omitempty"`
	// Cloud and Version are the execution's status and versionNumber as the
	// jobs service last said (Version 0: not known, read it first).
	Cloud   string `json:"cloudStatus,omitempty"`
	Version int64  `json:"versionNumber,omitempty"`
	// Approval is "pending" while a technician's approval is awaited, then
	// "approved".
	Approval string `json:"approval,omitempty"`
	// Refused is the error code of the service's permanent refusal of
	// Status: it is not sent again.
	Refused string `json:"refused,omitempty"`
	// Finished is when the execution ended for the gateway: its final
	// status settled (accepted, or refused for good).
	Finished time.Time `json:"finished,omitzero"`
	Events   []Event   `json:"events"`
}

// Event is one step in a Run's history.
type Event struct {
	At   time.Time `json:"at"`
	What string    `json:"what"`
}

// maxEvents bounds a Run's history; the first event (received) is kept.
const maxEvents = 32

func (r *Run) event(at time.Time, format string, args ...any) {
	r.Events = append(r.Events, Event{At: at.UTC(), What: fmt.Sprintf(format, args...)})
	if len(r.Events) > maxEvents {
		r.Events = append(r.Events[:1:1], r.Events[len(r.Events)-maxEvents+1:]...)
	}
}

// Open reports whether the execution is not over for the gateway: its
// action is not finished or its status not yet settled.
func (r *Run) Open() bool { return !terminal(r.Status) || r.Unsent }

func loadRun(tx *store.Tx, tid string) (*Run, error) {
	b, err := tx.GetJobRun(tid)
	if err != nil {
		return nil, err
	}
	var r Run
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%w: job run %s is unreadable: %v", store.ErrCorrupt, tid, err)
	}
	return &r, nil
}

func saveRun(tx *store.Tx, r *Run) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode job run %s: %w", r.TID, err)
	}
	return tx.PutJobRun(r.TID, b)
}

// save stores r in tx and, once tx is durable, tells the Client of a copy.
func (c *Client) save(tx *store.Tx, r *Run) error {
	if err := saveRun(tx, r); err != nil {
		return err
	}
	saved := *r
	tx.OnCommit(func() { c.committed(&saved) })
	return nil
}

func outboxKey(tid string) string { return "job/" + tid }

// report queues r's Status as the next status to send: the outbox holds
// the update request (the one coalesced per execution); the sender sends
// it with the version known then and a fresh clientToken.
func (c *Client) report(tx *store.Tx, r *Run) error {
	body, err := json.Marshal(updateRequest{Status: r.Status, StatusDetails: r.Details, ExpectedVersion: r.Version,
		ExecutionNumber: r.ExecutionNumber, IncludeJobExecutionState: true, StepTimeoutInMinutes: r.StepTimeout})
	if err != nil {
		return fmt.Errorf("encode job status: %w", err)
	}
	seq, err := tx.Enqueue(store.OutItem{Kind: store.KindJob, Topic: c.t.update(r.JobID), Payload: body, QoS: 1, Key: outboxKey(r.TID)})
	if err != nil {
		return fmt.Errorf("queue job status: %w", err)
	}
	r.Unsent, r.Seq = true, seq
	return nil
}

// unqueue removes r's outbox copy.
func unqueue(tx *store.Tx, r *Run) error {
	if r.Seq != 0 {
		if err := tx.Remove(r.Seq); err != nil {
			return err
		}
	}
	r.Unsent, r.Seq = false, 0
	return nil
}

// Claims reports whether tid is a job execution's (command.Sink).
func (c *Client) Claims(tid string) bool {
	if !strings.HasPrefix(tid, TIDPrefix) {
		return false
	}
	_, _, err := ParseTID(tid)
	return err == nil
}

// Ack turns a command ack of a job execution into its status (command.Sink):
// RUNNING is IN_PROGRESS (reported with {"awaiting":"approval"} while a
// technician's approval is awaited, and when the action starts, with the
// step timeout, see Started; start-next made it IN_PROGRESS already), SUCCESS is SUCCEEDED with the result, FAILURE is FAILED with
// the reason, or REJECTED when the gateway refused the execution before it
// ran (unknown operation, invalid args; a technician's rejection). It runs
// inside the transaction that records the ack: the record and the status in
// the outbox land with it.
func (c *Client) Ack(tx *store.Tx, tid string, ack []byte) error {
	var a command.Ack
	if err := json.Unmarshal(ack, &a); err != nil {
		return fmt.Errorf("job status of %s: unreadable ack: %w", tid, err)
	}
	now := c.o.Now()
	r, err := loadRun(tx, tid)
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrCorrupt):
		// A damaged record must not hold up the command pipeline: the
		// execution starts a new one.
		if r, err = c.newRun(tid, now); err != nil {
			return err
		}
	case err != nil:
		return err
	}
	if a.Status == command.StatusRunning && a.Reason == command.ReasonCancelTooLate {
		// The cloud ended it, the gateway's cancel found the action
		// running: it runs to its end, which is recorded, not reported.
		r.event(now, "the cancel came too late: the action had started (hardware is moving); it runs to its end, recorded here and not reported over the cloud's %s", cloudName(r.Cloud))
		return c.save(tx, r)
	}
	status, details := c.statusOf(r, &a)
	step := int64(0)
	if status == StatusInProgress {
		step = r.StepTimeout // set once the action started; kept while it runs
	}
	switch {
	case status == "":
		return nil
	case status == StatusInProgress && r.Status == StatusInProgress && maps.Equal(details, r.Details):
		return nil // a heartbeat: nothing new to say
	case terminal(r.Status) && status == StatusInProgress:
		return nil // a late RUNNING: the final status stands
	case status == r.Status && maps.Equal(details, r.Details) && r.Unsent:
		return nil // queued already
	}
	resend := status == r.Status && maps.Equal(details, r.Details)
	if resend && (terminal(r.Cloud) || r.Refused != "") {
		return nil // the service has ended it, or refused this for good: nothing to say again
	}
	// IN_PROGRESS is said when it says something the service does not
	// know: awaiting approval, and the action's start with its step
	// timeout (Started). Accepted (start-next made it IN_PROGRESS already)
	// or approved, it waits for its start, unless a status is queued
	// still: then this one replaces it.
	quiet := status == StatusInProgress && a.Reason != command.ReasonAwaitingApproval && !r.Unsent
	r.Refused = ""
	r.Status, r.Details, r.StepTimeout = status, details, step
	if terminal(status) && r.Approval == "pending" {
		r.Approval = "" // not given: rejected, or the wait ended
	}
	switch {
	case a.Status == command.StatusRunning && a.Reason == command.ReasonAwaitingApproval:
		r.Approval = "pending"
		r.event(now, "awaiting a technician's approval: shadowctl approve %s", r.JobID)
	case a.Status == command.StatusRunning && r.Approval == "pending":
		r.Approval = "approved"
		r.event(now, "approved")
	case a.Status == command.StatusRunning:
		r.event(now, "accepted by the gateway (in its inbox; it starts when its actuators are free)")
	case resend:
		r.event(now, "the jobs service lists it as pending still: reporting %s again", status)
	default:
		r.event(now, "%s: %s", status, describe(details))
	}
	var cloudEnded bool
	if terminal(r.Cloud) && (terminal(status) || status == StatusInProgress) {
		// The cloud ended it first (canceled, timed out, removed): the
		// gateway's own status is recorded, never sent over the cloud's.
		cloudEnded = terminal(status)
		if a.Status == command.StatusFailure && strings.HasPrefix(a.Reason, ReasonEndedInCloud) {
			r.event(now, "canceled on the gateway before its action started: it never ran")
		} else {
			r.event(now, "not reported: the jobs service had ended the execution as %s", cloudName(r.Cloud))
		}
		if err := unqueue(tx, r); err != nil {
			return err
		}
		if cloudEnded {
			r.Finished = now
		}
	} else if !quiet {
		if err := c.report(tx, r); err != nil {
			return err
		}
	}
	if err := saveRun(tx, r); err != nil {
		return err
	}
	saved := *r
	tx.OnCommit(func() {
		c.committed(&saved)
		if terminal(status) {
			c.count(status, cloudEnded)
		}
	})
	return nil
}

// Started starts an execution's step timer (command.Starter): its command
// is about to make its first change, in this transaction. IN_PROGRESS goes
// again with the command type's timeout as stepTimeoutInMinutes (AWS: an
// update to IN_PROGRESS with a new stepTimeoutInMinutes starts the step
// timer afresh), so that the service times out the action, not the wait
// for approval or for the actuators.
func (c *Client) Started(tx *store.Tx, tid string) error {
	now := c.o.Now()
	r, err := loadRun(tx, tid)
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrCorrupt):
		return nil // nothing to time; the action must not wait for a record
	case err != nil:
		return err
	case !r.Started.IsZero() || terminal(r.Status):
		return nil
	}
	r.Started = now.UTC()
	if terminal(r.Cloud) {
		// Ended in the cloud, its cancel not through yet: the start won.
		r.event(now, "started, although the jobs service had ended the execution as %s: it runs to its end, recorded here and not reported", cloudName(r.Cloud))
	} else {
		r.StepTimeout = c.stepMinutes(r.Operation)
		r.event(now, "started: the action runs (step timeout %d min)", r.StepTimeout)
		if err := c.report(tx, r); err != nil {
			return err
		}
	}
	return c.save(tx, r)
}

// cloudName is how a Run.Cloud reads in its history.
func cloudName(s string) string {
	switch s {
	case cloudEnded:
		return "ended (a terminal status it did not name)"
	case cloudNotFound:
		return "gone (no such execution)"
	}
	return s
}

// newRun makes the record of an execution first seen in this transaction.
func (c *Client) newRun(tid string, now time.Time) (*Run, error) {
	jobID, n, err := ParseTID(tid)
	if err != nil {
		return nil, err
	}
	r := &Run{TID: tid, JobID: jobID, ExecutionNumber: n, Received: now.UTC()}
	c.hintMu.Lock()
	if h, ok := c.hints[tid]; ok {
		r.Operation, r.Version, r.Cloud = h.operation, h.version, h.status
	}
	c.hintMu.Unlock()
	r.event(now, "received (execution %d, version %d)", n, r.Version)
	return r, nil
}

// statusOf is the job status an ack says, "" for none.
func (c *Client) statusOf(r *Run, a *command.Ack) (status string, details map[string]string) {
	switch a.Status {
	case command.StatusRunning:
		if a.Reason == command.ReasonAwaitingApproval {
			return StatusInProgress, map[string]string{"awaiting": "approval"}
		}
		if r.Approval == "pending" || r.Approval == "approved" {
			details = map[string]string{"approval": "approved"}
		}
		return StatusInProgress, details
	case command.StatusSuccess:
		if len(a.Result) == 0 {
			return StatusSucceeded, nil
		}
		b, _ := json.Marshal(a.Result)
		return StatusSucceeded, map[string]string{"result": detailValue(string(b))}
	case command.StatusFailure:
		reason := detailValue(a.Reason)
		if reason == "" {
			reason = "failed"
		}
		if a.Reason == command.ReasonRejected || r.Status == "" {
			// Refused before it ran: the gateway rejects the execution.
			return StatusRejected, map[string]string{"reason": reason}
		}
		return StatusFailed, map[string]string{"reason": reason}
	}
	return "", nil
}

// stepMinutes is the command type's timeout in whole minutes, rounded up,
// as stepTimeoutInMinutes: if the gateway dies running it, the jobs service
// times the execution out.
func (c *Client) stepMinutes(op string) int64 {
	d := config.DefaultCommandTimeout
	if t := c.o.Config.Commands.Types[op]; t != nil && t.Timeout > 0 {
		d = t.Timeout.D()
	}
	m := int64(math.Ceil(d.Minutes()))
	return min(max(m, 1), maxStepMinutes)
}

// detailValue makes s a statusDetails value: control characters become
// spaces, at most 1024 characters.
func detailValue(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || !unicode.IsPrint(r) && !unicode.IsSpace(r) {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
	s = strings.TrimSpace(s)
	if utf8.RuneCountInString(s) > maxDetailValue {
		rs := []rune(s)
		s = string(rs[:maxDetailValue-1]) + "…"
	}
	return s
}

func describe(d map[string]string) string {
	if len(d) == 0 {
		return "-"
	}
	b, _ := json.Marshal(d)
	return string(b)
}
