package jobs_test

import (
	"context"
	"strings"
	"testing"

	"github.com/shadowgate/shadowgate/agent/jobs"
)

func TestDeviceFlowOverMQTT(t *testing.T) {
	// The AWS samples' flow: notify-next, start-next, IN_PROGRESS with
	// expectedVersion, SUCCEEDED, then nothing pending.
	e := newEnv(t)
	d := e.device("dev1")
	e.createJob(&jobs.CreateJobRequest{JobID: "job1", Targets: []string{thingArn("dev1")}, Document: `{"operation":"reboot","n":1}`})

	n := d.notification("notify-next", nextJob("job1"))
	if ex := n["execution"].(map[string]any); ex["status"] != "QUEUED" || num(ex["versionNumber"]) != 1 || num(ex["executionNumber"]) != 1 ||
		field(ex, "jobDocument", "operation") != "reboot" || ex["thingName"] != "dev1" || num(ex["queuedAt"]) != 1_700_000_000 {
		t.Fatalf("notify-next: %v", n)
	}
	list := d.notification("notify", nil)
	if q, _ := field(list, "jobs", "QUEUED").([]any); len(q) != 1 || q[0].(map[string]any)["jobId"] != "job1" {
		t.Fatalf("notify: %v", list)
	}

	sfx, ans := d.request("get", map[string]any{})
	if sfx != "accepted" || len(ans["queuedJobs"].([]any)) != 1 || len(ans["inProgressJobs"].([]any)) != 0 {
		t.Fatalf("get pending: %s %v", sfx, ans)
	}
	sfx, ans = d.request("start-next", map[string]any{"statusDetails": map[string]any{"step": "download"}})
	ex, _ := ans["execution"].(map[string]any)
	if sfx != "accepted" || ex["status"] != "IN_PROGRESS" || num(ex["versionNumber"]) != 2 || field(ex, "statusDetails", "step") != "download" ||
		field(ex, "jobDocument", "n") != 1.0 || num(ex["startedAt"]) == 0 {
		t.Fatalf("start-next: %s %v", sfx, ans)
	}
	// Starting again hands out the same execution, unchanged.
	if sfx, again := d.request("start-next", map[string]any{"statusDetails": map[string]any{"step": "other"}}); sfx != "accepted" ||
		field(again, "execution", "statusDetails", "step") != "download" || num(field(again, "execution", "versionNumber")) != 2 {
		t.Fatalf("second start-next: %v", again)
	}

	sfx, ans = d.request("job1/update", map[string]any{"status": "IN_PROGRESS", "expectedVersion": 2, "statusDetails": map[string]any{"step": "install"},
		"includeJobExecutionState": true})
	if sfx != "accepted" || field(ans, "executionState", "status") != "IN_PROGRESS" || num(field(ans, "executionState", "versionNumber")) != 3 {
		t.Fatalf("update IN_PROGRESS: %s %v", sfx, ans)
	}
	// A stale expectedVersion: VersionMismatch with the current state.
	sfx, ans = d.request("job1/update", map[string]any{"status": "SUCCEEDED", "expectedVersion": 2})
	if sfx != "rejected" || ans["code"] != "VersionMismatch" || num(field(ans, "executionState", "versionNumber")) != 3 || ans["clientToken"] == nil {
		t.Fatalf("stale version: %s %v", sfx, ans)
	}
	sfx, ans = d.request("job1/update", map[string]any{"status": "SUCCEEDED", "expectedVersion": "3", "includeJobDocument": true})
	if sfx != "accepted" || field(ans, "jobDocument", "operation") != "reboot" || ans["executionState"] != nil {
		t.Fatalf("update SUCCEEDED: %s %v", sfx, ans)
	}
	if n := d.notification("notify-next", nil); n["execution"] != nil || n["timestamp"] == nil {
		t.Fatalf("notify-next after the last: %v", n)
	}
	// Terminal: no way back, and describe says so.
	sfx, ans = d.request("job1/update", map[string]any{"status": "IN_PROGRESS"})
	if sfx != "rejected" || ans["code"] != "InvalidStateTransition" || field(ans, "executionState", "status") != "SUCCEEDED" {
		t.Fatalf("SUCCEEDED → IN_PROGRESS: %s %v", sfx, ans)
	}
	if sfx, ans = d.request("job1/get", map[string]any{}); sfx != "rejected" || ans["code"] != "TerminalStateReached" {
		t.Fatalf("describe terminal: %s %v", sfx, ans)
	}
	if sfx, ans = d.request("$next/get", map[string]any{}); sfx != "accepted" || ans["execution"] != nil {
		t.Fatalf("describe $next with nothing pending: %s %v", sfx, ans)
	}

	j := e.job("job1")
	if j.Status != jobs.JobCompleted || j.JobProcessDetails.NumberOfSucceededThings != 1 || j.CompletedAt == nil || !strings.HasSuffix(j.JobArn, ":job/job1") {
		t.Fatalf("job after: %+v %+v", j, j.JobProcessDetails)
	}
	x, err := e.svc.DescribeJobExecution(context.Background(), &jobs.DescribeJobExecutionRequest{JobID: "job1", ThingName: "dev1"})
	if err != nil || x.Execution.Status != jobs.Succeeded || x.Execution.VersionNumber != 4 || x.Execution.StatusDetails.DetailsMap["step"] != "install" {
		t.Fatalf("describe execution: %+v %v", x, err)
	}
}

