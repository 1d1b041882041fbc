// Package jobstest plays a fleet of things through the AWS IoT Jobs device
// flow on an MQTT broker, for the benchmarks and the capacity report: one
// paho client answers every thing's start-next with SUCCEEDED, as a
// gateway would for its devices.
package jobstest

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/shadowgate/shadowgate/agent/jobs"
)

// Things names n things: prefix0, prefix1, …
func Things(prefix string, n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return names
}

// Release creates job jobID with document on things (by thing ARN) and
// waits until every execution is queued: the rollout releases them a batch
// a commit, and a start-next before its thing's release finds nothing.
func Release(ctx context.Context, svc *jobs.Service, jobID, document string, things []string) error {
	arns := make([]string, len(things))
	for i, th := range things {
		arns[i] = "arn:aws:iot:us-east-1:123456789012:thing/" + th
	}
	if _, err := svc.CreateJob(ctx, &jobs.CreateJobRequest{JobID: jobID, Targets: arns, Document: document}); err != nil {
		return fmt.Errorf("create job %s: %w", jobID, err)
	}
	for {
		d, err := svc.DescribeJob(ctx, jobID)
		if err != nil {
			return fmt.Errorf("describe job %s: %w", jobID, err)
		}
		if d.Job.JobProcessDetails.NumberOfQueuedThings == len(things) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("job %s: %d of %d executions queued: %w", jobID, d.Job.JobProcessDetails.NumberOfQueuedThings, len(things), ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Fleet is one MQTT client playing many things.
type Fleet struct {
	c    mqtt.Client
	root string
	done atomic.Int64 // updates accepted
	poke chan struct{}
}

// NewFleet connects a client to broker (a URL) as clientID and subscribes
// to the answers of every thing under root: on start-next/accepted with an
// execution it publishes SUCCEEDED with the execution's versionNumber as
// expectedVersion; update/accepted counts one execution done.
func NewFleet(broker, root, clientID string) (*Fleet, error) {
	f := &Fleet{root: root, poke: make(chan struct{}, 1)}
	f.c = mqtt.NewClient(mqtt.NewClientOptions().AddBroker(broker).SetClientID(clientID).SetCleanSession(true).SetOrderMatters(false))
	if tok := f.c.Connect(); tok.Wait() && tok.Error() != nil {
		return nil, fmt.Errorf("connect the fleet to %s: %w", broker, tok.Error())
	}
	started := func(_ mqtt.Client, m mqtt.Message) {
		var v struct {
			Execution *struct {
				JobID         string `json:"jobId"`
				ThingName     string `json:"thingName"`
				VersionNumber int64  `json:"versionNumber"`
			} `json:"execution"`
		}
		if json.Unmarshal(m.Payload(), &v) != nil || v.Execution == nil {
			return
		}
		p, _ := json.Marshal(map[string]any{"status": "SUCCEEDED", "expectedVersion": v.Execution.VersionNumber})
		f.c.Publish(root+v.Execution.ThingName+"/jobs/"+v.Execution.JobID+"/update", 1, false, p)
	}
	updated := func(mqtt.Client, mqtt.Message) {
		f.done.Add(1)
		select {
		case f.poke <- struct{}{}:
		default:
		}
	}
	for filter, h := range map[string]mqtt.MessageHandler{root + "+/jobs/start-next/accepted": started, root + "+/jobs/+/update/accepted": updated} {
		if tok := f.c.Subscribe(filter, 1, h); tok.Wait() && tok.Error() != nil {
			f.c.Disconnect(100)
			return nil, fmt.Errorf("subscribe %s: %w", filter, tok.Error())
		}
	}
	return f, nil
}

// Run asks start-next for each thing, with at most window requests
// waiting, and returns once every thing's execution is SUCCEEDED, or the
// error of ctx (or of no progress for stall).
func (f *Fleet) Run(ctx context.Context, things []string, window int, stall time.Duration) (time.Duration, error) {
	base := f.done.Load()
	t0 := time.Now()
	last := t0
	sent := 0
	for {
		done := int(f.done.Load() - base)
		if done >= len(things) {
			return time.Since(t0), nil
		}
		for sent < len(things) && sent-done < window {
			f.c.Publish(f.root+things[sent]+"/jobs/start-next", 1, false, []byte(`{}`))
			sent++
		}
		select {
		case <-f.poke:
			last = time.Now()
		case <-time.After(100 * time.Millisecond):
			if time.Since(last) > stall {
				return 0, fmt.Errorf("jobs device flow stalled: %d of %d done after %s", done, len(things), time.Since(t0).Round(time.Millisecond))
			}
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// Close disconnects the client.
func (f *Fleet) Close() { f.c.Disconnect(100) }
