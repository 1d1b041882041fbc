package jobs_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/aws/aws-sdk-go-v2/service/iot/types"
	"github.com/aws/smithy-go"

	"github.com/shadowgate/shadowgate/agent/awsapi"
	"github.com/shadowgate/shadowgate/agent/jobs"
)

// httpKeys are the keys of the HTTP tests: an unrestricted one, a reader,
// and one limited to thing-a.
const httpKeys = `[default]
aws_access_key_id = AKIDJOBSADMIN000001
aws_secret_access_key = jobs-admin-secret-00000000000000000000

[reader]
aws_access_key_id = AKIDJOBSREADER00001
aws_secret_access_key = jobs-reader-secret-0000000000000000000
shadowgate_actions = read

[thing-a]
aws_access_key_id = AKIDJOBSTHINGA00001
aws_secret_access_key = jobs-thing-a-secret-000000000000000000
shadowgate_things = thing-a
`

var keys = map[string][2]string{
	"default": {"AKIDJOBSADMIN000001", "jobs-admin-secret-00000000000000000000"},
	"reader":  {"AKIDJOBSREADER00001", "jobs-reader-secret-0000000000000000000"},
	"thing-a": {"AKIDJOBSTHINGA00001", "jobs-thing-a-secret-000000000000000000"},
}

// serveHTTP puts the service's routes on a real awsapi server on a
// loopback listener and returns its URL.
func (e *env) serveHTTP() string {
	e.t.Helper()
	creds, err := awsapi.ParseCredentials([]byte(httpKeys))
	if err != nil {
		e.t.Fatal(err)
	}
	srv := awsapi.New(awsapi.Options{Credentials: creds, Rate: -1})
	srv.Handle(e.svc.Routes()...)
	ts := httptest.NewServer(srv)
	e.t.Cleanup(ts.Close)
	return ts.URL
}

// iotClient is the SDK's control-plane client for a key, without retries.
func iotClient(url, profile string) *iot.Client {
	k := keys[profile]
	return iot.New(iot.Options{Region: "eu-west-1", BaseEndpoint: aws.String(url), Retryer: aws.NopRetryer{},
		Credentials: credentials.NewStaticCredentialsProvider(k[0], k[1], "")})
}

// must is v, or a failed test (a panic, since Go cannot pass a call's two
// results after a *testing.T).
func must[T any](v T, err error) T {
	if err != nil {
		panic(fmt.Sprintf("unexpected error: %v", err))
	}
	return v
}

func wantAPIError(t *testing.T, err error, code, msgPart string) {
	t.Helper()
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorCode() != code || !strings.Contains(ae.ErrorMessage(), msgPart) {
		t.Fatalf("want %s %q, got %v", code, msgPart, err)
	}
}

