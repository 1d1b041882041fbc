package sync_test

import (
	"context"
	"fmt"
	"path/filepath"
	gosync "sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/shadowgate/shadowgate/agent/actuate"
	"github.com/shadowgate/shadowgate/agent/config"
	"github.com/shadowgate/shadowgate/agent/link"
	"github.com/shadowgate/shadowgate/agent/link/brokertest"
	"github.com/shadowgate/shadowgate/agent/sync"
	"github.com/shadowgate/shadowgate/drivers"
	"github.com/shadowgate/shadowgate/drivers/sim"
	"github.com/shadowgate/shadowgate/store"
)

// countedActuator is a simulated actuator that counts its reads.
type countedActuator struct {
	*sim.Actuator
	reads atomic.Int64
}

func (a *countedActuator) Read(ctx context.Context) (drivers.State, error) {
	a.reads.Add(1)
	return a.Actuator.Read(ctx)
}

func newCounted() *countedActuator {
	return &countedActuator{Actuator: sim.New(drivers.Schema{"on": {Kind: drivers.Bool}}, drivers.State{"on": false}, 0, 0)}
}

// TestReconcileLeavesPendingKeysUnread: a key with a local change waiting
// for the cloud is left alone by reconciling, so its actuator is not read
// (the read would queue behind the commands on the actuator's worker).
// The cloud here is a client on a real mosquitto that never answers, so
// the lamp's local change stays waiting while deltas for the fan arrive.
//
// Reconciling passes of one shadow run one after another. The pass that
// applies the fan's second delta began after the first delta was applied,
// which came after the lamp's change was waiting: every read of the lamp
// after that first apply would be such a pass reading a waiting key.
func TestReconcileLeavesPendingKeysUnread(t *testing.T) {
	broker := brokertest.StartStock(t)
	st, err := store.Open(filepath.Join(t.TempDir(), "store.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	lamp, fan := newCounted(), newCounted()
	m := actuate.New(map[string]drivers.Actuator{"lamp": lamp, "fan": fan}, actuate.Options{Store: st})
	t.Cleanup(func() { m.Close() })
	l, err := link.New(link.Options{Broker: broker.URL(), ClientID: "gw", MinBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	s, err := sync.New(sync.Options{
		Thing: "gw", Root: "things/", Conflict: config.CloudWins, Store: st, Manager: m, Link: l,
		Actuators: map[string]*config.Actuator{"lamp": {Key: "lamp", Name: "lamp"}, "fan": {Key: "fan", Name: "fan"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg gosync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); s.Run(ctx) }()
	go func() { defer wg.Done(); l.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })

	cloud := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(broker.URL()).SetClientID("cloud"))
	if tok := cloud.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("cloud connect: %v", tok.Error())
	}
	t.Cleanup(func() { cloud.Disconnect(0) })
	until(t, "gateway connected", l.Connected)

	if _, err := m.Apply(ctx, actuate.Change{Actuator: "lamp", State: drivers.State{"on": true}, Source: store.SourceLocal}); err != nil {
		t.Fatal(err)
	}
	delta := func(version int, on bool) {
		t.Helper()
		payload := fmt.Sprintf(`{"version":%d,"timestamp":%d,"state":{"fan":{"on":%t}}}`, version, time.Now().Unix(), on)
		if tok := cloud.Publish("things/gw/shadow/update/delta", 1, false, payload); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish delta: %v", tok.Error())
		}
	}
	fanOn := func(want bool) func() bool {
		return func() bool { st, _ := fan.Actuator.Read(ctx); return st["on"] == want }
	}
	delta(10, true)
	until(t, "the fan follows the first delta", fanOn(true))
	lampReads, fanReads := lamp.reads.Load(), fan.reads.Load()
	delta(11, false)
	until(t, "the fan follows the second delta", fanOn(false))
	if n := fan.reads.Load() - fanReads; n == 0 {
		t.Fatal("the fan was applied without being read: the test no longer sees a reconciling pass")
	}
	if n := lamp.reads.Load() - lampReads; n != 0 {
		t.Fatalf("the lamp, whose local change waits for the cloud, was read %d times by reconciling", n)
	}
}

// until waits for cond, failing after 10 s.
func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
