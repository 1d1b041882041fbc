package jobs_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shadowgate/shadowgate/agent/jobs"
	"github.com/shadowgate/shadowgate/store"
)

func ptr[T any](v T) *T { return &v }

func things(n int) (names, arns []string) {
	for i := range n {
		names = append(names, fmt.Sprintf("t%02d", i))
		arns = append(arns, thingArn(names[i]))
	}
	return names, arns
}

// queuedMinutes counts a job's executions by the minute (from t0) of
// their queuedAt.
func queuedMinutes(e *env, jobID string, t0 time.Time) map[int]int {
	by := map[int]int{}
	for _, x := range e.executions(jobID) {
		by[int(time.Time(*x.JobExecutionSummary.QueuedAt).Sub(t0)/time.Minute)]++
	}
	return by
}

func TestRolloutAtMaximumPerMinute(t *testing.T) {
	// 20 things at 5 a minute: the queue times show 5 released in each
	// minute of the service's clock, and the job completes after the last.
	e := newEnv(t)
	_, arns := things(20)
	t0 := e.clock.Now()
	e.createJob(&jobs.CreateJobRequest{JobID: "roll", Targets: arns, JobExecutionsRolloutConfig: &jobs.JobExecutionsRolloutConfig{MaximumPerMinute: ptr(5)}})
	if n := len(e.executions("roll")); n != 5 {
		t.Fatalf("released at creation: %d, want 5", n)
	}
	if j := e.job("roll"); !j.IsConcurrent || len(j.JobProcessDetails.ProcessingTargets) == 0 {
		t.Fatalf("a job rolling out is concurrent with processing targets: %+v", j)
	}
	for minute := 1; minute <= 3; minute++ {
		e.advance(time.Minute)
		waitFor(t, fmt.Sprintf("minute %d's releases", minute), func() bool { return len(e.executions("roll")) >= 5*(minute+1) })
	}
	by := queuedMinutes(e, "roll", t0)
	for m := range 4 {
		if by[m] != 5 {
			t.Fatalf("released per minute: %v", by)
		}
	}
	if j := e.job("roll"); j.IsConcurrent || j.JobProcessDetails.NumberOfQueuedThings != 20 {
		t.Fatalf("after the rollout: %+v", j.JobProcessDetails)
	}
}

func TestExponentialRollout(t *testing.T) {
	// base 2 a minute, ×2 after every 4 notified: 2, 2, 4, 8, …
	e := newEnv(t)
	_, arns := things(16)
	t0 := e.clock.Now()
	e.createJob(&jobs.CreateJobRequest{JobID: "exp", Targets: arns, JobExecutionsRolloutConfig: &jobs.JobExecutionsRolloutConfig{
		ExponentialRate: &jobs.ExponentialRolloutRate{BaseRatePerMinute: 2, IncrementFactor: 2, RateIncreaseCriteria: jobs.RateIncreaseCriteria{NumberOfNotifiedThings: ptr(4)}}}})
	want := []int{2, 2, 4, 8}
	total := 2
	for m := 1; m < len(want); m++ {
		e.advance(time.Minute)
		total += want[m]
		waitFor(t, "releases", func() bool { return len(e.executions("exp")) >= total })
	}
	by := queuedMinutes(e, "exp", t0)
	for m, w := range want {
		if by[m] != w {
			t.Fatalf("released per minute %v, want %v", by, want)
		}
	}
}

