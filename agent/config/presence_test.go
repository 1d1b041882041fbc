package config_test

import (
	"strings"
	"testing"

	"github.com/shadowgate/shadowgate/agent/config"
)

func TestPresenceTopic(t *testing.T) {
	c, err := config.Parse("t.yaml", []byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if c.Cloud.PresenceTopic != "shadowgate/{thing}/presence" {
		t.Fatalf("default presence topic %q", c.Cloud.PresenceTopic)
	}
	set := func(topic string) string {
		return strings.Replace(minimal, `cloud: {broker: "tcp://127.0.0.1:1883"}`, `cloud: {broker: "tcp://127.0.0.1:1883", presence_topic: "`+topic+`"}`, 1)
	}
	if c, err := config.Parse("t.yaml", []byte(set("fleet/{thing}"))); err != nil || c.Cloud.PresenceTopic != "fleet/{thing}" {
		t.Fatalf("fleet/{thing}: %v", err)
	}
	for topic, want := range map[string]string{
		"$aws/things/{thing}/status": "must not start with '$'",
		"shadowgate/+/presence":      "must hold no '+' or '#'",
		"presence/#":                 "must hold no '+' or '#'",
		"presence":                   "must hold {thing} once, as a whole level",
		"presence/gw-{thing}":        "must hold {thing} once, as a whole level",
		"{thing}/{thing}":            "must hold {thing} once, as a whole level",
	} {
		_, err := config.Parse("t.yaml", []byte(set(topic)))
		if err == nil || !strings.Contains(err.Error(), "t.yaml:3: cloud.presence_topic: "+want) {
			t.Errorf("%q: %v, want %q", topic, err, want)
		}
	}
	for _, key := range []string{"connected", "presence"} {
		y := minimal + "  " + key + ": {driver: sim, state: {on: false}}\n"
		if _, err := config.Parse("t.yaml", []byte(y)); err == nil || !strings.Contains(err.Error(), "actuators."+key+".key: \""+key+"\" is where the classic shadow says whether the gateway is connected") {
			t.Errorf("an actuator on %s: %v", key, err)
		}
		y = minimal + "  " + key + ": {driver: sim, shadow: extra, state: {on: false}}\n"
		if _, err := config.Parse("t.yaml", []byte(y)); err != nil {
			t.Errorf("an actuator on %s of a named shadow: %v", key, err)
		}
	}
}
