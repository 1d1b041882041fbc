package jobs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/shadowgate/shadowgate/store"
)

// Message is one MQTT message the service publishes: a response or a
// notification, on a full topic.
type Message struct {
	Topic   string
	Payload []byte
}

// Timer kinds in the store's index.
const (
	timerRollout = 'R' // payload: job id
	timerTimeout = 'T' // payload: thing 0x00 job id 0x00 execution number
)

// txn is the jobs rules at work inside one store transaction. Everything it
// changes goes through tx, so that a commit the store runs again starts
// afresh; the messages it collects are published after the commit.
type txn struct {
	s   *Service
	tx  *store.Tx
	now time.Time
	out []Message

	jobs   map[string]*job // loaded this transaction
	dirty  map[string]bool // jobs to write back
	before map[string]pendingView
	things []string // touched, in order
	kick   bool     // a timer was filed
}

func (s *Service) newTxn(tx *store.Tx, now time.Time) *txn {
	return &txn{s: s, tx: tx, now: now, jobs: map[string]*job{}, dirty: map[string]bool{}, before: map[string]pendingView{}}
}

// jobTargets reads the targets stored for job id.
func (t *txn) jobTargets(id string) ([]string, error) {
	b, err := t.tx.GetJobTargets(id)
	if err != nil {
		return nil, err
	}
	var out []string
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("stored targets of job %s unreadable: %w", id, err)
	}
	return out, nil
}

// errMissing marks a record that is not there.
var errMissing = store.ErrNotFound

func (t *txn) loadJob(id string) (*job, error) {
	if j, ok := t.jobs[id]; ok {
		if j == nil {
			return nil, fmt.Errorf("job %s: %w", id, errMissing)
		}
		return j, nil
	}
	b, err := t.tx.GetJob(id)
	if err != nil {
		return nil, err
	}
	j := t.s.decoded.get(id, b)
	if j == nil {
		if j, err = decodeJob(b); err != nil {
			return nil, fmt.Errorf("stored job %s unreadable: %w", id, err)
		}
		if j.Targets, err = t.jobTargets(id); err != nil {
			return nil, err
		}
		t.s.decoded.put(id, b, j)
	}
	t.jobs[id] = j
	return j, nil
}

// jobCache holds the last record of each of a few jobs the service read or
// wrote, with the job it decodes to. A job is loaded and saved by every
// transition of its executions, and its record holds every target: the
// cache spares the decoding, which would cost each device request time in
// proportion to the job's targets. An entry is used only for the very bytes
// it was made from, so what is stored is always the truth (a rolled-back
// commit, a restart, another writer only miss).
type jobCache struct {
	mu sync.Mutex
	m  map[string]cachedJob
}

type cachedJob struct {
	b []byte
	j *job
}

const jobCacheSize = 16 // jobs in flight at once; a record may hold 10,000 targets

// get returns a copy of the job that b, the record of id, decodes to, or
// nil.
func (c *jobCache) get(id string, b []byte) *job {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[id]; ok && bytes.Equal(e.b, b) {
		return e.j.clone()
	}
	return nil
}

// put remembers that b, which the caller no longer changes, is the record
// of j.
func (c *jobCache) put(id string, b []byte, j *job) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= jobCacheSize {
		c.m = map[string]cachedJob{}
	}
	c.m[id] = cachedJob{b: b, j: j.clone()}
}

// clone copies what a transaction changes in a job (its configuration and
// targets, with their encoding, are fixed at creation and shared).
func (j *job) clone() *job {
	c := *j
	c.Counts = maps.Clone(j.Counts)
	return &c
}

func (t *txn) markJob(j *job) {
	t.jobs[j.JobID] = j
	t.dirty[j.JobID] = true
}

func (t *txn) loadExec(k store.JobExecKey) (*execution, error) {
	b, err := t.tx.GetJobExecution(k)
	if err != nil {
		return nil, err
	}
	var e execution
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("stored job execution %s/%s/%d unreadable: %w", k.Thing, k.JobID, k.Number, err)
	}
	return &e, nil
}