func TestInProgressTimeoutThenRetry(t *testing.T) {
	// In progress longer than timeoutConfig: TIMED_OUT, then a retry as
	// executionNumber 2, which the device is told of.
	e := newEnv(t)
	d := e.device("slow")
	e.createJob(&jobs.CreateJobRequest{JobID: "to", Targets: []string{thingArn("slow")},
		TimeoutConfig:            &jobs.TimeoutConfig{InProgressTimeoutInMinutes: ptr(int64(10))},
		JobExecutionsRetryConfig: &jobs.JobExecutionsRetryConfig{CriteriaList: []jobs.RetryCriteria{{FailureType: "TIMED_OUT", NumberOfRetries: 1}}}})
	if sfx, ans := d.request("start-next", map[string]any{}); sfx != "accepted" || field(ans, "execution", "status") != "IN_PROGRESS" {
		t.Fatalf("start-next: %v", ans)
	}
	d.notification("notify-next", nextJob("to"))
	e.advance(9 * time.Minute)
	x, _ := e.svc.DescribeJobExecution(context.Background(), &jobs.DescribeJobExecutionRequest{JobID: "to", ThingName: "slow"})
	if x.Execution.Status != jobs.InProgress || x.Execution.ApproximateSecondsBeforeTimedOut == nil || *x.Execution.ApproximateSecondsBeforeTimedOut != 60 {
		t.Fatalf("before the deadline: %+v", x.Execution)
	}
	e.advance(time.Minute)
	n := d.notification("notify-next", func(v map[string]any) bool { return num(field(v, "execution", "executionNumber")) == 2 })
	if field(n, "execution", "status") != "QUEUED" {
		t.Fatalf("retry notification: %v", n)
	}
	first, err := e.svc.DescribeJobExecution(context.Background(), &jobs.DescribeJobExecutionRequest{JobID: "to", ThingName: "slow", ExecutionNumber: ptr(int64(1))})
	if err != nil || first.Execution.Status != jobs.TimedOut {
		t.Fatalf("execution 1: %+v %v", first, err)
	}
	r, _ := e.svc.ListJobExecutionsForThing(context.Background(), &jobs.ListJobExecutionsRequest{ThingName: "slow"})
	if len(r.ExecutionSummaries) != 2 || r.ExecutionSummaries[1].JobExecutionSummary.RetryAttempt != 1 {
		t.Fatalf("executions: %+v", r.ExecutionSummaries)
	}
	// The retry times out too: no retries left, the job completes.
	d.request("start-next", map[string]any{})
	e.advance(10 * time.Minute)
	waitFor(t, "job completed", func() bool { return e.job("to").Status == jobs.JobCompleted })
	if p := e.job("to").JobProcessDetails; p.NumberOfTimedOutThings != 1 || p.NumberOfQueuedThings != 0 {
		t.Fatalf("counts: %+v", p)
	}
}

func TestStepTimeout(t *testing.T) {
	e := newEnv(t)
	d := e.device("stepper")
	e.createJob(&jobs.CreateJobRequest{JobID: "st", Targets: []string{thingArn("stepper")}})
	d.request("start-next", map[string]any{"stepTimeoutInMinutes": 5})
	e.advance(4 * time.Minute)
	// A new step timer replaces the old one.
	if sfx, _ := d.request("st/update", map[string]any{"status": "IN_PROGRESS", "stepTimeoutInMinutes": 3}); sfx != "accepted" {
		t.Fatal("update")
	}
	e.advance(2 * time.Minute) // past the first timer, not the second
	x, _ := e.svc.DescribeJobExecution(context.Background(), &jobs.DescribeJobExecutionRequest{JobID: "st", ThingName: "stepper"})
	if x.Execution.Status != jobs.InProgress {
		t.Fatalf("the replaced step timer fired: %+v", x.Execution)
	}
	e.advance(time.Minute)
	waitFor(t, "TIMED_OUT", func() bool {
		x, _ := e.svc.DescribeJobExecution(context.Background(), &jobs.DescribeJobExecutionRequest{JobID: "st", ThingName: "stepper"})
		return x.Execution.Status == jobs.TimedOut
	})
	if sfx, ans := d.request("st/update", map[string]any{"status": "SUCCEEDED"}); sfx != "rejected" || ans["code"] != "InvalidStateTransition" {
		t.Fatalf("update after the timeout: %v", ans)
	}
}

