package daemon_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/shadowgate/shadowgate/agent/daemon"
	"github.com/shadowgate/shadowgate/agent/jobs"
)

const configUpdateYAML = `
jobs:
  config_update: {enabled: true, health_deadline: 5s}
`

// configGateway writes the test gateway's file with CONFIG_UPDATE on and
// returns it with its path.
func configGateway(t *testing.T, thing, brokerURL, dir string) (string, []byte) {
	t.Helper()
	y := fmt.Sprintf(gatewayYAML, thing, brokerURL, "cloud_wins", filepath.Join(dir, "state.db"), filepath.Join(dir, "api.sock")) + configUpdateYAML
	path := filepath.Join(dir, "shadowgate.yaml")
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, []byte(y)
}

func hexSHA(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func configDoc(newYAML string, replaces []byte) string {
	b, _ := json.Marshal(map[string]any{"operation": "CONFIG_UPDATE", "args": map[string]string{"config": newYAML, "sha256": hexSHA(replaces)}})
	return string(b)
}

func fileIs(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatalf("%s:\n%s\nwant:\n%s", path, got, want)
	}
}

// CONFIG_UPDATE: a good file is applied (the previous kept), a bad one is
// REJECTED with every problem and its line, one made for another file
// FAILS without touching it, and one that does not come up healthy is
// rolled back by the gateway itself and FAILED.
func TestJobConfigUpdate(t *testing.T) {
	c := newJobsCloud(t)
	dir := t.TempDir()
	path, orig := configGateway(t, "gw-conf", c.broker.URL(), dir)
	cfg, err := daemon.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	d := gateway(t, cfg)
	waitFor(t, "link up", d.Link.Connected)

	// Good: a new command type.
	good := string(orig) + "# a new command type below\n"
	good = strings.Replace(good, "    MOTOR_1_ON: {actuator: gate_motor, set: {running: true}}\n",
		"    MOTOR_1_ON: {actuator: gate_motor, set: {running: true}}\n    MOTOR_1_OFF: {actuator: gate_motor, set: {running: false}}\n", 1)
	c.createJob(t, "conf-good", configDoc(good, orig), "gw-conf")
	e := c.waitExecution(t, "conf-good", "gw-conf", jobs.Succeeded)
	if !strings.Contains(details(e)["result"], "command types") {
		t.Fatalf("details %v", details(e))
	}
	fileIs(t, path, []byte(good))
	fileIs(t, path+".previous", orig)
	if _, err := os.Stat(path + ".update"); !os.IsNotExist(err) {
		t.Fatalf("marker left: %v", err)
	}
	c.send(t, "gw-conf", req("MOTOR_1_OFF", "conf-off-1", ""))
	c.waitAck(t, "gw-conf", "conf-off-1", "SUCCESS")

	// Bad: every problem with its line; nothing changed.
	bad := strings.Replace(good, "  porch_light: {driver: sim, state: {on: false}}", "  porch_light: {driver: nope}\n  lamp: {driver: sim, state: {on: 1}, colour: red}", 1)
	bad = strings.Replace(bad, "heartbeat: 1s", "heartbeat: often", 1)
	c.createJob(t, "conf-bad", configDoc(bad, []byte(good)), "gw-conf")
	e = c.waitExecution(t, "conf-bad", "gw-conf", jobs.Rejected)
	dm := details(e)
	if !strings.Contains(dm["reason"], "problem(s)") || len(dm) < 3 {
		t.Fatalf("details %v", dm)
	}
	lineRE := regexp.MustCompile(`shadowgate\.yaml:\d+: `)
	var sawDriver, sawHeartbeat bool
	for k, v := range dm {
		if strings.HasPrefix(k, "problem_") && !lineRE.MatchString(v) {
			t.Errorf("%s has no line: %q", k, v)
		}
		sawDriver = sawDriver || strings.Contains(v, "actuators.porch_light.driver")
		sawHeartbeat = sawHeartbeat || strings.Contains(v, "commands.heartbeat")
	}
	if !sawDriver || !sawHeartbeat {
		t.Fatalf("problems %v", dm)
	}
	fileIs(t, path, []byte(good))

	// Made for another file (a technician edited it meanwhile).
	c.createJob(t, "conf-stale", configDoc(string(orig), orig), "gw-conf")
	e = c.waitExecution(t, "conf-stale", "gw-conf", jobs.Failed)
	if !strings.Contains(details(e)["reason"], "not the one this job was made for") {
		t.Fatalf("details %v", details(e))
	}
	fileIs(t, path, []byte(good))

	// Not healthy: a broker nobody listens on. Rolled back, FAILED.
	dead := strings.Replace(good, c.broker.URL(), "tcp://127.0.0.1:1", 1)
	c.createJob(t, "conf-dead", configDoc(dead, []byte(good)), "gw-conf")
	e = c.waitExecution(t, "conf-dead", "gw-conf", jobs.Failed)
	if r := details(e)["reason"]; !strings.Contains(r, "not healthy within 5s") || !strings.Contains(r, "not connected") || !strings.Contains(r, "rolled back") {
		t.Fatalf("details %v", details(e))
	}
	fileIs(t, path, []byte(good))
	fileIs(t, path+".previous", []byte(good))
	waitFor(t, "connected again", func() bool { return d.Jobs.Stats().Unsent == 0 })
	runs, _ := d.Jobs.Runs(10)
	if len(runs) != 4 {
		t.Fatalf("%d runs", len(runs))
	}
}

// kill -9 while a new configuration is on trial: the next start goes back
// to the previous file before it reads it, and reports FAILED.
func TestJobConfigUpdateKill9OnTrial(t *testing.T) {
	c := newJobsCloud(t)
	dir := t.TempDir()
	path, orig := configGateway(t, "gw-conf9", c.broker.URL(), dir)
	g := &jobGateway{thing: "gw-conf9", cfg: path, sock: filepath.Join(dir, "api.sock")}
	g.p = runGateway(t, g.cfg, g.sock)
	waitFor(t, "connected", func() bool { return g.p.status(t).Connected })
	dead := strings.Replace(string(orig), c.broker.URL(), "tcp://127.0.0.1:1", 1)
	c.createJob(t, "conf-k9", configDoc(dead, orig), "gw-conf9")
	waitFor(t, "the new file on trial", func() bool {
		b, _ := os.ReadFile(path)
		m, _ := os.ReadFile(path + ".update")
		return string(b) == dead && len(m) > 0 && !strings.Contains(string(m), "decided")
	})
	g.kill9(t)
	g.restart(t)
	fileIs(t, path, orig)
	e := c.waitExecution(t, "conf-k9", "gw-conf9", jobs.Failed)
	if r := details(e)["reason"]; !strings.Contains(r, "interrupted") || !strings.Contains(r, "previous configuration is in use") {
		t.Fatalf("details %v", details(e))
	}
	if _, err := os.Stat(path + ".update"); !os.IsNotExist(err) {
		t.Fatalf("marker left: %v", err)
	}
	if !strings.Contains(g.p.out.String(), "is the previous file again") {
		t.Fatalf("log:\n%s", g.p.out.String())
	}
}
