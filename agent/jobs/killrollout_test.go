package jobs_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/aws/aws-sdk-go-v2/service/iot/types"

	"github.com/shadowgate/shadowgate/agent/link/brokertest"
)

// poll calls cond until it holds, failing the test after limit.
func poll(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// allExecutions lists every execution of a job through the SDK, all pages.
func allExecutions(t *testing.T, api *iot.Client, jobID string) []types.JobExecutionSummaryForJob {
	t.Helper()
	var all []types.JobExecutionSummaryForJob
	p := iot.NewListJobExecutionsForJobPaginator(api, &iot.ListJobExecutionsForJobInput{JobId: aws.String(jobID), MaxResults: aws.Int32(250)})
	for p.HasMorePages() {
		out, err := p.NextPage(context.Background())
		if err != nil {
			t.Fatalf("list executions of %s: %v", jobID, err)
		}
		all = append(all, out.ExecutionSummaries...)
	}
	return all
}

func thingOf(arn string) string { return arn[len(thingArn("")):] }

// TestShadowsvcKilledMidRolloutLosesNothing: the real shadowsvc binary
// (MQTT and the HTTP control plane) is killed with SIGKILL in the middle
// of a rollout at 30 things a minute over 60 things, while devices are at
// every stage of AWS's device flow and some stream status updates, and
// while an execution of a second job waits for its in-progress timeout.
// Restarted on the same file: every update whose /accepted arrived is
// there, nothing released before is released again or lost, the rest is
// released at the rate (by the queuedAt timestamps), the timeout armed
// before the kill fires after it, and the job completes with every thing
// SUCCEEDED at executionNumber 1.
//
// It takes a little over a minute: the rollout's second window and the
// shortest in-progress timeout AWS allows (1 minute) are both a minute of
// the binary's real clock.
func TestShadowsvcKilledMidRolloutLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("waits a minute of real time for the rollout's next window and a 1-minute timeout")
	}
	const targets, perMinute = 60, 30
	dir := t.TempDir()
	bin := buildShadowsvc(t, dir)
	e := &env{t: t, root: "$aws/things/", broker: brokertest.Start(t), path: filepath.Join(dir, "svc.db")}
	credFile := filepath.Join(dir, "credentials")
	if err := os.WriteFile(credFile, []byte(httpKeys), 0o600); err != nil {
		t.Fatal(err)
	}
	ln := must(net.Listen("tcp", "127.0.0.1:0")) // a free port, the same for both runs
	addr := ln.Addr().String()
	ln.Close()
	run := func() *exec.Cmd {
		return startShadowsvc(t, bin, "--broker", e.broker.URL(), "--client-id", "shadowsvc-k", "--store", e.path, "--log-level", "warn",
			"--http", addr, "--credentials", credFile, "--http-rate", "-1")
	}
	api := iotClient("http://"+addr, "default")
	ctx := context.Background()
	awaitHTTP := func() {
		poll(t, "the HTTP API", 30*time.Second, func() bool {
			_, err := api.ListJobs(ctx, &iot.ListJobsInput{})
			return err == nil
		})
	}
	cmd := run()
	awaitHTTP()

	slow := e.device("slowpoke")
	devs := map[string]*device{}
	var arns []string
	for i := range targets {
		name := fmt.Sprintf("k%02d", i)
		devs[name] = e.device(name)
		arns = append(arns, thingArn(name))
	}
	slow.awaitService()

	// The timeout first, so that it is due about when the second window
	// opens.
	must(api.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("slow"), Targets: []string{thingArn("slowpoke")}, Document: aws.String(`{"op":"hang"}`),
		TimeoutConfig: &types.TimeoutConfig{InProgressTimeoutInMinutes: aws.Int64(1)}}))
	slow.notification("notify-next", nextJob("slow"))
	if sfx, ans := slow.request("start-next", map[string]any{}); sfx != "accepted" || field(ans, "execution", "status") != "IN_PROGRESS" {
		t.Fatalf("slowpoke start-next: %s %v", sfx, ans)
	}
	must(api.CreateJob(ctx, &iot.CreateJobInput{JobId: aws.String("roll"), Targets: arns, Document: aws.String(`{"op":"update","fw":"3.1"}`),
		JobExecutionsRolloutConfig: &types.JobExecutionsRolloutConfig{MaximumPerMinute: aws.Int32(perMinute)}}))

	// Released so far: some, not all.
	var released []string
	for _, x := range allExecutions(t, api, "roll") {
		released = append(released, thingOf(aws.ToString(x.ThingArn)))
	}
	slices.Sort(released)
	if len(released) == 0 || len(released) >= targets {
		t.Fatalf("released at creation: %d of %d", len(released), targets)
	}
	succeeded, inProgress, queued := released[:10], released[10:20], released[20:]

	// AWS's device flow: notify-next, start-next, progress, SUCCEEDED.
	flow := func(name string, finish bool) {
		t.Helper()
		d := devs[name]
		d.notification("notify-next", nextJob("roll"))
		sfx, ans := d.request("start-next", map[string]any{"statusDetails": map[string]any{"step": "download"}})
		if sfx != "accepted" || field(ans, "execution", "status") != "IN_PROGRESS" || num(field(ans, "execution", "executionNumber")) != 1 ||
			field(ans, "execution", "jobDocument", "fw") != "3.1" {
			t.Fatalf("%s start-next: %s %v", name, sfx, ans)
		}
		v := num(field(ans, "execution", "versionNumber"))
		if sfx, ans := d.request("roll/update", map[string]any{"status": "IN_PROGRESS", "expectedVersion": v, "statusDetails": map[string]any{"step": "flash"}}); sfx != "accepted" {
			t.Fatalf("%s progress: %v", name, ans)
		}
		if finish {
			if sfx, ans := d.request("roll/update", map[string]any{"status": "SUCCEEDED", "expectedVersion": v + 1}); sfx != "accepted" {
				t.Fatalf("%s SUCCEEDED: %v", name, ans)
			}
		}
	}
	for _, n := range succeeded {
		flow(n, true)
	}
	for _, n := range inProgress {
		flow(n, false)
	}

	// The in-progress ones stream updates; the kill lands among them once
	// enough were accepted.
	type progress struct{ sent, accepted int }
	var mu sync.Mutex
	prog := map[string]*progress{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	total := 0
	for _, n := range inProgress {
		p := &progress{}
		prog[n] = p
		wg.Add(1)
		go func(d *device) {
			defer wg.Done()
			for k := 1; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				p.sent = k
				mu.Unlock()
				sfx, _, err := d.ask("roll/update", map[string]any{"status": "IN_PROGRESS", "statusDetails": map[string]any{"n": strconv.Itoa(k)}},
					time.Now().Add(time.Minute), stop)
				if err != nil || sfx != "accepted" {
					return
				}
				mu.Lock()
				p.accepted = k
				total++
				mu.Unlock()
			}
		}(devs[n])
	}
	poll(t, "updates accepted before the kill", 30*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return total >= 100 })
	// What the kill interrupts (on a machine slow enough for the minute to
	// pass first, less of it: the checks below hold either way).
	if n := len(allExecutions(t, api, "roll")); n == targets {
		t.Logf("the rollout's second window opened before the kill")
	}
	if de := must(api.DescribeJobExecution(ctx, &iot.DescribeJobExecutionInput{JobId: aws.String("slow"), ThingName: aws.String("slowpoke")})); de.Execution.Status != types.JobExecutionStatusInProgress {
		t.Logf("the timeout fired before the kill: %s", de.Execution.Status)
	}
	kill(cmd)
	close(stop)
	wg.Wait()

	cmd = run()
	awaitHTTP()
	slow.awaitService()

	// Everything as it was: no execution lost or released again, every
	// accepted update there.
	byThing := map[string]types.JobExecutionSummaryForJob{}
	for _, x := range allExecutions(t, api, "roll") {
		byThing[thingOf(aws.ToString(x.ThingArn))] = x
	}
	for _, n := range released {
		x, ok := byThing[n]
		want := types.JobExecutionStatusQueued
		if slices.Contains(succeeded, n) {
			want = types.JobExecutionStatusSucceeded
		} else if slices.Contains(inProgress, n) {
			want = types.JobExecutionStatusInProgress
		}
		if !ok || x.JobExecutionSummary.Status != want || aws.ToInt64(x.JobExecutionSummary.ExecutionNumber) != 1 {
			t.Fatalf("%s after the kill: %+v (want %s)", n, x.JobExecutionSummary, want)
		}
	}
	for _, n := range inProgress {
		de := must(api.DescribeJobExecution(ctx, &iot.DescribeJobExecutionInput{JobId: aws.String("roll"), ThingName: aws.String(n)}))
		got, _ := strconv.Atoi(de.Execution.StatusDetails.DetailsMap["n"])
		if p := prog[n]; got < p.accepted || got > p.sent {
			t.Fatalf("%s: update %d stored after the kill; %d was accepted, %d sent", n, got, p.accepted, p.sent)
		}
	}

	// The rest of the flow, and the rollout's second window.
	for _, n := range inProgress {
		if sfx, ans := devs[n].request("roll/update", map[string]any{"status": "SUCCEEDED"}); sfx != "accepted" {
			t.Fatalf("%s SUCCEEDED after the kill: %v", n, ans)
		}
	}
	for _, n := range queued {
		flow(n, true)
	}
	poll(t, "the rollout's second window", 3*time.Minute, func() bool { return len(allExecutions(t, api, "roll")) == targets })
	for _, arn := range arns {
		if n := thingOf(arn); !slices.Contains(released, n) {
			flow(n, true)
		}
	}

	// The timeout armed before the kill fired after it, and told the device.
	poll(t, "the in-progress timeout", 3*time.Minute, func() bool {
		de := must(api.DescribeJobExecution(ctx, &iot.DescribeJobExecutionInput{JobId: aws.String("slow"), ThingName: aws.String("slowpoke")}))
		return de.Execution.Status == types.JobExecutionStatusTimedOut
	})
	slow.notification("notify-next", nextJob(""))
	if j := must(api.DescribeJob(ctx, &iot.DescribeJobInput{JobId: aws.String("slow")})).Job; j.Status != types.JobStatusCompleted ||
		aws.ToInt32(j.JobProcessDetails.NumberOfTimedOutThings) != 1 {
		t.Fatalf("job slow: %s %+v", j.Status, j.JobProcessDetails)
	}

	// The job completes: one execution per thing, number 1, SUCCEEDED;
	// never more than 30 queued within a minute.
	poll(t, "job roll completed", 30*time.Second, func() bool {
		return must(api.DescribeJob(ctx, &iot.DescribeJobInput{JobId: aws.String("roll")})).Job.Status == types.JobStatusCompleted
	})
	if p := must(api.DescribeJob(ctx, &iot.DescribeJobInput{JobId: aws.String("roll")})).Job.JobProcessDetails; aws.ToInt32(p.NumberOfSucceededThings) != targets {
		t.Fatalf("job roll counts: %+v", p)
	}
	all := allExecutions(t, api, "roll")
	seen := map[string]bool{}
	var queuedAt []time.Time
	for _, x := range all {
		n := thingOf(aws.ToString(x.ThingArn))
		if seen[n] || aws.ToInt64(x.JobExecutionSummary.ExecutionNumber) != 1 || x.JobExecutionSummary.Status != types.JobExecutionStatusSucceeded {
			t.Fatalf("%s: %+v (seen before: %v)", n, x.JobExecutionSummary, seen[n])
		}
		seen[n] = true
		queuedAt = append(queuedAt, aws.ToTime(x.JobExecutionSummary.QueuedAt))
	}
	if len(seen) != targets {
		t.Fatalf("things with an execution: %d of %d", len(seen), targets)
	}
	slices.SortFunc(queuedAt, func(a, b time.Time) int { return a.Compare(b) })
	for i := range len(queuedAt) - perMinute {
		if d := queuedAt[i+perMinute].Sub(queuedAt[i]); d < time.Minute {
			t.Fatalf("%d executions queued within %s (maximumPerMinute %d): %v", perMinute+1, d, perMinute, queuedAt)
		}
	}
	kill(cmd)
}
