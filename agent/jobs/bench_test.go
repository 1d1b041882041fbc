package jobs_test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/shadowgate/shadowgate/agent/jobs"
	"github.com/shadowgate/shadowgate/agent/jobs/jobstest"
	"github.com/shadowgate/shadowgate/agent/link"
	"github.com/shadowgate/shadowgate/agent/link/brokertest"
	"github.com/shadowgate/shadowgate/store"
)

// BenchmarkDeviceFlow measures executions per second through the whole
// device flow (start-next → IN_PROGRESS → SUCCEEDED) for b.N things at
// at once, played by one paho client (jobstest.Fleet), on mosquitto and a
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
	names := jobstest.Things("b", n)
	fleet, err := jobstest.NewFleet(broker.URL(), "$aws/things/", "bench-devices")
	if err != nil {
		b.Fatal(err)
	}
	defer fleet.Close()
	ctx, cancelRelease := context.WithTimeout(context.Background(), time.Minute)
	defer cancelRelease()
	if err := jobstest.Release(ctx, svc, "bench", `{"op":"x"}`, names); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	took, err := fleet.Run(context.Background(), names, n, 60*time.Second)
	if err != nil {
		b.Fatalf("%v; stats %+v", err, svc.Stats())
	}
	b.ReportMetric(float64(n)/took.Seconds(), "execs/s")
}