func TestHTTPControlPlaneWithTheSDK(t *testing.T) {
	e := newEnv(t)
	api := iotClient(e.serveHTTP(), "default")
	ctx := context.Background()

	// Thing groups.
	g := must(api.CreateThingGroup(ctx, &iot.CreateThingGroupInput{ThingGroupName: aws.String("porch"),
		ThingGroupProperties: &types.ThingGroupProperties{ThingGroupDescription: aws.String("porch lights"),
			AttributePayload: &types.AttributePayload{Attributes: map[string]string{"floor": "0"}}}}))
	if aws.ToString(g.ThingGroupArn) != "arn:aws:iot:us-east-1:000000000000:thinggroup/porch" || aws.ToString(g.ThingGroupId) == "" {
		t.Fatalf("create group: %+v", g)
	}
	for _, th := range []string{"thing-a", "thing-b"} {
		must(api.AddThingToThingGroup(ctx, &iot.AddThingToThingGroupInput{ThingGroupName: aws.String("porch"), ThingName: aws.String(th)}))
	}
	dg := must(api.DescribeThingGroup(ctx, &iot.DescribeThingGroupInput{ThingGroupName: aws.String("porch")}))
	if aws.ToString(dg.ThingGroupProperties.ThingGroupDescription) != "porch lights" || dg.ThingGroupProperties.AttributePayload.Attributes["floor"] != "0" ||
		dg.Version != 3 || dg.ThingGroupMetadata.CreationDate == nil || dg.ThingGroupMetadata.CreationDate.Unix() != 1_700_000_000 {
		t.Fatalf("describe group: %+v %+v", dg, dg.ThingGroupMetadata)
	}
	lg := must(api.ListThingGroups(ctx, &iot.ListThingGroupsInput{NamePrefixFilter: aws.String("po")}))
	if len(lg.ThingGroups) != 1 || aws.ToString(lg.ThingGroups[0].GroupName) != "porch" {
		t.Fatalf("list groups: %+v", lg.ThingGroups)
	}
	lt := must(api.ListThingsInThingGroup(ctx, &iot.ListThingsInThingGroupInput{ThingGroupName: aws.String("porch"), MaxResults: aws.Int32(1)}))
	if strings.Join(lt.Things, ",") != "thing-a" || lt.NextToken == nil {
		t.Fatalf("list things page 1: %+v", lt)
	}
	lt = must(api.ListThingsInThingGroup(ctx, &iot.ListThingsInThingGroupInput{ThingGroupName: aws.String("porch"), NextToken: lt.NextToken}))
	if strings.Join(lt.Things, ",") != "thing-b" || lt.NextToken != nil {
		t.Fatalf("list things page 2: %+v", lt)
	}

	// A job on the group and one more thing, with every configuration.
	cj := must(api.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("j1"), Targets: []string{groupArn("porch"), thingArn("thing-c")},
		Document: aws.String(`{"operation":"light","on":true}`), Description: aws.String("lights on"), TargetSelection: types.TargetSelectionSnapshot,
		JobExecutionsRolloutConfig: &types.JobExecutionsRolloutConfig{MaximumPerMinute: aws.Int32(100)},
		AbortConfig: &types.AbortConfig{CriteriaList: []types.AbortCriteria{{FailureType: types.JobExecutionFailureTypeFailed, Action: types.AbortActionCancel,
			ThresholdPercentage: aws.Float64(50), MinNumberOfExecutedThings: aws.Int32(2)}}},
		TimeoutConfig:            &types.TimeoutConfig{InProgressTimeoutInMinutes: aws.Int64(30)},
		JobExecutionsRetryConfig: &types.JobExecutionsRetryConfig{CriteriaList: []types.RetryCriteria{{FailureType: types.RetryableFailureTypeTimedOut, NumberOfRetries: aws.Int32(2)}}},
		Tags:                     []types.Tag{{Key: aws.String("team"), Value: aws.String("ops")}}}))
	if aws.ToString(cj.JobArn) != "arn:aws:iot:us-east-1:000000000000:job/j1" || aws.ToString(cj.JobId) != "j1" || aws.ToString(cj.Description) != "lights on" {
		t.Fatalf("create job: %+v", cj)
	}
	_, err := api.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("j1"), Targets: []string{thingArn("thing-a")}, Document: aws.String(`{}`)})
	var exists *types.ResourceAlreadyExistsException
	if !errors.As(err, &exists) || aws.ToString(exists.ResourceId) != "j1" || aws.ToString(exists.ResourceArn) != aws.ToString(cj.JobArn) {
		t.Fatalf("create the job again: %v", err)
	}
	dj := must(api.DescribeJob(ctx, &iot.DescribeJobInput{JobId: aws.String("j1")}))
	j := dj.Job
	if j.Status != types.JobStatusInProgress || j.JobProcessDetails == nil || aws.ToInt32(j.JobProcessDetails.NumberOfQueuedThings) != 3 ||
		aws.ToInt32(j.JobExecutionsRolloutConfig.MaximumPerMinute) != 100 || aws.ToInt64(j.TimeoutConfig.InProgressTimeoutInMinutes) != 30 ||
		j.AbortConfig.CriteriaList[0].FailureType != types.JobExecutionFailureTypeFailed || j.JobExecutionsRetryConfig.CriteriaList[0].FailureType != types.RetryableFailureTypeTimedOut ||
		j.CreatedAt == nil || j.CreatedAt.Unix() != 1_700_000_000 || len(j.Targets) != 2 || j.TargetSelection != types.TargetSelectionSnapshot {
		t.Fatalf("describe job: %+v %+v", j, j.JobProcessDetails)
	}
	doc := must(api.GetJobDocument(ctx, &iot.GetJobDocumentInput{JobId: aws.String("j1")}))
	if aws.ToString(doc.Document) != `{"operation":"light","on":true}` {
		t.Fatalf("job document: %q", aws.ToString(doc.Document))
	}
	le := must(api.ListJobExecutionsForJob(ctx, &iot.ListJobExecutionsForJobInput{JobId: aws.String("j1"), Status: types.JobExecutionStatusQueued}))
	if len(le.ExecutionSummaries) != 3 || le.ExecutionSummaries[0].JobExecutionSummary.Status != types.JobExecutionStatusQueued ||
		aws.ToInt64(le.ExecutionSummaries[0].JobExecutionSummary.ExecutionNumber) != 1 {
		t.Fatalf("executions of j1: %+v", le.ExecutionSummaries)
	}
	lte := must(api.ListJobExecutionsForThing(ctx, &iot.ListJobExecutionsForThingInput{ThingName: aws.String("thing-c"), JobId: aws.String("j1")}))
	if len(lte.ExecutionSummaries) != 1 || aws.ToString(lte.ExecutionSummaries[0].JobId) != "j1" {
		t.Fatalf("executions of thing-c: %+v", lte.ExecutionSummaries)
	}
	de := must(api.DescribeJobExecution(ctx, &iot.DescribeJobExecutionInput{JobId: aws.String("j1"), ThingName: aws.String("thing-c"), ExecutionNumber: aws.Int64(1)}))
	if de.Execution.Status != types.JobExecutionStatusQueued || aws.ToString(de.Execution.ThingArn) != "arn:aws:iot:us-east-1:000000000000:thing/thing-c" ||
		de.Execution.VersionNumber != 1 || de.Execution.QueuedAt.Unix() != 1_700_000_000 {
		t.Fatalf("describe execution: %+v", de.Execution)
	}
	_, err = api.DescribeJobExecution(ctx, &iot.DescribeJobExecutionInput{JobId: aws.String("j1"), ThingName: aws.String("thing-c"), ExecutionNumber: aws.Int64(7)})
	var nf *types.ResourceNotFoundException
	if !errors.As(err, &nf) {
		t.Fatalf("an execution that is not there: %v", err)
	}

	// One execution canceled, with a stale version first; then deleted.
	_, err = api.CancelJobExecution(ctx, &iot.CancelJobExecutionInput{JobId: aws.String("j1"), ThingName: aws.String("thing-c"), ExpectedVersion: aws.Int64(9)})
	var vc *types.VersionConflictException
	if !errors.As(err, &vc) {
		t.Fatalf("cancel with a stale version: %v", err)
	}
	must(api.CancelJobExecution(ctx, &iot.CancelJobExecutionInput{JobId: aws.String("j1"), ThingName: aws.String("thing-c"), ExpectedVersion: aws.Int64(1),
		StatusDetails: map[string]string{"why": "not-installed"}}))
	de = must(api.DescribeJobExecution(ctx, &iot.DescribeJobExecutionInput{JobId: aws.String("j1"), ThingName: aws.String("thing-c")}))
	if de.Execution.Status != types.JobExecutionStatusCanceled || de.Execution.StatusDetails.DetailsMap["why"] != "not-installed" || aws.ToBool(de.Execution.ForceCanceled) {
		t.Fatalf("canceled execution: %+v", de.Execution)
	}
	_, err = api.CancelJobExecution(ctx, &iot.CancelJobExecutionInput{JobId: aws.String("j1"), ThingName: aws.String("thing-c")})
	var ist *types.InvalidStateTransitionException
	if !errors.As(err, &ist) {
		t.Fatalf("cancel a canceled execution: %v", err)
	}
	must(api.DeleteJobExecution(ctx, &iot.DeleteJobExecutionInput{JobId: aws.String("j1"), ThingName: aws.String("thing-c"), ExecutionNumber: aws.Int64(1)}))
	if _, err := api.DescribeJobExecution(ctx, &iot.DescribeJobExecutionInput{JobId: aws.String("j1"), ThingName: aws.String("thing-c")}); !errors.As(err, &nf) {
		t.Fatalf("deleted execution: %v", err)
	}

	// ListJobs with its filters, and paging.
	must(api.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("j2"), Targets: []string{thingArn("thing-d")}, Document: aws.String(`{"x":1}`),
		TargetSelection: types.TargetSelectionContinuous}))
	lj := must(api.ListJobs(ctx, &iot.ListJobsInput{Status: types.JobStatusInProgress, MaxResults: aws.Int32(1)}))
	if len(lj.Jobs) != 1 || aws.ToString(lj.Jobs[0].JobId) != "j1" || lj.NextToken == nil {
		t.Fatalf("list jobs page 1: %+v", lj)
	}
	lj = must(api.ListJobs(ctx, &iot.ListJobsInput{Status: types.JobStatusInProgress, NextToken: lj.NextToken}))
	if len(lj.Jobs) != 1 || aws.ToString(lj.Jobs[0].JobId) != "j2" || lj.Jobs[0].TargetSelection != types.TargetSelectionContinuous {
		t.Fatalf("list jobs page 2: %+v", lj)
	}
	lj = must(api.ListJobs(ctx, &iot.ListJobsInput{ThingGroupName: aws.String("porch")}))
	if len(lj.Jobs) != 1 || aws.ToString(lj.Jobs[0].JobId) != "j1" {
		t.Fatalf("jobs of porch: %+v", lj.Jobs)
	}

	// Cancel with force, a reason and a comment; delete.
	_, err = api.DeleteJob(ctx, &iot.DeleteJobInput{JobId: aws.String("j1")})
	if !errors.As(err, &ist) {
		t.Fatalf("delete a job in progress without force: %v", err)
	}
	cc := must(api.CancelJob(ctx, &iot.CancelJobInput{JobId: aws.String("j1"), Force: true, ReasonCode: aws.String("OPS_ABORT"), Comment: aws.String("wrong lights")}))
	if aws.ToString(cc.JobId) != "j1" || aws.ToString(cc.JobArn) != aws.ToString(cj.JobArn) {
		t.Fatalf("cancel: %+v", cc)
	}
	j = must(api.DescribeJob(ctx, &iot.DescribeJobInput{JobId: aws.String("j1")})).Job
	if j.Status != types.JobStatusCanceled || !aws.ToBool(j.ForceCanceled) || aws.ToString(j.ReasonCode) != "OPS_ABORT" || aws.ToString(j.Comment) != "wrong lights" ||
		aws.ToInt32(j.JobProcessDetails.NumberOfCanceledThings) != 2 {
		t.Fatalf("canceled job: %+v %+v", j, j.JobProcessDetails)
	}
	must(api.DeleteJob(ctx, &iot.DeleteJobInput{JobId: aws.String("j1")}))
	must(api.DeleteJob(ctx, &iot.DeleteJobInput{JobId: aws.String("j2"), Force: true}))
	if _, err := api.DescribeJob(ctx, &iot.DescribeJobInput{JobId: aws.String("j1")}); !errors.As(err, &nf) {
		t.Fatalf("deleted job: %v", err)
	}

	// Templates: from scratch, listed, used by a job, from a job, deleted.
	ct := must(api.CreateJobTemplate(ctx, &iot.CreateJobTemplateInput{JobTemplateId: aws.String("reboot"), Description: aws.String("reboot the gateway"),
		Document: aws.String(`{"operation":"reboot"}`), TimeoutConfig: &types.TimeoutConfig{InProgressTimeoutInMinutes: aws.Int64(10)}}))
	if aws.ToString(ct.JobTemplateArn) != "arn:aws:iot:us-east-1:000000000000:jobtemplate/reboot" {
		t.Fatalf("create template: %+v", ct)
	}
	_, err = api.CreateJobTemplate(ctx, &iot.CreateJobTemplateInput{JobTemplateId: aws.String("reboot"), Description: aws.String("again"), Document: aws.String(`{}`)})
	var conflict *types.ConflictException
	if !errors.As(err, &conflict) || aws.ToString(conflict.ResourceId) != "reboot" {
		t.Fatalf("create the template again: %v", err)
	}
	dt := must(api.DescribeJobTemplate(ctx, &iot.DescribeJobTemplateInput{JobTemplateId: aws.String("reboot")}))
	if aws.ToString(dt.Document) != `{"operation":"reboot"}` || aws.ToInt64(dt.TimeoutConfig.InProgressTimeoutInMinutes) != 10 || dt.CreatedAt == nil {
		t.Fatalf("describe template: %+v", dt)
	}
	must(api.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("j3"), Targets: []string{thingArn("thing-a")}, JobTemplateArn: ct.JobTemplateArn}))
	j = must(api.DescribeJob(ctx, &iot.DescribeJobInput{JobId: aws.String("j3")})).Job
	if aws.ToString(j.JobTemplateArn) != aws.ToString(ct.JobTemplateArn) || aws.ToInt64(j.TimeoutConfig.InProgressTimeoutInMinutes) != 10 {
		t.Fatalf("job from a template: %+v", j)
	}
	must(api.CreateJobTemplate(ctx, &iot.CreateJobTemplateInput{JobTemplateId: aws.String("from-j3"), Description: aws.String("copy of j3"), JobArn: j.JobArn}))
	ltp := must(api.ListJobTemplates(ctx, &iot.ListJobTemplatesInput{}))
	if len(ltp.JobTemplates) != 2 || aws.ToString(ltp.JobTemplates[0].JobTemplateId) != "from-j3" || aws.ToString(ltp.JobTemplates[1].Description) != "reboot the gateway" {
		t.Fatalf("list templates: %+v", ltp.JobTemplates)
	}
	must(api.DeleteJobTemplate(ctx, &iot.DeleteJobTemplateInput{JobTemplateId: aws.String("from-j3")}))
	if _, err := api.DescribeJobTemplate(ctx, &iot.DescribeJobTemplateInput{JobTemplateId: aws.String("from-j3")}); !errors.As(err, &nf) {
		t.Fatalf("deleted template: %v", err)
	}
	if _, err := api.DeleteJobTemplate(ctx, &iot.DeleteJobTemplateInput{JobTemplateId: aws.String("from-j3")}); !errors.As(err, &nf) {
		t.Fatalf("delete a deleted template: %v", err)
	}

	// Leaving and deleting a group; a stale expectedVersion first.
	must(api.RemoveThingFromThingGroup(ctx, &iot.RemoveThingFromThingGroupInput{ThingGroupName: aws.String("porch"), ThingArn: aws.String(thingArn("thing-b"))}))
	lt = must(api.ListThingsInThingGroup(ctx, &iot.ListThingsInThingGroupInput{ThingGroupName: aws.String("porch")}))
	if strings.Join(lt.Things, ",") != "thing-a" {
		t.Fatalf("things after remove: %v", lt.Things)
	}
	if _, err := api.DeleteThingGroup(ctx, &iot.DeleteThingGroupInput{ThingGroupName: aws.String("porch"), ExpectedVersion: aws.Int64(1)}); !errors.As(err, &vc) {
		t.Fatalf("delete group with a stale version: %v", err)
	}
	must(api.DeleteThingGroup(ctx, &iot.DeleteThingGroupInput{ThingGroupName: aws.String("porch"), ExpectedVersion: aws.Int64(4)}))
	if _, err := api.DescribeThingGroup(ctx, &iot.DescribeThingGroupInput{ThingGroupName: aws.String("porch")}); !errors.As(err, &nf) {
		t.Fatalf("deleted group: %v", err)
	}
	_, err = api.AddThingToThingGroup(ctx, &iot.AddThingToThingGroupInput{ThingGroupName: aws.String("porch"), ThingName: aws.String("thing-a")})
	if !errors.As(err, &nf) {
		t.Fatalf("add to a deleted group: %v", err)
	}

	// Invalid requests get InvalidRequestException with a reason.
	_, err = api.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("bad"), Targets: []string{"arn:aws:s3:::bucket"}, Document: aws.String(`{}`)})
	wantAPIError(t, err, "InvalidRequestException", "not a thing or thing group ARN")
	_, err = api.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("bad"), Targets: []string{thingArn("x")}, Document: aws.String(`not json`)})
	wantAPIError(t, err, "InvalidRequestException", "document must be a JSON object")
	_, err = api.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("bad"), Targets: []string{thingArn("x")}, Document: aws.String(`{}`),
		SchedulingConfig: &types.SchedulingConfig{StartTime: aws.String("2030-01-01T00:00")}})
	wantAPIError(t, err, "InvalidRequestException", "schedulingConfig is not supported")
}

