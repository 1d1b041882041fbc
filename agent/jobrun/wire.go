package jobrun

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// The device side of AWS IoT Jobs' MQTT API as the gateway uses it
// (developer guide "Jobs device MQTT API operations"; the AWS IoT Device
// Client's jobs feature subscribes to the same response topics). Every
// topic is under <root><thing>/jobs/; an answer goes to the request's topic
// plus /accepted or /rejected.

// Job execution statuses.
const (
	StatusQueued     = "QUEUED"
	StatusInProgress = "IN_PROGRESS"
	StatusSucceeded  = "SUCCEEDED"
	StatusFailed     = "FAILED"
	StatusRejected   = "REJECTED"
	StatusTimedOut   = "TIMED_OUT"
	StatusCanceled   = "CANCELED"
	StatusRemoved    = "REMOVED"
)

// terminal reports whether a job execution status is final.
func terminal(s string) bool { return s != "" && s != StatusQueued && s != StatusInProgress }

// Error codes of …/rejected.
const (
	codeInvalidTopic           = "InvalidTopic"
	codeInvalidJSON            = "InvalidJson"
	codeInvalidRequest         = "InvalidRequest"
	codeInvalidStateTransition = "InvalidStateTransition"
	codeResourceNotFound       = "ResourceNotFound"
	codeVersionMismatch        = "VersionMismatch"
	codeInternalError          = "InternalError"
	codeRequestThrottled       = "RequestThrottled"
	codeTerminalStateReached   = "TerminalStateReached"
)

// Limits of AWS IoT Jobs (iot-jobs-data API reference).
const (
	maxDetailValue = 1024  // characters of a statusDetails value
	maxStepMinutes = 10080 // stepTimeoutInMinutes: 1 minute to 7 days
)

// execution is JobExecutionData as start-next, describe and notify-next
// carry it.
type execution struct {
	JobID           string            `json:"jobId"`
	ThingName       string            `json:"thingName"`
	JobDocument     json.RawMessage   `json:"jobDocument,omitempty"`
	Status          string            `json:"status"`
	StatusDetails   map[string]string `json:"statusDetails,omitempty"`
	VersionNumber   int64             `json:"versionNumber"`
	ExecutionNumber int64             `json:"executionNumber"`
}

// execState is JobExecutionState: in update answers and in the errors
// InvalidStateTransition and VersionMismatch.
type execState struct {
	Status        string            `json:"status"`
	StatusDetails map[string]string `json:"statusDetails,omitempty"`
	VersionNumber int64             `json:"versionNumber"`
}

// answer is any accepted answer the gateway reads, and notify-next.
type answer struct {
	Execution      *execution `json:"execution,omitempty"`
	ExecutionState *execState `json:"executionState,omitempty"`
	ClientToken    string     `json:"clientToken,omitempty"`
	Timestamp      int64      `json:"timestamp,omitempty"` // the service's clock, Unix seconds
}

// errorResponse is the payload of every …/rejected.
type errorResponse struct {
	Code           string     `json:"code"`
	Message        string     `json:"message"`
	ClientToken    string     `json:"clientToken,omitempty"`
	ExecutionState *execState `json:"executionState,omitempty"`
	Timestamp      int64      `json:"timestamp,omitempty"`
}

// updateRequest is the body of {jobId}/update.
type updateRequest struct {
	Status                   string            `json:"status"`
	StatusDetails            map[string]string `json:"statusDetails,omitempty"`
	ExpectedVersion          int64             `json:"expectedVersion,omitempty"`
	ExecutionNumber          int64             `json:"executionNumber"`
	IncludeJobExecutionState bool              `json:"includeJobExecutionState"`
	StepTimeoutInMinutes     int64             `json:"stepTimeoutInMinutes,omitempty"`
	ClientToken              string            `json:"clientToken,omitempty"`
}

// describeRequest is the body of {jobId}/get.
type describeRequest struct {
	ExecutionNumber    int64  `json:"executionNumber"`
	IncludeJobDocument bool   `json:"includeJobDocument"`
	ClientToken        string `json:"clientToken"`
}

// topics are the jobs topics of one thing.
type topics struct{ base string } // <root><thing>/jobs/

func newTopics(root, thing string) topics { return topics{root + thing + "/jobs/"} }

func (t topics) notifyNext() string         { return t.base + "notify-next" }
func (t topics) startNext() string          { return t.base + "start-next" }
func (t topics) update(jobID string) string { return t.base + jobID + "/update" }
func (t topics) get(jobID string) string    { return t.base + jobID + "/get" }

// filters are what the gateway subscribes: notify-next and the answers to
// its requests.
func (t topics) filters() []string {
	return []string{
		t.notifyNext(),
		t.startNext() + "/accepted", t.startNext() + "/rejected",
		t.base + "+/update/accepted", t.base + "+/update/rejected",
		t.base + "+/get/accepted", t.base + "+/get/rejected",
	}
}

// TIDPrefix starts the tid a job execution runs as in the command pipeline:
// job:<jobId>:<executionNumber>. A job id is [a-zA-Z0-9_-]{1,64}, so the tid
// fits the pipeline's tid rules and reads back unambiguously.
const TIDPrefix = "job:"

// TID is the tid of a job execution.
func TID(jobID string, number int64) string {
	return TIDPrefix + jobID + ":" + strconv.FormatInt(number, 10)
}

// ParseTID reads a job execution's tid.
func ParseTID(tid string) (jobID string, number int64, err error) {
	rest, ok := strings.CutPrefix(tid, TIDPrefix)
	if !ok {
		return "", 0, fmt.Errorf("tid %q is not a job execution's", tid)
	}
	i := strings.LastIndexByte(rest, ':')
	if i <= 0 {
		return "", 0, fmt.Errorf("tid %q is not a job execution's", tid)
	}
	number, err = strconv.ParseInt(rest[i+1:], 10, 64)
	if err != nil || number < 1 || !validJobID(rest[:i]) {
		return "", 0, fmt.Errorf("tid %q is not a job execution's", tid)
	}
	return rest[:i], number, nil
}

func validJobID(s string) bool {
	if len(s) < 1 || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}
