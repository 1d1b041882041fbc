package daemon_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/shadowgate/shadowgate/agent/jobrun"
	"github.com/shadowgate/shadowgate/agent/jobs"
	"github.com/shadowgate/shadowgate/agent/link/brokertest"
	"github.com/shadowgate/shadowgate/store"
)

// jobGateway is a shadowgated process with its config and socket.
type jobGateway struct {
	thing, cfg, sock string
	p                *proc
}

func startJobGateway(t *testing.T, c *jobsCloud, thing string) *jobGateway {
	t.Helper()
	dir := t.TempDir()
	_, cfgPath := gatewayConfig(t, thing, c.broker.URL(), dir, "cloud_wins")
	g := &jobGateway{thing: thing, cfg: cfgPath, sock: filepath.Join(dir, "api.sock")}
	g.p = runGateway(t, g.cfg, g.sock)
	waitFor(t, thing+" connected", func() bool { return g.p.status(t).Connected })
	return g
}

func (g *jobGateway) restart(t *testing.T) {
	t.Helper()
	g.p = runGateway(t, g.cfg, g.sock)
	waitFor(t, g.thing+" connected again", func() bool { return g.p.status(t).Connected })
}

// kill9 ends the process without a chance to write anything.
func (g *jobGateway) kill9(t *testing.T) {
	t.Helper()
	g.p.cmd.Process.Signal(syscall.SIGKILL)
	<-g.p.done
	g.p.done <- nil
}

// changesOf are the history entries of actuator made by tid.
func (g *jobGateway) changesOf(t *testing.T, actuator, tid string) []*store.Change {
	var out []*store.Change
	for _, ch := range g.p.history(t, actuator) {
		if ch.TID == tid {
			out = append(out, ch)
		}
	}
	return out
}

