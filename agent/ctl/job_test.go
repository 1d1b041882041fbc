package ctl

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/shadowgate/shadowgate/agent/awsapi"
	"github.com/shadowgate/shadowgate/agent/jobs"
	"github.com/shadowgate/shadowgate/agent/link"
	"github.com/shadowgate/shadowgate/agent/link/brokertest"
	"github.com/shadowgate/shadowgate/store"
)

// The job commands against the real thing: mosquitto, the jobs service on
// a bbolt file behind its SigV4 HTTP API, and devices that follow the AWS
// Jobs MQTT flow. shadowctl finds its keys as the AWS CLI does, here in a
// credentials file named by AWS_SHARED_CREDENTIALS_FILE, profile
// AWS_PROFILE.

// operatorKeys are the service's keys; the operator's file has them and
// a profile with a wrong secret.
const operatorKeys = `[operator]
aws_access_key_id = AKIDSHADOWCTLJOBS01
aws_secret_access_key = shadowctl-jobs-secret-000000000000000
`

const wrongKey = `
[wrong]
aws_access_key_id = AKIDSHADOWCTLJOBS01
aws_secret_access_key = not-the-secret
`

type jobsEnv struct {
	svc    *jobs.Service
	url    string
	broker *brokertest.Broker
}

func newJobsEnv(t *testing.T) *jobsEnv {
	t.Helper()
	noHome(t)
	dir := t.TempDir()
	credFile := filepath.Join(dir, "credentials")
	os.WriteFile(credFile, []byte(operatorKeys+wrongKey), 0o600)
	for k, v := range map[string]string{"AWS_SHARED_CREDENTIALS_FILE": credFile, "AWS_PROFILE": "operator",
		"AWS_CONFIG_FILE": filepath.Join(dir, "no-config"), "AWS_EC2_METADATA_DISABLED": "true", "AWS_CA_BUNDLE": "",
		"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SESSION_TOKEN": "", "AWS_REGION": "", "AWS_DEFAULT_REGION": "",
		"AWS_ENDPOINT_URL": "", "AWS_ENDPOINT_URL_IOT": "", "AWS_ACCOUNT_ID": ""} {
		t.Setenv(k, v)
	}
	e := &jobsEnv{broker: brokertest.Start(t)}
	st, err := store.Open(filepath.Join(dir, "jobs.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	l, err := link.New(link.Options{Broker: e.broker.URL(), ClientID: "jobsvc", MinBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	e.svc = jobs.New(jobs.Options{Root: "$aws/things/", Link: l, Store: st})
	creds, err := awsapi.ParseCredentials([]byte(operatorKeys))
	if err != nil {
		t.Fatal(err)
	}
	srv := awsapi.New(awsapi.Options{Credentials: creds, Rate: -1})
	srv.Handle(e.svc.Routes()...)
	ts := httptest.NewServer(srv)
	e.url = ts.URL
	t.Setenv("SHADOWGATE_IOT_ENDPOINT", e.url)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { e.svc.Run(ctx); done <- struct{}{} }()
	go func() { l.Run(ctx); done <- struct{}{} }()
	t.Cleanup(func() { ts.Close(); cancel(); <-done; <-done; st.Close() })
	eventually(t, "jobs service connected", l.Connected)
	return e
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// device is a thing following the AWS Jobs device flow: on connect and on
// every notify-next it asks start-next; the execution it gets says by its
// document's operation how it ends: "succeed" SUCCEEDED, "fail" FAILED,
// "reject" REJECTED, anything else stays IN_PROGRESS. Each update carries
// the execution's expectedVersion.
func (e *jobsEnv) device(t *testing.T, thing string) {
	t.Helper()
	l, err := link.New(link.Options{Broker: e.broker.URL(), ClientID: "dev-" + thing, CleanSession: true, MinBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	base := "$aws/things/" + thing + "/jobs/"
	msgs := make(chan *link.Message, 64)
	for _, f := range []string{base + "notify-next", base + "start-next/accepted", base + "+/update/accepted"} {
		l.Handle(f, func(_ context.Context, m *link.Message) { msgs <- m })
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { l.Run(ctx); done <- struct{}{} }()
	t.Cleanup(func() { cancel(); <-done; <-done })
	eventually(t, thing+" connected", l.Connected)
	go func() {
		defer func() { done <- struct{}{} }()
		startNext := func() { l.Publish(ctx, base+"start-next", false, []byte(`{"clientToken":"`+thing+`"}`)) }
		startNext()
		for {
			select {
			case <-ctx.Done():
				return
			case m := <-msgs:
				if !strings.HasSuffix(m.Topic, "/start-next/accepted") {
					startNext()
					continue
				}
				var v struct {
					Execution *struct {
						JobID         string `json:"jobId"`
						VersionNumber int64  `json:"versionNumber"`
						JobDocument   struct {
							Operation string `json:"operation"`
						} `json:"jobDocument"`
					} `json:"execution"`
				}
				json.Unmarshal(m.Payload, &v)
				if v.Execution == nil {
					continue
				}
				op := v.Execution.JobDocument.Operation
				status := map[string]string{"succeed": "SUCCEEDED", "fail": "FAILED", "reject": "REJECTED"}[op]
				if status == "" {
					continue
				}
				up, _ := json.Marshal(map[string]any{"status": status, "expectedVersion": v.Execution.VersionNumber,
					"statusDetails": map[string]string{"reason": "the device says " + op}, "clientToken": thing})
				l.Publish(ctx, base+v.Execution.JobID+"/update", false, up)
			}
		}
	}()
}

func (e *jobsEnv) group(t *testing.T, name string, things ...string) {
	t.Helper()
	ctx := context.Background()
	if _, err := e.svc.CreateThingGroup(ctx, &jobs.CreateThingGroupRequest{ThingGroupName: name}); err != nil {
		t.Fatal(err)
	}
	for _, th := range things {
		if err := e.svc.AddThingToThingGroup(ctx, &jobs.ThingGroupMembershipRequest{ThingGroupName: name, ThingName: th}); err != nil {
			t.Fatal(err)
		}
	}
}

func (e *jobsEnv) execStatus(job, thing string) jobs.ExecStatus {
	r, err := e.svc.DescribeJobExecution(context.Background(), &jobs.DescribeJobExecutionRequest{JobID: job, ThingName: thing})
	if err != nil || r.Execution == nil {
		return ""
	}
	return r.Execution.Status
}

func TestJobCreateWatchDescribeList(t *testing.T) {
	e := newJobsEnv(t)
	for _, th := range []string{"thing-a", "thing-b", "thing-c"} {
		e.device(t, th)
	}
	e.group(t, "porch", "thing-b", "thing-c")

	out := must(t, args("job", "create", "ok-1", "--targets", "thing-a,group:porch", "--operation", "succeed", "--args", `{"speed":40}`,
		"--description", "all good", "--watch", "--interval", "50ms"), ExitOK,
		"created job ok-1 (arn:aws:iot:us-east-1:000000000000:job/ok-1) for 2 target(s)", "thing-a  SUCCEEDED #1", "thing-c  SUCCEEDED #1",
		"job ok-1 COMPLETED", "succeeded 3")
	if strings.Contains(out, "FAILED") {
		t.Fatalf("output:\n%s", out)
	}
	// The service got ARNs: the group's as DescribeThingGroup answers it,
	// the thing's with the same region and account.
	d, err := e.svc.DescribeJob(context.Background(), "ok-1")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(d.Job.Targets, " "); got != "arn:aws:iot:us-east-1:000000000000:thinggroup/porch arn:aws:iot:us-east-1:000000000000:thing/thing-a" {
		t.Fatalf("targets %s", got)
	}
	doc, _ := e.svc.GetJobDocument(context.Background(), "ok-1")
	if doc == nil || doc.Document != `{"args":{"speed":40},"operation":"succeed"}` {
		t.Fatalf("document %+v", doc)
	}

	must(t, args("job", "describe", "ok-1"), ExitOK, "job ok-1  COMPLETED  SNAPSHOT", "description  all good", `"operation":"succeed"`,
		"succeeded 3", "thing-b  SUCCEEDED  1")
	_, js, _ := run(t, "job", "describe", "ok-1", "--json")
	var desc struct {
		Job struct {
			JobID             string         `json:"jobId"`
			Status            string         `json:"status"`
			JobProcessDetails map[string]int `json:"jobProcessDetails"`
		} `json:"job"`
		Document   string `json:"document"`
		Executions []struct {
			ThingArn string `json:"thingArn"`
			Summary  struct {
				Status string `json:"status"`
			} `json:"jobExecutionSummary"`
		} `json:"executionSummaries"`
	}
	if err := json.Unmarshal([]byte(js), &desc); err != nil || desc.Job.JobID != "ok-1" || desc.Job.Status != "COMPLETED" ||
		desc.Job.JobProcessDetails["numberOfSucceededThings"] != 3 || len(desc.Executions) != 3 || desc.Executions[0].Summary.Status != "SUCCEEDED" ||
		!strings.Contains(desc.Document, "succeed") {
		t.Fatalf("describe --json: %v\n%s", err, js)
	}

	must(t, args("job", "create", "q-1", "--targets", "thing-nobody", "--operation", "succeed"), ExitOK, "created job q-1")
	must(t, args("job", "list"), ExitOK, "ok-1  COMPLETED", "q-1   IN_PROGRESS")
	_, js, _ = run(t, "job", "list", "--status", "IN_PROGRESS", "--json")
	var list struct {
		Jobs []struct {
			JobID  string `json:"jobId"`
			Status string `json:"status"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal([]byte(js), &list); err != nil || len(list.Jobs) != 1 || list.Jobs[0].JobID != "q-1" {
		t.Fatalf("list --json: %v\n%s", err, js)
	}
	must(t, args("job", "list", "--status", "CANCELED"), ExitOK, "no jobs")

	// --json on create: the API's answer.
	_, js, _ = run(t, "job", "create", "ok-2", "--targets", "thing-a", "--document", writeFile(t, `{"operation":"succeed"}`), "--json")
	var created struct{ JobArn, JobID string }
	if err := json.Unmarshal([]byte(js), &created); err != nil || created.JobID != "ok-2" || created.JobArn != "arn:aws:iot:us-east-1:000000000000:job/ok-2" {
		t.Fatalf("create --json: %v\n%s", err, js)
	}
	// watch --json: one object per change, the last one final.
	_, js, _ = run(t, "job", "watch", "ok-2", "--json", "--interval", "50ms")
	lines := strings.Split(strings.TrimSpace(js), "\n")
	var last struct {
		Job struct {
			Status string `json:"status"`
		} `json:"job"`
		Executions []json.RawMessage `json:"executionSummaries"`
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil || last.Job.Status != "COMPLETED" || len(last.Executions) != 1 {
		t.Fatalf("watch --json: %v\n%s", err, js)
	}
}

func writeFile(t *testing.T, s string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "doc.json")
	os.WriteFile(p, []byte(s), 0o600)
	return p
}

func TestJobWatchFailsOnAFailedExecution(t *testing.T) {
	e := newJobsEnv(t)
	e.device(t, "thing-f")
	e.device(t, "thing-r")
	must(t, args("job", "create", "bad-1", "--targets", "thing-f", "--operation", "fail", "--watch", "--interval", "50ms"), ExitFailure,
		"thing-f  FAILED #1", "job bad-1 COMPLETED", `thing-f FAILED {"reason":"the device says fail"}`, "1 of 1 things did not succeed (failed 1")
	must(t, args("job", "create", "bad-2", "--targets", "thing-r", "--operation", "reject", "--watch", "--interval", "50ms"), ExitFailure,
		"thing-r  REJECTED #1", "rejected 1")
}

func TestJobCancel(t *testing.T) {
	e := newJobsEnv(t)
	e.device(t, "thing-h")
	// thing-h holds its execution IN_PROGRESS; thing-q has no device, so
	// its execution stays QUEUED.
	must(t, args("job", "create", "hold-1", "--targets", "thing-h,thing-q", "--operation", "hold"), ExitOK)
	eventually(t, "thing-h IN_PROGRESS", func() bool { return e.execStatus("hold-1", "thing-h") == jobs.InProgress })

	type result struct {
		code        int
		out, errOut string
	}
	watched := make(chan result, 1)
	go func() {
		var out, errOut strings.Builder
		code := Main(context.Background(), []string{"job", "watch", "hold-1", "--interval", "50ms"}, &out, &errOut)
		watched <- result{code, out.String(), errOut.String()}
	}()
	must(t, args("job", "cancel", "hold-1"), ExitOK, "canceled job hold-1: its queued executions are CANCELED")
	w := <-watched
	if w.code != ExitFailure || !strings.Contains(w.errOut, "job hold-1 was canceled") || !strings.Contains(w.out, "1 execution(s) still IN_PROGRESS") {
		t.Fatalf("watch: exit %d\n%s%s", w.code, w.out, w.errOut)
	}
	if a, q := e.execStatus("hold-1", "thing-h"), e.execStatus("hold-1", "thing-q"); a != jobs.InProgress || q != jobs.Canceled {
		t.Fatalf("without force: thing-h %s, thing-q %s", a, q)
	}

	_, js, _ := run(t, "job", "cancel", "hold-1", "--force", "--reason-code", "OPERATOR_SAYS", "--comment", "wrong speed", "--json")
	var c struct{ JobID string }
	if err := json.Unmarshal([]byte(js), &c); err != nil || c.JobID != "hold-1" {
		t.Fatalf("cancel --json: %v\n%s", err, js)
	}
	if a := e.execStatus("hold-1", "thing-h"); a != jobs.Canceled {
		t.Fatalf("with force: thing-h %s", a)
	}
	must(t, args("job", "describe", "hold-1"), ExitOK, "canceled     with force, reason OPERATOR_SAYS, wrong speed", "thing-h  CANCELED")
	must(t, args("job", "watch", "hold-1"), ExitFailure, "was canceled (with force")
	must(t, args("job", "cancel", "hold-1", "--force"), ExitFailure, "InvalidStateTransitionException: Job hold-1 is already canceled (HTTP 409")
}

func TestJobErrors(t *testing.T) {
	e := newJobsEnv(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{args("job", "create", "j1", "--operation", "x"), "give --targets"},
		{args("job", "create", "j1", "--targets", "a"), "give one of --operation OP, --document FILE or --template NAME"},
		{args("job", "create", "j1", "--targets", "a", "--operation", "x", "--template", "t"), "give one of"},
		{args("job", "create", "j1", "--targets", "a", "--document", "f.json", "--args", "{}"), "--args goes with --operation"},
		{args("job", "create", "j1", "--targets", "a", "--operation", "x", "--args", "[1]"), "--args [1]: not a JSON object"},
		{args("job", "create", "j1", "--targets", "a", "--document", writeFile(t, "nope")), "not a JSON object"},
		{args("job", "create", "j1", "--targets", "a", "--document", "/no/such/file"), "--document: open /no/such/file"},
		{args("job", "create", "bad id", "--targets", "a", "--operation", "x"), `job id "bad id" must be`},
		{args("job", "create", "j1", "--targets", "a b", "--operation", "x"), `--targets "a b"`},
		{args("job", "create", "j1", "--targets", "a", "--operation", "x", "--max-per-minute", "2000"), "--max-per-minute 2000: from 1 to 1000"},
		{args("job", "create", "j1", "--targets", "a", "--operation", "x", "--retry-failed", "11"), "--retry-failed 11: from 0 to 10"},
		{args("job", "create", "j1", "--targets", "a", "--operation", "x", "--abort-failed-percent", "101"), "--abort-failed-percent 101"},
		{args("job", "create", "j1", "--targets", "a", "--operation", "x", "--abort-failed-percent", "10", "--abort-failure-type", "SOME"), "--abort-failure-type \"SOME\""},
		{args("job", "create", "j1", "--targets", "a", "--operation", "x", "--timeout-minutes", "10081"), "--timeout-minutes 10081"},
		{args("job", "create", "j1", "--targets", "a", "--operation", "x", "--endpoint-url", "localhost:8080"), `--endpoint-url "localhost:8080"`},
		{args("job", "list", "--status", "DONE"), `--status "DONE"`},
		{args("job", "cancel", "j1", "--reason-code", "lower"), `--reason-code "lower"`},
		{args("job", "describe"), "takes one JOBID"},
		{args("job", "watch", "a", "b"), "takes one JOBID"},
		{args("job", "frobnicate"), `unknown command "job frobnicate"`},
	} {
		must(t, c.args, ExitUsage, c.want)
	}
	// The service's own errors, with their AWS code.
	must(t, args("job", "describe", "nope"), ExitFailure, "ResourceNotFoundException", "(HTTP 404 from "+e.url+")")
	must(t, args("job", "watch", "nope"), ExitFailure, "ResourceNotFoundException")
	must(t, args("job", "create", "j1", "--targets", "group:nogroup", "--operation", "x"), ExitFailure, "thing group nogroup: ResourceNotFoundException")
	must(t, args("job", "create", "j1", "--targets", "a", "--template", "notemplate"), ExitFailure, "job template notemplate: ResourceNotFoundException")
	must(t, args("job", "list", "--profile", "wrong"), ExitFailure, "ForbiddenException: The request signature we calculated does not match", "(HTTP 403")
	// Nothing listening, no credentials.
	must(t, args("job", "list", "--endpoint-url", "http://127.0.0.1:1"), ExitNoDaemon, "cannot reach the AWS IoT endpoint http://127.0.0.1:1: connection refused")
	must(t, args("job", "list", "--profile", "nobody"), ExitUsage, `no AWS credentials for profile "nobody"`, "AWS_SHARED_CREDENTIALS_FILE")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_PROFILE", "")
	must(t, args("job", "list"), ExitUsage, "no AWS credentials found (AWS_SHARED_CREDENTIALS_FILE", "AWS_ACCESS_KEY_ID")
}

func TestJobCompletion(t *testing.T) {
	newJobsEnv(t)
	must(t, args("job", "create", "comp-1", "--targets", "thing-c", "--operation", "x"), ExitOK)
	if got := completions(t, "job", "describe", "co"); fmt.Sprint(got) != "[comp-1\tIN_PROGRESS]" {
		t.Fatalf("job describe co<TAB>: %q", got)
	}
	if got := completions(t, "job", "create", ""); len(got) != 0 {
		t.Fatalf("job create <TAB> (a new id): %q", got)
	}
	if got := completions(t, "job", ""); !hasWord(got, "create") || !hasWord(got, "watch") || hasWord(got, "jobs") {
		t.Fatalf("job <TAB>: %v", got)
	}
	if got := completions(t, "job", "create", "x", "--ta"); !hasWord(got, "--targets") {
		t.Fatalf("job create --ta<TAB>: %v", got)
	}
	if got := completions(t, "job", "create", "x", "--document", ""); fmt.Sprint(got) != "["+filesDirective+"]" {
		t.Fatalf("job create --document <TAB>: %v", got)
	}
}

// The create flags reach the service as CreateJob's configuration, and an
// abort ends watch non-zero.
func TestJobCreateSettingsTemplateAndAbort(t *testing.T) {
	e := newJobsEnv(t)
	e.group(t, "fleet", "thing-1", "thing-2")
	must(t, args("job", "create", "set-1", "--targets", "group:fleet,thing-x", "--operation", "hold", "--continuous", "--max-per-minute", "5",
		"--abort-failed-percent", "30", "--abort-min-things", "4", "--abort-failure-type", "FAILED", "--timeout-minutes", "15",
		"--retry-failed", "2", "--retry-timed-out", "1", "--description", "settings", "--account", "123456789012"), ExitOK)
	d, err := e.svc.DescribeJob(context.Background(), "set-1")
	if err != nil {
		t.Fatal(err)
	}
	j := d.Job
	b, _ := json.Marshal(j)
	if j.TargetSelection != "CONTINUOUS" || j.Description != "settings" || *j.JobExecutionsRolloutConfig.MaximumPerMinute != 5 ||
		*j.TimeoutConfig.InProgressTimeoutInMinutes != 15 || len(j.AbortConfig.CriteriaList) != 1 || len(j.JobExecutionsRetryConfig.CriteriaList) != 2 ||
		j.Targets[1] != "arn:aws:iot:us-east-1:123456789012:thing/thing-x" {
		t.Fatalf("job %s", b)
	}
	if a := j.AbortConfig.CriteriaList[0]; a.FailureType != "FAILED" || a.Action != "CANCEL" || a.ThresholdPercentage != 30 || a.MinNumberOfExecutedThings != 4 {
		t.Fatalf("abort %+v", a)
	}
	if r := j.JobExecutionsRetryConfig.CriteriaList; r[0].FailureType != "FAILED" || r[0].NumberOfRetries != 2 || r[1].FailureType != "TIMED_OUT" || r[1].NumberOfRetries != 1 {
		t.Fatalf("retry %+v", r)
	}
	must(t, args("job", "describe", "set-1"), ExitOK, "settings     at most 5 things a minute; abort when 30% FAILED (after 4 things); in progress at most 15 min; retry FAILED 2×; retry TIMED_OUT 1×")

	// A template by its name: the job gets its document.
	if _, err := e.svc.CreateJobTemplate(context.Background(), &jobs.CreateJobTemplateRequest{JobTemplateID: "failer", Document: `{"operation":"fail"}`, Description: "fails"}); err != nil {
		t.Fatal(err)
	}
	for _, th := range []string{"a-1", "a-2", "a-3"} {
		e.device(t, th)
	}
	// Every execution fails: the abort (at 50 % of at least 1) cancels the
	// job after the first, before the rollout (one a minute) releases the
	// next; watch says so.
	out := must(t, args("job", "create", "abort-1", "--targets", "a-1,a-2,a-3", "--template", "failer", "--max-per-minute", "1",
		"--abort-failed-percent", "50", "--watch", "--interval", "50ms"), ExitFailure, "job abort-1 CANCELED", "was canceled (aborted: 1 of 1 executed things ended ALL")
	if !strings.Contains(out, "a-1  FAILED #1") || strings.Contains(out, "a-2  FAILED") || strings.Contains(out, "a-3  FAILED") {
		t.Fatalf("the rollout went on after the abort:\n%s", out)
	}
	d, _ = e.svc.DescribeJob(context.Background(), "abort-1")
	if !strings.HasSuffix(d.Job.JobTemplateArn, ":jobtemplate/failer") {
		t.Fatalf("template %q", d.Job.JobTemplateArn)
	}
}

// Ctrl-C stops watching with 130; the job goes on.
func TestJobWatchInterrupted(t *testing.T) {
	newJobsEnv(t)
	must(t, args("job", "create", "long-1", "--targets", "thing-away", "--operation", "succeed"), ExitOK)
	ctx, cancel := context.WithCancel(context.Background())
	out, w := io.Pipe()
	var errOut bytes.Buffer // read once Main has returned
	done := make(chan int, 1)
	go func() {
		done <- Main(ctx, []string{"job", "watch", "long-1", "--interval", "20ms"}, w, &errOut)
		w.Close()
	}()
	progress := make(chan struct{})
	go func() {
		lines := bufio.NewScanner(out)
		for first := true; lines.Scan(); {
			if first && strings.Contains(lines.Text(), "long-1 IN_PROGRESS") {
				close(progress)
				first = false
			}
		}
	}()
	select {
	case <-progress:
	case <-time.After(20 * time.Second):
		t.Fatal("watch printed no progress line")
	}
	cancel()
	if code := <-done; code != ExitInterrupted || !strings.Contains(errOut.String(), "stopped watching job long-1; it goes on") {
		t.Fatalf("exit %d\n%s", code, errOut.String())
	}
}

func TestProgressBar(t *testing.T) {
	for _, c := range []struct {
		n    counts
		want string
	}{
		{counts{}, "[          ]"},
		{counts{queued: 10}, "[..........]"},
		{counts{succeeded: 5, failed: 1, inProgress: 2, queued: 2}, "[#####x>>..]"},
		{counts{succeeded: 1, canceled: 2}, "[###-------]"},
	} {
		if got := c.n.bar(10); got != c.want {
			t.Errorf("%+v: %s, want %s", c.n, got, c.want)
		}
	}
}

// On a terminal watch redraws one progress line in place.
func TestJobWatchOnATerminal(t *testing.T) {
	e := newJobsEnv(t)
	e.device(t, "thing-t")
	must(t, args("job", "create", "tty-1", "--targets", "thing-t", "--operation", "succeed"), ExitOK)
	ptm, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	defer ptm.Close()
	screen := make(chan string, 1)
	go func() { b, _ := io.ReadAll(ptm); screen <- string(b) }()
	var errOut bytes.Buffer
	code := Main(context.Background(), []string{"job", "watch", "tty-1", "--interval", "50ms"}, tty, &errOut)
	tty.Close()
	got := <-screen
	if code != ExitOK || !strings.Contains(got, "\r\033[Ktty-1 COMPLETED [##############################] 1/1 ended") || !strings.Contains(got, "job tty-1 COMPLETED") {
		t.Fatalf("exit %d %s\nscreen %q", code, errOut.String(), got)
	}
}
