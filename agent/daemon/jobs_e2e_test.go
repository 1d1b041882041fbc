package daemon_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shadowgate/shadowgate/agent/command"
	"github.com/shadowgate/shadowgate/agent/config"
	"github.com/shadowgate/shadowgate/agent/daemon"
	"github.com/shadowgate/shadowgate/agent/jobrun"
	"github.com/shadowgate/shadowgate/agent/jobs"
	"github.com/shadowgate/shadowgate/agent/link"
	"github.com/shadowgate/shadowgate/agent/link/brokertest"
	"github.com/shadowgate/shadowgate/agent/shadowsvc"
	"github.com/shadowgate/shadowgate/store"
)

// jobsCloud is mosquitto with shadowsvc and its jobs service (one link, one
// file, as cmd/shadowsvc runs them) and an operator that sees every jobs
// message.
type jobsCloud struct {
	*cloud
	t        testing.TB
	jobs     *jobs.Service
	jobsPath string // apart: the jobs service's own file
	stopJobs func()

	mu       sync.Mutex
	jobsMsgs []*link.Message

	// ahead moves the jobs service's clock (advance), so that a test sees
	// its timers fire without waiting minutes.
	ahead atomic.Int64
}

// now is the jobs service's clock.
func (c *jobsCloud) now() time.Time { return time.Now().Add(time.Duration(c.ahead.Load())) }

// advance moves the jobs service's clock by d and wakes its scheduler.
func (c *jobsCloud) advance(d time.Duration) {
	c.ahead.Add(int64(d))
	c.jobs.Kick()
}

func newJobsCloud(t testing.TB) *jobsCloud { return newJobsCloudWith(t, false) }

