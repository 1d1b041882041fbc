package daemon_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shadowgate/shadowgate/agent/jobrun"
	"github.com/shadowgate/shadowgate/agent/link"
	"github.com/shadowgate/shadowgate/agent/link/brokertest"
)

// scriptedJobs answers a gateway's jobs requests as a script says: AWS IoT
// Core answers InternalError, RequestThrottled, InvalidStateTransition and
// ResourceNotFound when it will, and shadowsvc's jobs service only when its
// state says so; the script makes each code happen in a test. The answers
// have AWS's shapes (the jobs device MQTT API).
type scriptedJobs struct {
	t     *testing.T
	l     *link.Link
	thing string

	mu        sync.Mutex
	version   int64
	status    string
	handed    bool
	operation string
	script    []string // the answers to the next updates: "accept", "drop", or an error code
	// byStatus answers every update to a status, before the script: a
	// test of the final status's refusal must not depend on whether the
	// gateway sent an IN_PROGRESS first (a command done before it went
	// out replaces it).
	byStatus map[string]string
	getCode  string // the answer to gets: "" (the execution) or an error code
	requests []map[string]any
	stopping atomic.Bool // the test is over: its link is being stopped
}

func newScriptedJobs(t *testing.T, b *brokertest.Broker, thing string) *scriptedJobs {
	s := &scriptedJobs{t: t, thing: thing, version: 1, status: "QUEUED", operation: "MOTOR_1_ON"}
	s.l, _ = link.New(link.Options{Broker: b.URL(), ClientID: "scripted-jobs", MinBackoff: 50 * time.Millisecond})
	base := root + thing + "/jobs/"
	s.l.Handle(base+"start-next", s.startNext)
	s.l.Handle(base+"+/update", s.update)
	s.l.Handle(base+"+/get", s.get)
	runLink(t, s.l)
	// Cleanups run last first: this one before the link's stops it. A
	// reply the stop cuts off (a start-next the gateway sent as the test
	// ended) is no failure.
	t.Cleanup(func() { s.stopping.Store(true) })
	waitFor(t, "scripted jobs connected", s.l.Connected)
	return s
}

func (s *scriptedJobs) reply(topic string, v any) {
	b, _ := json.Marshal(v)
	if err := s.l.Publish(context.Background(), topic, false, b); err != nil && !s.stopping.Load() {
		s.t.Errorf("scripted reply: %v", err)
	}
}

func token(payload []byte) string {
	var v struct {
		ClientToken string `json:"clientToken"`
	}
	json.Unmarshal(payload, &v)
	return v.ClientToken
}

func (s *scriptedJobs) startNext(_ context.Context, m *link.Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	resp := map[string]any{"timestamp": time.Now().Unix(), "clientToken": token(m.Payload)}
	if !s.handed {
		s.handed, s.status, s.version = true, "IN_PROGRESS", 2
		resp["execution"] = map[string]any{"jobId": "scripted", "thingName": s.thing, "status": "IN_PROGRESS", "queuedAt": 1, "startedAt": 2,
			"lastUpdatedAt": 2, "versionNumber": 2, "executionNumber": 1, "jobDocument": map[string]any{"operation": s.operation}}
	}
	s.reply(m.Topic+"/accepted", resp)
}

func (s *scriptedJobs) update(_ context.Context, m *link.Message) {
	var r map[string]any
	json.Unmarshal(m.Payload, &r)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, r)
	answer := "accept"
	if a, ok := s.byStatus[fmt.Sprint(r["status"])]; ok {
		answer = a
	} else if len(s.script) > 0 {
		answer, s.script = s.script[0], s.script[1:]
	}
	now := time.Now().Unix()
	if ev, _ := r["expectedVersion"].(float64); int64(ev) != s.version && answer == "accept" {
		answer = "VersionMismatch" // as AWS: the state comes with it
		s.reply(m.Topic+"/rejected", map[string]any{"code": answer, "message": "version", "timestamp": now, "clientToken": r["clientToken"],
			"executionState": map[string]any{"status": s.status, "versionNumber": s.version}})
		return
	}
	switch answer {
	case "drop":
	case "accept":
		s.version++
		s.status = r["status"].(string)
		s.reply(m.Topic+"/accepted", map[string]any{"executionState": map[string]any{"status": s.status, "versionNumber": s.version},
			"timestamp": now, "clientToken": r["clientToken"]})
	case "InvalidStateTransition":
		s.status, s.version = "CANCELED", s.version+1
		s.reply(m.Topic+"/rejected", map[string]any{"code": answer, "message": "Job execution is CANCELED", "timestamp": now, "clientToken": r["clientToken"],
			"executionState": map[string]any{"status": s.status, "versionNumber": s.version}})
	default:
		s.reply(m.Topic+"/rejected", map[string]any{"code": answer, "message": "scripted " + answer, "timestamp": now, "clientToken": r["clientToken"]})
	}
}

func (s *scriptedJobs) get(_ context.Context, m *link.Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now().Unix()
	if s.getCode != "" {
		s.reply(m.Topic+"/rejected", map[string]any{"code": s.getCode, "message": "scripted " + s.getCode, "timestamp": now, "clientToken": token(m.Payload)})
		return
	}
	s.reply(m.Topic+"/accepted", map[string]any{"execution": map[string]any{"jobId": "scripted", "thingName": s.thing, "status": s.status,
		"versionNumber": s.version, "executionNumber": 1}, "timestamp": now, "clientToken": token(m.Payload)})
}

func (s *scriptedJobs) sent() []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]map[string]any(nil), s.requests...)
}

func (s *scriptedJobs) plan(answers ...string) {
	s.mu.Lock()
	s.script = append(s.script, answers...)
	s.mu.Unlock()
}

