package jobs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/shadowgate/shadowgate/store"
)

// The control plane: each method is one AWS IoT operation, its request and
// answer the API's shapes (api.go), its error an *APIError. Changes are
// durable and their notifications published when a method returns.

func checkConfigs(ro *JobExecutionsRolloutConfig, ab *AbortConfig, to *TimeoutConfig, re *JobExecutionsRetryConfig) *APIError {
	if ro != nil {
		if ro.MaximumPerMinute != nil && *ro.MaximumPerMinute < 1 {
			return invalidRequest("jobExecutionsRolloutConfig.maximumPerMinute must be at least 1")
		}
		if x := ro.ExponentialRate; x != nil {
			switch {
			case x.BaseRatePerMinute < 1 || x.BaseRatePerMinute > 1000:
				return invalidRequest("exponentialRate.baseRatePerMinute must be between 1 and 1000")
			case x.IncrementFactor < 1.1 || x.IncrementFactor > 5:
				return invalidRequest("exponentialRate.incrementFactor must be between 1.1 and 5")
			case x.RateIncreaseCriteria.NumberOfNotifiedThings == nil && x.RateIncreaseCriteria.NumberOfSucceededThings == nil:
				return invalidRequest("exponentialRate.rateIncreaseCriteria needs numberOfNotifiedThings or numberOfSucceededThings")
			case x.RateIncreaseCriteria.NumberOfNotifiedThings != nil && *x.RateIncreaseCriteria.NumberOfNotifiedThings < 1,
				x.RateIncreaseCriteria.NumberOfSucceededThings != nil && *x.RateIncreaseCriteria.NumberOfSucceededThings < 1:
				return invalidRequest("rateIncreaseCriteria numbers must be at least 1")
			}
		}
	}
	if ab != nil {
		if len(ab.CriteriaList) == 0 {
			return invalidRequest("abortConfig.criteriaList must not be empty")
		}
		for _, c := range ab.CriteriaList {
			switch {
			case !slices.Contains([]string{"FAILED", "REJECTED", "TIMED_OUT", "ALL"}, c.FailureType):
				return invalidRequest(fmt.Sprintf("abortConfig failureType %q must be FAILED, REJECTED, TIMED_OUT or ALL", c.FailureType))
			case c.Action != "CANCEL":
				return invalidRequest(fmt.Sprintf("abortConfig action %q must be CANCEL", c.Action))
			case c.ThresholdPercentage < 0 || c.ThresholdPercentage > 100:
				return invalidRequest("abortConfig thresholdPercentage must be between 0 and 100")
			case c.MinNumberOfExecutedThings < 1:
				return invalidRequest("abortConfig minNumberOfExecutedThings must be at least 1")
			}
		}
	}
	if to != nil && to.InProgressTimeoutInMinutes != nil {
		if m := *to.InProgressTimeoutInMinutes; m < 1 || m > maxTimeoutMinutes {
			return invalidRequest(fmt.Sprintf("timeoutConfig.inProgressTimeoutInMinutes must be between 1 and %d", maxTimeoutMinutes))
		}
	}
	if re != nil {
		if len(re.CriteriaList) < 1 || len(re.CriteriaList) > 2 {
			return invalidRequest("jobExecutionsRetryConfig.criteriaList must hold 1 or 2 criteria")
		}
		total := 0
		for _, c := range re.CriteriaList {
			if !slices.Contains([]string{"FAILED", "TIMED_OUT", "ALL"}, c.FailureType) {
				return invalidRequest(fmt.Sprintf("retry failureType %q must be FAILED, TIMED_OUT or ALL", c.FailureType))
			}
			if c.NumberOfRetries < 0 || c.NumberOfRetries > maxRetries {
				return invalidRequest(fmt.Sprintf("numberOfRetries must be between 0 and %d", maxRetries))
			}
			total += c.NumberOfRetries
		}
		if total > maxRetries {
			return invalidRequest(fmt.Sprintf("at most %d retries in all", maxRetries))
		}
	}
	return nil
}

func checkDocument(doc, source string) *APIError {
	if source != "" {
		return invalidRequest("documentSource (S3) is not supported by this service: give the document itself")
	}
	if doc == "" {
		return invalidRequest("document is required")
	}
	if len(doc) > maxDocumentBytes {
		return invalidRequest(fmt.Sprintf("document is larger than %d bytes", maxDocumentBytes))
	}
	var obj map[string]any
	if err := json.Unmarshal([]byte(doc), &obj); err != nil {
		return invalidRequest("document must be a JSON object: " + err.Error())
	}
	return nil
}

func checkDescription(d string) *APIError {
	if utf8.RuneCountInString(d) > maxDescriptionLen || (d != "" && !noControl(d)) {
		return invalidRequest(fmt.Sprintf("description must be at most %d characters without control characters", maxDescriptionLen))
	}
	return nil
}

func (t *txn) loadTemplate(id string) (*template, error) {
	b, err := t.tx.GetJobTemplate(id)
	if err != nil {
		return nil, err
	}
	var tp template
	if err := json.Unmarshal(b, &tp); err != nil {
		return nil, fmt.Errorf("stored job template %s unreadable: %w", id, err)
	}
	return &tp, nil
}