func (e *execution) key() store.JobExecKey {
	return store.JobExecKey{Thing: e.ThingName, JobID: e.JobID, Number: e.ExecutionNumber}
}

func timeoutPayload(k store.JobExecKey) string {
	return fmt.Sprintf("%s\x00%s\x00%d", k.Thing, k.JobID, k.Number)
}

// saveExec writes e, keeping its pending entry and its timer in step with
// its status. The thing's notifications are computed from what it was
// before its first change in this transaction.
func (t *txn) saveExec(e *execution) error {
	t.touch(e.ThingName)
	if e.Status.Terminal() {
		if err := t.tx.DeletePendingJob(e.ThingName, e.Seq); err != nil {
			return err
		}
	}
	if want := e.deadline(); !e.TimerAt.Equal(want) {
		if !e.TimerAt.IsZero() {
			if err := t.tx.DeleteJobTimer(store.JobTimer{Due: e.TimerAt, Kind: timerTimeout, Payload: timeoutPayload(e.key())}); err != nil {
				return err
			}
		}
		if !want.IsZero() {
			if err := t.tx.PutJobTimer(store.JobTimer{Due: want, Kind: timerTimeout, Payload: timeoutPayload(e.key())}); err != nil {
				return err
			}
			t.kick = true
		}
		e.TimerAt = want
	}
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode job execution: %w", err)
	}
	return t.tx.PutJobExecution(e.key(), b)
}

// createExecution queues a new execution of j on thing; prev is the
// thing's latest execution of j, if any (a retry or a rejoin).
func (t *txn) createExecution(j *job, thing string, prev *execution, retry bool) (*execution, error) {
	t.touch(thing)
	seq, err := t.tx.NextJobSeq()
	if err != nil {
		return nil, err
	}
	e := &execution{JobID: j.JobID, ThingName: thing, ExecutionNumber: 1, Seq: seq, Status: Queued,
		QueuedAt: t.now, LastUpdatedAt: t.now, VersionNumber: 1}
	if prev != nil {
		e.ExecutionNumber = prev.ExecutionNumber + 1
		if retry {
			e.RetryAttempt = prev.RetryAttempt + 1
			e.FailedRetries, e.TimedOutRetries = prev.FailedRetries, prev.TimedOutRetries
		}
		j.Counts[prev.Status]--
	} else {
		j.Notified++
	}
	j.Counts[Queued]++
	t.markJob(j)
	if err := t.tx.PutPendingJob(seq, e.key()); err != nil {
		return nil, err
	}
	return e, t.saveExec(e)
}

// transition moves e to status to (the caller checked it is allowed) and
// applies what follows: timers, counts, retries, abort, completion.
func (t *txn) transition(j *job, e *execution, to ExecStatus) error {
	from := e.Status
	e.Status = to
	e.LastUpdatedAt = t.now
	e.VersionNumber++
	if from == Queued && to == InProgress {
		e.StartedAt = t.now
		if j.Timeout != nil && j.Timeout.InProgressTimeoutInMinutes != nil {
			e.InProgressDeadline = t.now.Add(time.Duration(*j.Timeout.InProgressTimeoutInMinutes) * time.Minute)
		}
	}
	if from != to {
		j.Counts[from]--
		j.Counts[to]++
	}
	t.markJob(j)
	if err := t.saveExec(e); err != nil {
		return err
	}
	if !to.Terminal() {
		return nil
	}
	if j.Status == JobInProgress && (to == Failed || to == TimedOut) && t.retryAllowed(j, e) {
		if to == Failed {
			e.FailedRetries++
		} else {
			e.TimedOutRetries++
		}
		if _, err := t.createExecution(j, e.ThingName, e, true); err != nil {
			return err
		}
	} else if j.Status == JobInProgress && (to == Failed || to == TimedOut || to == Rejected) {
		if err := t.checkAbort(j); err != nil {
			return err
		}
	}
	t.checkComplete(j)
	return nil
}

