package jobs

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/shadowgate/shadowgate/agent/awsapi"
	"github.com/shadowgate/shadowgate/store"
)

// The jobs data plane over HTTP (iot-jobs-data, 2017-09-29): a device's
// requests as on MQTT, run by the same function (txn.run) in the same
// pipeline, answered in the HTTP response instead of on …/accepted and
// …/rejected. The notifications a request causes (notify, notify-next) are
// published to the broker as for an MQTT request.

// DataExecution is the data plane's JobExecution: as on MQTT, except that
// the job document is a string, and approximateSecondsBeforeTimedOut.
type DataExecution struct {
	JobID                            string            `json:"jobId"`
	ThingName                        string            `json:"thingName"`
	Status                           ExecStatus        `json:"status"`
	StatusDetails                    map[string]string `json:"statusDetails,omitempty"`
	QueuedAt                         int64             `json:"queuedAt"`
	StartedAt                        int64             `json:"startedAt,omitempty"`
	LastUpdatedAt                    int64             `json:"lastUpdatedAt"`
	ApproximateSecondsBeforeTimedOut *int64            `json:"approximateSecondsBeforeTimedOut,omitempty"`
	VersionNumber                    int64             `json:"versionNumber"`
	ExecutionNumber                  int64             `json:"executionNumber"`
	JobDocument                      string            `json:"jobDocument,omitempty"`
}

// DataExecutionResponse answers DescribeJobExecution and
// StartNextPendingJobExecution; Execution is absent when nothing is
// pending.
type DataExecutionResponse struct {
	Execution *DataExecution `json:"execution,omitempty"`
}

// DataPendingResponse answers GetPendingJobExecutions.
type DataPendingResponse struct {
	InProgressJobs []JobExecutionSummary `json:"inProgressJobs"`
	QueuedJobs     []JobExecutionSummary `json:"queuedJobs"`
}

// DataUpdateResponse answers UpdateJobExecution.
type DataUpdateResponse struct {
	ExecutionState *JobExecutionState `json:"executionState,omitempty"`
	JobDocument    string             `json:"jobDocument,omitempty"`
}

// deviceResult is what a device request run for HTTP produced.
type deviceResult struct {
	ans  any
	rej  *rejection
	secs *int64 // approximateSecondsBeforeTimedOut of the execution answered
}

// deviceCall runs a device request through the pipeline, as one from MQTT
// is, and returns its answer once it is durable.
func (s *Service) deviceCall(ctx context.Context, r request) (deviceResult, error) {
	res := make(chan error, 1)
	var out deviceResult
	o := &op{thing: r.thing, write: r.op == opStartNext || r.op == opUpdate, fn: func(t *txn) error {
		_, ans, rej, err := t.run(&r)
		if err != nil {
			return err
		}
		out = deviceResult{ans: ans, rej: rej}
		if er, ok := ans.(ExecutionResponse); ok && er.Execution != nil {
			e, err := t.loadExec(store.JobExecKey{Thing: r.thing, JobID: er.Execution.JobID, Number: er.Execution.ExecutionNumber})
			if err != nil {
				return err
			}
			if d := e.deadline(); !d.IsZero() {
				secs := max(int64(d.Sub(t.now)/time.Second), 0)
				out.secs = &secs
			}
		}
		return nil
	}, done: func(_ *txn, err error) { res <- err }}
	s.requests.Add(1)
	if err := s.submit(o); err != nil {
		return out, err
	}
	select {
	case err := <-res:
		return out, err
	case <-ctx.Done():
		return out, ctx.Err()
	}
}

// dataAnswer turns a device answer into the data plane's response, or its
// rejection into the data plane's error.
func (s *Service) dataAnswer(ctx context.Context, r request) (any, error) {
	res, err := s.deviceCall(ctx, r)
	switch {
	case errors.Is(err, ErrOverloaded):
		return nil, awsapi.Errorf(awsapi.Throttling, "%s", awsapi.MsgRateExceeded)
	case err != nil:
		s.log.Error("jobs data-plane request", "thing", r.thing, "op", string(r.op), "err", err)
		return nil, awsapi.Errorf(awsapi.ServiceUnavailable, "%s", awsapi.MsgUnavailable)
	case res.rej != nil:
		s.rejected.Add(1)
		return nil, dataError(res.rej)
	}
	switch a := res.ans.(type) {
	case GetPendingResponse:
		return DataPendingResponse{InProgressJobs: a.InProgressJobs, QueuedJobs: a.QueuedJobs}, nil
	case ExecutionResponse:
		out := DataExecutionResponse{}
		if x := a.Execution; x != nil {
			out.Execution = &DataExecution{JobID: x.JobID, ThingName: x.ThingName, Status: x.Status, StatusDetails: x.StatusDetails,
				QueuedAt: x.QueuedAt, StartedAt: x.StartedAt, LastUpdatedAt: x.LastUpdatedAt, ApproximateSecondsBeforeTimedOut: res.secs,
				VersionNumber: x.VersionNumber, ExecutionNumber: x.ExecutionNumber, JobDocument: string(x.JobDocument)}
		}
		return out, nil
	case UpdateResponse:
		return DataUpdateResponse{ExecutionState: a.ExecutionState, JobDocument: string(a.JobDocument)}, nil
	}
	return nil, errors.New("jobs data plane: unexpected answer")
}

// dataError maps a device API error code to the data plane's exception.
// The HTTP API has no VersionMismatch: a stale expectedVersion is an
// InvalidStateTransitionException (409) that, as AWS documents for that
// exception, carries the execution's current state.
func dataError(rej *rejection) *awsapi.Error {
	var e *awsapi.Error
	switch rej.code {
	case CodeResourceNotFound:
		e = awsapi.Errorf(awsapi.ResourceNotFound, "%s", rej.msg)
	case CodeInvalidStateTransition, CodeVersionMismatch:
		e = &awsapi.Error{Type: "InvalidStateTransitionException", Status: http.StatusConflict, Message: rej.msg}
	case CodeTerminalStateReached:
		e = &awsapi.Error{Type: "TerminalStateException", Status: http.StatusGone, Message: rej.msg}
	case CodeRequestThrottled:
		e = awsapi.Errorf(awsapi.Throttling, "%s", awsapi.MsgRateExceeded)
	case CodeInternalError:
		e = awsapi.Errorf(awsapi.ServiceUnavailable, "%s", awsapi.MsgUnavailable)
	default: // InvalidJson, InvalidRequest, InvalidTopic
		e = awsapi.Errorf(awsapi.InvalidRequest, "%s", rej.msg)
	}
	if rej.state != nil {
		e.Fields = map[string]any{"executionState": rej.state}
	}
	return e
}