// answerStatus answers every update to status with answer.
func (s *scriptedJobs) answerStatus(status, answer string) {
	s.mu.Lock()
	if s.byStatus == nil {
		s.byStatus = map[string]string{}
	}
	s.byStatus[status] = answer
	s.mu.Unlock()
}

// sentWith counts the updates sent to status.
func (s *scriptedJobs) sentWith(status string) (n int) {
	for _, r := range s.sent() {
		if r["status"] == status {
			n++
		}
	}
	return n
}

func lastRun(t *testing.T, d interface {
	Runs(int) ([]*jobrun.Run, error)
}) *jobrun.Run {
	runs, _ := d.Runs(1)
	if len(runs) == 0 {
		return nil
	}
	return runs[0]
}

// InternalError, RequestThrottled and no answer are transient: the status
// stays in the outbox and goes again, with the same expectedVersion, until
// it is accepted.
func TestJobTransientRefusalsRetried(t *testing.T) {
	b := brokertest.Start(t)
	s := newScriptedJobs(t, b, "gw-tr")
	s.operation = "UNLOCK" // awaits approval: the IN_PROGRESS stands until the test approves
	s.plan("InternalError", "RequestThrottled", "accept")
	cfg, _ := gatewayConfig(t, "gw-tr", b.URL(), t.TempDir(), "cloud_wins")
	d := gateway(t, cfg)
	tid := jobrun.TID("scripted", 1)
	waitFor(t, "IN_PROGRESS accepted", func() bool {
		r := lastRun(t, d.Jobs)
		return r != nil && r.Status == jobrun.StatusInProgress && !r.Unsent && r.Version == 3
	})
	s.plan("drop", "InternalError", "accept", "accept")
	if err := d.Commands.Approve(tid); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "SUCCEEDED accepted", func() bool {
		r := lastRun(t, d.Jobs)
		return r != nil && r.Status == jobrun.StatusSucceeded && !r.Unsent
	})
	var got []string
	for _, r := range s.sent() {
		got = append(got, fmt.Sprintf("%v@%v", r["status"], r["expectedVersion"]))
	}
	if len(got) < 6 || strings.Join(got[:3], " ") != "IN_PROGRESS@2 IN_PROGRESS@2 IN_PROGRESS@2" || got[len(got)-1][:10] != "SUCCEEDED@" {
		t.Fatalf("requests %v", got)
	}
	st := d.Jobs.Stats()
	if st.Retried < 3 || st.Resent < 1 || st.Refused != 0 || st.Succeeded != 1 {
		t.Fatalf("stats %+v; requests %v", st, got)
	}
	if n := len(history(t, d, "front_door")); n != 1 {
		t.Fatalf("door changed %d times", n)
	}
}

// InvalidStateTransition (the cloud canceled it) is permanent: recorded and
// dropped, never sent again.
func TestJobPermanentRefusalDropped(t *testing.T) {
	b := brokertest.Start(t)
	s := newScriptedJobs(t, b, "gw-perm")
	s.answerStatus("SUCCEEDED", "InvalidStateTransition")
	cfg, _ := gatewayConfig(t, "gw-perm", b.URL(), t.TempDir(), "cloud_wins")
	d := gateway(t, cfg)
	waitFor(t, "dropped", func() bool {
		r := lastRun(t, d.Jobs)
		st := d.Jobs.Stats() // counted once the record is durable
		return r != nil && r.Status == jobrun.StatusSucceeded && !r.Unsent && r.Cloud == "CANCELED" && st.Refused == 1 && st.Current == ""
	})
	r := lastRun(t, d.Jobs)
	var refused bool
	for _, e := range r.Events {
		refused = refused || strings.Contains(e.What, "refused SUCCEEDED for good: InvalidStateTransition")
	}
	if !refused {
		t.Fatalf("events %+v", r.Events)
	}
	if st := d.Jobs.Stats(); st.Refused != 1 {
		t.Fatalf("stats %+v", st)
	}
	n := len(s.sent())
	// Nothing more goes out for it: the next start-next, on a reconnect,
	// finds nothing.
	d.Link.Stats()
	// One SUCCEEDED, after at most one IN_PROGRESS (none when the command
	// finished before it went out).
	if got := len(s.sent()); got != n || s.sentWith("SUCCEEDED") != 1 || n-s.sentWith("IN_PROGRESS") != 1 || n > 2 {
		t.Fatalf("%d requests, want one SUCCEEDED after at most one IN_PROGRESS: %v", got, s.sent())
	}
	if d.Store.OutboxStats().Items != 0 {
		t.Fatalf("outbox %+v", d.Store.OutboxStats())
	}
}

// ResourceNotFound is confirmed by a re-read, then permanent.
func TestJobGoneExecutionDropped(t *testing.T) {
	b := brokertest.Start(t)
	s := newScriptedJobs(t, b, "gw-gone")
	s.answerStatus("SUCCEEDED", "ResourceNotFound")
	s.mu.Lock()
	s.getCode = "ResourceNotFound"
	s.mu.Unlock()
	cfg, _ := gatewayConfig(t, "gw-gone", b.URL(), t.TempDir(), "cloud_wins")
	d := gateway(t, cfg)
	waitFor(t, "dropped", func() bool {
		r := lastRun(t, d.Jobs)
		st := d.Jobs.Stats() // counted once the record is durable
		return r != nil && r.Status == jobrun.StatusSucceeded && !r.Unsent && r.Cloud == "NOT_FOUND" && st.Refused == 1 && st.Current == ""
	})
	if st := d.Jobs.Stats(); st.Refused != 1 {
		t.Fatalf("stats %+v", st)
	}
}