// retryAllowed reports whether j's retry criteria allow another execution
// after e ended FAILED or TIMED_OUT.
func (t *txn) retryAllowed(j *job, e *execution) bool {
	if j.Retry == nil {
		return false
	}
	for _, c := range j.Retry.CriteriaList {
		switch {
		case c.FailureType == "ALL" && e.FailedRetries+e.TimedOutRetries < c.NumberOfRetries,
			c.FailureType == "FAILED" && e.Status == Failed && e.FailedRetries < c.NumberOfRetries,
			c.FailureType == "TIMED_OUT" && e.Status == TimedOut && e.TimedOutRetries < c.NumberOfRetries:
			return true
		}
	}
	return false
}

// checkAbort cancels j when an abort criterion is met: at least
// minNumberOfExecutedThings things have finished (their latest execution
// is terminal) and the share of them that ended in the failure type is at
// least thresholdPercentage.
func (t *txn) checkAbort(j *job) error {
	if j.Abort == nil {
		return nil
	}
	executed := j.terminalCount()
	for _, c := range j.Abort.CriteriaList {
		var fails int
		switch c.FailureType {
		case "FAILED":
			fails = j.Counts[Failed]
		case "REJECTED":
			fails = j.Counts[Rejected]
		case "TIMED_OUT":
			fails = j.Counts[TimedOut]
		case "ALL":
			fails = j.Counts[Failed] + j.Counts[Rejected] + j.Counts[TimedOut]
		}
		if executed > 0 && executed >= c.MinNumberOfExecutedThings && float64(fails)*100 >= c.ThresholdPercentage*float64(executed) {
			comment := fmt.Sprintf("aborted: %d of %d executed things ended %s (threshold %g%%)", fails, executed, c.FailureType, c.ThresholdPercentage)
			t.s.log.Info("job aborted", "job", j.JobID, "failureType", c.FailureType, "failures", fails, "executed", executed)
			return t.cancelJob(j, false, "", comment)
		}
	}
	return nil
}

// checkComplete ends a snapshot job whose executions are all terminal.
func (t *txn) checkComplete(j *job) {
	if j.Status == JobInProgress && j.TargetSelection == Snapshot && j.Pending == 0 && j.Counts[Queued] == 0 && j.Counts[InProgress] == 0 {
		j.Status = JobCompleted
		j.CompletedAt = t.now
		j.LastUpdatedAt = t.now
		t.markJob(j)
	}
}

// execKeysOfJob lists the keys of a job's executions (read before any
// change, so that no cursor walks a bucket being written).
func (t *txn) execKeysOfJob(id string) ([]store.JobExecKey, error) {
	var keys []store.JobExecKey
	err := t.tx.JobExecutionsOfJob(id, func(k store.JobExecKey) error { keys = append(keys, k); return nil })
	return keys, err
}

// cancelJob cancels j: its rollout stops, its QUEUED executions (and with
// force its IN_PROGRESS ones) become CANCELED.
func (t *txn) cancelJob(j *job, force bool, reason, comment string) error {
	j.Status = JobCanceled
	j.ForceCanceled = j.ForceCanceled || force
	if reason != "" {
		j.ReasonCode = reason
	}
	if comment != "" {
		j.Comment = comment
	}
	j.LastUpdatedAt = t.now
	t.markJob(j)
	if err := t.stopRollout(j); err != nil {
		return err
	}
	keys, err := t.execKeysOfJob(j.JobID)
	if err != nil {
		return err
	}
	for _, k := range keys {
		e, err := t.loadExec(k)
		if err != nil {
			return err
		}
		if e.Status == Queued || (force && e.Status == InProgress) {
			e.ForceCanceled = e.Status == InProgress
			if err := t.transition(j, e, Canceled); err != nil {
				return err
			}
		}
	}
	return t.dropGroupTargets(j)
}

func (t *txn) dropGroupTargets(j *job) error {
	if j.TargetSelection != Continuous {
		return nil
	}
	for _, arn := range j.Targets {
		if kind, name, _ := parseArn(arn); kind == "thinggroup" {
			if err := t.tx.DeleteGroupJob(name, j.JobID); err != nil {
				return err
			}
		}
	}
	return nil
}

func (t *txn) stopRollout(j *job) error {
	if err := t.tx.DropJobTargets(j.JobID); err != nil {
		return err
	}
	j.Pending = 0
	return t.setRolloutTimer(j, time.Time{})
}