// CreateJob creates a job and releases its first executions.
func (s *Service) CreateJob(ctx context.Context, req *CreateJobRequest) (*CreateJobResponse, error) {
	if !validJobID(req.JobID) {
		return nil, invalidRequest(fmt.Sprintf("jobId %q must be 1 to %d characters of [a-zA-Z0-9_-]", req.JobID, maxJobIDLen))
	}
	if len(req.Targets) == 0 {
		return nil, invalidRequest("targets must name at least one thing or thing group")
	}
	sel := req.TargetSelection
	if sel == "" {
		sel = Snapshot
	}
	if sel != Snapshot && sel != Continuous {
		return nil, invalidRequest(fmt.Sprintf("targetSelection %q must be SNAPSHOT or CONTINUOUS", sel))
	}
	if err := checkDescription(req.Description); err != nil {
		return nil, err
	}
	if req.NamespaceID != "" || len(req.DocumentParameters) > 0 {
		return nil, invalidRequest("namespaceId and documentParameters are not supported by this service")
	}
	var resp *CreateJobResponse
	err := s.do(ctx, true, func(t *txn) error {
		if _, err := t.tx.GetJob(req.JobID); err == nil {
			return alreadyExists("Job "+req.JobID+" already exists", req.JobID, s.arn("job", req.JobID))
		}
		j := &job{JobID: req.JobID, Description: req.Description, Document: req.Document, TargetSelection: sel, Status: JobInProgress,
			Rollout: req.JobExecutionsRolloutConfig, Abort: req.AbortConfig, Timeout: req.TimeoutConfig, Retry: req.JobExecutionsRetryConfig,
			Presigned: req.PresignedURLConfig, Tags: req.Tags, CreatedAt: t.now, LastUpdatedAt: t.now, Counts: map[ExecStatus]int{}}
		if req.JobTemplateArn != "" {
			kind, id, ok := parseArn(req.JobTemplateArn)
			if !ok || kind != "jobtemplate" {
				return invalidRequest("jobTemplateArn " + req.JobTemplateArn + " is not a job template ARN")
			}
			tp, err := t.loadTemplate(id)
			if errors.Is(err, store.ErrNotFound) {
				return notFound("Job template " + id + " not found")
			} else if err != nil {
				return err
			}
			if req.Document != "" || req.DocumentSource != "" {
				return invalidRequest("a job made from a template takes the template's document: give no document")
			}
			j.Document = tp.Document
			j.JobTemplateArn = s.arn("jobtemplate", id)
			j.Rollout = cmpOr(j.Rollout, tp.Rollout)
			j.Abort = cmpOr(j.Abort, tp.Abort)
			j.Timeout = cmpOr(j.Timeout, tp.Timeout)
			j.Retry = cmpOr(j.Retry, tp.Retry)
			j.Presigned = cmpOr(j.Presigned, tp.Presigned)
		} else if err := checkDocument(req.Document, req.DocumentSource); err != nil {
			return err
		}
		if err := checkConfigs(j.Rollout, j.Abort, j.Timeout, j.Retry); err != nil {
			return err
		}
		var things []string
		seen := map[string]bool{}
		for _, arn := range req.Targets {
			kind, name, ok := parseArn(arn)
			switch {
			case ok && kind == "thing" && validThingName(name):
				if !seen[name] {
					seen[name] = true
					things = append(things, name)
				}
			case ok && kind == "thinggroup" && validThingName(name):
				if _, err := t.tx.GetThingGroup(name); errors.Is(err, store.ErrNotFound) {
					return notFound("Thing group " + name + " not found")
				} else if err != nil {
					return err
				}
				err := t.tx.ThingsInGroup(name, func(th string) error {
					if !seen[th] {
						seen[th] = true
						things = append(things, th)
					}
					return nil
				})
				if err != nil {
					return err
				}
				if sel == Continuous {
					if err := t.tx.PutGroupJob(name, j.JobID); err != nil {
						return err
					}
				}
			default:
				return invalidRequest("target " + arn + " is not a thing or thing group ARN")
			}
			j.Targets = append(j.Targets, arn)
		}
		seq, err := t.tx.NextJobSeq()
		if err != nil {
			return err
		}
		j.Seq = seq
		if err := t.tx.PushJobTargets(j.JobID, things); err != nil {
			return err
		}
		j.Pending = len(things)
		j.created = true
		t.markJob(j)
		if err := t.rolloutStep(j); err != nil {
			return err
		}
		resp = &CreateJobResponse{JobArn: s.arn("job", j.JobID), JobID: j.JobID, Description: j.Description}
		return nil
	})
	return resp, err
}

func cmpOr[T any](a, b *T) *T {
	if a != nil {
		return a
	}
	return b
}

func (t *txn) mustJob(id string) (*job, error) {
	j, err := t.loadJob(id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, notFound("Job " + id + " not found")
	}
	return j, err
}