// newJobsCloudWith, apart, runs the jobs service on its own link and file,
// so that stopJobs and startJobs can take it down and back (its session is
// persistent: requests sent meanwhile wait at the broker).
func newJobsCloudWith(t testing.TB, apart bool) *jobsCloud {
	t.Helper()
	c := &jobsCloud{cloud: &cloud{broker: brokertest.Start(t)}, t: t}
	st, err := store.Open(filepath.Join(t.TempDir(), "cloud.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	svcLink, _ := link.New(link.Options{Broker: c.broker.URL(), ClientID: "cloud-shadowsvc", MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond})
	c.svc = shadowsvc.New(shadowsvc.Options{Root: root, Link: svcLink, Store: st})
	c.svcLink = svcLink
	runService(t, c.svc)
	if apart {
		c.jobsPath = filepath.Join(t.TempDir(), "jobs.db")
		c.startJobs()
		t.Cleanup(c.stopJobs)
	} else {
		c.jobs = jobs.New(jobs.Options{Root: root, Link: svcLink, Store: st, Now: c.now})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { c.jobs.Run(ctx); close(done) }()
		t.Cleanup(func() { cancel(); <-done })
	}
	runLink(t, svcLink)
	c.op, _ = link.New(link.Options{Broker: c.broker.URL(), ClientID: "operator", MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond})
	c.op.Handle(root+"+/shadow/+/+", c.collect)
	c.op.Handle("commands/+/ack", c.collect)
	c.op.Handle(root+"+/jobs/#", func(_ context.Context, m *link.Message) {
		c.mu.Lock()
		c.jobsMsgs = append(c.jobsMsgs, m)
		c.mu.Unlock()
	})
	runLink(t, c.op)
	waitFor(t, "cloud connected", func() bool { return svcLink.Connected() && c.op.Connected() })
	return c
}

// startJobs runs the jobs service apart, on its file and its own persistent
// session.
func (c *jobsCloud) startJobs() {
	t := c.t
	st, err := store.Open(c.jobsPath, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	l, _ := link.New(link.Options{Broker: c.broker.URL(), ClientID: "cloud-jobs", MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond})
	c.jobs = jobs.New(jobs.Options{Root: root, Link: l, Store: st, Now: c.now})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); c.jobs.Run(ctx) }()
	go func() { defer wg.Done(); l.Run(ctx) }()
	waitFor(t, "jobs service connected", l.Connected)
	var once sync.Once
	c.stopJobs = func() { once.Do(func() { cancel(); wg.Wait(); st.Close() }) }
}

func thingArn(thing string) string { return "arn:aws:iot:us-east-1:000000000000:thing/" + thing }

// createJob creates a job with doc for targets (thing names, or group:NAME).
func (c *jobsCloud) createJob(t testing.TB, id, doc string, targets ...string) {
	t.Helper()
	var arns []string
	for _, tg := range targets {
		if g, ok := strings.CutPrefix(tg, "group:"); ok {
			arns = append(arns, "arn:aws:iot:us-east-1:000000000000:thinggroup/"+g)
		} else {
			arns = append(arns, thingArn(tg))
		}
	}
	if _, err := c.jobs.CreateJob(context.Background(), &jobs.CreateJobRequest{JobID: id, Targets: arns, Document: doc}); err != nil {
		t.Fatalf("create job %s: %v", id, err)
	}
}

// execution describes thing's latest execution of job; nil when none.
func (c *jobsCloud) execution(t testing.TB, job, thing string) *jobs.JobExecution {
	t.Helper()
	r, err := c.jobs.DescribeJobExecution(context.Background(), &jobs.DescribeJobExecutionRequest{JobID: job, ThingName: thing})
	if err != nil {
		return nil
	}
	return r.Execution
}

// waitExecution waits until thing's execution of job has status.
func (c *jobsCloud) waitExecution(t testing.TB, job, thing string, status jobs.ExecStatus) *jobs.JobExecution {
	t.Helper()
	var last *jobs.JobExecution
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if e := c.execution(t, job, thing); e != nil {
			last = e
			if e.Status == status {
				return e
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	b, _ := json.Marshal(last)
	t.Fatalf("timed out waiting for %s on %s to be %s; last %s\njobs messages:\n%s", job, thing, status, b, c.jobsLog())
	return nil
}

func (c *jobsCloud) jobsLog() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b strings.Builder
	for _, m := range c.jobsMsgs {
		fmt.Fprintf(&b, "  %s %s\n", m.Topic, m.Payload)
	}
	return b.String()
}

// updates are the update requests thing sent for job, in order.
func (c *jobsCloud) updates(thing, job string) []map[string]any {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []map[string]any
	for _, m := range c.jobsMsgs {
		if m.Topic == root+thing+"/jobs/"+job+"/update" {
			var v map[string]any
			json.Unmarshal(m.Payload, &v)
			out = append(out, v)
		}
	}
	return out
}

func details(e *jobs.JobExecution) map[string]string {
	if e == nil || e.StatusDetails == nil {
		return nil
	}
	return e.StatusDetails.DetailsMap
}

func TestJobRunsOnceAndSucceeds(t *testing.T) {
	c := newJobsCloud(t)
	cfg, _ := gatewayConfig(t, "gw-job", c.broker.URL(), t.TempDir(), "cloud_wins")
	d := gateway(t, cfg)
	waitFor(t, "link up", d.Link.Connected)
	c.createJob(t, "speed-40", `{"operation":"SET_SPEED","args":{"speed":40}}`, "gw-job")
	e := c.waitExecution(t, "speed-40", "gw-job", jobs.Succeeded)
	if got := details(e)["result"]; !strings.Contains(got, `"speed":40`) {
		t.Fatalf("statusDetails %v", details(e))
	}
	if read(t, d, "gate_motor")["speed"] != float64(40) && fmt.Sprint(read(t, d, "gate_motor")["speed"]) != "40" {
		t.Fatalf("motor %v", read(t, d, "gate_motor"))
	}
	var h []*store.Change
	d.Store.View(func(tx *store.Tx) (err error) { h, err = tx.History("gate_motor", 10); return err })
	if len(h) != 1 || h[0].TID != jobrun.TID("speed-40", 1) {
		t.Fatalf("history %+v", h)
	}
	// IN_PROGRESS with the step timeout (the action starts; start-next
	// made it IN_PROGRESS already), then SUCCEEDED, each with
	// expectedVersion.
	checkSteps(t, c, d, "gw-job", "speed-40", 1, "SUCCEEDED")
	ups := c.updates("gw-job", "speed-40")
	for _, u := range ups {
		if _, ok := u["expectedVersion"]; !ok {
			t.Fatalf("update without expectedVersion: %v", u)
		}
	}
	waitFor(t, "the status settled", func() bool {
		return d.Jobs.Stats().Unsent == 0 && d.Store.OutboxStats().Items == 0 || d.Jobs.Stats().Unsent == 0
	})
	if st := d.Jobs.Stats(); st.Succeeded != 1 || st.Received != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// An execution the gateway cannot run is REJECTED with statusDetails that
// say why; it never reaches an actuator.
func TestJobRejectedWithReason(t *testing.T) {
	c := newJobsCloud(t)
	cfg, _ := gatewayConfig(t, "gw-rej", c.broker.URL(), t.TempDir(), "cloud_wins")
	d := gateway(t, cfg)
	waitFor(t, "link up", d.Link.Connected)
	for _, tc := range []struct{ id, doc, reason string }{
		{"unknown-op", `{"operation":"LAUNCH"}`, `unknown command type "LAUNCH"`},
		{"bad-args", `{"operation":"SET_SPEED","args":{"speed":500}}`, "invalid args: speed must be ≤ 100"},
		{"extra-arg", `{"operation":"SET_SPEED","args":{"speed":1,"turbo":true}}`, `unknown arg "turbo"`},
		{"no-op", `{"args":{}}`, `no "operation"`},
		{"odd-key", `{"operation":"MOTOR_1_ON","steps":[]}`, `the key "steps"`},
		{"bad-rollback", `{"operation":"ROLLBACK","args":{"actuator":"jetpack"}}`, `unknown actuator "jetpack"`},
	} {
		c.createJob(t, tc.id, tc.doc, "gw-rej")
		e := c.waitExecution(t, tc.id, "gw-rej", jobs.Rejected)
		if !strings.Contains(details(e)["reason"], tc.reason) {
			t.Errorf("%s: reason %q lacks %q", tc.id, details(e)["reason"], tc.reason)
		}
	}
	var h []*store.Change
	d.Store.View(func(tx *store.Tx) (err error) { h, err = tx.History("gate_motor", 10); return err })
	if len(h) != 0 {
		t.Fatalf("a rejected job changed the motor: %+v", h)
	}
	if st := d.Jobs.Stats(); st.Rejected != 6 || st.Succeeded != 0 {
		t.Fatalf("stats %+v", st)
	}
	// A command on commands/<thing> may not take a job execution's tid.
	c.send(t, "gw-rej", req("MOTOR_1_ON", jobrun.TID("unknown-op", 1), ""))
	a := c.waitAck(t, "gw-rej", jobrun.TID("unknown-op", 1), "FAILURE")
	if !strings.Contains(a.Reason, "reserved for job executions") {
		t.Fatalf("ack %+v", a)
	}
}

// A job that requires approval reports IN_PROGRESS {"awaiting":"approval"}
// until a technician approves it with shadowctl; then it runs, with the
// type's timeout as the step timeout. One canceled with force while it
// waits stops waiting, and never runs.
func TestJobApprovalAndForcedCancel(t *testing.T) {
	c := newJobsCloud(t)
	dir := t.TempDir()
	cfg, _ := gatewayConfig(t, "gw-appr", c.broker.URL(), dir, "cloud_wins")
	d := gateway(t, cfg)
	sock := filepath.Join(dir, "api.sock")
	waitFor(t, "link up", d.Link.Connected)

	c.createJob(t, "unlock-1", `{"operation":"UNLOCK"}`, "gw-appr")
	waitFor(t, "awaiting approval in the cloud", func() bool {
		e := c.execution(t, "unlock-1", "gw-appr")
		return e != nil && e.Status == jobs.InProgress && details(e)["awaiting"] == "approval"
	})
	shadowctl(t, "jobs", "--socket", sock).must(t, 0, "unlock-1", "awaiting approval: shadowctl approve unlock-1")
	shadowctl(t, "approve", "unlock-1", "--socket", sock).must(t, 0, "approved")
	e := c.waitExecution(t, "unlock-1", "gw-appr", jobs.Succeeded)
	if !strings.Contains(details(e)["result"], `"locked":false`) {
		t.Fatalf("details %v", details(e))
	}
	checkSteps(t, c, d, "gw-appr", "unlock-1", 1, "SUCCEEDED")
	ups := c.updates("gw-appr", "unlock-1")
	for _, u := range ups {
		if sd, _ := u["statusDetails"].(map[string]any); u["status"] == "IN_PROGRESS" && sd["awaiting"] == nil && sd["approval"] != "approved" {
			t.Fatalf("an IN_PROGRESS after the approval without it: %v", ups)
		}
	}

	// Canceled with force while awaiting approval.
	c.createJob(t, "unlock-2", `{"operation":"UNLOCK"}`, "gw-appr")
	waitFor(t, "the second awaiting approval", func() bool {
		e := c.execution(t, "unlock-2", "gw-appr")
		return e != nil && e.Status == jobs.InProgress && details(e)["awaiting"] == "approval"
	})
	before := len(history(t, d, "front_door"))
	if _, err := c.jobs.CancelJob(context.Background(), &jobs.CancelJobRequest{JobID: "unlock-2", Force: true}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the gateway stops waiting", func() bool {
		runs, _ := d.Jobs.Runs(10)
		for _, r := range runs {
			if r.JobID == "unlock-2" {
				return r.Status == jobrun.StatusFailed && !r.Unsent && r.Cloud != "" && r.Approval != "pending"
			}
		}
		return false
	})
	shadowctl(t, "approve", "unlock-2", "--socket", sock).must(t, 1, "not awaiting approval")
	if e := c.execution(t, "unlock-2", "gw-appr"); e.Status != jobs.Canceled {
		t.Fatalf("cloud %+v", e)
	}
	if n := len(history(t, d, "front_door")); n != before {
		t.Fatalf("a canceled job changed the door (%d changes, %d before)", n, before)
	}
	var cmd *store.Command
	d.Store.View(func(tx *store.Tx) (err error) { cmd, err = tx.GetCommand(jobrun.TID("unlock-2", 1)); return err })
	if cmd.Status != "FAILURE" || !strings.Contains(string(cmd.LastAck), jobrun.ReasonEndedInCloud) {
		t.Fatalf("command %+v", cmd)
	}
	// Nothing more was sent for it: the cloud had ended it.
	for _, u := range c.updates("gw-appr", "unlock-2") {
		if u["status"] != "IN_PROGRESS" {
			t.Fatalf("a status after the cancel: %v", u)
		}
	}
}

// checkSteps checks a finished execution's updates: the step timeout goes
// with the IN_PROGRESS of the action's start, never while it awaits
// approval. That IN_PROGRESS may never go: an action done before it is
// sent has its final status go in its place (recorded all the same).
func checkSteps(t *testing.T, c *jobsCloud, d *daemon.Daemon, thing, job string, step int, final string) {
	t.Helper()
	var ups []map[string]any
	waitFor(t, "the operator has seen the final update of "+job, func() bool {
		ups = c.updates(thing, job)
		return len(ups) > 0 && ups[len(ups)-1]["status"] == final
	})
	for _, u := range ups {
		sd, _ := u["statusDetails"].(map[string]any)
		awaiting := sd["awaiting"] == "approval"
		if u["status"] == "IN_PROGRESS" && (awaiting != (u["stepTimeoutInMinutes"] == nil) || !awaiting && u["stepTimeoutInMinutes"] != float64(step)) {
			t.Fatalf("IN_PROGRESS with the wrong step timeout (want %d once it runs, none awaiting approval): %v", step, ups)
		}
		if _, ok := u["expectedVersion"]; !ok {
			t.Fatalf("update without expectedVersion: %v", u)
		}
	}
	r := run(t, d, job)
	if r == nil || r.Started.IsZero() || !strings.Contains(events(r), fmt.Sprintf("started: the action runs (step timeout %d min)", step)) {
		t.Fatalf("run %+v", r)
	}
}

// history reads an in-process gateway's history of actuator.
func history(t *testing.T, d *daemon.Daemon, actuator string) []*store.Change {
	t.Helper()
	var h []*store.Change
	if err := d.Store.View(func(tx *store.Tx) (err error) { h, err = tx.History(actuator, 1000); return err }); err != nil {
		t.Fatal(err)
	}
	return h
}

// The uplink cut while an execution runs: its final status waits in the
// outbox and reaches the cloud once the uplink returns.
func TestJobFinalStatusAfterUplinkCut(t *testing.T) {
	c := newJobsCloud(t)
	px := brokertest.NewProxy(t, c.broker.Addr())
	cfg, _ := gatewayConfig(t, "gw-cut", px.URL(), t.TempDir(), "cloud_wins")
	d := gateway(t, cfg)
	waitFor(t, "link up", d.Link.Connected)
	c.createJob(t, "valve-1", `{"operation":"OPEN_VALVE"}`, "gw-cut") // the valve takes 2.5s
	waitFor(t, "IN_PROGRESS in the cloud", func() bool {
		e := c.execution(t, "valve-1", "gw-cut")
		return e != nil && e.Status == jobs.InProgress && e.VersionNumber >= 3
	})
	px.Cut()
	waitFor(t, "the valve open, offline", func() bool { return read(t, d, "valve")["open"] == true && !d.Link.Connected() })
	waitFor(t, "SUCCEEDED waiting in the outbox", func() bool {
		runs, _ := d.Jobs.Runs(1)
		return len(runs) == 1 && runs[0].Status == jobrun.StatusSucceeded && runs[0].Unsent
	})
	if n := d.Store.OutboxStats().Items; n < 1 {
		t.Fatalf("outbox holds %d items", n)
	}
	if e := c.execution(t, "valve-1", "gw-cut"); e.Status != jobs.InProgress {
		t.Fatalf("cloud %+v while the uplink is cut", e)
	}
	px.Restore()
	c.waitExecution(t, "valve-1", "gw-cut", jobs.Succeeded)
	waitFor(t, "settled", func() bool { return d.Jobs.Stats().Unsent == 0 })
	if n := len(history(t, d, "valve")); n != 1 {
		t.Fatalf("valve changed %d times", n)
	}
}

// The answer to the final status is lost: the gateway sends it again with
// the version it had, meets VersionMismatch, re-reads the execution and
// settles (the status had landed) instead of guessing or sending forever.
func TestJobLostAnswerReconciled(t *testing.T) {
	c := newJobsCloud(t)
	var mu sync.Mutex
	dropped := 0
	px := brokertest.NewFilterProxy(t, c.broker.Addr(), func(topic string, payload []byte) bool {
		mu.Lock()
		defer mu.Unlock()
		if strings.HasSuffix(topic, "/jobs/lost-1/update/accepted") && strings.Contains(string(payload), `"SUCCEEDED"`) && dropped == 0 {
			dropped++
			return true
		}
		return false
	})
	cfg, _ := gatewayConfig(t, "gw-lost", px.URL(), t.TempDir(), "cloud_wins")
	d := gateway(t, cfg)
	waitFor(t, "link up", d.Link.Connected)
	c.createJob(t, "lost-1", `{"operation":"MOTOR_1_ON"}`, "gw-lost")
	c.waitExecution(t, "lost-1", "gw-lost", jobs.Succeeded)
	waitFor(t, "settled after the re-read", func() bool {
		runs, _ := d.Jobs.Runs(1)
		return len(runs) == 1 && !runs[0].Unsent && runs[0].Cloud == jobrun.StatusSucceeded
	})
	if st := d.Jobs.Stats(); st.Resent < 1 || st.Refused != 0 {
		t.Fatalf("stats %+v (want a resend, nothing refused)", st)
	}
	var sawGet bool
	c.mu.Lock()
	for _, m := range c.jobsMsgs {
		sawGet = sawGet || m.Topic == root+"gw-lost/jobs/lost-1/get"
	}
	c.mu.Unlock()
	if !sawGet {
		t.Fatalf("no re-read\n%s", c.jobsLog())
	}
}

// A broker that refuses the jobs topics (a policy without them) turns
// jobs off, says why, and leaves the rest working.
func TestJobsRefusedTopicsDegradeOnlyJobs(t *testing.T) {
	c := newJobsCloud(t)
	px := brokertest.NewPolicyProxy(t, c.broker.Addr(), func(topic string) bool { return strings.Contains(topic, "/jobs/") })
	dir := t.TempDir()
	cfg, _ := gatewayConfig(t, "gw-pol", px.URL(), dir, "cloud_wins")
	d := gateway(t, cfg)
	waitFor(t, "link up", d.Link.Connected)
	waitFor(t, "jobs unavailable", func() bool { return strings.Contains(d.Jobs.Stats().State, "unavailable") })
	if st := d.Jobs.Stats().State; !strings.Contains(st, "refused the subscription") || !strings.Contains(st, "iot:Subscribe") {
		t.Fatalf("state %q", st)
	}
	shadowctl(t, "status", "--socket", filepath.Join(dir, "api.sock")).must(t, 0, "jobs", "unavailable: the broker refused")
	// Shadows and commands go on.
	c.desire(t, "gw-pol", "", `{"porch_light":{"on":true}}`)
	waitFor(t, "desired applied", func() bool { return read(t, d, "porch_light")["on"] == true })
	c.send(t, "gw-pol", req("MOTOR_1_ON", "pol-1", ""))
	c.waitAck(t, "gw-pol", "pol-1", "SUCCESS")
	if !d.Link.Connected() || d.Link.Stats().Connects != 1 {
		t.Fatalf("the session dropped: %+v", d.Link.Stats())
	}
	if len(px.Refused()) == 0 {
		t.Fatal("the proxy refused nothing")
	}
}

// BenchmarkJobExecutions: job executions run end to end on one in-process
// gateway against shadowsvc's jobs service (one at a time, as the gateway
// takes them): start-next, the inbox write, IN_PROGRESS, the action,
// SUCCEEDED, each settled by the service's answer.
func BenchmarkJobExecutions(b *testing.B) {
	c := newJobsCloud(b)
	cfg, _ := gatewayConfig(b, "gw-bench", c.broker.URL(), b.TempDir(), "cloud_wins")
	d := gateway(b, cfg)
	waitFor(b, "link up", d.Link.Connected)
	for i := range b.N {
		c.createJob(b, fmt.Sprintf("bench-%d", i), fmt.Sprintf(`{"operation":"SET_SPEED","args":{"speed":%d}}`, i%100), "gw-bench")
	}
	commits := d.Store.WriteStats().Commits
	b.ResetTimer()
	start := time.Now()
	waitFor(b, "every execution settled", func() bool { st := d.Jobs.Stats(); return st.Succeeded == int64(b.N) && st.Unsent == 0 })
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "execs/s")
	b.ReportMetric(float64(d.Store.WriteStats().Commits-commits)/float64(b.N), "commits/exec")
}

// lockConfig is the test gateway's configuration with LOCK, a type on the
// front door that needs no approval: it queues behind an UNLOCK awaiting
// approval.
func lockConfig(t testing.TB, thing, brokerURL, dir string) *config.Config {
	t.Helper()
	path := filepath.Join(dir, "shadowgate.yaml")
	y := fmt.Sprintf(gatewayYAML+"    LOCK: {actuator: front_door, set: {locked: true}}\n", thing, brokerURL, "cloud_wins",
		filepath.Join(dir, "state.db"), filepath.Join(dir, "api.sock"))
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := daemon.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// run is the gateway's record of job's execution, nil when it has none.
func run(t testing.TB, d *daemon.Daemon, job string) *jobrun.Run {
	t.Helper()
	runs, err := d.Jobs.Runs(100)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range runs {
		if r.JobID == job {
			return r
		}
	}
	return nil
}

func events(r *jobrun.Run) string {
	var b strings.Builder
	for _, e := range r.Events {
		b.WriteString(e.What + "\n")
	}
	return b.String()
}

// queuedBehind starts a gateway whose door's lane is held by an UNLOCK
// awaiting approval (tid blk), and a job to LOCK it, which the gateway
// takes and holds in its inbox.
func queuedBehind(t *testing.T, thing, job string) (*jobsCloud, *daemon.Daemon) {
	t.Helper()
	c := newJobsCloud(t)
	d := gateway(t, lockConfig(t, thing, c.broker.URL(), t.TempDir()))
	waitFor(t, "link up", d.Link.Connected)
	c.send(t, thing, req("UNLOCK", "blk", ""))
	c.waitAck(t, thing, "blk", "RUNNING")
	c.createJob(t, job, `{"operation":"LOCK"}`, thing)
	waitQueued(t, d, job)
	return c, d
}

// waitQueued waits until the gateway holds job in its inbox, IN_PROGRESS
// settled with the service, its action not started.
func waitQueued(t testing.TB, d *daemon.Daemon, job string) {
	t.Helper()
	waitFor(t, job+" accepted and waiting for its actuator", func() bool {
		r := run(t, d, job)
		return r != nil && r.Status == jobrun.StatusInProgress && !r.Unsent && r.Cloud == jobrun.StatusInProgress && r.Started.IsZero()
	})
}

// A job canceled with force (CancelJob, CancelJobExecution) while its
// execution waits in the gateway's inbox behind a command on the same
// actuator never runs: the gateway learns it (notify-next, then a re-read)
// and cancels the command through the pipeline's durable cancel; nothing
// is reported over the cloud's CANCELED, and the record says it never ran.
func TestJobCanceledWhileQueuedNeverRuns(t *testing.T) {
	c := newJobsCloud(t)
	dir := t.TempDir()
	d := gateway(t, lockConfig(t, "gw-cq", c.broker.URL(), dir))
	waitFor(t, "link up", d.Link.Connected)
	for i, cancel := range []func(job string) error{
		func(job string) error {
			_, err := c.jobs.CancelJob(context.Background(), &jobs.CancelJobRequest{JobID: job, Force: true})
			return err
		},
		func(job string) error {
			return c.jobs.CancelJobExecution(context.Background(), &jobs.CancelJobExecutionRequest{JobID: job, ThingName: "gw-cq", Force: true})
		},
	} {
		blocker, job, after := fmt.Sprintf("blk-%d", i), fmt.Sprintf("lock-%d", i), fmt.Sprintf("after-%d", i)
		// The door's lane is held by an UNLOCK awaiting approval.
		c.send(t, "gw-cq", req("UNLOCK", blocker, ""))
		waitFor(t, blocker+" awaiting approval", func() bool {
			for _, a := range c.acks("gw-cq", blocker) {
				if a.Reason == command.ReasonAwaitingApproval {
					return true
				}
			}
			return false
		})
		c.createJob(t, job, `{"operation":"LOCK"}`, "gw-cq")
		waitQueued(t, d, job)
		if err := cancel(job); err != nil {
			t.Fatal(err)
		}
		waitFor(t, job+" canceled on the gateway", func() bool {
			r := run(t, d, job)
			return r != nil && r.Status == jobrun.StatusFailed && !r.Unsent && !r.Finished.IsZero()
		})
		r := run(t, d, job)
		if r.Cloud == "" || r.Cloud == jobrun.StatusInProgress || !r.Started.IsZero() || !strings.Contains(events(r), "it never ran") {
			t.Fatalf("run %+v\nevents:\n%s", r, events(r))
		}
		var cmd *store.Command
		d.Store.View(func(tx *store.Tx) (err error) { cmd, err = tx.GetCommand(jobrun.TID(job, 1)); return err })
		if cmd == nil || cmd.Status != "FAILURE" || !cmd.Started.IsZero() || !strings.Contains(string(cmd.LastAck), jobrun.ReasonEndedInCloud) {
			t.Fatalf("command %+v", cmd)
		}
		// The door's lane frees: the UNLOCK runs, then a LOCK sent after
		// it; the canceled job, ahead of that LOCK, never ran.
		before := len(history(t, d, "front_door"))
		if err := d.Commands.Approve(blocker); err != nil {
			t.Fatal(err)
		}
		c.waitAck(t, "gw-cq", blocker, "SUCCESS")
		c.send(t, "gw-cq", req("LOCK", after, ""))
		c.waitAck(t, "gw-cq", after, "SUCCESS")
		h := history(t, d, "front_door")
		if len(h) != before+2 {
			t.Fatalf("%d changes of the door, want %d", len(h), before+2)
		}
		for _, ch := range h {
			if ch.TID == jobrun.TID(job, 1) {
				t.Fatalf("the canceled job changed the door: %+v", ch)
			}
		}
		if e := c.execution(t, job, "gw-cq"); e == nil || e.Status != jobs.Canceled {
			t.Fatalf("cloud %+v", e)
		}
		for _, u := range c.updates("gw-cq", job) {
			if u["status"] != "IN_PROGRESS" {
				t.Fatalf("a status after the cancel: %v", u)
			}
		}
	}
	waitFor(t, "both counted ended in the cloud", func() bool { return d.Jobs.Stats().EndedInCloud == 2 })
	if st := d.Jobs.Stats(); st.EndedInCloud != 2 || st.Refused != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// A job canceled with force while its action runs (not idempotent, the
// valve already moving): AWS says the device can no longer update such an
// execution, and the gateway cannot take back what hardware did. The
// action runs to its end once, its result is recorded on the gateway, and
// nothing is reported over the cloud's CANCELED (whether the gateway
// learns of the cancel before its SUCCEEDED would go, or from the refusal
// of that SUCCEEDED).
func TestJobCanceledWhileRunningRunsToItsEnd(t *testing.T) {
	c := newJobsCloud(t)
	d := gateway(t, lockConfig(t, "gw-cr", c.broker.URL(), t.TempDir()))
	waitFor(t, "link up", d.Link.Connected)
	c.createJob(t, "valve-c", `{"operation":"OPEN_VALVE"}`, "gw-cr") // the valve takes 2.5s
	waitFor(t, "the action started", func() bool { r := run(t, d, "valve-c"); return r != nil && !r.Started.IsZero() })
	if _, err := c.jobs.CancelJob(context.Background(), &jobs.CancelJobRequest{JobID: "valve-c", Force: true}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the action's end recorded", func() bool {
		r := run(t, d, "valve-c")
		st := d.Jobs.Stats() // counted once the record is durable
		return r.Status == jobrun.StatusSucceeded && !r.Unsent && !r.Finished.IsZero() && r.Cloud != jobrun.StatusInProgress &&
			st.Current == "" && st.EndedInCloud+st.Refused >= 1
	})
	if r := run(t, d, "valve-c"); r.Cloud != jobrun.StatusCanceled && r.Cloud != "ENDED" {
		t.Fatalf("run %+v\nevents:\n%s", r, events(r))
	}
	if read(t, d, "valve")["open"] != true || len(history(t, d, "valve")) != 1 {
		t.Fatalf("valve %v, %d changes", read(t, d, "valve"), len(history(t, d, "valve")))
	}
	var cmd *store.Command
	d.Store.View(func(tx *store.Tx) (err error) { cmd, err = tx.GetCommand(jobrun.TID("valve-c", 1)); return err })
	if cmd == nil || cmd.Status != "SUCCESS" {
		t.Fatalf("command %+v", cmd)
	}
	if e := c.execution(t, "valve-c", "gw-cr"); e == nil || e.Status != jobs.Canceled {
		t.Fatalf("cloud %+v", e)
	}
	// Ended in the cloud (its end not sent), or its end refused for good,
	// or both (the step's IN_PROGRESS refused, the end not sent): never
	// counted a success the cloud has.
	if st := d.Jobs.Stats(); st.EndedInCloud+st.Refused < 1 || st.Succeeded != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// The step timer covers the action, not the wait for it: an execution
// waiting in the gateway's inbox behind a command on its actuator has no
// step timer on the service (an hour may pass), and gets one, the type's
// timeout rounded up, once its action starts.
func TestJobStepTimerStartsWithTheAction(t *testing.T) {
	c, d := queuedBehind(t, "gw-step", "lock-s")
	e := c.execution(t, "lock-s", "gw-step")
	if e == nil || e.ApproximateSecondsBeforeTimedOut != nil {
		t.Fatalf("a step timer runs while the execution waits in the gateway's inbox: %+v", e)
	}
	if ups := c.updates("gw-step", "lock-s"); len(ups) != 0 {
		t.Fatalf("updates before the action started: %v", ups)
	}
	c.advance(time.Hour)
	if err := d.Commands.Approve("blk"); err != nil {
		t.Fatal(err)
	}
	c.waitExecution(t, "lock-s", "gw-step", jobs.Succeeded)
	checkSteps(t, c, d, "gw-step", "lock-s", 1, "SUCCEEDED")

	// An action that lasts (the valve takes 2.5s) runs under the step
	// timer, on the service's clock (an hour ahead): a minute at most.
	c.createJob(t, "valve-s", `{"operation":"OPEN_VALVE"}`, "gw-step")
	waitFor(t, "the step timer runs on the service", func() bool {
		e := c.execution(t, "valve-s", "gw-step")
		return e != nil && e.Status == jobs.InProgress && e.ApproximateSecondsBeforeTimedOut != nil
	})
	if e := c.execution(t, "valve-s", "gw-step"); e.ApproximateSecondsBeforeTimedOut != nil && *e.ApproximateSecondsBeforeTimedOut > 60 {
		t.Fatalf("step timer %d s, want at most 60", *e.ApproximateSecondsBeforeTimedOut)
	}
	c.waitExecution(t, "valve-s", "gw-step", jobs.Succeeded)
	checkSteps(t, c, d, "gw-step", "valve-s", 1, "SUCCEEDED")
}

// A cancel without force leaves an execution the gateway has taken alone:
// AWS cancels only QUEUED executions, and start-next made it IN_PROGRESS.
// It runs when its actuator is free, and reports as usual.
func TestJobCanceledWithoutForceRunsOnceTaken(t *testing.T) {
	c, d := queuedBehind(t, "gw-nf", "lock-nf")
	if _, err := c.jobs.CancelJob(context.Background(), &jobs.CancelJobRequest{JobID: "lock-nf"}); err != nil {
		t.Fatal(err)
	}
	if e := c.execution(t, "lock-nf", "gw-nf"); e == nil || e.Status != jobs.InProgress {
		t.Fatalf("cloud %+v", e)
	}
	if err := d.Commands.Approve("blk"); err != nil {
		t.Fatal(err)
	}
	c.waitExecution(t, "lock-nf", "gw-nf", jobs.Succeeded)
	var ran bool
	for _, ch := range history(t, d, "front_door") {
		ran = ran || ch.TID == jobrun.TID("lock-nf", 1)
	}
	if !ran {
		t.Fatal("the job did not run")
	}
}