func (t *txn) setRolloutTimer(j *job, at time.Time) error {
	if j.RolloutAt.Equal(at) {
		return nil
	}
	if !j.RolloutAt.IsZero() {
		if err := t.tx.DeleteJobTimer(store.JobTimer{Due: j.RolloutAt, Kind: timerRollout, Payload: j.JobID}); err != nil {
			return err
		}
	}
	if !at.IsZero() {
		if err := t.tx.PutJobTimer(store.JobTimer{Due: at, Kind: timerRollout, Payload: j.JobID}); err != nil {
			return err
		}
		t.kick = true
	}
	j.RolloutAt = at
	t.markJob(j)
	return nil
}

// rolloutStep releases what j's rollout allows now and files the timer of
// its next step.
func (t *txn) rolloutStep(j *job) error {
	if j.Status != JobInProgress || j.Pending == 0 {
		if err := t.setRolloutTimer(j, time.Time{}); err != nil {
			return err
		}
		t.checkComplete(j)
		return nil
	}
	rate := j.rate()
	n := releaseBatch
	if rate > 0 {
		if j.WindowStart.IsZero() || !t.now.Before(j.WindowStart.Add(time.Minute)) {
			j.WindowStart, j.WindowCount = t.now, 0
		}
		n = min(n, rate-j.WindowCount)
	}
	if n > 0 {
		things, err := t.tx.PopJobTargets(j.JobID, n)
		if err != nil {
			return err
		}
		j.Pending -= len(things)
		if len(things) == 0 {
			j.Pending = 0
		}
		j.WindowCount += len(things)
		for _, th := range things {
			if err := t.release(j, th); err != nil {
				return err
			}
		}
	}
	t.markJob(j)
	if j.Pending <= 0 {
		j.Pending = 0
		if err := t.setRolloutTimer(j, time.Time{}); err != nil {
			return err
		}
		t.checkComplete(j)
		return nil
	}
	at := t.now
	if rate > 0 && j.WindowCount >= rate {
		at = j.WindowStart.Add(time.Minute)
	}
	return t.setRolloutTimer(j, at)
}

// release gives thing an execution of j unless it has one that is not
// finished, or (for a snapshot job) any at all.
func (t *txn) release(j *job, thing string) error {
	_, b, err := t.tx.LatestJobExecution(thing, j.JobID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		_, err = t.createExecution(j, thing, nil, false)
		return err
	case err != nil:
		return err
	}
	var prev execution
	if err := json.Unmarshal(b, &prev); err != nil {
		return fmt.Errorf("stored job execution unreadable: %w", err)
	}
	if prev.Status == Removed {
		_, err = t.createExecution(j, thing, &prev, false)
		return err
	}
	return nil
}

// timeout ends an IN_PROGRESS execution whose deadline has passed.
func (t *txn) timeout(k store.JobExecKey, due time.Time) error {
	e, err := t.loadExec(k)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if e.TimerAt.Equal(due) {
		e.TimerAt = time.Time{} // the scheduler removed it
	}
	d := e.deadline()
	if e.Status != InProgress || d.IsZero() || d.After(t.now) {
		return t.saveExec(e) // files its timer again if it still has one
	}
	j, err := t.loadJob(k.JobID)
	if err != nil {
		return err
	}
	return t.transition(j, e, TimedOut)
}

// tick runs up to limit timers due now and returns how many it ran.
func (t *txn) tick(limit int) (int, error) {
	due, err := t.tx.DueJobTimers(t.now, limit)
	if err != nil {
		return 0, err
	}
	for _, d := range due {
		if err := t.tx.DeleteJobTimer(d); err != nil {
			return 0, err
		}
		switch d.Kind {
		case timerRollout:
			j, err := t.loadJob(d.Payload)
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				return 0, err
			}
			if j.RolloutAt.Equal(d.Due) {
				j.RolloutAt = time.Time{}
			}
			if err := t.rolloutStep(j); err != nil {
				return 0, err
			}
		case timerTimeout:
			var k store.JobExecKey
			if _, err := fmt.Sscanf(replaceNul(d.Payload), "%s %s %d", &k.Thing, &k.JobID, &k.Number); err != nil {
				t.s.log.Warn("dropping a malformed job timer", "payload", d.Payload)
				continue
			}
			if err := t.timeout(k, d.Due); err != nil {
				return 0, err
			}
		default:
			t.s.log.Warn("dropping a job timer of unknown kind", "kind", string(d.Kind))
		}
	}
	return len(due), nil
}