func (s *Service) jobView(j *job) *Job {
	out := &Job{JobArn: s.arn("job", j.JobID), JobID: j.JobID, TargetSelection: j.TargetSelection, Status: j.Status,
		ReasonCode: j.ReasonCode, Comment: j.Comment, Targets: j.Targets, Description: j.Description, PresignedURLConfig: j.Presigned,
		JobExecutionsRolloutConfig: j.Rollout, AbortConfig: j.Abort, CreatedAt: epoch(j.CreatedAt), LastUpdatedAt: epoch(j.LastUpdatedAt),
		CompletedAt: epoch(j.CompletedAt), TimeoutConfig: j.Timeout, JobTemplateArn: j.JobTemplateArn, JobExecutionsRetryConfig: j.Retry,
		IsConcurrent: j.Pending > 0,
		JobProcessDetails: &JobProcessDetails{NumberOfCanceledThings: j.Counts[Canceled], NumberOfSucceededThings: j.Counts[Succeeded],
			NumberOfFailedThings: j.Counts[Failed], NumberOfRejectedThings: j.Counts[Rejected], NumberOfQueuedThings: j.Counts[Queued],
			NumberOfInProgressThings: j.Counts[InProgress], NumberOfRemovedThings: j.Counts[Removed], NumberOfTimedOutThings: j.Counts[TimedOut]}}
	if j.Status == JobCanceled || j.ForceCanceled {
		f := j.ForceCanceled
		out.ForceCanceled = &f
	}
	if j.Pending > 0 {
		out.JobProcessDetails.ProcessingTargets = j.Targets
	}
	return out
}

// read runs fn in a read transaction.
func (s *Service) read(fn func(t *txn) error) error {
	err := s.o.Store.View(func(tx *store.Tx) error { return fn(s.newTxn(tx, s.o.Now())) })
	var ae *APIError
	if err == nil || errors.As(err, &ae) {
		return err
	}
	s.log.Error("jobs control read", "err", err)
	return internalFailure(err.Error())
}

// DescribeJob returns a job with its process details.
func (s *Service) DescribeJob(_ context.Context, jobID string) (*DescribeJobResponse, error) {
	var resp *DescribeJobResponse
	err := s.read(func(t *txn) error {
		j, err := t.mustJob(jobID)
		if err != nil {
			return err
		}
		resp = &DescribeJobResponse{Job: s.jobView(j)}
		return nil
	})
	return resp, err
}

// GetJobDocument returns a job's document.
func (s *Service) GetJobDocument(_ context.Context, jobID string) (*GetJobDocumentResponse, error) {
	var resp *GetJobDocumentResponse
	err := s.read(func(t *txn) error {
		j, err := t.mustJob(jobID)
		if err != nil {
			return err
		}
		resp = &GetJobDocumentResponse{Document: j.Document}
		return nil
	})
	return resp, err
}

// page cuts a list by maxResults and an opaque nextToken (an offset).
func page[T any](all []T, maxResults int, token string) ([]T, string, *APIError) {
	if maxResults == 0 {
		maxResults = defaultPageResults
	}
	if maxResults < 1 || maxResults > maxPageResults {
		return nil, "", invalidRequest(fmt.Sprintf("maxResults must be between 1 and %d", maxPageResults))
	}
	start := 0
	if token != "" {
		n, err := strconv.Atoi(token)
		if err != nil || n < 0 || n > len(all) {
			return nil, "", invalidRequest("nextToken is not valid")
		}
		start = n
	}
	end := min(start+maxResults, len(all))
	next := ""
	if end < len(all) {
		next = strconv.Itoa(end)
	}
	return all[start:end], next, nil
}

// ListJobs lists jobs in creation order.
func (s *Service) ListJobs(_ context.Context, req *ListJobsRequest) (*ListJobsResponse, error) {
	var resp *ListJobsResponse
	err := s.read(func(t *txn) error {
		var js []*job
		err := t.tx.Jobs(func(id string, b []byte) error {
			j, err := decodeJob(b)
			if err != nil {
				return fmt.Errorf("stored job %s unreadable: %w", id, err)
			}
			if req.ThingGroupName != "" {
				if j.Targets, err = t.jobTargets(id); err != nil {
					return err
				}
			}
			if (req.Status == "" || j.Status == req.Status) && (req.TargetSelection == "" || j.TargetSelection == req.TargetSelection) &&
				(req.ThingGroupName == "" || slices.Contains(j.Targets, s.arn("thinggroup", req.ThingGroupName)) || targetsGroup(j, req.ThingGroupName)) {
				js = append(js, j)
			}
			return nil
		})
		if err != nil {
			return err
		}
		slices.SortFunc(js, func(a, b *job) int { return int(int64(a.Seq) - int64(b.Seq)) })
		pg, next, aerr := page(js, req.MaxResults, req.NextToken)
		if aerr != nil {
			return aerr
		}
		resp = &ListJobsResponse{Jobs: []JobSummary{}, NextToken: next}
		for _, j := range pg {
			resp.Jobs = append(resp.Jobs, JobSummary{JobArn: s.arn("job", j.JobID), JobID: j.JobID, TargetSelection: j.TargetSelection, Status: j.Status,
				CreatedAt: epoch(j.CreatedAt), LastUpdatedAt: epoch(j.LastUpdatedAt), CompletedAt: epoch(j.CompletedAt), IsConcurrent: j.Pending > 0})
		}
		return nil
	})
	return resp, err
}