func TestHTTPJobRunByAnMQTTDevice(t *testing.T) {
	e := newEnv(t)
	api := iotClient(e.serveHTTP(), "default")
	ctx := context.Background()
	dev := e.device("gw-7")
	must(api.CreateThingGroup(ctx, &iot.CreateThingGroupInput{ThingGroupName: aws.String("gateways")}))
	must(api.AddThingToThingGroup(ctx, &iot.AddThingToThingGroupInput{ThingGroupArn: aws.String(groupArn("gateways")), ThingName: aws.String("gw-7")}))
	must(api.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("firmware-2"), Targets: []string{groupArn("gateways")},
		Document:                   aws.String(`{"operation":"install","version":"2.0"}`),
		JobExecutionsRolloutConfig: &types.JobExecutionsRolloutConfig{MaximumPerMinute: aws.Int32(10)}}))

	// The device follows AWS's flow: notify-next, start-next, update.
	n := dev.notification("notify-next", nextJob("firmware-2"))
	if field(n, "execution", "jobDocument", "version") != "2.0" {
		t.Fatalf("notify-next: %v", n)
	}
	s, ans := dev.request("start-next", map[string]any{"statusDetails": map[string]any{"step": "download"}})
	if s != "accepted" || field(ans, "execution", "status") != "IN_PROGRESS" {
		t.Fatalf("start-next: %s %v", s, ans)
	}
	de := must(api.DescribeJobExecution(ctx, &iot.DescribeJobExecutionInput{JobId: aws.String("firmware-2"), ThingName: aws.String("gw-7")}))
	if de.Execution.Status != types.JobExecutionStatusInProgress || de.Execution.StartedAt == nil || de.Execution.StatusDetails.DetailsMap["step"] != "download" {
		t.Fatalf("in progress over HTTP: %+v", de.Execution)
	}
	s, ans = dev.request("firmware-2/update", map[string]any{"status": "SUCCEEDED", "expectedVersion": num(field(ans, "execution", "versionNumber"))})
	if s != "accepted" {
		t.Fatalf("update: %s %v", s, ans)
	}
	de = must(api.DescribeJobExecution(ctx, &iot.DescribeJobExecutionInput{JobId: aws.String("firmware-2"), ThingName: aws.String("gw-7")}))
	if de.Execution.Status != types.JobExecutionStatusSucceeded || de.Execution.VersionNumber != 3 {
		t.Fatalf("succeeded over HTTP: %+v", de.Execution)
	}
	j := must(api.DescribeJob(ctx, &iot.DescribeJobInput{JobId: aws.String("firmware-2")})).Job
	if j.Status != types.JobStatusCompleted || aws.ToInt32(j.JobProcessDetails.NumberOfSucceededThings) != 1 || j.CompletedAt == nil {
		t.Fatalf("job: %+v %+v", j, j.JobProcessDetails)
	}

	// A template's job, started by the device, then canceled with force:
	// the device is told (notify-next with nothing next) and its update is
	// refused.
	must(api.CreateJobTemplate(ctx, &iot.CreateJobTemplateInput{JobTemplateId: aws.String("reboot"), Description: aws.String("reboot"),
		Document: aws.String(`{"operation":"reboot"}`)}))
	must(api.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("reboot-1"), Targets: []string{thingArn("gw-7")},
		JobTemplateArn: aws.String("arn:aws:iot:eu-west-1:123456789012:jobtemplate/reboot")}))
	dev.notification("notify-next", nextJob("reboot-1"))
	if s, ans := dev.request("start-next", map[string]any{}); s != "accepted" || field(ans, "execution", "jobDocument", "operation") != "reboot" {
		t.Fatalf("start-next reboot: %s %v", s, ans)
	}
	if _, err := api.CancelJob(ctx, &iot.CancelJobInput{JobId: aws.String("reboot-1")}); err != nil {
		t.Fatal(err)
	}
	de = must(api.DescribeJobExecution(ctx, &iot.DescribeJobExecutionInput{JobId: aws.String("reboot-1"), ThingName: aws.String("gw-7")}))
	if de.Execution.Status != types.JobExecutionStatusInProgress {
		t.Fatalf("cancel without force left the execution: %+v", de.Execution)
	}
	must(api.CancelJob(ctx, &iot.CancelJobInput{JobId: aws.String("reboot-1"), Force: true}))
	dev.notification("notify-next", nextJob(""))
	de = must(api.DescribeJobExecution(ctx, &iot.DescribeJobExecutionInput{JobId: aws.String("reboot-1"), ThingName: aws.String("gw-7")}))
	if de.Execution.Status != types.JobExecutionStatusCanceled || !aws.ToBool(de.Execution.ForceCanceled) {
		t.Fatalf("force-canceled execution: %+v", de.Execution)
	}
	if s, ans := dev.request("reboot-1/update", map[string]any{"status": "SUCCEEDED"}); s != "rejected" || ans["code"] != "InvalidStateTransition" {
		t.Fatalf("update after force cancel: %s %v", s, ans)
	}
}

