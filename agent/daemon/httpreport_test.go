package daemon_test

import (
	"context"
	"fmt"
	gosync "sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iotdataplane"

	"github.com/shadowgate/shadowgate/agent/link"
	"github.com/shadowgate/shadowgate/agent/shadow"
)

// httpOp is one operation's figures over one door.
type httpOp struct {
	perSec   float64
	p50, p99 time.Duration
}

// measureHTTPvsMQTT times n GetThingShadow and n UpdateThingShadow (reported
// only) over HTTP, with the Go SDK signing each request, and the same
// requests over MQTT QoS 1 through mosquitto, one at a time, against one
// shadow service in the same run.
func measureHTTPvsMQTT(t *testing.T, n int) map[string]httpOp {
	c := newCloud(t)
	api := c.httpAPI(t)
	ctx := context.Background()
	var mu gosync.Mutex
	waiting := map[string]chan struct{}{}
	c.onMessage = func(m *link.Message) {
		h, err := shadow.ParseAccepted(m.Payload)
		if err != nil {
			return
		}
		mu.Lock()
		if ch, ok := waiting[h.ClientToken]; ok {
			delete(waiting, h.ClientToken)
			close(ch)
		}
		mu.Unlock()
	}
	mqtt := func(op shadow.Op, tok, payload string) {
		ch := make(chan struct{})
		mu.Lock()
		waiting[tok] = ch
		mu.Unlock()
		if err := c.op.Publish(ctx, shadow.Topic{Thing: "bench-http", Op: op}.Build(root), false, []byte(payload)); err != nil {
			t.Fatal(err)
		}
		select {
		case <-ch:
		case <-time.After(20 * time.Second):
			t.Fatalf("no MQTT answer to %s", tok)
		}
	}
	if _, err := api.UpdateThingShadow(ctx, &iotdataplane.UpdateThingShadowInput{ThingName: aws.String("bench-http"), Payload: []byte(`{"state":{"reported":{"n":0}}}`)}); err != nil {
		t.Fatal(err)
	}
	ops := map[string]func(i int){
		"http get": func(int) {
			if _, err := api.GetThingShadow(ctx, &iotdataplane.GetThingShadowInput{ThingName: aws.String("bench-http")}); err != nil {
				t.Fatal(err)
			}
		},
		"http update": func(i int) {
			if _, err := api.UpdateThingShadow(ctx, &iotdataplane.UpdateThingShadowInput{ThingName: aws.String("bench-http"), Payload: fmt.Appendf(nil, `{"state":{"reported":{"n":%d}}}`, i)}); err != nil {
				t.Fatal(err)
			}
		},
		"mqtt get": func(i int) {
			tok := fmt.Sprintf("hg%d", i)
			mqtt(shadow.OpGet, tok, `{"clientToken":"`+tok+`"}`)
		},
		"mqtt update": func(i int) {
			tok := fmt.Sprintf("hu%d", i)
			mqtt(shadow.OpUpdate, tok, fmt.Sprintf(`{"state":{"reported":{"n":%d}},"clientToken":"%s"}`, i, tok))
		},
	}
	out := map[string]httpOp{}
	for _, name := range []string{"http get", "mqtt get", "http update", "mqtt update"} {
		var lat latencies
		start := time.Now()
		for i := 0; i < n; i++ {
			t0 := time.Now()
			ops[name](i)
			lat = append(lat, time.Since(t0))
		}
		out[name] = httpOp{perSec: float64(n) / time.Since(start).Seconds(), p50: lat.pct(0.5), p99: lat.pct(0.99)}
	}
	return out
}

// httpRows are the report's rows for the HTTP API beside MQTT.
func httpRows(t *testing.T, n int, add func(name, measured, target string, ok bool)) {
	r := measureHTTPvsMQTT(t, n)
	for _, op := range []struct{ http, mqtt, name string }{{"http get", "mqtt get", "GetThingShadow"}, {"http update", "mqtt update", "UpdateThingShadow"}} {
		h, m := r[op.http], r[op.mqtt]
		add(fmt.Sprintf("HTTP %s (Go SDK, SigV4) per second, one client: p50 / p99 (÷ the same over MQTT in this run)", op.name),
			fmt.Sprintf("%.0f/s: %.2f ms / %.2f ms (%.2f×; MQTT %.0f/s: %.2f ms / %.2f ms)", h.perSec, ms(h.p50), ms(h.p99), h.perSec/m.perSec, m.perSec, ms(m.p50), ms(m.p99)),
			"informative", true)
	}
}