func targetsGroup(j *job, group string) bool {
	for _, arn := range j.Targets {
		if kind, name, _ := parseArn(arn); kind == "thinggroup" && name == group {
			return true
		}
	}
	return false
}

// CancelJob cancels a job: without force its QUEUED executions, with force
// its IN_PROGRESS ones too.
func (s *Service) CancelJob(ctx context.Context, req *CancelJobRequest) (*CancelJobResponse, error) {
	if req.ReasonCode != "" && (len(req.ReasonCode) > 128 || !reasonPattern.MatchString(req.ReasonCode)) {
		return nil, invalidRequest("reasonCode must be at most 128 characters of upper-case letters, digits and _")
	}
	if utf8.RuneCountInString(req.Comment) > maxDescriptionLen || (req.Comment != "" && !noControl(req.Comment)) {
		return nil, invalidRequest("comment must be at most 2028 characters without control characters")
	}
	var resp *CancelJobResponse
	err := s.do(ctx, true, func(t *txn) error {
		j, err := t.mustJob(req.JobID)
		if err != nil {
			return err
		}
		switch {
		case j.Status == JobInProgress, j.Status == JobCanceled && req.Force && !j.ForceCanceled:
		case j.Status == JobCanceled:
			return invalidTransition("Job " + req.JobID + " is already canceled")
		default:
			return invalidTransition("Job " + req.JobID + " is " + string(j.Status) + " and cannot be canceled")
		}
		if err := t.cancelJob(j, req.Force, req.ReasonCode, req.Comment); err != nil {
			return err
		}
		resp = &CancelJobResponse{JobArn: s.arn("job", j.JobID), JobID: j.JobID, Description: j.Description}
		return nil
	})
	return resp, err
}

// DeleteJob deletes a job and its executions; an IN_PROGRESS job only with
// force.
func (s *Service) DeleteJob(ctx context.Context, req *DeleteJobRequest) error {
	return s.do(ctx, true, func(t *txn) error {
		j, err := t.mustJob(req.JobID)
		if err != nil {
			return err
		}
		if j.Status == JobInProgress && !req.Force {
			return invalidTransition("Job " + req.JobID + " is IN_PROGRESS: delete it with force, or cancel it first")
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
			t.touch(k.Thing)
			if !e.TimerAt.IsZero() {
				if err := t.tx.DeleteJobTimer(store.JobTimer{Due: e.TimerAt, Kind: timerTimeout, Payload: timeoutPayload(k)}); err != nil {
					return err
				}
			}
		}
		if err := t.setRolloutTimer(j, time.Time{}); err != nil {
			return err
		}
		if err := t.dropGroupTargets(j); err != nil {
			return err
		}
		if err := t.tx.DeleteJob(j.JobID); err != nil {
			return err
		}
		t.jobs[j.JobID] = nil
		delete(t.dirty, j.JobID)
		return nil
	})
}

func (s *Service) execView(e *execution) *JobExecution {
	out := &JobExecution{JobID: e.JobID, Status: e.Status, ThingArn: s.arn("thing", e.ThingName), QueuedAt: epoch(e.QueuedAt),
		StartedAt: epoch(e.StartedAt), LastUpdatedAt: epoch(e.LastUpdatedAt), ExecutionNumber: e.ExecutionNumber, VersionNumber: e.VersionNumber}
	if len(e.StatusDetails) > 0 {
		out.StatusDetails = &JobExecutionStatusDetails{DetailsMap: e.StatusDetails}
	}
	if e.Status == Canceled {
		f := e.ForceCanceled
		out.ForceCanceled = &f
	}
	if d := e.deadline(); !d.IsZero() {
		sec := max(int64(d.Sub(s.o.Now())/time.Second), 0)
		out.ApproximateSecondsBeforeTimedOut = &sec
	}
	return out
}

func (e *execution) summaryView() ExecutionSummary {
	return ExecutionSummary{Status: e.Status, QueuedAt: epoch(e.QueuedAt), StartedAt: epoch(e.StartedAt), LastUpdatedAt: epoch(e.LastUpdatedAt),
		ExecutionNumber: e.ExecutionNumber, RetryAttempt: e.RetryAttempt}
}

func (t *txn) findExec(thing, jobID string, number *int64) (*execution, error) {
	if number != nil {
		e, err := t.loadExec(store.JobExecKey{Thing: thing, JobID: jobID, Number: *number})
		if errors.Is(err, store.ErrNotFound) {
			return nil, notFound(fmt.Sprintf("Job execution %s/%d for thing %s not found", jobID, *number, thing))
		}
		return e, err
	}
	k, _, err := t.tx.LatestJobExecution(thing, jobID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, notFound("Job execution " + jobID + " for thing " + thing + " not found")
	}
	if err != nil {
		return nil, err
	}
	return t.loadExec(k)
}