// signed sends a request signed with key for service, as the SDKs do.
func signed(t *testing.T, method, url, service, profile string, body []byte) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	sum := sha256.Sum256(body)
	k := keys[profile]
	if err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: k[0], SecretAccessKey: k[1]}, req, hex.EncodeToString(sum[:]), service, "eu-west-1", time.Now()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func wantHTTP(t *testing.T, resp *http.Response, b []byte, status int, errType string) map[string]any {
	t.Helper()
	var v map[string]any
	if len(b) > 0 {
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatalf("%s %s: body %q is not JSON", resp.Request.Method, resp.Request.URL, b)
		}
	}
	if resp.StatusCode != status || strings.TrimSuffix(resp.Header.Get("X-Amzn-ErrorType"), ":") != errType {
		t.Fatalf("%s %s: want %d %q, got %d %q %s", resp.Request.Method, resp.Request.URL, status, errType, resp.StatusCode, resp.Header.Get("X-Amzn-ErrorType"), b)
	}
	return v
}

func TestHTTPDataPlane(t *testing.T) {
	e := newEnv(t)
	url := e.serveHTTP()
	api := iotClient(url, "default")
	ctx := context.Background()
	watcher := e.device("gw-9") // sees the notifications an HTTP request causes
	dp := func(method, path string, body string, status int, errType string) map[string]any {
		t.Helper()
		var b []byte
		if body != "" {
			b = []byte(body)
		}
		resp, rb := signed(t, method, url+path, "iot-jobs-data", "default", b)
		return wantHTTP(t, resp, rb, status, errType)
	}

	v := dp("GET", "/things/gw-9/jobs", "", 200, "")
	if len(v["inProgressJobs"].([]any)) != 0 || len(v["queuedJobs"].([]any)) != 0 || v["timestamp"] != nil {
		t.Fatalf("nothing pending: %v", v)
	}
	if v := dp("PUT", "/things/gw-9/jobs/$next", "", 200, ""); len(v) != 0 {
		t.Fatalf("start-next with nothing pending: %v", v)
	}
	for _, id := range []string{"a1", "a2"} {
		must(api.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String(id), Targets: []string{thingArn("gw-9")}, Document: aws.String(`{"operation":"` + id + `"}`),
			TimeoutConfig: &types.TimeoutConfig{InProgressTimeoutInMinutes: aws.Int64(60)}}))
	}
	v = dp("GET", "/things/gw-9/jobs", "", 200, "")
	if q := v["queuedJobs"].([]any); len(q) != 2 || q[0].(map[string]any)["jobId"] != "a1" || num(q[0].(map[string]any)["queuedAt"]) != 1_700_000_000 {
		t.Fatalf("pending: %v", v)
	}
	v = dp("GET", "/things/gw-9/jobs/$next?includeJobDocument=false", "", 200, "")
	if field(v, "execution", "jobId") != "a1" || field(v, "execution", "jobDocument") != nil || field(v, "execution", "status") != "QUEUED" {
		t.Fatalf("describe $next: %v", v)
	}
	watcher.notification("notify-next", nextJob("a1"))
	// The '$' of $next escaped, as some clients send it.
	v = dp("PUT", "/things/gw-9/jobs/%24next", `{"statusDetails":{"step":"one"},"stepTimeoutInMinutes":5}`, 200, "")
	if field(v, "execution", "status") != "IN_PROGRESS" || field(v, "execution", "jobDocument") != `{"operation":"a1"}` ||
		num(field(v, "execution", "approximateSecondsBeforeTimedOut")) != 300 || field(v, "execution", "statusDetails", "step") != "one" {
		t.Fatalf("start-next: %v", v)
	}
	v = dp("GET", "/things/gw-9/jobs/a1", "", 200, "")
	if field(v, "execution", "versionNumber") != float64(2) || field(v, "execution", "jobDocument") != `{"operation":"a1"}` {
		t.Fatalf("describe a1: %v", v)
	}

	// A stale version is refused with the current state.
	v = dp("POST", "/things/gw-9/jobs/a1", `{"status":"SUCCEEDED","expectedVersion":1}`, 409, "InvalidStateTransitionException")
	if field(v, "executionState", "versionNumber") != float64(2) || field(v, "executionState", "status") != "IN_PROGRESS" {
		t.Fatalf("stale version: %v", v)
	}
	v = dp("POST", "/things/gw-9/jobs/a1", `{"status":"SUCCEEDED","expectedVersion":2,"includeJobExecutionState":true,"includeJobDocument":true,"statusDetails":{"step":"done"}}`, 200, "")
	if field(v, "executionState", "status") != "SUCCEEDED" || field(v, "jobDocument") != `{"operation":"a1"}` || field(v, "executionState", "statusDetails", "step") != "done" {
		t.Fatalf("update: %v", v)
	}
	watcher.notification("notify-next", nextJob("a2"))
	de := must(api.DescribeJobExecution(ctx, &iot.DescribeJobExecutionInput{JobId: aws.String("a1"), ThingName: aws.String("gw-9")}))
	if de.Execution.Status != types.JobExecutionStatusSucceeded {
		t.Fatalf("the control plane sees the data plane's update: %+v", de.Execution)
	}
	v = dp("POST", "/things/gw-9/jobs/a1", `{"status":"FAILED"}`, 409, "InvalidStateTransitionException")
	if field(v, "executionState", "status") != "SUCCEEDED" {
		t.Fatalf("update a terminal execution: %v", v)
	}
	dp("GET", "/things/gw-9/jobs/a1", "", 410, "TerminalStateException")
	dp("GET", "/things/gw-9/jobs/nope", "", 404, "ResourceNotFoundException")
	dp("POST", "/things/gw-9/jobs/nope", `{"status":"IN_PROGRESS"}`, 404, "ResourceNotFoundException")
	dp("POST", "/things/gw-9/jobs/a2", `{"status":"TIMED_OUT"}`, 400, "InvalidRequestException")
	dp("POST", "/things/gw-9/jobs/a2", `{"status":`, 400, "InvalidRequestException")
	dp("POST", "/things/gw-9/jobs/a2", `{}`, 400, "InvalidRequestException")
	dp("PUT", "/things/gw-9/jobs/$next", `{"stepTimeoutInMinutes":0}`, 400, "InvalidRequestException")
	dp("PUT", "/things/gw-9/jobs/a2", `{}`, 405, "MethodNotAllowedException")
	dp("GET", "/things/gw-9/jobs/a2?executionNumber=x", "", 400, "InvalidRequestException")
	dp("GET", "/things/bad%20name/jobs", "", 400, "InvalidRequestException")

	// The same path signed for the control plane is the control plane's.
	resp, b := signed(t, "GET", url+"/things/gw-9/jobs/a1", "iot", "default", nil)
	v = wantHTTP(t, resp, b, 200, "")
	if field(v, "execution", "thingArn") != "arn:aws:iot:us-east-1:000000000000:thing/gw-9" || field(v, "execution", "jobDocument") != nil {
		t.Fatalf("control plane DescribeJobExecution: %v", v)
	}
}

