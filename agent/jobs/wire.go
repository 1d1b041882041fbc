package jobs

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"
)

// The device side's JSON shapes, as AWS IoT's Jobs device MQTT API has
// them (developer guide "Jobs device MQTT API", "Jobs notifications"; the
// AWS IoT Device SDKs' iotjobs models). Times are whole seconds since the
// epoch; the job document is the JSON object itself, not a string.

// JobExecutionData is an execution in start-next, describe and notify-next
// messages.
type JobExecutionData struct {
	JobID           string            `json:"jobId"`
	ThingName       string            `json:"thingName"`
	JobDocument     json.RawMessage   `json:"jobDocument,omitempty"`
	Status          ExecStatus        `json:"status"`
	StatusDetails   map[string]string `json:"statusDetails,omitempty"`
	QueuedAt        int64             `json:"queuedAt"`
	StartedAt       int64             `json:"startedAt,omitempty"`
	LastUpdatedAt   int64             `json:"lastUpdatedAt"`
	VersionNumber   int64             `json:"versionNumber"`
	ExecutionNumber int64             `json:"executionNumber"`
}

// JobExecutionSummary is an execution in get (pending) and notify messages.
type JobExecutionSummary struct {
	JobID           string `json:"jobId"`
	QueuedAt        int64  `json:"queuedAt"`
	StartedAt       int64  `json:"startedAt,omitempty"`
	LastUpdatedAt   int64  `json:"lastUpdatedAt"`
	VersionNumber   int64  `json:"versionNumber"`
	ExecutionNumber int64  `json:"executionNumber"`
}

// JobExecutionState is the state in update responses and errors.
type JobExecutionState struct {
	Status        ExecStatus        `json:"status"`
	StatusDetails map[string]string `json:"statusDetails,omitempty"`
	VersionNumber int64             `json:"versionNumber"`
}

// ErrorCode is a device API error code.
type ErrorCode string

// The device API's error codes.
const (
	CodeInvalidTopic           ErrorCode = "InvalidTopic"
	CodeInvalidJSON            ErrorCode = "InvalidJson"
	CodeInvalidRequest         ErrorCode = "InvalidRequest"
	CodeInvalidStateTransition ErrorCode = "InvalidStateTransition"
	CodeResourceNotFound       ErrorCode = "ResourceNotFound"
	CodeVersionMismatch        ErrorCode = "VersionMismatch"
	CodeInternalError          ErrorCode = "InternalError"
	CodeRequestThrottled       ErrorCode = "RequestThrottled"
	CodeTerminalStateReached   ErrorCode = "TerminalStateReached"
)

// ErrorResponse is the payload of every …/rejected message. ExecutionState
// is set for InvalidStateTransition and VersionMismatch only.
type ErrorResponse struct {
	Code           ErrorCode          `json:"code"`
	Message        string             `json:"message"`
	ClientToken    string             `json:"clientToken,omitempty"`
	Timestamp      int64              `json:"timestamp"`
	ExecutionState *JobExecutionState `json:"executionState,omitempty"`
}

// GetPendingResponse answers jobs/get.
type GetPendingResponse struct {
	InProgressJobs []JobExecutionSummary `json:"inProgressJobs"`
	QueuedJobs     []JobExecutionSummary `json:"queuedJobs"`
	Timestamp      int64                 `json:"timestamp"`
	ClientToken    string                `json:"clientToken,omitempty"`
}

// ExecutionResponse answers start-next and jobs/{jobId}/get; Execution is
// absent when there is no pending execution.
type ExecutionResponse struct {
	Execution   *JobExecutionData `json:"execution,omitempty"`
	Timestamp   int64             `json:"timestamp"`
	ClientToken string            `json:"clientToken,omitempty"`
}

// UpdateResponse answers jobs/{jobId}/update.
type UpdateResponse struct {
	ExecutionState *JobExecutionState `json:"executionState,omitempty"`
	JobDocument    json.RawMessage    `json:"jobDocument,omitempty"`
	Timestamp      int64              `json:"timestamp"`
	ClientToken    string             `json:"clientToken,omitempty"`
}

// JobExecutionsChanged is the notify message: the pending executions by
// status (at most 10, IN_PROGRESS first, then by queue time).
type JobExecutionsChanged struct {
	Jobs      map[ExecStatus][]JobExecutionSummary `json:"jobs"`
	Timestamp int64                                `json:"timestamp"`
}

// NextJobExecutionChanged is the notify-next message; Execution is absent
// when nothing is pending any more.
type NextJobExecutionChanged struct {
	Execution *JobExecutionData `json:"execution,omitempty"`
	Timestamp int64             `json:"timestamp"`
}

// Device requests.
type (
	startNextRequest struct {
		StatusDetails        map[string]string `json:"statusDetails"`
		StepTimeoutInMinutes *flexInt          `json:"stepTimeoutInMinutes"`
		ClientToken          string            `json:"clientToken"`
	}
	describeRequest struct {
		ExecutionNumber    *flexInt `json:"executionNumber"`
		IncludeJobDocument *bool    `json:"includeJobDocument"`
		ClientToken        string   `json:"clientToken"`
	}
	updateRequest struct {
		Status                   ExecStatus        `json:"status"`
		StatusDetails            map[string]string `json:"statusDetails"`
		ExpectedVersion          *flexInt          `json:"expectedVersion"`
		ExecutionNumber          *flexInt          `json:"executionNumber"`
		IncludeJobExecutionState bool              `json:"includeJobExecutionState"`
		IncludeJobDocument       bool              `json:"includeJobDocument"`
		StepTimeoutInMinutes     *flexInt          `json:"stepTimeoutInMinutes"`
		ClientToken              string            `json:"clientToken"`
	}
)

// flexInt is a whole number given as a JSON number or as a string of digits
// (the developer guide writes "expectedVersion": "number").
type flexInt int64

func (f *flexInt) UnmarshalJSON(b []byte) error {
	s := string(bytes.TrimSpace(b))
	if len(s) > 1 && s[0] == '"' {
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		fl, ferr := strconv.ParseFloat(s, 64)
		if ferr != nil || fl != math.Trunc(fl) || math.Abs(fl) > 1<<53 {
			return fmt.Errorf("%s is not a whole number", b)
		}
		n = int64(fl)
	}
	*f = flexInt(n)
	return nil
}

// Epoch is a control-plane timestamp: seconds since the epoch as a JSON
// number (rest-json's default), with milliseconds.
type Epoch time.Time

// MarshalJSON writes seconds with up to three decimals.
func (e Epoch) MarshalJSON() ([]byte, error) {
	ms := time.Time(e).UnixMilli()
	return []byte(strconv.FormatFloat(float64(ms)/1000, 'f', -1, 64)), nil
}

// UnmarshalJSON reads seconds.
func (e *Epoch) UnmarshalJSON(b []byte) error {
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return fmt.Errorf("timestamp %s: %w", b, err)
	}
	*e = Epoch(time.UnixMilli(int64(math.Round(f * 1000))))
	return nil
}

func epoch(t time.Time) *Epoch {
	if t.IsZero() {
		return nil
	}
	e := Epoch(t)
	return &e
}
