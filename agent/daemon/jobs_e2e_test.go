package daemon_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

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
	jobs *jobs.Service

	mu       sync.Mutex
	jobsMsgs []*link.Message
}

func newJobsCloud(t *testing.T) *jobsCloud {
	t.Helper()
	c := &jobsCloud{cloud: &cloud{broker: brokertest.Start(t)}}
	st, err := store.Open(filepath.Join(t.TempDir(), "cloud.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	svcLink, _ := link.New(link.Options{Broker: c.broker.URL(), ClientID: "cloud-shadowsvc", MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond})
	c.svc = shadowsvc.New(shadowsvc.Options{Root: root, Link: svcLink, Store: st})
	c.jobs = jobs.New(jobs.Options{Root: root, Link: svcLink, Store: st})
	c.svcLink = svcLink
	runService(t, c.svc)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.jobs.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
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
	// IN_PROGRESS with the step timeout first, then SUCCEEDED, each with
	// expectedVersion.
	ups := c.updates("gw-job", "speed-40")
	if len(ups) < 2 || ups[0]["status"] != "IN_PROGRESS" || ups[0]["stepTimeoutInMinutes"] != float64(1) || ups[len(ups)-1]["status"] != "SUCCEEDED" {
		t.Fatalf("updates %v", ups)
	}
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