// DescribeJobExecution returns one execution (the latest without a number).
func (s *Service) DescribeJobExecution(_ context.Context, req *DescribeJobExecutionRequest) (*DescribeJobExecutionResponse, error) {
	var resp *DescribeJobExecutionResponse
	err := s.read(func(t *txn) error {
		e, err := t.findExec(req.ThingName, req.JobID, req.ExecutionNumber)
		if err != nil {
			return err
		}
		resp = &DescribeJobExecutionResponse{Execution: s.execView(e)}
		return nil
	})
	return resp, err
}

// ListJobExecutionsForJob lists a job's executions by thing.
func (s *Service) ListJobExecutionsForJob(_ context.Context, req *ListJobExecutionsRequest) (*ListJobExecutionsForJobResponse, error) {
	if req.Status != "" && !req.Status.valid() {
		return nil, invalidRequest("status " + string(req.Status) + " is not a job execution status")
	}
	var resp *ListJobExecutionsForJobResponse
	err := s.read(func(t *txn) error {
		if _, err := t.mustJob(req.JobID); err != nil {
			return err
		}
		keys, err := t.execKeysOfJob(req.JobID)
		if err != nil {
			return err
		}
		var all []*execution
		for _, k := range keys {
			e, err := t.loadExec(k)
			if err != nil {
				return err
			}
			if req.Status == "" || e.Status == req.Status {
				all = append(all, e)
			}
		}
		pg, next, aerr := page(all, req.MaxResults, req.NextToken)
		if aerr != nil {
			return aerr
		}
		resp = &ListJobExecutionsForJobResponse{ExecutionSummaries: []ExecutionSummaryForJob{}, NextToken: next}
		for _, e := range pg {
			resp.ExecutionSummaries = append(resp.ExecutionSummaries, ExecutionSummaryForJob{ThingArn: s.arn("thing", e.ThingName), JobExecutionSummary: e.summaryView()})
		}
		return nil
	})
	return resp, err
}

// ListJobExecutionsForThing lists a thing's executions by job.
func (s *Service) ListJobExecutionsForThing(_ context.Context, req *ListJobExecutionsRequest) (*ListJobExecutionsForThingResponse, error) {
	if !validThingName(req.ThingName) {
		return nil, invalidRequest("thingName " + req.ThingName + " is not a valid thing name")
	}
	if req.Status != "" && !req.Status.valid() {
		return nil, invalidRequest("status " + string(req.Status) + " is not a job execution status")
	}
	var resp *ListJobExecutionsForThingResponse
	err := s.read(func(t *txn) error {
		var all []*execution
		err := t.tx.JobExecutionsOfThing(req.ThingName, func(k store.JobExecKey, b []byte) error {
			var e execution
			if err := json.Unmarshal(b, &e); err != nil {
				return fmt.Errorf("stored job execution unreadable: %w", err)
			}
			if (req.Status == "" || e.Status == req.Status) && (req.JobID == "" || e.JobID == req.JobID) {
				all = append(all, &e)
			}
			return nil
		})
		if err != nil {
			return err
		}
		pg, next, aerr := page(all, req.MaxResults, req.NextToken)
		if aerr != nil {
			return aerr
		}
		resp = &ListJobExecutionsForThingResponse{ExecutionSummaries: []ExecutionSummaryForThing{}, NextToken: next}
		for _, e := range pg {
			resp.ExecutionSummaries = append(resp.ExecutionSummaries, ExecutionSummaryForThing{JobID: e.JobID, JobExecutionSummary: e.summaryView()})
		}
		return nil
	})
	return resp, err
}

// CancelJobExecution cancels a thing's latest execution of a job: QUEUED,
// or IN_PROGRESS with force.
func (s *Service) CancelJobExecution(ctx context.Context, req *CancelJobExecutionRequest) error {
	if err := checkDetails(req.StatusDetails); err != nil {
		return invalidRequest(err.Error())
	}
	return s.do(ctx, true, func(t *txn) error {
		e, err := t.findExec(req.ThingName, req.JobID, nil)
		if err != nil {
			return err
		}
		if req.ExpectedVersion != nil && *req.ExpectedVersion != e.VersionNumber {
			return versionConflict(fmt.Sprintf("The expected version %d does not match the job execution's version %d", *req.ExpectedVersion, e.VersionNumber))
		}
		switch {
		case e.Status == Queued:
		case e.Status == InProgress && req.Force:
			e.ForceCanceled = true
		case e.Status == InProgress:
			return invalidTransition("Job execution " + req.JobID + " for thing " + req.ThingName + " is IN_PROGRESS: cancel it with force")
		default:
			return invalidTransition("Job execution " + req.JobID + " for thing " + req.ThingName + " is " + string(e.Status) + " and cannot be canceled")
		}
		j, err := t.mustJob(req.JobID)
		if err != nil {
			return err
		}
		if req.StatusDetails != nil {
			e.StatusDetails = req.StatusDetails
		}
		return t.transition(j, e, Canceled)
	})
}

