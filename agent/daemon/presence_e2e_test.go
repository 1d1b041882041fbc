package daemon_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/shadowgate/shadowgate/agent/link"
	"github.com/shadowgate/shadowgate/agent/link/brokertest"
	"github.com/shadowgate/shadowgate/agent/shadow"
	"github.com/shadowgate/shadowgate/agent/shadowsvc"
	"github.com/shadowgate/shadowgate/store"
)

// newPresenceCloud is newCloud with the shadow service applying presence,
// as shadowsvc does by default.
func newPresenceCloud(t *testing.T) *cloud {
	t.Helper()
	c := &cloud{broker: brokertest.Start(t)}
	st, err := store.Open(filepath.Join(t.TempDir(), "cloud.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	c.svcLink, _ = link.New(link.Options{Broker: c.broker.URL(), ClientID: "cloud-shadowsvc", MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond})
	c.svc = shadowsvc.New(shadowsvc.Options{Root: root, Link: c.svcLink, Store: st, PresenceTopic: shadowsvc.DefaultPresenceTopic})
	runService(t, c.svc)
	runLink(t, c.svcLink)
	c.op, _ = link.New(link.Options{Broker: c.broker.URL(), ClientID: "operator", MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond})
	c.op.Handle(root+"+/shadow/+/+", c.collect)
	c.op.Handle("shadowgate/+/presence", c.collect)
	runLink(t, c.op)
	waitFor(t, "cloud connected", func() bool { return c.svcLink.Connected() && c.op.Connected() })
	return c
}

// presence is the shadow's connected and presence.session.
func presence(g *shadow.GetAccepted) (connected any, session uint64) {
	p, _ := g.State.Reported["presence"].(map[string]any)
	s, _ := strconv.ParseUint(fmt.Sprint(p["session"]), 10, 64)
	return g.State.Reported["connected"], s
}

func connectedIs(want bool, session uint64) func(g *shadow.GetAccepted) bool {
	return func(g *shadow.GetAccepted) bool {
		c, s := presence(g)
		return c == want && (session == 0 || s == session)
	}
}

var sessionLine = regexp.MustCompile(`mqtt session made.* session=(\d+)`)

// session is the MQTT session number the process logged.
func (p *gatewayProcess) session(t *testing.T) uint64 {
	t.Helper()
	var n uint64
	waitFor(t, "the session number in the log", func() bool {
		m := sessionLine.FindStringSubmatch(p.output())
		if m == nil {
			return false
		}
		n, _ = strconv.ParseUint(m[1], 10, 64)
		return true
	})
	return n
}

// kill -9 → false (the broker sees the socket close and publishes the
// will); restart → true with a greater session; SIGTERM → false at once
// (the gateway says so before its DISCONNECT); restart → true.
func TestPresenceKill9CleanStopRestart(t *testing.T) {
	c := newPresenceCloud(t)
	cfg, cfgPath := gatewayConfig(t, "gw-pres", c.broker.URL(), t.TempDir(), "cloud_wins")
	p := startProcess(t, cfgPath)
	s1 := p.session(t)
	c.waitShadow(t, "gw-pres", "", "connected", connectedIs(true, s1))

	p.kill9()
	start := time.Now()
	c.waitShadow(t, "gw-pres", "", "disconnected after kill -9", connectedIs(false, s1))
	t.Logf("kill -9 → connected:false in %s", time.Since(start).Round(time.Millisecond))

	p = startProcess(t, cfgPath)
	s2 := p.session(t)
	if s2 <= s1 {
		t.Fatalf("session %d after %d: must grow", s2, s1)
	}
	c.waitShadow(t, "gw-pres", "", "connected after restart", connectedIs(true, s2))

	p.cmd.Process.Signal(syscall.SIGTERM)
	start = time.Now()
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	stopped := time.Since(start)
	g := c.waitShadow(t, "gw-pres", "", "disconnected after a clean stop", connectedIs(false, s2))
	t.Logf("SIGTERM → exited in %s, connected:false %s after the signal", stopped.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	// The gateway said so itself: its offline is retained on the topic (a
	// clean DISCONNECT sends no will).
	if pl, err := shadowsvc.ParsePresence([]byte(c.lastPayload("shadowgate/gw-pres/presence"))); err != nil || pl.Connected || pl.Session != s2 {
		t.Fatalf("last presence message %q (%v)", c.lastPayload("shadowgate/gw-pres/presence"), err)
	}
	if st := c.broker.Log(); !regexp.MustCompile(`Client gw-pres disconnected\.`).MatchString(st) {
		t.Fatalf("the broker did not see a clean DISCONNECT:\n%s", st)
	}

	p = startProcess(t, cfgPath)
	s3 := p.session(t)
	g2 := c.waitShadow(t, "gw-pres", "", "connected after the next start", connectedIs(true, s3))
	if g2.Version <= g.Version {
		t.Fatalf("version %d after %d", g2.Version, g.Version)
	}
	// shadowctl shows it from the gateway's replica.
	want := regexp.MustCompile(`\(classic\)\s+\d+\s+yes since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(session ` + strconv.FormatUint(s3, 10) + `\)`)
	var out string
	defer func() {
		if t.Failed() {
			t.Logf("shadowctl shadows:\n%s", out)
		}
	}()
	waitFor(t, "shadowctl shadows shows the gateway connected", func() bool {
		r := shadowctl(t, "shadows", "--socket", cfg.API.Socket)
		out = r.stdout
		return r.code == 0 && want.MatchString(out)
	})
	if !regexp.MustCompile(`doors\s+\d+\s+-\s`).MatchString(out) {
		t.Fatalf("a named shadow has no presence:\n%s", out)
	}
}

// A gateway that hangs (SIGSTOP: its socket stays open, nothing is sent)
// is shown disconnected once the broker's keepalive runs out, 1.5 times
// the keepalive (5 s in the test config); when it runs again it
// reconnects and is shown connected.
func TestPresenceHungGatewayTimesOut(t *testing.T) {
	c := newPresenceCloud(t)
	_, cfgPath := gatewayConfig(t, "gw-hang", c.broker.URL(), t.TempDir(), "cloud_wins")
	p := startProcess(t, cfgPath)
	s := p.session(t)
	c.waitShadow(t, "gw-hang", "", "connected", connectedIs(true, s))

	p.cmd.Process.Signal(syscall.SIGSTOP)
	defer p.cmd.Process.Signal(syscall.SIGCONT)
	start := time.Now()
	c.waitShadow(t, "gw-hang", "", "disconnected by the keepalive", connectedIs(false, s))
	t.Logf("hung gateway → connected:false in %s (keepalive 5s: the bound is 5s × 1.5 + 1s)", time.Since(start).Round(time.Millisecond))

	p.cmd.Process.Signal(syscall.SIGCONT)
	c.waitShadow(t, "gw-hang", "", "connected again", connectedIs(true, s))
}

// 50 rapid kill -9 / restart cycles, each process killed at a random point
// of its start (before it connects, while it subscribes, after it
// reported): the last process is shown connected with its session, no
// update ever applied an older session after a newer one, and the
// documents the service published carry every version once, in order,
// ending at the version a GET returns.
func TestPresence50RapidKillRestart(t *testing.T) {
	c := newPresenceCloud(t)
	_, cfgPath := gatewayConfig(t, "gw-rapid", c.broker.URL(), t.TempDir(), "cloud_wins")
	budget := time.Now().Add(4 * time.Minute)
	var last *gatewayProcess
	for i := range 50 {
		if time.Now().After(budget) {
			t.Fatalf("50 cycles did not fit in the time budget (%d done)", i)
		}
		p := startProcess(t, cfgPath)
		time.Sleep(time.Duration(rand.N(400)) * time.Millisecond) // a random point of its start
		if i == 49 {
			last = p
			break
		}
		p.kill9()
	}
	s := last.session(t)
	g := c.waitShadow(t, "gw-rapid", "", "the last process connected", connectedIs(true, s))
	if r := g.State.Reported; r["porch_light"] == nil {
		t.Fatalf("the gateway's state is missing: %v", r)
	}
	// A GET that the service runs after everything before it.
	g = c.get(t, "gw-rapid", "")

	documents := shadow.Topic{Thing: "gw-rapid", Op: shadow.OpUpdate, Suffix: shadow.SuffixDocuments}.Build(root)
	type doc struct {
		State struct {
			Reported struct {
				Connected *bool `json:"connected"`
				Presence  *struct {
					Session uint64 `json:"session"`
				} `json:"presence"`
			} `json:"reported"`
		} `json:"state"`
		Version int64 `json:"version"`
	}
	var docs []struct{ Previous, Current doc }
	waitFor(t, "the documents up to the GET's version", func() bool {
		docs = nil
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, m := range c.msgs {
			if m.Topic != documents {
				continue
			}
			var d struct{ Previous, Current doc }
			if err := json.Unmarshal(m.Payload, &d); err != nil {
				t.Fatalf("documents: %v", err)
			}
			docs = append(docs, d)
		}
		return len(docs) > 0 && docs[len(docs)-1].Current.Version >= g.Version
	})
	var maxSession uint64
	var flips int
	for i, d := range docs {
		if d.Current.Version != int64(i+1) || (i > 0 && d.Previous.Version != docs[i-1].Current.Version) {
			t.Fatalf("documents %d: version %d after %d", i, d.Current.Version, d.Previous.Version)
		}
		cur, prev := d.Current.State.Reported, d.Previous.State.Reported
		if cur.Presence == nil || cur.Connected == nil {
			continue
		}
		if cur.Presence.Session < maxSession {
			t.Fatalf("version %d applied session %d after session %d", d.Current.Version, cur.Presence.Session, maxSession)
		}
		if prev.Connected == nil || *prev.Connected != *cur.Connected {
			flips++
		}
		maxSession = cur.Presence.Session
	}
	if last := docs[len(docs)-1]; last.Current.Version != g.Version || maxSession != s {
		t.Fatalf("last documents at version %d, GET at %d; last session applied %d, the process's %d", last.Current.Version, g.Version, maxSession, s)
	}
	t.Logf("50 cycles: %d shadow versions, connected changed %d times, last session %d", g.Version, flips, s)
}

// The broker restarts under a running gateway: once it and the service are
// back, the gateway is shown connected.
func TestPresenceBrokerRestartEndsConnected(t *testing.T) {
	c := newPresenceCloud(t)
	dir := t.TempDir()
	cfg, cfgPath := gatewayConfig(t, "gw-brk", c.broker.URL(), dir, "cloud_wins")
	p := startProcess(t, cfgPath)
	s := p.session(t)
	c.waitShadow(t, "gw-brk", "", "connected", connectedIs(true, s))
	before := c.get(t, "gw-brk", "")

	c.broker.Restart()
	waitFor(t, "the gateway and the service reconnected", func() bool {
		r := shadowctl(t, "status", "--json", "--socket", cfg.API.Socket)
		var st struct{ Connects int64 }
		return r.code == 0 && json.Unmarshal([]byte(r.stdout), &st) == nil && st.Connects >= 2 && c.svcLink.Stats().Connects >= 2
	})
	g := c.waitShadow(t, "gw-brk", "", "connected after the broker restart", connectedIs(true, s))
	t.Logf("versions %d → %d across the broker restart", before.Version, g.Version)
}

// A will of an older session delivered after the newer session's
// connected (crafted here: the old session's will published by hand) does
// not win, and moves no version.
func TestPresenceStaleWillIgnored(t *testing.T) {
	c := newPresenceCloud(t)
	_, cfgPath := gatewayConfig(t, "gw-stale", c.broker.URL(), t.TempDir(), "cloud_wins")
	p := startProcess(t, cfgPath)
	s := p.session(t)
	g := c.waitShadow(t, "gw-stale", "", "connected", func(g *shadow.GetAccepted) bool {
		return connectedIs(true, s)(g) && g.State.Reported["gate_motor"] != nil
	})
	// Let the gateway's reports settle: the version moves no more.
	waitFor(t, "reports settled", func() bool {
		g2 := c.get(t, "gw-stale", "")
		if g2 == nil || g2.Version != g.Version {
			g = g2
			return false
		}
		return true
	})
	stale := shadowsvc.Presence{Connected: false, Session: s - 1}.JSON()
	if err := c.op.Publish(context.Background(), "shadowgate/gw-stale/presence", true, stale); err != nil {
		t.Fatal(err)
	}
	after := c.get(t, "gw-stale", "") // run by the service after the stale will
	if connected, session := presence(after); connected != true || session != s || after.Version != g.Version {
		t.Fatalf("after a stale will: connected %v session %d version %d (was %d)", connected, session, after.Version, g.Version)
	}
	if st := c.svc.Stats(); st.Lost != 0 {
		t.Logf("service stats %+v", st)
	}
}

// The embedded shadow service stops with the daemon: on a clean stop the
// gateway's offline is in its store before the process exits.
func TestEmbeddedPresenceCleanStop(t *testing.T) {
	dir := t.TempDir()
	listen := freeAddr(t)
	cfgPath := filepath.Join(dir, "shadowgate.yaml")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf(embeddedYAML, listen, filepath.Join(dir, "state.db"), filepath.Join(dir, "api.sock"))), 0o600); err != nil {
		t.Fatal(err)
	}
	p := runGateway(t, cfgPath, filepath.Join(dir, "api.sock"))
	obs, _ := link.New(link.Options{Broker: "tcp://" + listen, ClientID: "obs", CleanSession: true, MinBackoff: 50 * time.Millisecond})
	got := make(chan *link.Message, 64)
	obs.Handle(root+"gw-reload/shadow/update/documents", func(_ context.Context, m *link.Message) { got <- m })
	runLink(t, obs)
	waitFor(t, "connected in the embedded shadow", func() bool {
		r := shadowctl(t, "shadows", "--json", "--socket", p.sock)
		return r.code == 0 && regexp.MustCompile(`"connected":\s*true`).MatchString(r.stdout)
	})
	p.stop(t)
	st, err := store.Open(filepath.Join(dir, "shadowsvc.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	doc, err := st.GetShadow(store.ShadowKey{Thing: "gw-reload"})
	if err != nil {
		t.Fatal(err)
	}
	var sh shadow.Shadow
	if err := json.Unmarshal(doc, &sh); err != nil {
		t.Fatal(err)
	}
	if sh.State.Reported["connected"] != false {
		t.Fatalf("after a clean stop the embedded shadow says connected %v: %v", sh.State.Reported["connected"], sh.State.Reported)
	}
}