func TestHTTPJobsAuthorization(t *testing.T) {
	e := newEnv(t)
	url := e.serveHTTP()
	ctx := context.Background()
	admin, reader, thingA := iotClient(url, "default"), iotClient(url, "reader"), iotClient(url, "thing-a")
	must(admin.CreateThingGroup(ctx, &iot.CreateThingGroupInput{ThingGroupName: aws.String("g")}))
	must(admin.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("fleet"), Targets: []string{groupArn("g"), thingArn("thing-a")}, Document: aws.String(`{}`)}))

	forbidden := func(err error, what string) {
		t.Helper()
		wantAPIError(t, err, "ForbiddenException", "Forbidden")
		_ = what
	}
	// The reader reads, and writes nothing.
	must(reader.DescribeJob(ctx, &iot.DescribeJobInput{JobId: aws.String("fleet")}))
	must(reader.ListJobs(ctx, &iot.ListJobsInput{}))
	_, err := reader.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("r"), Targets: []string{thingArn("thing-a")}, Document: aws.String(`{}`)})
	forbidden(err, "reader creates")
	_, err = reader.CancelJob(ctx, &iot.CancelJobInput{JobId: aws.String("fleet")})
	forbidden(err, "reader cancels")
	_, err = reader.CreateThingGroup(ctx, &iot.CreateThingGroupInput{ThingGroupName: aws.String("r")})
	forbidden(err, "reader creates a group")

	// thing-a's key reaches jobs on thing-a alone.
	must(thingA.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("mine"), Targets: []string{thingArn("thing-a")}, Document: aws.String(`{}`)}))
	must(thingA.DescribeJob(ctx, &iot.DescribeJobInput{JobId: aws.String("mine")}))
	must(thingA.ListJobExecutionsForJob(ctx, &iot.ListJobExecutionsForJobInput{JobId: aws.String("mine")}))
	must(thingA.DescribeJobExecution(ctx, &iot.DescribeJobExecutionInput{JobId: aws.String("fleet"), ThingName: aws.String("thing-a")}))
	must(thingA.ListJobExecutionsForThing(ctx, &iot.ListJobExecutionsForThingInput{ThingName: aws.String("thing-a")}))
	_, err = thingA.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("b"), Targets: []string{thingArn("thing-a"), thingArn("thing-b")}, Document: aws.String(`{}`)})
	forbidden(err, "a job on thing-b")
	_, err = thingA.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("g"), Targets: []string{groupArn("g")}, Document: aws.String(`{}`)})
	forbidden(err, "a job on a group")
	_, err = thingA.DescribeJob(ctx, &iot.DescribeJobInput{JobId: aws.String("fleet")})
	forbidden(err, "the fleet's job")
	_, err = thingA.CancelJob(ctx, &iot.CancelJobInput{JobId: aws.String("fleet")})
	forbidden(err, "cancel the fleet's job")
	_, err = thingA.ListJobs(ctx, &iot.ListJobsInput{})
	forbidden(err, "list every job")
	_, err = thingA.DescribeJobExecution(ctx, &iot.DescribeJobExecutionInput{JobId: aws.String("fleet"), ThingName: aws.String("thing-b")})
	forbidden(err, "thing-b's execution")
	_, err = thingA.AddThingToThingGroup(ctx, &iot.AddThingToThingGroupInput{ThingGroupName: aws.String("g"), ThingName: aws.String("thing-a")})
	forbidden(err, "group membership")
	_, err = thingA.ListJobTemplates(ctx, &iot.ListJobTemplatesInput{})
	forbidden(err, "templates")
	must(thingA.CancelJob(ctx, &iot.CancelJobInput{JobId: aws.String("mine")}))
	must(thingA.DeleteJob(ctx, &iot.DeleteJobInput{JobId: aws.String("mine")}))

	// The data plane: a key of one thing is that device.
	resp, b := signed(t, "PUT", url+"/things/thing-a/jobs/$next", "iot-jobs-data", "thing-a", nil)
	if v := wantHTTP(t, resp, b, 200, ""); field(v, "execution", "jobId") != "fleet" {
		t.Fatalf("thing-a start-next: %v", v)
	}
	resp, b = signed(t, "GET", url+"/things/thing-b/jobs", "iot-jobs-data", "thing-a", nil)
	wantHTTP(t, resp, b, 403, "ForbiddenException")
	resp, b = signed(t, "POST", url+"/things/thing-a/jobs/fleet", "iot-jobs-data", "reader", []byte(`{"status":"SUCCEEDED"}`))
	wantHTTP(t, resp, b, 403, "ForbiddenException")

	// Signature Version 4 failures, as AWS answers them.
	bad := iot.New(iot.Options{Region: "eu-west-1", BaseEndpoint: aws.String(url), Retryer: aws.NopRetryer{},
		Credentials: credentials.NewStaticCredentialsProvider(keys["default"][0], "not-the-secret", "")})
	_, err = bad.ListJobs(ctx, &iot.ListJobsInput{})
	wantAPIError(t, err, "ForbiddenException", awsapi.MsgSignatureInvalid)
	unknown := iot.New(iot.Options{Region: "eu-west-1", BaseEndpoint: aws.String(url), Retryer: aws.NopRetryer{},
		Credentials: credentials.NewStaticCredentialsProvider("AKIDNOBODY000000001", "x", "")})
	_, err = unknown.ListJobs(ctx, &iot.ListJobsInput{})
	wantAPIError(t, err, "ForbiddenException", awsapi.MsgInvalidToken)
	resp, b = signed(t, "GET", url+"/jobs/fleet", "iotdata", "default", nil)
	if v := wantHTTP(t, resp, b, 403, "ForbiddenException"); !strings.Contains(v["message"].(string), "'iot'") {
		t.Fatalf("signed for iotdata: %v", v)
	}
	resp, b = signed(t, "PUT", url+"/jobs/fleet/cancel", "iot-jobs-data", "default", nil)
	wantHTTP(t, resp, b, 403, "ForbiddenException")
	req, _ := http.NewRequest("GET", url+"/jobs", nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if v := wantHTTP(t, resp, b, 403, "ForbiddenException"); v["message"] != awsapi.MsgMissingToken {
		t.Fatalf("unsigned: %v", v)
	}
}

