package daemon_test

import (
	"bufio"
	"context"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shadowgate/shadowgate/agent/actuate"
	"github.com/shadowgate/shadowgate/agent/shadow"
	"github.com/shadowgate/shadowgate/agent/shadowsvc"
	"github.com/shadowgate/shadowgate/drivers"
	"github.com/shadowgate/shadowgate/store"
)

func TestDesiredAppliedAndReported(t *testing.T) {
	c := newCloud(t)
	cfg, _ := gatewayConfig(t, "gw-e2e", c.broker.URL(), t.TempDir(), "cloud_wins")
	d := gateway(t, cfg)

	// GET 404 → the gateway creates its shadows with its actuators' state.
	g := c.waitShadow(t, "gw-e2e", "", "shadow created with current state", func(g *shadow.GetAccepted) bool {
		return reported(g, "porch_light", "on") == false && g.State.Reported["connected"] == true
	})
	if reported(g, "gate_motor", "speed") == nil {
		t.Fatalf("creation missed gate_motor: %v", g.State.Reported)
	}
	waitFor(t, "retained online presence", func() bool {
		p, err := shadowsvc.ParsePresence([]byte(c.lastPayload("shadowgate/gw-e2e/presence")))
		return err == nil && p.Connected && p.Session > 0
	})

	c.desire(t, "gw-e2e", "", `{"porch_light":{"on":true},"gate_motor":{"running":true,"speed":40}}`)
	waitFor(t, "desired applied on the sim actuators", func() bool {
		return read(t, d, "porch_light")["on"] == true && drivers.Equal(read(t, d, "gate_motor"), drivers.State{"running": true, "speed": 40})
	})
	c.waitShadow(t, "gw-e2e", "", "reported == desired, no delta", func(g *shadow.GetAccepted) bool {
		return reported(g, "porch_light", "on") == true && num(reported(g, "gate_motor", "speed")) == "40" && g.State.Delta == nil
	})
	// History holds the change with its source and shadow version.
	var h []*store.Change
	d.Store.View(func(tx *store.Tx) (err error) { h, err = tx.History("gate_motor", 5); return err })
	if len(h) == 0 || h[0].Source != store.SourceDelta || h[0].ShadowVersion == 0 {
		t.Fatalf("history %+v", h)
	}
}

func TestNamedShadow(t *testing.T) {
	c := newCloud(t)
	cfg, _ := gatewayConfig(t, "gw-named", c.broker.URL(), t.TempDir(), "cloud_wins")
	d := gateway(t, cfg)
	c.waitShadow(t, "gw-named", "doors", "named shadow created", func(g *shadow.GetAccepted) bool {
		return reported(g, "front_door", "locked") == true
	})
	c.desire(t, "gw-named", "doors", `{"front_door":{"locked":false}}`)
	waitFor(t, "door unlocked", func() bool { return read(t, d, "front_door")["locked"] == false })
	c.waitShadow(t, "gw-named", "doors", "named shadow reported", func(g *shadow.GetAccepted) bool {
		return reported(g, "front_door", "locked") == false && g.State.Delta == nil
	})
	// The classic shadow does not carry the door.
	if g := c.get(t, "gw-named", ""); g == nil || g.State.Reported["front_door"] != nil {
		t.Fatalf("classic shadow: %+v", g)
	}
}

func TestStaleDeltaIgnored(t *testing.T) {
	c := newCloud(t)
	cfg, _ := gatewayConfig(t, "gw-stale", c.broker.URL(), t.TempDir(), "cloud_wins")
	d := gateway(t, cfg)
	c.waitShadow(t, "gw-stale", "", "created", func(g *shadow.GetAccepted) bool { return g.State.Reported["porch_light"] != nil })
	c.desire(t, "gw-stale", "", `{"porch_light":{"on":true}}`)
	waitFor(t, "light on", func() bool { return read(t, d, "porch_light")["on"] == true })
	// A delta from long ago (a retransmission, out of order) must not undo it.
	c.publish(t, root+"gw-stale/shadow/update/delta", `{"version":1,"timestamp":1,"state":{"porch_light":{"on":false}},"metadata":{}}`)
	waitFor(t, "stale delta counted", func() bool { return d.Sync.Stats().StaleDeltas >= 1 })
	time.Sleep(200 * time.Millisecond)
	if read(t, d, "porch_light")["on"] != true {
		t.Fatal("a stale delta was applied")
	}
}

