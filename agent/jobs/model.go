package jobs

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// ExecStatus is a job execution's status.
type ExecStatus string

// Job execution statuses (developer guide "Jobs and job execution states").
const (
	Queued     ExecStatus = "QUEUED"
	InProgress ExecStatus = "IN_PROGRESS"
	Succeeded  ExecStatus = "SUCCEEDED"
	Failed     ExecStatus = "FAILED"
	TimedOut   ExecStatus = "TIMED_OUT"
	Rejected   ExecStatus = "REJECTED"
	Removed    ExecStatus = "REMOVED"
	Canceled   ExecStatus = "CANCELED"
)

var allStatuses = []ExecStatus{Queued, InProgress, Succeeded, Failed, TimedOut, Rejected, Removed, Canceled}

// Terminal reports whether s is final.
func (s ExecStatus) Terminal() bool { return s != Queued && s != InProgress }

func (s ExecStatus) valid() bool {
	for _, v := range allStatuses {
		if s == v {
			return true
		}
	}
	return false
}

// deviceMaySet reports whether a device may ask for s in an update
// (IN_PROGRESS, SUCCEEDED, FAILED, REJECTED); the service alone sets
// QUEUED, TIMED_OUT, REMOVED and CANCELED.
func (s ExecStatus) deviceMaySet() bool {
	return s == InProgress || s == Succeeded || s == Failed || s == Rejected
}

// JobStatus is a job's status.
type JobStatus string

// Job statuses.
const (
	JobInProgress         JobStatus = "IN_PROGRESS"
	JobCanceled           JobStatus = "CANCELED"
	JobCompleted          JobStatus = "COMPLETED"
	JobDeletionInProgress JobStatus = "DELETION_IN_PROGRESS"
)

// Target selections.
const (
	Snapshot   = "SNAPSHOT"
	Continuous = "CONTINUOUS"
)

// Limits (AWS IoT API reference, iot and iot-jobs-data models).
const (
	maxJobIDLen        = 64
	maxThingNameLen    = 128
	maxDocumentBytes   = 32768
	maxDescriptionLen  = 2028
	maxDetailKeyLen    = 128
	maxDetailValueLen  = 1024
	maxDetails         = 10
	maxClientTokenLen  = 64
	maxTimeoutMinutes  = 10080 // 7 days
	maxRetries         = 10
	maxPageResults     = 250
	defaultPageResults = 50
	// releaseBatch bounds the executions one commit creates for a job
	// without a rollout rate.
	releaseBatch = 1000
)

var (
	namePattern = regexp.MustCompile(`^[a-zA-Z0-9:_-]+$`) // things, groups, status detail keys
	idPattern   = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)  // jobs, templates
)

func validThingName(s string) bool { return len(s) <= maxThingNameLen && namePattern.MatchString(s) }
func validJobID(s string) bool     { return len(s) <= maxJobIDLen && idPattern.MatchString(s) }

// noControl reports whether s is valid UTF-8 without control or unassigned
// characters (AWS's [^\p{C}]+).
func noControl(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.Is(unicode.C, r) || !unicode.In(r, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S, unicode.Z) {
			return false
		}
	}
	return true
}

// checkDetails validates status details as AWS does.
func checkDetails(d map[string]string) error {
	if len(d) > maxDetails {
		return fmt.Errorf("statusDetails has %d entries; at most %d are allowed", len(d), maxDetails)
	}
	for k, v := range d {
		if len(k) < 1 || len(k) > maxDetailKeyLen || !namePattern.MatchString(k) {
			return fmt.Errorf("statusDetails key %q must be 1 to %d characters of [a-zA-Z0-9:_-]", k, maxDetailKeyLen)
		}
		if v == "" || utf8.RuneCountInString(v) > maxDetailValueLen || !noControl(v) {
			return fmt.Errorf("statusDetails value of %q must be 1 to %d characters without control characters", k, maxDetailValueLen)
		}
	}
	return nil
}