func TestRetryOnFailed(t *testing.T) {
	e := newEnv(t)
	d := e.device("flaky")
	e.createJob(&jobs.CreateJobRequest{JobID: "rf", Targets: []string{thingArn("flaky")},
		JobExecutionsRetryConfig: &jobs.JobExecutionsRetryConfig{CriteriaList: []jobs.RetryCriteria{{FailureType: "FAILED", NumberOfRetries: 2}}}})
	for attempt := int64(1); attempt <= 3; attempt++ {
		sfx, ans := d.request("start-next", map[string]any{})
		if sfx != "accepted" || num(field(ans, "execution", "executionNumber")) != attempt {
			t.Fatalf("attempt %d: %v", attempt, ans)
		}
		if sfx, ans := d.request("rf/update", map[string]any{"status": "FAILED", "expectedVersion": 2}); sfx != "accepted" {
			t.Fatalf("fail %d: %v", attempt, ans)
		}
	}
	if sfx, ans := d.request("start-next", map[string]any{}); sfx != "accepted" || ans["execution"] != nil {
		t.Fatalf("after the retries: %v", ans)
	}
	if j := e.job("rf"); j.Status != jobs.JobCompleted || j.JobProcessDetails.NumberOfFailedThings != 1 {
		t.Fatalf("job: %+v", j.JobProcessDetails)
	}
}

func TestAbortAtThreshold(t *testing.T) {
	// 20 things, abort when 30 % of at least 10 executed things failed.
	// 7 succeed, then 3 fail: the job is CANCELED and the 10 still queued
	// are CANCELED too.
	e := newEnv(t)
	names, arns := things(20)
	e.createJob(&jobs.CreateJobRequest{JobID: "ab", Targets: arns,
		AbortConfig: &jobs.AbortConfig{CriteriaList: []jobs.AbortCriteria{{FailureType: "FAILED", Action: "CANCEL", ThresholdPercentage: 30, MinNumberOfExecutedThings: 10}}}})
	devs := map[string]*device{}
	for i := range 10 {
		devs[names[i]] = e.device(names[i])
	}
	for i := range 10 {
		status := "SUCCEEDED"
		if i >= 7 {
			status = "FAILED"
		}
		if e.job("ab").Status != jobs.JobInProgress {
			t.Fatalf("aborted early, after %d", i)
		}
		if sfx, ans := devs[names[i]].request("ab/update", map[string]any{"status": status}); sfx != "accepted" {
			t.Fatalf("%s: %v", names[i], ans)
		}
	}
	j := e.job("ab")
	if j.Status != jobs.JobCanceled || j.JobProcessDetails.NumberOfCanceledThings != 10 || j.JobProcessDetails.NumberOfFailedThings != 3 || j.Comment == "" {
		t.Fatalf("after 3 of 10 failed: %s %+v %q", j.Status, j.JobProcessDetails, j.Comment)
	}
}

