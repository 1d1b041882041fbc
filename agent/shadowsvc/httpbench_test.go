package shadowsvc_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	gosync "sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iotdataplane"

	"github.com/shadowgate/shadowgate/agent/awsapi"
	"github.com/shadowgate/shadowgate/agent/link"
	"github.com/shadowgate/shadowgate/agent/shadow"
)

// mqttRequester sends shadow requests over MQTT and waits for the answer
// that carries its clientToken.
type mqttRequester struct {
	l       *link.Link
	mu      gosync.Mutex
	waiting map[string]chan struct{}
}

func newMQTTRequester(b testing.TB, e *httpEnv) *mqttRequester {
	r := &mqttRequester{waiting: map[string]chan struct{}{}}
	r.l, _ = link.New(link.Options{Broker: e.broker.URL(), ClientID: "bench-mqtt", CleanSession: true, MinBackoff: 50 * time.Millisecond})
	r.l.Handle("$aws/things/+/shadow/+/accepted", func(_ context.Context, m *link.Message) {
		h, err := shadow.ParseAccepted(m.Payload)
		if err != nil {
			return
		}
		r.mu.Lock()
		if ch, ok := r.waiting[h.ClientToken]; ok {
			delete(r.waiting, h.ClientToken)
			close(ch)
		}
		r.mu.Unlock()
	})
	run(b, r.l)
	for !r.l.Connected() {
		time.Sleep(5 * time.Millisecond)
	}
	return r
}

func (r *mqttRequester) do(ctx context.Context, t shadow.Topic, token, payload string) error {
	ch := make(chan struct{})
	r.mu.Lock()
	r.waiting[token] = ch
	r.mu.Unlock()
	if err := r.l.Publish(ctx, t.Build("$aws/things/"), false, []byte(payload)); err != nil {
		return err
	}
	select {
	case <-ch:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("no answer to %s", token)
	}
}

// measure runs n operations on workers goroutines and returns the
// latencies and the operations per second.
func measure(b *testing.B, n, workers int, op func(i int) error) (lat []time.Duration, perSec float64) {
	var mu gosync.Mutex
	var wg gosync.WaitGroup
	next := make(chan int)
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				t0 := time.Now()
				if err := op(i); err != nil {
					b.Error(err)
				}
				d := time.Since(t0)
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	return lat, float64(n) / time.Since(start).Seconds()
}

func pct(l []time.Duration, p float64) time.Duration {
	s := slices.Clone(l)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// BenchmarkHTTPvsMQTT: GetThingShadow and UpdateThingShadow over HTTP (the
// Go SDK, SigV4, loopback) beside the same operations over MQTT (QoS 1
// through mosquitto) on one shadow service in the same run, one client at a
// time and eight at once. Metrics: operations a second and p50/p99.
func BenchmarkHTTPvsMQTT(b *testing.B) {
	e := newHTTPEnv(b, awsapi.Options{Rate: -1})
	api := e.client(b, "default")
	mq := newMQTTRequester(b, e)
	ctx := context.Background()
	seed := &iotdataplane.UpdateThingShadowInput{ThingName: aws.String("bench"), Payload: []byte(`{"state":{"reported":{"n":0}}}`)}
	if _, err := api.UpdateThingShadow(ctx, seed); err != nil {
		b.Fatal(err)
	}
	ops := map[string]func(i int) error{
		"http/get": func(int) error {
			_, err := api.GetThingShadow(ctx, &iotdataplane.GetThingShadowInput{ThingName: aws.String("bench")})
			return err
		},
		"http/update": func(i int) error {
			_, err := api.UpdateThingShadow(ctx, &iotdataplane.UpdateThingShadowInput{ThingName: aws.String("bench"),
				Payload: fmt.Appendf(nil, `{"state":{"reported":{"n":%d}}}`, i)})
			return err
		},
		"mqtt/get": func(i int) error {
			tok := fmt.Sprintf("g%d-%d", time.Now().UnixNano(), i)
			return mq.do(ctx, shadow.Topic{Thing: "bench", Op: shadow.OpGet}, tok, `{"clientToken":"`+tok+`"}`)
		},
		"mqtt/update": func(i int) error {
			tok := fmt.Sprintf("u%d-%d", time.Now().UnixNano(), i)
			return mq.do(ctx, shadow.Topic{Thing: "bench", Op: shadow.OpUpdate}, tok, fmt.Sprintf(`{"state":{"reported":{"n":%d}},"clientToken":"%s"}`, i, tok))
		},
	}
	for _, name := range []string{"http/get", "mqtt/get", "http/update", "mqtt/update"} {
		for _, workers := range []int{1, 8} {
			b.Run(fmt.Sprintf("%s/clients=%d", strings.ReplaceAll(name, "/", "-"), workers), func(b *testing.B) {
				n := max(b.N, 200)
				lat, perSec := measure(b, n, workers, ops[name])
				b.ReportMetric(perSec, "ops/s")
				b.ReportMetric(float64(pct(lat, 0.50).Microseconds()), "p50-µs")
				b.ReportMetric(float64(pct(lat, 0.99).Microseconds()), "p99-µs")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}