// DeleteJobExecution deletes one execution: a terminal one, or any with
// force.
func (s *Service) DeleteJobExecution(ctx context.Context, req *DeleteJobExecutionRequest) error {
	return s.do(ctx, true, func(t *txn) error {
		n := req.ExecutionNumber
		e, err := t.findExec(req.ThingName, req.JobID, &n)
		if err != nil {
			return err
		}
		if !e.Status.Terminal() && !req.Force {
			return invalidTransition("Job execution " + req.JobID + " for thing " + req.ThingName + " is " + string(e.Status) + ": delete it with force")
		}
		j, err := t.mustJob(req.JobID)
		if err != nil {
			return err
		}
		t.touch(e.ThingName)
		if !e.TimerAt.IsZero() {
			if err := t.tx.DeleteJobTimer(store.JobTimer{Due: e.TimerAt, Kind: timerTimeout, Payload: timeoutPayload(e.key())}); err != nil {
				return err
			}
		}
		if latest, _, err := t.tx.LatestJobExecution(e.ThingName, e.JobID); err == nil && latest == e.key() {
			j.Counts[e.Status]--
			t.markJob(j)
		}
		if err := t.tx.DeleteJobExecution(e.key()); err != nil {
			return err
		}
		t.checkComplete(j)
		return nil
	})
}