func TestCancelWithAndWithoutForce(t *testing.T) {
	e := newEnv(t)
	a, b, c := e.device("ca"), e.device("cb"), e.device("cc")
	e.createJob(&jobs.CreateJobRequest{JobID: "c1", Targets: []string{thingArn("ca"), thingArn("cb")}})
	a.request("start-next", map[string]any{})
	if _, err := e.svc.CancelJob(context.Background(), &jobs.CancelJobRequest{JobID: "c1", ReasonCode: "OPERATOR", Comment: "stop"}); err != nil {
		t.Fatal(err)
	}
	b.notification("notify-next", nextJob("")) // its QUEUED execution is gone
	if sfx, ans := a.request("c1/update", map[string]any{"status": "SUCCEEDED"}); sfx != "accepted" {
		t.Fatalf("IN_PROGRESS survives a cancel without force: %v", ans)
	}
	j := e.job("c1")
	if j.Status != jobs.JobCanceled || *j.ForceCanceled || j.ReasonCode != "OPERATOR" || j.JobProcessDetails.NumberOfCanceledThings != 1 {
		t.Fatalf("c1: %+v", j)
	}
	if _, err := e.svc.CancelJob(context.Background(), &jobs.CancelJobRequest{JobID: "c1"}); err == nil {
		t.Fatal("canceling twice without force succeeded")
	}

	e.createJob(&jobs.CreateJobRequest{JobID: "c2", Targets: []string{thingArn("cc")}})
	c.request("start-next", map[string]any{})
	if _, err := e.svc.CancelJob(context.Background(), &jobs.CancelJobRequest{JobID: "c2", Force: true}); err != nil {
		t.Fatal(err)
	}
	c.notification("notify-next", nextJob(""))
	if sfx, ans := c.request("c2/update", map[string]any{"status": "SUCCEEDED"}); sfx != "rejected" || ans["code"] != "InvalidStateTransition" {
		t.Fatalf("update of a force-canceled execution: %v", ans)
	}
	x, _ := e.svc.DescribeJobExecution(context.Background(), &jobs.DescribeJobExecutionRequest{JobID: "c2", ThingName: "cc"})
	if x.Execution.Status != jobs.Canceled || x.Execution.ForceCanceled == nil || !*x.Execution.ForceCanceled {
		t.Fatalf("c2 execution: %+v", x.Execution)
	}
	// Delete: an IN_PROGRESS job only with force; a canceled one at once.
	e.createJob(&jobs.CreateJobRequest{JobID: "c3", Targets: []string{thingArn("ca")}})
	var ae *jobs.APIError
	if err := e.svc.DeleteJob(context.Background(), &jobs.DeleteJobRequest{JobID: "c3"}); !errors.As(err, &ae) || ae.Type != "InvalidStateTransitionException" {
		t.Fatalf("delete in progress: %v", err)
	}
	if err := e.svc.DeleteJob(context.Background(), &jobs.DeleteJobRequest{JobID: "c2"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.DescribeJob(context.Background(), "c2"); !errors.As(err, &ae) || ae.Type != "ResourceNotFoundException" || ae.Status != 404 {
		t.Fatalf("describe deleted: %v", err)
	}
	if sfx, ans := c.request("c2/get", map[string]any{}); sfx != "rejected" || ans["code"] != "ResourceNotFound" {
		t.Fatalf("describe a deleted job's execution: %v", ans)
	}
}

func TestCancelJobExecution(t *testing.T) {
	e := newEnv(t)
	d := e.device("ce")
	e.createJob(&jobs.CreateJobRequest{JobID: "x1", Targets: []string{thingArn("ce")}})
	d.request("start-next", map[string]any{})
	var ae *jobs.APIError
	err := e.svc.CancelJobExecution(context.Background(), &jobs.CancelJobExecutionRequest{JobID: "x1", ThingName: "ce"})
	if !errors.As(err, &ae) || ae.Type != "InvalidStateTransitionException" {
		t.Fatalf("cancel IN_PROGRESS without force: %v", err)
	}
	err = e.svc.CancelJobExecution(context.Background(), &jobs.CancelJobExecutionRequest{JobID: "x1", ThingName: "ce", Force: true, ExpectedVersion: ptr(int64(1))})
	if !errors.As(err, &ae) || ae.Type != "VersionConflictException" {
		t.Fatalf("cancel with a stale version: %v", err)
	}
	if err := e.svc.CancelJobExecution(context.Background(), &jobs.CancelJobExecutionRequest{JobID: "x1", ThingName: "ce", Force: true, ExpectedVersion: ptr(int64(2))}); err != nil {
		t.Fatal(err)
	}
	d.notification("notify-next", nextJob(""))
	if j := e.job("x1"); j.Status != jobs.JobCompleted || j.JobProcessDetails.NumberOfCanceledThings != 1 {
		t.Fatalf("job after its only execution was canceled: %+v", j)
	}
}

func TestContinuousJobReachesThingAddedLater(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.svc.CreateThingGroup(ctx, &jobs.CreateThingGroupRequest{ThingGroupName: "fleet"}); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.AddThingToThingGroup(ctx, &jobs.ThingGroupMembershipRequest{ThingGroupName: "fleet", ThingName: "old"}); err != nil {
		t.Fatal(err)
	}
	e.createJob(&jobs.CreateJobRequest{JobID: "cont", Targets: []string{groupArn("fleet")}, TargetSelection: "CONTINUOUS"})
	e.createJob(&jobs.CreateJobRequest{JobID: "snap", Targets: []string{groupArn("fleet")}})
	if n := len(e.executions("cont")); n != 1 {
		t.Fatalf("continuous job at creation: %d executions", n)
	}
	late := e.device("late")
	if err := e.svc.AddThingToThingGroup(ctx, &jobs.ThingGroupMembershipRequest{ThingGroupArn: groupArn("fleet"), ThingArn: thingArn("late")}); err != nil {
		t.Fatal(err)
	}
	late.notification("notify-next", nextJob("cont"))
	if n := len(e.executions("snap")); n != 1 {
		t.Fatalf("a snapshot job reached a thing added later: %d", n)
	}
	if sfx, ans := late.request("cont/update", map[string]any{"status": "SUCCEEDED"}); sfx != "accepted" {
		t.Fatal(ans)
	}
	if j := e.job("cont"); j.Status != jobs.JobInProgress {
		t.Fatalf("a continuous job completed: %s", j.Status)
	}
	r, err := e.svc.ListThingsInThingGroup(ctx, &jobs.ListRequest{Name: "fleet"})
	if err != nil || len(r.Things) != 2 {
		t.Fatalf("things in group: %+v %v", r, err)
	}
	var ae *jobs.APIError
	if _, err := e.svc.CreateJob(ctx, &jobs.CreateJobRequest{JobID: "nogroup", Targets: []string{groupArn("nope")}, Document: `{}`}); !errors.As(err, &ae) || ae.Type != "ResourceNotFoundException" {
		t.Fatalf("job for a missing group: %v", err)
	}
}

func TestJobTemplates(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	tr, err := e.svc.CreateJobTemplate(ctx, &jobs.CreateJobTemplateRequest{JobTemplateID: "reboot", Description: "reboot it",
		Document: `{"operation":"reboot","delay":5}`, TimeoutConfig: &jobs.TimeoutConfig{InProgressTimeoutInMinutes: ptr(int64(30))}})
	if err != nil {
		t.Fatal(err)
	}
	d := e.device("tp")
	e.createJob(&jobs.CreateJobRequest{JobID: "fromtpl", Targets: []string{thingArn("tp")}, JobTemplateArn: tr.JobTemplateArn})
	n := d.notification("notify-next", nextJob("fromtpl"))
	if field(n, "execution", "jobDocument", "delay") != 5.0 {
		t.Fatalf("document from the template: %v", n)
	}
	j := e.job("fromtpl")
	if j.JobTemplateArn != tr.JobTemplateArn || j.TimeoutConfig == nil || *j.TimeoutConfig.InProgressTimeoutInMinutes != 30 {
		t.Fatalf("job from template: %+v", j)
	}
	// A template from a job.
	if _, err := e.svc.CreateJobTemplate(ctx, &jobs.CreateJobTemplateRequest{JobTemplateID: "copy", Description: "copy", JobArn: j.JobArn}); err != nil {
		t.Fatal(err)
	}
	dt, err := e.svc.DescribeJobTemplate(ctx, "copy")
	if err != nil || dt.Document != `{"operation":"reboot","delay":5}` || dt.TimeoutConfig == nil {
		t.Fatalf("template from job: %+v %v", dt, err)
	}
	var ae *jobs.APIError
	if _, err := e.svc.CreateJobTemplate(ctx, &jobs.CreateJobTemplateRequest{JobTemplateID: "copy", Description: "x", Document: `{}`}); !errors.As(err, &ae) || ae.Type != "ConflictException" {
		t.Fatalf("duplicate template: %v", err)
	}
	l, _ := e.svc.ListJobTemplates(ctx, &jobs.ListRequest{})
	if len(l.JobTemplates) != 2 {
		t.Fatalf("templates: %+v", l)
	}
	if err := e.svc.DeleteJobTemplate(ctx, "copy"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.CreateJob(ctx, &jobs.CreateJobRequest{JobID: "gone", Targets: []string{thingArn("tp")},
		JobTemplateArn: "arn:aws:iot:us-east-1:1:jobtemplate/copy"}); !errors.As(err, &ae) || ae.Type != "ResourceNotFoundException" {
		t.Fatalf("job from a deleted template: %v", err)
	}
}

func TestInvalidControlRequests(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.createJob(&jobs.CreateJobRequest{JobID: "dup", Targets: []string{thingArn("a")}})
	cases := map[string]*jobs.CreateJobRequest{
		"ResourceAlreadyExistsException": {JobID: "dup", Targets: []string{thingArn("a")}, Document: `{}`},
		"InvalidRequestException":        {JobID: "bad id!", Targets: []string{thingArn("a")}, Document: `{}`},
	}
	bad := []*jobs.CreateJobRequest{
		{JobID: "n1", Document: `{}`},
		{JobID: "n2", Targets: []string{"arn:aws:s3:::bucket"}, Document: `{}`},
		{JobID: "n3", Targets: []string{thingArn("a")}},
		{JobID: "n4", Targets: []string{thingArn("a")}, Document: `not json`},
		{JobID: "n5", Targets: []string{thingArn("a")}, Document: `{}`, TargetSelection: "SOMETIMES"},
		{JobID: "n6", Targets: []string{thingArn("a")}, Document: `{}`, TimeoutConfig: &jobs.TimeoutConfig{InProgressTimeoutInMinutes: ptr(int64(10081))}},
		{JobID: "n7", Targets: []string{thingArn("a")}, Document: `{}`, JobExecutionsRetryConfig: &jobs.JobExecutionsRetryConfig{CriteriaList: []jobs.RetryCriteria{{FailureType: "FAILED", NumberOfRetries: 11}}}},
		{JobID: "n8", Targets: []string{thingArn("a")}, Document: `{}`, AbortConfig: &jobs.AbortConfig{CriteriaList: []jobs.AbortCriteria{{FailureType: "FAILED", Action: "PAUSE", ThresholdPercentage: 10, MinNumberOfExecutedThings: 1}}}},
		{JobID: "n9", Targets: []string{thingArn("a")}, Document: `{}`, JobExecutionsRolloutConfig: &jobs.JobExecutionsRolloutConfig{MaximumPerMinute: ptr(0)}},
		{JobID: "n10", Targets: []string{thingArn("a")}, DocumentSource: "https://s3.amazonaws.com/b/k"},
	}
	for _, r := range bad {
		cases["InvalidRequestException/"+r.JobID] = r
	}
	for want, r := range cases {
		_, err := e.svc.CreateJob(ctx, r)
		var ae *jobs.APIError
		if !errors.As(err, &ae) || ae.Type != want[:len(ae.Type)] || ae.Msg == "" {
			t.Errorf("%s: %v", want, err)
		}
	}
	if l, _ := e.svc.ListJobs(ctx, &jobs.ListJobsRequest{}); len(l.Jobs) != 1 {
		t.Fatalf("a refused job was stored: %+v", l.Jobs)
	}
}

func TestRestartMidRolloutLosesNothing(t *testing.T) {
	// The service stops (its store closed) in the middle of a rollout with
	// an execution in progress under a timeout; a new one on the same file
	// goes on: the rollout continues at its rate, the timeout fires, no
	// thing gets a second execution.
	e := newEnv(t)
	names, arns := things(12)
	e.createJob(&jobs.CreateJobRequest{JobID: "rs", Targets: arns, JobExecutionsRolloutConfig: &jobs.JobExecutionsRolloutConfig{MaximumPerMinute: ptr(4)},
		TimeoutConfig: &jobs.TimeoutConfig{InProgressTimeoutInMinutes: ptr(int64(3))}})
	d := e.device(names[0])
	if sfx, _ := d.request("start-next", map[string]any{}); sfx != "accepted" {
		t.Fatal("start-next")
	}
	e.restart()
	if n := len(e.executions("rs")); n != 4 {
		t.Fatalf("after restart: %d executions", n)
	}
	for m := 1; m <= 3; m++ {
		e.advance(time.Minute)
		waitFor(t, "rollout after restart", func() bool { return len(e.executions("rs")) >= min(4*(m+1), 12) })
	}
	waitFor(t, "timeout after restart", func() bool { return e.job("rs").JobProcessDetails.NumberOfTimedOutThings == 1 })
	seen := map[string]int{}
	for _, x := range e.executions("rs") {
		seen[x.ThingArn]++
	}
	if len(seen) != 12 {
		t.Fatalf("things with executions: %d", len(seen))
	}
	for th, n := range seen {
		if n != 1 {
			t.Fatalf("%s has %d executions", th, n)
		}
	}
	p := e.job("rs").JobProcessDetails
	if p.NumberOfQueuedThings != 11 || p.NumberOfTimedOutThings != 1 {
		t.Fatalf("counts after restart: %+v", p)
	}
}

func TestJobRecordsReadInAnyLayout(t *testing.T) {
	// A job's record is written without its targets (stored on their own,
	// once); one written in another order (an older service) reads the
	// same, and the service goes on with it.
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.svc.CreateThingGroup(ctx, &jobs.CreateThingGroupRequest{ThingGroupName: "porch"}); err != nil {
		t.Fatal(err)
	}
	targets := []string{thingArn("lay-1"), groupArn("porch"), thingArn("lay-2")}
	e.createJob(&jobs.CreateJobRequest{JobID: "lay", Targets: targets})
	d := e.device("lay-1")
	e.stop()
	st, err := store.Open(e.path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = st.Update(func(tx *store.Tx) error {
		b, err := tx.GetJob("lay")
		if err != nil {
			return err
		}
		if strings.Contains(string(b), `"targets"`) {
			return fmt.Errorf("the record holds its targets: %s", b)
		}
		if tb, err := tx.GetJobTargets("lay"); err != nil || string(tb) != `["`+strings.Join(targets, `","`)+`"]` {
			return fmt.Errorf("stored targets: %s %v", tb, err)
		}
		var fields map[string]json.RawMessage // re-encoded: keys sorted
		if err := json.Unmarshal(b, &fields); err != nil {
			return err
		}
		b, _ = json.Marshal(fields)
		return tx.PutJob("lay", b)
	})
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	e.start()
	if got := e.job("lay").Targets; !slices.Equal(got, targets) {
		t.Fatalf("targets after the rewrite: %v", got)
	}
	if l, err := e.svc.ListJobs(ctx, &jobs.ListJobsRequest{ThingGroupName: "porch"}); err != nil || len(l.Jobs) != 1 {
		t.Fatalf("jobs of group porch: %+v %v", l, err)
	}
	if sfx, ans := d.request("start-next", map[string]any{}); sfx != "accepted" || field(ans, "execution", "jobId") != "lay" {
		t.Fatalf("start-next: %s %v", sfx, ans)
	}
	if sfx, ans := d.request("lay/update", map[string]any{"status": "SUCCEEDED"}); sfx != "accepted" {
		t.Fatalf("update: %v", ans)
	}
	e.restart()
	j := e.job("lay")
	if !slices.Equal(j.Targets, targets) || j.JobProcessDetails.NumberOfSucceededThings != 1 || j.JobProcessDetails.NumberOfQueuedThings != 1 {
		t.Fatalf("after an update and a restart: %v %+v", j.Targets, j.JobProcessDetails)
	}
}
