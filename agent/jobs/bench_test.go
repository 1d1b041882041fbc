package jobs_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/shadowgate/shadowgate/agent/jobs"
	"github.com/shadowgate/shadowgate/agent/link"
	"github.com/shadowgate/shadowgate/agent/link/brokertest"
	"github.com/shadowgate/shadowgate/store"
)

// BenchmarkDeviceFlow measures executions per second through the whole
// device flow (start-next → IN_PROGRESS → SUCCEEDED) for b.N things at
// once, each a paho client of its own thing topics, on mosquitto and a
// real bbolt file. Report: execs/s.
func BenchmarkDeviceFlow(b *testing.B) {
	broker := brokertest.Start(b)
	st, err := store.Open(filepath.Join(b.TempDir(), "svc.db"), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	l, _ := link.New(link.Options{Broker: broker.URL(), ClientID: "jobsvc-bench"})
	svc := jobs.New(jobs.Options{Root: "$aws/things/", Link: l, Store: st})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); svc.Run(ctx) }()
	go func() { defer wg.Done(); l.Run(ctx) }()
	defer func() { cancel(); wg.Wait() }()
	for !l.Connected() {
		time.Sleep(10 * time.Millisecond)
	}
	n := b.N
	var arns []string
	for i := range n {
		arns = append(arns, thingArn(fmt.Sprintf("b%d", i)))
	}
	// One client plays all the things (as a gateway would for its
	// devices), with one subscription over every thing's answers.
	done := make(chan string, n)
	opts := mqtt.NewClientOptions().AddBroker(broker.URL()).SetClientID("bench-devices").SetCleanSession(true)
	c := mqtt.NewClient(opts)
	if tok := c.Connect(); tok.Wait() && tok.Error() != nil {
		b.Fatal(tok.Error())
	}
	defer c.Disconnect(100)
	c.Subscribe("$aws/things/+/jobs/start-next/accepted", 1, func(_ mqtt.Client, m mqtt.Message) {
		var v struct {
			Execution *struct {
				JobID         string `json:"jobId"`
				ThingName     string `json:"thingName"`
				VersionNumber int64  `json:"versionNumber"`
			} `json:"execution"`
		}
		json.Unmarshal(m.Payload(), &v)
		if v.Execution != nil {
			p, _ := json.Marshal(map[string]any{"status": "SUCCEEDED", "expectedVersion": v.Execution.VersionNumber})
			c.Publish("$aws/things/"+v.Execution.ThingName+"/jobs/"+v.Execution.JobID+"/update", 1, false, p)
		}
	}).Wait()
	c.Subscribe("$aws/things/+/jobs/+/update/accepted", 1, func(_ mqtt.Client, m mqtt.Message) { done <- m.Topic() }).Wait()
	if _, err := svc.CreateJob(context.Background(), &jobs.CreateJobRequest{JobID: "bench", Targets: arns, Document: `{"op":"x"}`}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	t0 := time.Now()
	for i := range n {
		c.Publish(fmt.Sprintf("$aws/things/b%d/jobs/start-next", i), 1, false, []byte(`{}`))
	}
	for range n {
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			b.Fatalf("stalled; stats %+v", svc.Stats())
		}
	}
	b.ReportMetric(float64(n)/time.Since(t0).Seconds(), "execs/s")
}
