package config_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shadowgate/shadowgate/agent/config"
)

func TestExampleConfigsLoad(t *testing.T) {
	for _, f := range []string{"../../configs/shadowgate.yaml", "../../configs/demo.yaml"} {
		c, err := config.Load(f)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if len(c.Actuators) == 0 || c.Gateway.Thing == "" {
			t.Fatalf("%s: loaded empty: %+v", f, c)
		}
	}
}

func TestDefaults(t *testing.T) {
	c, err := config.Parse("t.yaml", []byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if c.Cloud.ClientID != "gw-1" || c.Cloud.TopicRoot != "$aws/things/" || c.Cloud.Keepalive.D() != 30*time.Second ||
		c.Cloud.Conflict != config.CloudWins || c.History != 100 || c.Commands.Heartbeat.D() != 10*time.Second ||
		c.Store.Outbox.MaxBytes != 64<<20 || c.Actuators["lamp"].Key != "lamp" || c.Actuators["lamp"].PowerOn != "restore" {
		t.Fatalf("defaults not applied: %+v", c)
	}
	if got := c.Actuators["lamp"].Options; got == nil || len(got.Content) != 2 || got.Content[0].Value != "state" {
		t.Fatalf("driver options not kept: %+v", got)
	}
}

const minimal = `
gateway: {thing: gw-1}
cloud: {broker: "tcp://127.0.0.1:1883"}
actuators:
  lamp: {driver: sim, state: {on: false}}
`

func TestTechnicianMistakes(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string // each must appear in the error text
	}{
		{"typo in a key", minimal + "histroy: 5\n", []string{"t.yaml:6: unknown key \"histroy\" (did you mean \"history\"?)"}},
		{"typo in a nested key", strings.Replace(minimal, "broker:", "brokr:", 1), []string{"t.yaml:3: cloud: unknown key \"brokr\" (did you mean \"broker\"?)", "cloud.broker: is required"}},
		{"wrong type", minimal + "history: lots\n", []string{"t.yaml:6: history: want a whole number, got \"lots\""}},
		{"section of wrong kind", minimal + "log: debug\n", []string{"t.yaml:6: log: want a mapping of keys, got \"debug\""}},
		{"duplicate actuator", minimal + "  lamp: {driver: sim}\n", []string{"t.yaml:6: actuators.lamp: duplicate key (first written at line 5)"}},
		{"command on a missing actuator", minimal + "commands:\n  types:\n    GO: {actuator: pump, set: {on: true}}\n", []string{"t.yaml:8: commands.types.GO.actuator: no actuator named \"pump\" (configured: lamp)"}},
		{"bad duration", minimal + "commands: {heartbeat: 10 seconds}\n", []string{"t.yaml:6: commands.heartbeat: invalid duration \"10 seconds\""}},
		{"tabs", "gateway:\n\tthing: gw\n", []string{"t.yaml:2: a tab is used for indentation; YAML needs spaces"}},
		{"empty file", "  \n", []string{"t.yaml: the file is empty"}},
		{"only comments", "# nothing\n", []string{"the file holds only comments"}},
		{"not a mapping", "- a\n- b\n", []string{"t.yaml:1: the top level must be a mapping"}},
		{"bad thing name", strings.Replace(minimal, "gw-1", "gw 1", 1), []string{"t.yaml:2: gateway.thing: invalid name"}},
		{"bad broker scheme", strings.Replace(minimal, "tcp://", "http://", 1), []string{"t.yaml:3: cloud.broker: unsupported scheme \"http\""}},
		{"missing port", strings.Replace(minimal, "127.0.0.1:1883", "127.0.0.1", 1), []string{"has no port"}},
		{"missing driver", minimal + "  pump: {shadow: water}\n", []string{"t.yaml:6: actuators.pump.driver: is required"}},
		{"two actuators on one key", minimal + "  lamp2: {driver: sim, key: lamp}\n", []string{"actuators.lamp2.key: shadow key \"lamp\" of shadow \"(classic)\" is already driven by actuator \"lamp\""}},
		{"bad power_on", minimal + "  pump: {driver: sim, power_on: sometimes}\n", []string{"actuators.pump.power_on: must be keep, restore, desired or safe"}},
		{"safe without safe_state", minimal + "  pump: {driver: sim, on_shutdown: safe}\n", []string{"on_shutdown: safe needs a safe_state"}},
		{"ROLLBACK redefined", minimal + "commands:\n  types:\n    ROLLBACK: {actuator: lamp, set: {on: true}}\n", []string{"ROLLBACK is built in"}},
		{"undeclared placeholder", minimal + "commands:\n  types:\n    DIM: {actuator: lamp, set: {level: \"{lvl}\"}}\n", []string{"uses {lvl} but args declares no \"lvl\""}},
		{"bad arg type", minimal + "commands:\n  types:\n    DIM: {actuator: lamp, set: {level: \"{l}\"}, args: {l: {type: float}}}\n", []string{"commands.types.DIM.args.l.type: must be string, int, number or bool"}},
		{"group on a missing actuator", minimal + "commands:\n  types:\n    OFF: {set: {lamp: {on: false}, fan: {on: false}}}\n", []string{"commands.types.OFF.set.fan: no actuator named \"fan\""}},
		{"embedded broker off loopback", minimal + "broker: {embedded: true, listen: \"0.0.0.0:1883\"}\n", []string{"broker.listen: the embedded broker listens on loopback only"}},
		{"HTTP API off loopback without TLS", minimal + "broker: {embedded: true, http: {listen: \"0.0.0.0:8080\"}}\n", []string{"broker.http.listen: plain HTTP is allowed only on a loopback address", "broker.http.credentials: is required off loopback"}},
		{"HTTP API without the embedded service", minimal + "broker: {http: {listen: \"127.0.0.1:8080\"}}\n", []string{"broker.http: serves the embedded shadow service"}},
		{"HTTP API credentials missing", minimal + "broker: {embedded: true, http: {listen: \"127.0.0.1:8080\", credentials: /nonexistent/creds}}\n", []string{"broker.http.credentials: cannot read /nonexistent/creds"}},
		{"HTTP API cert without key", minimal + "broker: {embedded: true, http: {listen: \"127.0.0.1:8080\", cert: /etc/hostname}}\n", []string{"broker.http: cert and key go together"}},
		{"bad size", minimal + "store: {outbox: {max_bytes: 64 parsecs}}\n", []string{"store.outbox.max_bytes: invalid size \"64 parsecs\""}},
		{"no actuators", "gateway: {thing: gw}\ncloud: {broker: \"tcp://127.0.0.1:1883\"}\n", []string{"actuators: no actuators are configured"}},
		{"yaml syntax", "gateway: {thing: gw\n", []string{"t.yaml:", "YAML syntax"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Parse("t.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatalf("accepted:\n%s", tc.yaml)
			}
			if !errors.Is(err, config.ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestAllProblemsAtOnce(t *testing.T) {
	bad := `
gateway: {thing: ""}
cloud: {broker: "tcp://127.0.0.1:1883", conflict: mine_wins, keepalive: 1s}
history: 0
log: {level: loud}
actuators:
  lamp: {driver: sim, power_on: never}
commands:
  types:
    GO: {actuator: nope, set: {on: true}}
`
	_, err := config.Parse("t.yaml", []byte(bad))
	var ps config.Problems
	if !errors.As(err, &ps) {
		t.Fatalf("want Problems, got %v", err)
	}
	for _, w := range []string{"gateway.thing", "cloud.conflict", "cloud.keepalive", "log.level", "actuators.lamp.power_on", "commands.types.GO.actuator"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("missing problem for %s in:\n%v", w, err)
		}
	}
	for i := 1; i < len(ps); i++ {
		if ps[i].Line < ps[i-1].Line {
			t.Fatalf("problems not in line order:\n%v", err)
		}
	}
}

func TestTLSFilesMustBeReadable(t *testing.T) {
	_, err := config.Parse("t.yaml", []byte(strings.Replace(minimal, `cloud: {broker: "tcp://127.0.0.1:1883"}`,
		"cloud:\n  broker: \"tls://127.0.0.1:8883\"\n  tls: {ca: /nonexistent/ca.pem, cert: /nonexistent/c.pem}", 1)))
	if err == nil || !strings.Contains(err.Error(), "cloud.tls.ca: cannot read /nonexistent/ca.pem") || !strings.Contains(err.Error(), "cert and key go together") {
		t.Fatalf("got %v", err)
	}
}

func TestFileErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := config.Load(filepath.Join(dir, "missing.yaml")); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("missing file: %v", err)
	}
	if _, err := config.Load(dir); err == nil || errors.Is(err, config.ErrInvalid) {
		t.Fatalf("a directory must fail to read, not to validate: %v", err)
	}
	if os.Geteuid() != 0 {
		p := filepath.Join(dir, "locked.yaml")
		os.WriteFile(p, []byte(minimal), 0o000)
		if _, err := config.Load(p); !errors.Is(err, fs.ErrPermission) {
			t.Fatalf("unreadable file: %v", err)
		}
	}
}

func TestAnchorsAndAliases(t *testing.T) {
	// lamp3 reuses lamp2's block through an alias; it has its own key, so
	// the file is valid and lamp3 gets lamp2's options.
	y := minimal + "  lamp2: &base {driver: sim, state: {on: true}}\n  lamp3: *base\n"
	c, err := config.Parse("t.yaml", []byte(y))
	if err != nil {
		t.Fatalf("aliases: %v", err)
	}
	l3 := c.Actuators["lamp3"]
	if l3 == nil || l3.Driver != "sim" || l3.Key != "lamp3" || l3.Options == nil || len(l3.Options.Content) != 2 {
		t.Fatalf("lamp3 from the alias: %+v", l3)
	}
}

func FuzzParse(f *testing.F) {
	for _, p := range []string{"../../configs/shadowgate.yaml", "../../configs/demo.yaml"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(minimal))
	f.Add([]byte("a: &a [*a]"))
	f.Add([]byte("actuators: {x: {driver: sim, safe_state: {1: 2}}}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := config.Parse("fuzz.yaml", data)
		if err == nil && c == nil {
			t.Fatal("nil config without error")
		}
		if err != nil && !errors.Is(err, config.ErrInvalid) {
			t.Fatalf("parse error not wrapping ErrInvalid: %v", err)
		}
	})
}

func TestArgRanges(t *testing.T) {
	y := `
gateway: {thing: gw}
cloud: {broker: tcp://127.0.0.1:1883}
actuators:
  motor: {driver: sim}
  fan: {driver: sim}
commands:
  types:
    SET_SPEED: {actuator: motor, set: {speed: "{speed}"}, args: {speed: {type: int, min: 0, max: 100}}}
    BOOST: {actuator: motor, set: {speed: "{s}"}, args: {s: {type: int, min: 50, max: 150}}}
    FAN: {set: {fan: {rpm: "{rpm}"}, motor: {speed: 0}}, args: {rpm: {type: number, max: 3000}}}
    NAME: {actuator: fan, set: {label: "{l}"}, args: {l: {type: string}}}
`
	c, err := config.Parse("t.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	r := c.ArgRanges()
	sp := r["motor"]["speed"]
	if sp.Min == nil || *sp.Min != 0 || sp.Max == nil || *sp.Max != 150 || len(sp.Commands) != 2 {
		t.Fatalf("motor.speed: %+v", sp)
	}
	rpm := r["fan"]["rpm"]
	if rpm.Min != nil || rpm.Max == nil || *rpm.Max != 3000 {
		t.Fatalf("fan.rpm: %+v", rpm)
	}
	if _, ok := r["fan"]["label"]; ok {
		t.Fatal("a string arg has no range")
	}
}