// execution is a stored job execution.
type execution struct {
	JobID           string            `json:"jobId"`
	ThingName       string            `json:"thingName"`
	ExecutionNumber int64             `json:"executionNumber"`
	Seq             uint64            `json:"seq"`
	Status          ExecStatus        `json:"status"`
	StatusDetails   map[string]string `json:"statusDetails,omitempty"`
	QueuedAt        time.Time         `json:"queuedAt"`
	StartedAt       time.Time         `json:"startedAt,omitzero"`
	LastUpdatedAt   time.Time         `json:"lastUpdatedAt"`
	VersionNumber   int64             `json:"versionNumber"`
	ForceCanceled   bool              `json:"forceCanceled,omitempty"`
	RetryAttempt    int               `json:"retryAttempt,omitempty"`
	FailedRetries   int               `json:"failedRetries,omitempty"`
	TimedOutRetries int               `json:"timedOutRetries,omitempty"`
	// The deadlines of an IN_PROGRESS execution; TimerAt is the one filed
	// in the scheduler's index.
	StepDeadline       time.Time `json:"stepDeadline,omitzero"`
	InProgressDeadline time.Time `json:"inProgressDeadline,omitzero"`
	TimerAt            time.Time `json:"timerAt,omitzero"`
}

// deadline is when the execution times out (zero: never).
func (e *execution) deadline() time.Time {
	if e.Status != InProgress {
		return time.Time{}
	}
	d := e.InProgressDeadline
	if !e.StepDeadline.IsZero() && (d.IsZero() || e.StepDeadline.Before(d)) {
		d = e.StepDeadline
	}
	return d
}

func (e *execution) state() *JobExecutionState {
	return &JobExecutionState{Status: e.Status, StatusDetails: e.StatusDetails, VersionNumber: e.VersionNumber}
}

func (e *execution) summary() JobExecutionSummary {
	return JobExecutionSummary{JobID: e.JobID, QueuedAt: e.QueuedAt.Unix(), StartedAt: unixOrZero(e.StartedAt),
		LastUpdatedAt: e.LastUpdatedAt.Unix(), VersionNumber: e.VersionNumber, ExecutionNumber: e.ExecutionNumber}
}

func (e *execution) data(doc json.RawMessage) *JobExecutionData {
	return &JobExecutionData{JobID: e.JobID, ThingName: e.ThingName, JobDocument: doc, Status: e.Status, StatusDetails: e.StatusDetails,
		QueuedAt: e.QueuedAt.Unix(), StartedAt: unixOrZero(e.StartedAt), LastUpdatedAt: e.LastUpdatedAt.Unix(),
		VersionNumber: e.VersionNumber, ExecutionNumber: e.ExecutionNumber}
}

func unixOrZero(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}

// job is a stored job.
type job struct {
	JobID           string                      `json:"jobId"`
	Seq             uint64                      `json:"seq"`
	Description     string                      `json:"description,omitempty"`
	Document        string                      `json:"document"`
	Targets         []string                    `json:"-"` // stored on their own (store's job_targets), once
	TargetSelection string                      `json:"targetSelection"`
	Status          JobStatus                   `json:"status"`
	ForceCanceled   bool                        `json:"forceCanceled,omitempty"`
	ReasonCode      string                      `json:"reasonCode,omitempty"`
	Comment         string                      `json:"comment,omitempty"`
	Rollout         *JobExecutionsRolloutConfig `json:"rollout,omitempty"`
	Abort           *AbortConfig                `json:"abort,omitempty"`
	Timeout         *TimeoutConfig              `json:"timeout,omitempty"`
	Retry           *JobExecutionsRetryConfig   `json:"retry,omitempty"`
	Presigned       *PresignedURLConfig         `json:"presigned,omitempty"`
	JobTemplateArn  string                      `json:"jobTemplateArn,omitempty"`
	Tags            []Tag                       `json:"tags,omitempty"`
	CreatedAt       time.Time                   `json:"createdAt"`
	LastUpdatedAt   time.Time                   `json:"lastUpdatedAt"`
	CompletedAt     time.Time                   `json:"completedAt,omitzero"`
	// Counts of things by the status of their latest execution.
	Counts map[ExecStatus]int `json:"counts"`
	// Rollout state: targets still queued for release, executions
	// released so far, the current one-minute window, the timer filed.
	Pending     int       `json:"pending"`
	Notified    int       `json:"notified"`
	WindowStart time.Time `json:"windowStart,omitzero"`
	WindowCount int       `json:"windowCount,omitempty"`
	RolloutAt   time.Time `json:"rolloutAt,omitzero"`

	created bool // new in this transaction: its targets are stored with it
}