// TestHTTPMalformedJobRequests sends every route requests that are wrong in
// each way a client can be wrong: each gets a 4xx with an AWS error type,
// none crashes the service or costs it its data.
func TestHTTPMalformedJobRequests(t *testing.T) {
	e := newEnv(t)
	url := e.serveHTTP()
	api := iotClient(url, "default")
	ctx := context.Background()
	must(api.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("keep"), Targets: []string{thingArn("t1")}, Document: aws.String(`{"keep":true}`)}))

	cases := []struct {
		method, path, service, body string
		status                      int
		errType, msgPart            string
	}{
		{"PUT", "/jobs/bad%20id", "iot", `{"targets":["` + thingArn("t1") + `"],"document":"{}"}`, 400, "InvalidRequestException", "regular expression pattern"},
		{"PUT", "/jobs/" + strings.Repeat("x", 65), "iot", `{}`, 400, "InvalidRequestException", "length less than or equal to 64"},
		{"PUT", "/jobs/j", "iot", `{"targets":"not-a-list"}`, 400, "InvalidRequestException", "targets"},
		{"PUT", "/jobs/j", "iot", `[1,2]`, 400, "InvalidRequestException", "JSON object"},
		{"PUT", "/jobs/j", "iot", `{"targets":[`, 400, "InvalidRequestException", "JSON object"},
		{"PUT", "/jobs/j", "iot", `{}`, 400, "InvalidRequestException", "targets"},
		{"PUT", "/jobs/j", "iot", `{"targets":["` + thingArn("t1") + `"],"document":"{}","targetSelection":"SOMETIMES"}`, 400, "InvalidRequestException", "SOMETIMES"},
		{"PUT", "/jobs/j", "iot", `{"targets":["` + thingArn("t1") + `"],"document":"{}","jobExecutionsRolloutConfig":{"maximumPerMinute":0}}`, 400, "InvalidRequestException", "maximumPerMinute"},
		{"PUT", "/jobs/j", "iot", `{"targets":["` + thingArn("t1") + `"],"document":"{}","timeoutConfig":{"inProgressTimeoutInMinutes":1e9}}`, 400, "InvalidRequestException", "inProgressTimeoutInMinutes"},
		{"PUT", "/jobs/j", "iot", `{"targets":["` + thingArn("t1") + `"],"document":"{}","jobExecutionsRetryConfig":{"criteriaList":[{"failureType":"FAILED","numberOfRetries":"x"}]}}`, 400, "InvalidRequestException", "wrong type"},
		{"PUT", "/jobs/j", "iot", `{"targets":["` + groupArn("none") + `"],"document":"{}"}`, 404, "ResourceNotFoundException", "none"},
		{"PUT", "/jobs/j", "iot", `{"targets":["` + thingArn("t1") + `"],"jobTemplateArn":"arn:aws:iot:us-east-1:1:jobtemplate/none"}`, 404, "ResourceNotFoundException", "none"},
		{"GET", "/jobs?maxResults=0", "iot", "", 400, "InvalidRequestException", "greater than or equal to 1"},
		{"GET", "/jobs?maxResults=251", "iot", "", 400, "InvalidRequestException", "less than or equal to 250"},
		{"GET", "/jobs?maxResults=ten", "iot", "", 400, "InvalidRequestException", "whole number"},
		{"GET", "/jobs?status=RUNNING", "iot", "", 400, "InvalidRequestException", "enum value set"},
		{"GET", "/jobs?nextToken=zzz", "iot", "", 400, "InvalidRequestException", "nextToken"},
		{"GET", "/jobs?namespaceId=ns", "iot", "", 400, "InvalidRequestException", "namespaceId is not supported"},
		{"GET", "/jobs?thingGroupName=bad%20group", "iot", "", 400, "InvalidRequestException", "thingGroupName"},
		{"PUT", "/jobs/keep/cancel?force=maybe", "iot", "", 400, "InvalidRequestException", "true or false"},
		{"PUT", "/jobs/keep/cancel", "iot", `{"reasonCode":"lower case"}`, 400, "InvalidRequestException", "reasonCode"},
		{"PUT", "/jobs/none/cancel", "iot", "", 404, "ResourceNotFoundException", "none"},
		{"DELETE", "/jobs/keep", "iot", "", 409, "InvalidStateTransitionException", "force"},
		{"GET", "/jobs/keep/things?status=DONE", "iot", "", 400, "InvalidRequestException", "enum value set"},
		{"GET", "/things/t1/jobs?jobId=bad%20id", "iot", "", 400, "InvalidRequestException", "jobId"},
		{"GET", "/things/t1/jobs/keep?executionNumber=-1", "iot", "", 400, "InvalidRequestException", "greater than or equal to 0"},
		{"GET", "/things/t1/jobs/keep?executionNumber=99999999999999999999", "iot", "", 400, "InvalidRequestException", "whole number"},
		{"PUT", "/things/t1/jobs/keep/cancel", "iot", `{"statusDetails":{"k":""}}`, 400, "InvalidRequestException", "statusDetails"},
		{"PUT", "/things/t1/jobs/keep/cancel", "iot", `{"expectedVersion":"one"}`, 400, "InvalidRequestException", "wrong type"},
		{"DELETE", "/things/t1/jobs/keep/executionNumber/x", "iot", "", 400, "InvalidRequestException", "executionNumber"},
		{"DELETE", "/things/t1/jobs/keep/executionNumber/1", "iot", "", 409, "InvalidStateTransitionException", "force"},
		{"POST", "/thing-groups/" + strings.Repeat("g", 129), "iot", "", 400, "InvalidRequestException", "128"},
		{"POST", "/thing-groups/g", "iot", `{"parentGroupName":"none"}`, 404, "ResourceNotFoundException", "none"},
		{"POST", "/thing-groups/g", "iot", `{"thingGroupProperties":{"attributePayload":{"attributes":{"a":1}}}}`, 400, "InvalidRequestException", "wrong type"},
		{"DELETE", "/thing-groups/g?expectedVersion=v", "iot", "", 400, "InvalidRequestException", "whole number"},
		{"GET", "/thing-groups?recursive=true", "iot", "", 400, "InvalidRequestException", "recursive"},
		{"GET", "/thing-groups?parentGroup=p", "iot", "", 400, "InvalidRequestException", "parentGroup"},
		{"PUT", "/thing-groups/addThingToThingGroup", "iot", `{}`, 400, "InvalidRequestException", "thing group name or ARN"},
		{"PUT", "/thing-groups/addThingToThingGroup", "iot", `{"thingGroupName":"g","thingArn":"arn:aws:iot:x:1:job/j"}`, 400, "InvalidRequestException", "not a thing ARN"},
		{"PUT", "/thing-groups/addThingToThingGroup", "iot", `{"thingGroupName":"none","thingName":"t1"}`, 404, "ResourceNotFoundException", "none"},
		{"GET", "/thing-groups/none/things", "iot", "", 404, "ResourceNotFoundException", "none"},
		{"PUT", "/job-templates/t", "iot", `{"document":"{}"}`, 400, "InvalidRequestException", "description"},
		{"PUT", "/job-templates/t", "iot", `{"description":"d","jobArn":"arn:aws:iot:x:1:job/none"}`, 404, "ResourceNotFoundException", "none"},
		{"PUT", "/job-templates/t", "iot", `{"description":"d","document":"{}","maintenanceWindows":[]}`, 400, "InvalidRequestException", "maintenanceWindows"},
		{"GET", "/job-templates/none", "iot", "", 404, "ResourceNotFoundException", "none"},
		{"PATCH", "/jobs/keep", "iot", "", 405, "MethodNotAllowedException", ""},
		{"GET", "/jobs/keep/nothing-here", "iot", "", 405, "MethodNotAllowedException", ""},
		{"POST", "/things/t1/jobs/keep", "iot-jobs-data", `{"status":"SUCCEEDED","expectedVersion":"x"}`, 400, "InvalidRequestException", "whole number"},
		{"POST", "/things/t1/jobs/keep", "iot-jobs-data", `{"status":"SUCCEEDED","statusDetails":{"k":1}}`, 400, "InvalidRequestException", "statusDetails"},
		{"POST", "/things/t1/jobs/keep", "iot-jobs-data", "\xff\xfe", 400, "InvalidRequestException", "JSON"},
		{"GET", "/things/t1/jobs/bad%20id", "iot-jobs-data", "", 400, "InvalidRequestException", "jobId"},
		{"GET", "/things/t1/jobs/keep?includeJobDocument=yes-please", "iot-jobs-data", "", 400, "InvalidRequestException", "true or false"},
	}
	for _, c := range cases {
		var b []byte
		if c.body != "" {
			b = []byte(c.body)
		}
		resp, rb := signed(t, c.method, url+c.path, c.service, "default", b)
		v := wantHTTP(t, resp, rb, c.status, c.errType)
		if msg, _ := v["message"].(string); !strings.Contains(msg, c.msgPart) {
			t.Errorf("%s %s %s: message %q lacks %q", c.method, c.path, c.body, msg, c.msgPart)
		}
	}

	// Bodies of every kind on every route with a body: never a 5xx.
	bodies := []string{"", "null", "0", `"s"`, "[]", "{", `{"targets":null}`, `{"document":{}}`, `{"status":null}`, `{"statusDetails":[]}`,
		`{"expectedVersion":1e400}`, `{"stepTimeoutInMinutes":-5}`, strings.Repeat("[", 10000), `{"description":"` + strings.Repeat("é", 3000) + `"}`}
	for _, r := range e.svc.Routes() {
		path := strings.NewReplacer("{jobId}", "fuzz", "{thingName}", "t1", "{thingGroupName}", "g", "{jobTemplateId}", "tp", "{executionNumber}", "1").Replace(r.Path)
		for _, body := range bodies {
			resp, rb := signed(t, r.Method, url+path, r.Services[0], "default", []byte(body))
			if resp.StatusCode >= 500 || resp.StatusCode >= 400 && resp.Header.Get("X-Amzn-ErrorType") == "" {
				t.Errorf("%s %s (%s) %.40q: %d %s", r.Method, path, r.Operation, body, resp.StatusCode, rb)
			}
		}
	}
	// The job is still there as it was.
	doc := must(api.GetJobDocument(ctx, &iot.GetJobDocumentInput{JobId: aws.String("keep")}))
	if aws.ToString(doc.Document) != `{"keep":true}` {
		t.Fatalf("document after the bad requests: %q", aws.ToString(doc.Document))
	}
}