func (g *jobGateway) runs(t *testing.T) []*jobrun.Run {
	t.Helper()
	r := shadowctl(t, "jobs", "--json", "--socket", g.sock)
	var runs []*jobrun.Run
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &runs) != nil {
		t.Fatalf("shadowctl jobs: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	return runs
}

// startNextAnswers counts the start-next answers thing received with no
// execution in them.
func (c *jobsCloud) emptyStartNexts(thing string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, m := range c.jobsMsgs {
		if m.Topic == root+thing+"/jobs/start-next/accepted" && !strings.Contains(string(m.Payload), `"execution"`) {
			n++
		}
	}
	return n
}

// A job to a thing group reaches three gateway processes; each runs it
// once, and neither a restart nor a replayed notification runs it again.
func TestJobToThingGroupOnThreeGateways(t *testing.T) {
	c := newJobsCloud(t)
	ctx := context.Background()
	if _, err := c.jobs.CreateThingGroup(ctx, &jobs.CreateThingGroupRequest{ThingGroupName: "porch"}); err != nil {
		t.Fatal(err)
	}
	var gws []*jobGateway
	for i := 1; i <= 3; i++ {
		thing := fmt.Sprintf("gw-grp-%d", i)
		if err := c.jobs.AddThingToThingGroup(ctx, &jobs.ThingGroupMembershipRequest{ThingGroupName: "porch", ThingName: thing}); err != nil {
			t.Fatal(err)
		}
		gws = append(gws, startJobGateway(t, c, thing))
	}
	c.createJob(t, "motors-on", `{"operation":"MOTOR_1_ON"}`, "group:porch")
	tid := jobrun.TID("motors-on", 1)
	for _, g := range gws {
		c.waitExecution(t, "motors-on", g.thing, jobs.Succeeded)
		if n := len(g.changesOf(t, "gate_motor", tid)); n != 1 {
			t.Fatalf("%s ran it %d times", g.thing, n)
		}
	}
	j, err := c.jobs.DescribeJob(ctx, "motors-on")
	if err != nil {
		t.Fatal(err)
	}
	if pd := j.Job.JobProcessDetails; pd.NumberOfSucceededThings != 3 || j.Job.Status != jobs.JobCompleted {
		t.Fatalf("job %+v %+v", j.Job.Status, pd)
	}
	// Restart each; replay a notify-next; nothing runs again.
	for _, g := range gws {
		before := c.emptyStartNexts(g.thing)
		g.p.stop(t)
		g.restart(t)
		c.publish(t, root+g.thing+"/jobs/notify-next", `{"timestamp":1}`)
		waitFor(t, g.thing+" asked for the next execution twice more", func() bool { return c.emptyStartNexts(g.thing) >= before+2 })
		if n := len(g.changesOf(t, "gate_motor", tid)); n != 1 {
			t.Fatalf("%s ran it %d times after the restart", g.thing, n)
		}
		runs := g.runs(t)
		if len(runs) != 1 || runs[0].Status != jobrun.StatusSucceeded || runs[0].Unsent {
			t.Fatalf("%s runs %+v", g.thing, runs)
		}
	}
}

// A gateway stopped when the job is created runs it when it starts.
func TestJobCreatedWhileGatewayStopped(t *testing.T) {
	c := newJobsCloud(t)
	g := startJobGateway(t, c, "gw-later")
	g.p.stop(t)
	c.createJob(t, "speed-7", `{"operation":"SET_SPEED","args":{"speed":7}}`, "gw-later")
	if e := c.execution(t, "speed-7", "gw-later"); e == nil || e.Status != jobs.Queued {
		t.Fatalf("before the start: %+v", e)
	}
	g.restart(t)
	c.waitExecution(t, "speed-7", "gw-later", jobs.Succeeded)
	if st := g.p.state(t, "gate_motor"); fmt.Sprint(st["speed"]) != "7" {
		t.Fatalf("motor %v", st)
	}
}

// kill -9 while an execution drives the valve: after the restart it is
// FAILED "interrupted", never run a second time.
func TestJobKill9MidExecution(t *testing.T) {
	c := newJobsCloud(t)
	g := startJobGateway(t, c, "gw-k9")
	c.createJob(t, "valve-k9", `{"operation":"OPEN_VALVE"}`, "gw-k9") // 2.5s
	tid := jobrun.TID("valve-k9", 1)
	waitFor(t, "the valve's change recorded", func() bool { return len(g.changesOf(t, "valve", tid)) == 1 })
	g.kill9(t)
	if e := c.execution(t, "valve-k9", "gw-k9"); e.Status != jobs.InProgress {
		t.Fatalf("cloud %+v", e)
	}
	g.restart(t)
	e := c.waitExecution(t, "valve-k9", "gw-k9", jobs.Failed)
	if details(e)["reason"] != "interrupted" {
		t.Fatalf("details %v", details(e))
	}
	if n := len(g.changesOf(t, "valve", tid)); n != 1 {
		t.Fatalf("the valve was driven %d times by the job", n)
	}
	runs := g.runs(t)
	if len(runs) != 1 || runs[0].Status != jobrun.StatusFailed || runs[0].Unsent || runs[0].Cloud != jobrun.StatusFailed {
		t.Fatalf("runs %+v", runs)
	}
	shadowctl(t, "jobs", "valve-k9", "--socket", g.sock).must(t, 0, "interrupted", "history:", "accepted: FAILED")
}

// The jobs service is down when an execution ends, and the gateway is
// restarted (kill -9) before it is back: the final status is kept in the
// store and sent again until the service, back, has it.
func TestJobStatusKeptAcrossRestartWhileServiceDown(t *testing.T) {
	c := newJobsCloudWith(t, true)
	g := startJobGateway(t, c, "gw-down")
	c.createJob(t, "valve-down", `{"operation":"OPEN_VALVE"}`, "gw-down") // 2.5s
	waitFor(t, "IN_PROGRESS accepted", func() bool {
		runs := g.runs(t)
		return len(runs) == 1 && runs[0].Status == jobrun.StatusInProgress && !runs[0].Unsent
	})
	c.stopJobs()
	waitFor(t, "SUCCEEDED unanswered", func() bool {
		runs := g.runs(t)
		return len(runs) == 1 && runs[0].Status == jobrun.StatusSucceeded && runs[0].Unsent
	})
	g.kill9(t)
	g.restart(t)
	if runs := g.runs(t); runs[0].Status != jobrun.StatusSucceeded || !runs[0].Unsent {
		t.Fatalf("after the restart: %+v", runs[0])
	}
	if st := g.p.status(t); st.Jobs == nil || st.Jobs.Unsent != 1 || st.OutboxItems < 1 {
		t.Fatalf("status %+v", st.Jobs)
	}
	c.startJobs()
	c.waitExecution(t, "valve-down", "gw-down", jobs.Succeeded)
	waitFor(t, "settled", func() bool { runs := g.runs(t); return !runs[0].Unsent })
	if n := len(g.changesOf(t, "valve", jobrun.TID("valve-down", 1))); n != 1 {
		t.Fatalf("the valve was driven %d times", n)
	}
}

// A policy without the jobs topics: the systemd status line says jobs are
// unavailable and why; the gateway is connected all the same.
func TestJobsUnavailableInSystemdStatus(t *testing.T) {
	c := newJobsCloud(t)
	px := brokertest.NewPolicyProxy(t, c.broker.Addr(), func(topic string) bool { return strings.Contains(topic, "/jobs/") })
	dir := t.TempDir()
	_, cfgPath := gatewayConfig(t, "gw-sdjobs", px.URL(), dir, "cloud_wins")
	n := startNotified(t, cfgPath).notify
	waitFor(t, "a status line with jobs unavailable", func() bool {
		return n.Count("STATUS=connected to") >= 1 && n.Count("jobs unavailable (the broker refused the subscription to $aws/things/gw-sdjobs/jobs/") >= 1
	})
}
