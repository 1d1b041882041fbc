package jobs_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shadowgate/shadowgate/agent/jobs"
	"github.com/shadowgate/shadowgate/agent/link"
	"github.com/shadowgate/shadowgate/agent/link/brokertest"
	"github.com/shadowgate/shadowgate/store"
)

// clock is the service's clock in tests: it moves only when told.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *clock) Advance(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

// env is a mosquitto, a jobs service on a real bbolt file and its clock.
type env struct {
	t      *testing.T
	root   string
	broker *brokertest.Broker
	path   string
	clock  *clock
	svc    *jobs.Service
	stop   func()
}

func newEnv(t *testing.T) *env {
	e := &env{t: t, root: "$aws/things/", broker: brokertest.Start(t), path: filepath.Join(t.TempDir(), "svc.db"),
		clock: &clock{now: time.Unix(1_700_000_000, 0)}}
	e.start()
	t.Cleanup(func() { e.stop() })
	return e
}

// start opens the store and runs a service on it with its own link.
func (e *env) start() {
	t := e.t
	st, err := store.Open(e.path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	l, err := link.New(link.Options{Broker: e.broker.URL(), ClientID: "jobsvc", MinBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	e.svc = jobs.New(jobs.Options{Root: e.root, Link: l, Store: st, Now: e.clock.Now})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); e.svc.Run(ctx) }()
	go func() { defer wg.Done(); l.Run(ctx) }()
	waitFor(t, "service connected", l.Connected)
	e.stop = func() { cancel(); wg.Wait(); st.Close(); e.stop = func() {} }
}

// restart stops the service and starts a new one on the same file.
func (e *env) restart() { e.stop(); e.start() }

// advance moves the clock and wakes the scheduler.
func (e *env) advance(d time.Duration) { e.clock.Advance(d); e.svc.Kick() }

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func thingArn(n string) string { return "arn:aws:iot:eu-west-1:123456789012:thing/" + n }
func groupArn(n string) string { return "arn:aws:iot:eu-west-1:123456789012:thinggroup/" + n }

func (e *env) createJob(req *jobs.CreateJobRequest) {
	e.t.Helper()
	if req.Document == "" && req.JobTemplateArn == "" {
		req.Document = `{"operation":"reboot"}`
	}
	if _, err := e.svc.CreateJob(context.Background(), req); err != nil {
		e.t.Fatalf("create job %s: %v", req.JobID, err)
	}
}

func (e *env) job(id string) *jobs.Job {
	e.t.Helper()
	d, err := e.svc.DescribeJob(context.Background(), id)
	if err != nil {
		e.t.Fatalf("describe job %s: %v", id, err)
	}
	return d.Job
}

func (e *env) executions(jobID string) []jobs.ExecutionSummaryForJob {
	e.t.Helper()
	var all []jobs.ExecutionSummaryForJob
	token := ""
	for {
		r, err := e.svc.ListJobExecutionsForJob(context.Background(), &jobs.ListJobExecutionsRequest{JobID: jobID, MaxResults: 250, NextToken: token})
		if err != nil {
			e.t.Fatal(err)
		}
		all = append(all, r.ExecutionSummaries...)
		if token = r.NextToken; token == "" {
			return all
		}
	}
}

// device is one thing speaking the Jobs MQTT API as the AWS samples do: it
// subscribes to its responses and notifications, publishes requests with
// a clientToken and waits for the answer that carries it.
type device struct {
	t     *testing.T
	e     *env
	thing string
	l     *link.Link
	seq   atomic.Int64
	mu    sync.Mutex
	msgs  []*link.Message
}

func (e *env) device(thing string) *device {
	d := &device{t: e.t, e: e, thing: thing}
	l, err := link.New(link.Options{Broker: e.broker.URL(), ClientID: "dev-" + thing, CleanSession: true, MinBackoff: 50 * time.Millisecond})
	if err != nil {
		e.t.Fatal(err)
	}
	d.l = l
	base := e.root + thing + "/jobs/"
	for _, f := range []string{base + "notify", base + "notify-next", base + "get/+", base + "start-next/+", base + "+/get/+", base + "+/update/+"} {
		l.Handle(f, func(_ context.Context, m *link.Message) {
			d.mu.Lock()
			d.msgs = append(d.msgs, m)
			d.mu.Unlock()
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	e.t.Cleanup(func() { cancel(); <-done })
	waitFor(e.t, thing+" connected", l.Connected)
	return d
}

// request publishes payload (a map gets a clientToken) on the thing's
// jobs topic rest and returns the answer's suffix (accepted or rejected)
// and payload.
func (d *device) request(rest string, payload any) (string, map[string]any) {
	d.t.Helper()
	suffix, got, err := d.ask(rest, payload, time.Now().Add(15*time.Second), nil)
	if err != nil {
		d.t.Fatal(err)
	}
	return suffix, got
}

// ask is request without failing the test (it may run on any goroutine):
// it gives up at deadline or when stop is closed.
func (d *device) ask(rest string, payload any, deadline time.Time, stop <-chan struct{}) (string, map[string]any, error) {
	token := fmt.Sprintf("%s-%d", d.thing, d.seq.Add(1))
	var b []byte
	switch p := payload.(type) {
	case map[string]any:
		p["clientToken"] = token
		b, _ = json.Marshal(p)
	case string:
		b, token = []byte(p), ""
	}
	topic := d.e.root + d.thing + "/jobs/" + rest
	if err := d.l.Publish(context.Background(), topic, false, b); err != nil {
		return "", nil, fmt.Errorf("publish on %s: %w", topic, err)
	}
	for {
		if suffix, got, ok := d.take(topic, token); ok {
			return suffix, got, nil
		}
		select {
		case <-stop:
			return "", nil, fmt.Errorf("stopped waiting for the answer on %s", topic)
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return "", nil, fmt.Errorf("timed out waiting for the answer on %s", topic)
		}
	}
}

// take removes and returns the answer on topic that carries token.
func (d *device) take(topic, token string) (string, map[string]any, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, m := range d.msgs {
		s, ok := strings.CutPrefix(m.Topic, topic+"/")
		if !ok || (s != "accepted" && s != "rejected") {
			continue
		}
		var v map[string]any
		json.Unmarshal(m.Payload, &v)
		if token != "" && v["clientToken"] != token {
			continue
		}
		d.msgs = append(d.msgs[:i:i], d.msgs[i+1:]...)
		return s, v, true
	}
	return "", nil, false
}

// notification waits for the next message on notify or notify-next
// (which) that pred accepts, dropping those before it.
func (d *device) notification(which string, pred func(map[string]any) bool) map[string]any {
	d.t.Helper()
	topic := d.e.root + d.thing + "/jobs/" + which
	var got map[string]any
	waitFor(d.t, which+" of "+d.thing, func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		for i, m := range d.msgs {
			if m.Topic != topic {
				continue
			}
			var v map[string]any
			json.Unmarshal(m.Payload, &v)
			d.msgs = append(d.msgs[:i:i], d.msgs[i+1:]...)
			if pred == nil || pred(v) {
				got = v
				return true
			}
			return false
		}
		return false
	})
	return got
}

// nextJob is a notify-next predicate: the next execution is jobID (""
// for none).
func nextJob(jobID string) func(map[string]any) bool {
	return func(v map[string]any) bool {
		ex, _ := v["execution"].(map[string]any)
		if jobID == "" {
			return ex == nil
		}
		return ex != nil && ex["jobId"] == jobID
	}
}

func num(v any) int64 {
	f, _ := v.(float64)
	return int64(f)
}

func field(v map[string]any, path ...string) any {
	var cur any = v
	for _, p := range path {
		m, _ := cur.(map[string]any)
		cur = m[p]
	}
	return cur
}

// awaitService asks jobs/get until the service answers (a service process
// that has just started may not have subscribed yet).
func (d *device) awaitService() {
	d.t.Helper()
	topic := d.e.root + d.thing + "/jobs/get"
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		d.l.Publish(context.Background(), topic, false, []byte(`{"clientToken":"ping"}`))
		for range 40 {
			time.Sleep(5 * time.Millisecond)
			d.mu.Lock()
			for _, m := range d.msgs {
				if m.Topic == topic+"/accepted" {
					d.msgs = nil
					d.mu.Unlock()
					return
				}
			}
			d.mu.Unlock()
		}
	}
	d.t.Fatal("the jobs service never answered")
}