// decodeJob reads a job record.
func decodeJob(b []byte) (*job, error) {
	var j job
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, err
	}
	if j.Counts == nil {
		j.Counts = map[ExecStatus]int{}
	}
	return &j, nil
}

// encodeJob writes a job record, without its targets: they are stored on
// their own once, at creation, since every transition of an execution
// writes the job again and a job may have thousands of targets.
func encodeJob(j *job) ([]byte, error) { return json.Marshal(j) }

func (j *job) terminalCount() int {
	n := 0
	for s, c := range j.Counts {
		if s.Terminal() {
			n += c
		}
	}
	return n
}

// rate is the executions the rollout may release per minute now (0: no
// limit).
func (j *job) rate() int {
	r := j.Rollout
	if r == nil {
		return 0
	}
	if r.ExponentialRate != nil {
		x := r.ExponentialRate
		k := 0
		if c := x.RateIncreaseCriteria.NumberOfNotifiedThings; c != nil && *c > 0 {
			k = max(k, j.Notified / *c)
		}
		if c := x.RateIncreaseCriteria.NumberOfSucceededThings; c != nil && *c > 0 {
			k = max(k, j.Counts[Succeeded] / *c)
		}
		rate := float64(x.BaseRatePerMinute)
		for range k {
			rate *= x.IncrementFactor
			if rate > 1e6 {
				break
			}
		}
		n := int(rate)
		if r.MaximumPerMinute != nil && *r.MaximumPerMinute < n {
			n = *r.MaximumPerMinute
		}
		return max(n, 1)
	}
	if r.MaximumPerMinute != nil {
		return *r.MaximumPerMinute
	}
	return 0
}

// template is a stored job template.
type template struct {
	ID          string                      `json:"id"`
	Description string                      `json:"description"`
	Document    string                      `json:"document"`
	Rollout     *JobExecutionsRolloutConfig `json:"rollout,omitempty"`
	Abort       *AbortConfig                `json:"abort,omitempty"`
	Timeout     *TimeoutConfig              `json:"timeout,omitempty"`
	Retry       *JobExecutionsRetryConfig   `json:"retry,omitempty"`
	Presigned   *PresignedURLConfig         `json:"presigned,omitempty"`
	Tags        []Tag                       `json:"tags,omitempty"`
	CreatedAt   time.Time                   `json:"createdAt"`
}

// group is a stored static thing group.
type group struct {
	Name        string            `json:"name"`
	ID          string            `json:"id"`
	Parent      string            `json:"parent,omitempty"`
	Description string            `json:"description,omitempty"`
	Attributes  map[string]string `json:"attributes,omitempty"`
	Version     int64             `json:"version"`
	CreatedAt   time.Time         `json:"createdAt"`
}

// ARNs: arn:aws:iot:<region>:<account>:<kind>/<name>.
func (s *Service) arn(kind, name string) string {
	return "arn:aws:iot:" + s.o.Region + ":" + s.o.Account + ":" + kind + "/" + name
}

// parseArn returns an IoT ARN's resource kind and name; any region and
// account are accepted.
func parseArn(arn string) (kind, name string, ok bool) {
	parts := strings.SplitN(arn, ":", 6)
	if len(parts) != 6 || parts[0] != "arn" || !strings.HasPrefix(parts[1], "aws") || parts[2] != "iot" {
		return "", "", false
	}
	kind, name, ok = strings.Cut(parts[5], "/")
	return kind, name, ok && name != ""
}

var reasonPattern = regexp.MustCompile(`^[\p{Lu}\p{Nd}_]+$`)