func replaceNul(s string) string {
	b := []byte(s)
	for i := range b {
		if b[i] == 0 {
			b[i] = ' '
		}
	}
	return string(b)
}

// pendingView is a thing's pending executions, IN_PROGRESS first, then
// QUEUED, each in creation order: the order of start-next and notify.
type pendingView []*execution

func (t *txn) pending(thing string) (pendingView, error) {
	var inProg, queued pendingView
	err := t.tx.PendingJobs(thing, func(_ uint64, k store.JobExecKey) error {
		e, err := t.loadExec(k)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		switch e.Status {
		case InProgress:
			inProg = append(inProg, e)
		case Queued:
			queued = append(queued, e)
		}
		return nil
	})
	return append(inProg, queued...), err
}

func (v pendingView) next() (string, int64) {
	if len(v) == 0 {
		return "", 0
	}
	return v[0].JobID, v[0].ExecutionNumber
}

func (v pendingView) members() []string {
	m := make([]string, len(v))
	for i, e := range v {
		m[i] = fmt.Sprintf("%s/%d", e.JobID, e.ExecutionNumber)
	}
	slices.Sort(m)
	return m
}

// touch records thing's pending view before its first change.
func (t *txn) touch(thing string) {
	if _, ok := t.before[thing]; ok {
		return
	}
	v, err := t.pending(thing)
	if err != nil {
		t.s.log.Warn("read pending jobs", "thing", thing, "err", err)
	}
	t.before[thing] = v
	t.things = append(t.things, thing)
}

// document is a job's document as JSON for the device API.
func (t *txn) document(jobID string) json.RawMessage {
	j, err := t.loadJob(jobID)
	if err != nil || !json.Valid([]byte(j.Document)) {
		return nil
	}
	return json.RawMessage(j.Document)
}

// flush writes the jobs changed and computes the notifications of every
// thing touched.
func (t *txn) flush() error {
	for _, thing := range t.things {
		after, err := t.pending(thing)
		if err != nil {
			return err
		}
		before := t.before[thing]
		if !slices.Equal(before.members(), after.members()) {
			n := JobExecutionsChanged{Jobs: map[ExecStatus][]JobExecutionSummary{}, Timestamp: t.now.Unix()}
			for i, e := range after {
				if i == 10 {
					break
				}
				n.Jobs[e.Status] = append(n.Jobs[e.Status], e.summary())
			}
			t.publish(thing+"/jobs/notify", n)
		}
		bj, bn := before.next()
		aj, an := after.next()
		if bj != aj || bn != an {
			n := NextJobExecutionChanged{Timestamp: t.now.Unix()}
			if len(after) > 0 {
				n.Execution = after[0].data(t.document(aj))
			}
			t.publish(thing+"/jobs/notify-next", n)
		}
	}
	ids := make([]string, 0, len(t.dirty))
	for id := range t.dirty {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		j := t.jobs[id]
		if j == nil {
			continue // deleted
		}
		b, err := encodeJob(j)
		if err != nil {
			return fmt.Errorf("encode job: %w", err)
		}
		if err := t.tx.PutJob(id, b); err != nil {
			return err
		}
		if j.created {
			tb, err := json.Marshal(j.Targets)
			if err != nil {
				return fmt.Errorf("encode job targets: %w", err)
			}
			if err := t.tx.PutJobTargets(id, tb); err != nil {
				return err
			}
			j.created = false
		}
		t.s.decoded.put(id, b, j)
	}
	return nil
}

// publish queues a message under the topic root.
func (t *txn) publish(rest string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		t.s.log.Error("encode jobs message", "err", err)
		return
	}
	t.out = append(t.out, Message{Topic: t.s.o.Root + rest, Payload: b})
}