// TestHTTPWithoutCredentials: a loopback server without credentials routes
// an unsigned request by its method and path (the control plane's, where
// both APIs have the path).
func TestHTTPWithoutCredentials(t *testing.T) {
	e := newEnv(t)
	srv := awsapi.New(awsapi.Options{Rate: -1})
	srv.Handle(e.svc.Routes()...)
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	must(e.svc.CreateJob(context.Background(), &jobs.CreateJobRequest{JobID: "open", Targets: []string{thingArn("t1")}, Document: `{}`}))
	get := func(method, path string, status int, errType string) map[string]any {
		t.Helper()
		req, _ := http.NewRequest(method, ts.URL+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return wantHTTP(t, resp, b, status, errType)
	}
	if v := get("GET", "/jobs", 200, ""); len(v["jobs"].([]any)) != 1 {
		t.Fatalf("unsigned ListJobs: %v", v)
	}
	if v := get("GET", "/things/t1/jobs/open", 200, ""); field(v, "execution", "thingArn") == nil {
		t.Fatalf("unsigned DescribeJobExecution: %v", v)
	}
	get("PATCH", "/jobs/open", 405, "MethodNotAllowedException")
	// Signed requests still go to the API they are signed for.
	resp, b := signed(t, "PUT", ts.URL+"/things/t1/jobs/$next", "iot-jobs-data", "default", nil)
	if v := wantHTTP(t, resp, b, 200, ""); field(v, "execution", "status") != "IN_PROGRESS" {
		t.Fatalf("signed start-next without credentials: %v", v)
	}
}