func TestInvalidDeviceRequests(t *testing.T) {
	e := newEnv(t)
	d := e.device("dev2")
	e.createJob(&jobs.CreateJobRequest{JobID: "j", Targets: []string{thingArn("dev2")}})
	d.notification("notify-next", nextJob("j"))
	cases := []struct {
		rest    string
		payload any
		code    string
	}{
		{"start-next", "{", "InvalidJson"},
		{"start-next", "\xff\xfe", "InvalidJson"},
		{"start-next", "[1]", "InvalidRequest"},
		{"start-next", map[string]any{"stepTimeoutInMinutes": 0}, "InvalidRequest"},
		{"start-next", map[string]any{"stepTimeoutInMinutes": "x"}, "InvalidRequest"},
		{"start-next", map[string]any{"statusDetails": map[string]any{"k": 5}}, "InvalidRequest"},
		{"start-next", map[string]any{"statusDetails": map[string]any{"bad key": "v"}}, "InvalidRequest"},
		{"start-next", map[string]any{"statusDetails": map[string]any{"k": strings.Repeat("x", 1025)}}, "InvalidRequest"},
		{"j/update", map[string]any{}, "InvalidRequest"},
		{"j/update", map[string]any{"status": "DONE"}, "InvalidRequest"},
		{"j/update", map[string]any{"status": "TIMED_OUT"}, "InvalidRequest"},
		{"j/update", map[string]any{"status": "QUEUED"}, "InvalidRequest"},
		{"j/update", `{"status":"IN_PROGRESS","clientToken":"` + strings.Repeat("t", 65) + `"}`, "InvalidRequest"},
		{"nope/update", map[string]any{"status": "IN_PROGRESS"}, "ResourceNotFound"},
		{"j/update", map[string]any{"status": "IN_PROGRESS", "executionNumber": 7}, "ResourceNotFound"},
		{"nope/get", map[string]any{}, "ResourceNotFound"},
		{"bad.id/get", map[string]any{}, "InvalidTopic"},
		{"$next/update", map[string]any{"status": "IN_PROGRESS"}, "InvalidTopic"},
	}
	for _, c := range cases {
		sfx, ans := d.request(c.rest, c.payload)
		if sfx != "rejected" || ans["code"] != c.code || ans["message"] == "" || ans["timestamp"] == nil {
			t.Errorf("%s %v: got %s %v, want %s", c.rest, c.payload, sfx, ans, c.code)
		}
		if _, raw := c.payload.(string); raw && ans["clientToken"] != nil {
			t.Errorf("%s %v: answered with clientToken %v", c.rest, c.payload, ans["clientToken"])
		}
	}
	// Still serving, and nothing changed the execution.
	if sfx, ans := d.request("start-next", map[string]any{}); sfx != "accepted" || num(field(ans, "execution", "versionNumber")) != 2 {
		t.Fatalf("after the junk: %s %v", sfx, ans)
	}
	if st := e.svc.Stats(); st.Rejected < int64(len(cases)) || st.Malformed < 2 {
		t.Fatalf("stats %+v", st)
	}
}