func TestReportsMadeOfflineArriveLatestWins(t *testing.T) {
	c := newCloud(t)
	cfg, _ := gatewayConfig(t, "gw-offline", c.broker.URL(), t.TempDir(), "cloud_wins")
	d := gateway(t, cfg)
	c.waitShadow(t, "gw-offline", "", "created", func(g *shadow.GetAccepted) bool { return g.State.Reported["gate_motor"] != nil })

	c.broker.Stop()
	waitFor(t, "link down", func() bool { return !d.Link.Connected() })
	ctx := context.Background()
	for _, speed := range []int{10, 20, 30, 55} {
		if _, err := d.Manager.Apply(ctx, actuate.Change{Actuator: "gate_motor", State: drivers.State{"speed": speed}, Source: store.SourceCommand}); err != nil {
			t.Fatal(err)
		}
	}
	d.Manager.Apply(ctx, actuate.Change{Actuator: "porch_light", State: drivers.State{"on": true}, Source: store.SourceCommand})
	if st := d.Store.OutboxStats(); st.Items != 2 {
		t.Fatalf("offline reports should be coalesced per key into 2 items, got %+v", st)
	}
	c.broker.Restart()
	c.waitShadow(t, "gw-offline", "", "offline reports delivered, latest value", func(g *shadow.GetAccepted) bool {
		return num(reported(g, "gate_motor", "speed")) == "55" && reported(g, "porch_light", "on") == true
	})
	waitFor(t, "outbox drained", func() bool { return d.Store.OutboxStats().Items == 0 })
}

func TestMalformedPayloadsOnEveryTopic(t *testing.T) {
	c := newCloud(t)
	cfg, _ := gatewayConfig(t, "gw-junk", c.broker.URL(), t.TempDir(), "cloud_wins")
	d := gateway(t, cfg)
	c.waitShadow(t, "gw-junk", "", "created", func(g *shadow.GetAccepted) bool { return g.State.Reported["porch_light"] != nil })
	junk := []string{"", "{", "null", "[]", `{"version":"x"}`, `{"version":5,"state":"on"}`, "\xff\xfe", strings.Repeat("[", 5000)}
	for _, base := range []string{root + "gw-junk/shadow/", root + "gw-junk/shadow/name/doors/"} {
		for _, sfx := range []string{"update/delta", "update/accepted", "update/rejected", "get/accepted", "get/rejected"} {
			for _, p := range junk {
				c.publish(t, base+sfx, p)
			}
		}
	}
	waitFor(t, "malformed messages counted", func() bool { return d.Sync.Stats().Malformed >= 20 })
	// Still working.
	c.desire(t, "gw-junk", "", `{"porch_light":{"on":true}}`)
	waitFor(t, "still applying", func() bool { return read(t, d, "porch_light")["on"] == true })
	// A desired value of the wrong type is refused, not applied, not fatal.
	c.desire(t, "gw-junk", "", `{"gate_motor":{"speed":"fast"}}`)
	waitFor(t, "refusal counted", func() bool { return d.Sync.Stats().ApplyFailures >= 1 })
	c.desire(t, "gw-junk", "", `{"gate_motor":{"speed":12}}`)
	waitFor(t, "a good desired after a bad one", func() bool { return num(read(t, d, "gate_motor")["speed"]) == "12" })
}

// gatewayProcess runs the real shadowgated binary.
type gatewayProcess struct {
	cmd *exec.Cmd
	mu  sync.Mutex
	log strings.Builder
}

func (p *gatewayProcess) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

func startProcess(t *testing.T, cfgPath string) *gatewayProcess {
	t.Helper()
	cmd := exec.Command(gatewayBin, "--config", cfgPath)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, _ := cmd.StderrPipe()
	p := &gatewayProcess{cmd: cmd}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1024)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	go func() {
		for l := range lines {
			p.mu.Lock()
			p.log.WriteString(l + "\n")
			p.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("shadowgated (pid %d) output:\n%s", cmd.Process.Pid, p.output())
		}
	})
	return p
}

func (p *gatewayProcess) kill9() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	p.cmd.Wait()
}

func TestKill9AndBrokerRestartConverge(t *testing.T) {
	c := newCloud(t)
	dir := t.TempDir()
	_, cfgPath := gatewayConfig(t, "gw-kill", c.broker.URL(), dir, "cloud_wins")
	p := startProcess(t, cfgPath)
	c.waitShadow(t, "gw-kill", "", "created by the process", func(g *shadow.GetAccepted) bool { return g.State.Reported["porch_light"] != nil })
	c.desire(t, "gw-kill", "", `{"gate_motor":{"running":true,"speed":25}}`)
	c.waitShadow(t, "gw-kill", "", "first desired reported", func(g *shadow.GetAccepted) bool {
		return num(reported(g, "gate_motor", "speed")) == "25"
	})

	p.kill9()
	// The cloud changes its mind while the gateway is dead, and the broker
	// restarts too.
	c.desire(t, "gw-kill", "", `{"gate_motor":{"speed":70},"porch_light":{"on":true}}`)
	c.broker.Restart()
	waitFor(t, "cloud reconnected", c.op.Connected)

	startProcess(t, cfgPath)
	c.waitShadow(t, "gw-kill", "", "converged after restart", func(g *shadow.GetAccepted) bool {
		return num(reported(g, "gate_motor", "speed")) == "70" && reported(g, "gate_motor", "running") == true &&
			reported(g, "porch_light", "on") == true && g.State.Delta == nil
	})
}