func newGroupID() string {
	b := make([]byte, 16)
	rand.Read(b)
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func (t *txn) loadGroup(name string) (*group, error) {
	b, err := t.tx.GetThingGroup(name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, notFound("Thing group " + name + " not found")
	}
	if err != nil {
		return nil, err
	}
	var g group
	if err := json.Unmarshal(b, &g); err != nil {
		return nil, fmt.Errorf("stored thing group %s unreadable: %w", name, err)
	}
	return &g, nil
}

func (t *txn) saveGroup(g *group) error {
	b, err := json.Marshal(g)
	if err != nil {
		return err
	}
	return t.tx.PutThingGroup(g.Name, b)
}

// CreateThingGroup creates a static thing group; creating one that exists
// answers it as it is.
func (s *Service) CreateThingGroup(ctx context.Context, req *CreateThingGroupRequest) (*CreateThingGroupResponse, error) {
	if !validThingName(req.ThingGroupName) {
		return nil, invalidRequest("thingGroupName " + req.ThingGroupName + " must be 1 to 128 characters of [a-zA-Z0-9:_-]")
	}
	var resp *CreateThingGroupResponse
	err := s.do(ctx, true, func(t *txn) error {
		if g, err := t.loadGroup(req.ThingGroupName); err == nil {
			resp = &CreateThingGroupResponse{ThingGroupName: g.Name, ThingGroupArn: s.arn("thinggroup", g.Name), ThingGroupID: g.ID}
			return nil
		}
		if req.ParentGroupName != "" {
			if _, err := t.loadGroup(req.ParentGroupName); err != nil {
				return err
			}
		}
		g := &group{Name: req.ThingGroupName, ID: newGroupID(), Parent: req.ParentGroupName, Version: 1, CreatedAt: t.now}
		if p := req.ThingGroupProperties; p != nil {
			g.Description = p.ThingGroupDescription
			if p.AttributePayload != nil {
				g.Attributes = p.AttributePayload.Attributes
			}
		}
		if err := t.saveGroup(g); err != nil {
			return err
		}
		resp = &CreateThingGroupResponse{ThingGroupName: g.Name, ThingGroupArn: s.arn("thinggroup", g.Name), ThingGroupID: g.ID}
		return nil
	})
	return resp, err
}

// DescribeThingGroup returns a group.
func (s *Service) DescribeThingGroup(_ context.Context, name string) (*DescribeThingGroupResponse, error) {
	var resp *DescribeThingGroupResponse
	err := s.read(func(t *txn) error {
		g, err := t.loadGroup(name)
		if err != nil {
			return err
		}
		resp = &DescribeThingGroupResponse{ThingGroupName: g.Name, ThingGroupID: g.ID, ThingGroupArn: s.arn("thinggroup", g.Name), Version: g.Version,
			ThingGroupProperties: &ThingGroupProperties{ThingGroupDescription: g.Description},
			ThingGroupMetadata:   &ThingGroupMetadata{ParentGroupName: g.Parent, CreationDate: epoch(g.CreatedAt)}}
		if len(g.Attributes) > 0 {
			resp.ThingGroupProperties.AttributePayload = &AttributePayload{Attributes: g.Attributes}
		}
		return nil
	})
	return resp, err
}

// DeleteThingGroup deletes a group (a missing one is not an error, as AWS).
func (s *Service) DeleteThingGroup(ctx context.Context, req *DeleteThingGroupRequest) error {
	return s.do(ctx, true, func(t *txn) error {
		g, err := t.loadGroup(req.ThingGroupName)
		var ae *APIError
		if errors.As(err, &ae) {
			return nil
		} else if err != nil {
			return err
		}
		if req.ExpectedVersion != nil && *req.ExpectedVersion != g.Version {
			return versionConflict(fmt.Sprintf("The expected version %d does not match the group's version %d", *req.ExpectedVersion, g.Version))
		}
		var child string
		t.tx.ThingGroups(func(name string, b []byte) error {
			var c group
			if json.Unmarshal(b, &c) == nil && c.Parent == g.Name {
				child = name
			}
			return nil
		})
		if child != "" {
			return invalidRequest("Thing group " + g.Name + " has child group " + child + ": delete it first")
		}
		return t.tx.DeleteThingGroup(g.Name)
	})
}

// ListThingGroups lists groups by name.
func (s *Service) ListThingGroups(_ context.Context, req *ListRequest) (*ListThingGroupsResponse, error) {
	var resp *ListThingGroupsResponse
	err := s.read(func(t *txn) error {
		var names []string
		t.tx.ThingGroups(func(name string, _ []byte) error {
			if req.NamePrefixFilter == "" || len(name) >= len(req.NamePrefixFilter) && name[:len(req.NamePrefixFilter)] == req.NamePrefixFilter {
				names = append(names, name)
			}
			return nil
		})
		pg, next, aerr := page(names, req.MaxResults, req.NextToken)
		if aerr != nil {
			return aerr
		}
		resp = &ListThingGroupsResponse{ThingGroups: []GroupNameAndArn{}, NextToken: next}
		for _, n := range pg {
			resp.ThingGroups = append(resp.ThingGroups, GroupNameAndArn{GroupName: n, GroupArn: s.arn("thinggroup", n)})
		}
		return nil
	})
	return resp, err
}

func membership(req *ThingGroupMembershipRequest) (group, thing string, err *APIError) {
	group, thing = req.ThingGroupName, req.ThingName
	if group == "" && req.ThingGroupArn != "" {
		kind, name, ok := parseArn(req.ThingGroupArn)
		if !ok || kind != "thinggroup" {
			return "", "", invalidRequest("thingGroupArn " + req.ThingGroupArn + " is not a thing group ARN")
		}
		group = name
	}
	if thing == "" && req.ThingArn != "" {
		kind, name, ok := parseArn(req.ThingArn)
		if !ok || kind != "thing" {
			return "", "", invalidRequest("thingArn " + req.ThingArn + " is not a thing ARN")
		}
		thing = name
	}
	if !validThingName(group) {
		return "", "", invalidRequest("a thing group name or ARN is required")
	}
	if !validThingName(thing) {
		return "", "", invalidRequest("a thing name or ARN is required")
	}
	return group, thing, nil
}

// AddThingToThingGroup adds a thing to a static group; every continuous job
// in progress that targets the group reaches it at once.
func (s *Service) AddThingToThingGroup(ctx context.Context, req *ThingGroupMembershipRequest) error {
	g, th, aerr := membership(req)
	if aerr != nil {
		return aerr
	}
	return s.do(ctx, true, func(t *txn) error {
		grp, err := t.loadGroup(g)
		if err != nil {
			return err
		}
		added, err := t.tx.AddThingToGroup(g, th)
		if err != nil || !added {
			return err
		}
		grp.Version++
		if err := t.saveGroup(grp); err != nil {
			return err
		}
		var ids []string
		if err := t.tx.GroupJobs(g, func(id string) error { ids = append(ids, id); return nil }); err != nil {
			return err
		}
		for _, id := range ids {
			j, err := t.loadJob(id)
			if errors.Is(err, store.ErrNotFound) {
				continue
			} else if err != nil {
				return err
			}
			if j.Status == JobInProgress && j.TargetSelection == Continuous {
				if err := t.release(j, th); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// RemoveThingFromThingGroup removes a thing from a static group (its
// executions stay as they are).
func (s *Service) RemoveThingFromThingGroup(ctx context.Context, req *ThingGroupMembershipRequest) error {
	g, th, aerr := membership(req)
	if aerr != nil {
		return aerr
	}
	return s.do(ctx, true, func(t *txn) error {
		grp, err := t.loadGroup(g)
		if err != nil {
			return err
		}
		removed, err := t.tx.RemoveThingFromGroup(g, th)
		if err != nil || !removed {
			return err
		}
		grp.Version++
		return t.saveGroup(grp)
	})
}

// ListThingsInThingGroup lists a group's things by name.
func (s *Service) ListThingsInThingGroup(_ context.Context, req *ListRequest) (*ListThingsInThingGroupResponse, error) {
	var resp *ListThingsInThingGroupResponse
	err := s.read(func(t *txn) error {
		if _, err := t.loadGroup(req.Name); err != nil {
			return err
		}
		var things []string
		t.tx.ThingsInGroup(req.Name, func(th string) error { things = append(things, th); return nil })
		pg, next, aerr := page(things, req.MaxResults, req.NextToken)
		if aerr != nil {
			return aerr
		}
		resp = &ListThingsInThingGroupResponse{Things: append([]string{}, pg...), NextToken: next}
		return nil
	})
	return resp, err
}

// CreateJobTemplate stores a template, from scratch or from a job (jobArn):
// the job's document and configurations unless the request gives its own.
func (s *Service) CreateJobTemplate(ctx context.Context, req *CreateJobTemplateRequest) (*CreateJobTemplateResponse, error) {
	if !validJobID(req.JobTemplateID) {
		return nil, invalidRequest(fmt.Sprintf("jobTemplateId %q must be 1 to %d characters of [a-zA-Z0-9_-]", req.JobTemplateID, maxJobIDLen))
	}
	if req.Description == "" {
		return nil, invalidRequest("description is required")
	}
	if err := checkDescription(req.Description); err != nil {
		return nil, err
	}
	var resp *CreateJobTemplateResponse
	err := s.do(ctx, true, func(t *txn) error {
		if _, err := t.tx.GetJobTemplate(req.JobTemplateID); err == nil {
			return conflict("Job template "+req.JobTemplateID+" already exists", req.JobTemplateID)
		}
		tp := &template{ID: req.JobTemplateID, Description: req.Description, Document: req.Document, Rollout: req.JobExecutionsRolloutConfig,
			Abort: req.AbortConfig, Timeout: req.TimeoutConfig, Retry: req.JobExecutionsRetryConfig, Presigned: req.PresignedURLConfig, Tags: req.Tags, CreatedAt: t.now}
		if req.JobArn != "" {
			kind, id, ok := parseArn(req.JobArn)
			if !ok || kind != "job" {
				return invalidRequest("jobArn " + req.JobArn + " is not a job ARN")
			}
			j, err := t.mustJob(id)
			if err != nil {
				return err
			}
			if req.Document != "" || req.DocumentSource != "" {
				return invalidRequest("give either jobArn or a document, not both")
			}
			tp.Document = j.Document
			tp.Rollout = cmpOr(tp.Rollout, j.Rollout)
			tp.Abort = cmpOr(tp.Abort, j.Abort)
			tp.Timeout = cmpOr(tp.Timeout, j.Timeout)
			tp.Retry = cmpOr(tp.Retry, j.Retry)
			tp.Presigned = cmpOr(tp.Presigned, j.Presigned)
		} else if err := checkDocument(req.Document, req.DocumentSource); err != nil {
			return err
		}
		if err := checkConfigs(tp.Rollout, tp.Abort, tp.Timeout, tp.Retry); err != nil {
			return err
		}
		b, err := json.Marshal(tp)
		if err != nil {
			return err
		}
		if err := t.tx.PutJobTemplate(tp.ID, b); err != nil {
			return err
		}
		resp = &CreateJobTemplateResponse{JobTemplateArn: s.arn("jobtemplate", tp.ID), JobTemplateID: tp.ID}
		return nil
	})
	return resp, err
}

// DescribeJobTemplate returns a template.
func (s *Service) DescribeJobTemplate(_ context.Context, id string) (*DescribeJobTemplateResponse, error) {
	var resp *DescribeJobTemplateResponse
	err := s.read(func(t *txn) error {
		tp, err := t.loadTemplate(id)
		if errors.Is(err, store.ErrNotFound) {
			return notFound("Job template " + id + " not found")
		} else if err != nil {
			return err
		}
		resp = &DescribeJobTemplateResponse{JobTemplateArn: s.arn("jobtemplate", id), JobTemplateID: id, Description: tp.Description, Document: tp.Document,
			CreatedAt: epoch(tp.CreatedAt), PresignedURLConfig: tp.Presigned, JobExecutionsRolloutConfig: tp.Rollout, AbortConfig: tp.Abort,
			TimeoutConfig: tp.Timeout, JobExecutionsRetryConfig: tp.Retry}
		return nil
	})
	return resp, err
}

// ListJobTemplates lists templates by id.
func (s *Service) ListJobTemplates(_ context.Context, req *ListRequest) (*ListJobTemplatesResponse, error) {
	var resp *ListJobTemplatesResponse
	err := s.read(func(t *txn) error {
		var all []JobTemplateSummary
		err := t.tx.JobTemplates(func(id string, b []byte) error {
			var tp template
			if err := json.Unmarshal(b, &tp); err != nil {
				return fmt.Errorf("stored job template %s unreadable: %w", id, err)
			}
			all = append(all, JobTemplateSummary{JobTemplateArn: s.arn("jobtemplate", id), JobTemplateID: id, Description: tp.Description, CreatedAt: epoch(tp.CreatedAt)})
			return nil
		})
		if err != nil {
			return err
		}
		pg, next, aerr := page(all, req.MaxResults, req.NextToken)
		if aerr != nil {
			return aerr
		}
		resp = &ListJobTemplatesResponse{JobTemplates: append([]JobTemplateSummary{}, pg...), NextToken: next}
		return nil
	})
	return resp, err
}

// DeleteJobTemplate deletes a template.
func (s *Service) DeleteJobTemplate(ctx context.Context, id string) error {
	return s.do(ctx, true, func(t *txn) error {
		if _, err := t.tx.GetJobTemplate(id); errors.Is(err, store.ErrNotFound) {
			return notFound("Job template " + id + " not found")
		}
		return t.tx.DeleteJobTemplate(id)
	})
}
