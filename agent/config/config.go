// Package config reads shadowgate.yaml: a strict decode (unknown keys, wrong
// types and duplicates are errors), then defaults, then validation of the
// whole file, reporting every problem at once with file:line and key path.
// Driver options are kept as YAML nodes for the drivers to check.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"reflect"
	"strings"

	"gopkg.in/yaml.v3"
)

// Config is the whole configuration of one gateway.
type Config struct {
	Gateway   Gateway              `yaml:"gateway"`
	Cloud     Cloud                `yaml:"cloud"`
	Broker    Broker               `yaml:"broker"`
	Store     Store                `yaml:"store"`
	History   int                  `yaml:"history"`
	API       API                  `yaml:"api"`
	Log       Log                  `yaml:"log"`
	Actuators map[string]*Actuator `yaml:"actuators"`
	Commands  Commands             `yaml:"commands"`
	Jobs      Jobs                 `yaml:"jobs"`

	// File is the path the configuration was read from.
	File string `yaml:"-"`
	// Reporter places problems found after loading (by drivers) in the file.
	Reporter *Reporter `yaml:"-"`
}

// Gateway names this gateway.
type Gateway struct {
	Thing string `yaml:"thing"`
}

// Conflict policies: what wins when the cloud's desired state changed while a
// local change (rollback, physical switch) waited to be reported.
const (
	CloudWins = "cloud_wins"
	LocalWins = "local_wins"
)

// Cloud is the MQTT link to AWS IoT Core or another broker.
type Cloud struct {
	Broker       string   `yaml:"broker"`
	ClientID     string   `yaml:"client_id"`
	TLS          TLS      `yaml:"tls"`
	Username     string   `yaml:"username"`
	PasswordFile string   `yaml:"password_file"`
	TopicRoot    string   `yaml:"topic_root"`
	Keepalive    Duration `yaml:"keepalive"`
	Conflict     string   `yaml:"conflict"`
	// PresenceTopic is where the gateway says whether it is connected
	// (retained, and its last will); {thing} stands for the thing name.
	PresenceTopic string `yaml:"presence_topic"`
	// StaleDelta is how long a delta may stand unchanged, the uplink up,
	// before the gateway fetches the shadow again.
	StaleDelta Duration `yaml:"stale_delta"`
}

// TLS holds paths of PEM files; secrets are never written inline.
type TLS struct {
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// Broker is the embedded loopback broker and shadow service of the demo.
type Broker struct {
	Embedded bool       `yaml:"embedded"`
	Listen   string     `yaml:"listen"`
	HTTP     BrokerHTTP `yaml:"http"`
}

// BrokerHTTP is the embedded shadow service's AWS IoT data-plane HTTP API
// (off when Listen is empty): the settings of shadowsvc's --http,
// --credentials, --http-cert and --http-key.
type BrokerHTTP struct {
	Listen      string `yaml:"listen"`
	Credentials string `yaml:"credentials"`
	Cert        string `yaml:"cert"`
	Key         string `yaml:"key"`
}

// Store is the bbolt file and its quotas.
type Store struct {
	Path            string   `yaml:"path"`
	Outbox          Quota    `yaml:"outbox"`
	Inbox           Quota    `yaml:"inbox"`
	HistoryMaxBytes ByteSize `yaml:"history_max_bytes"`
}

// Quota caps a queue in entries and bytes.
type Quota struct {
	MaxItems int      `yaml:"max_items"`
	MaxBytes ByteSize `yaml:"max_bytes"`
}

// API is the local API for shadowctl. The socket has mode 0660; Group, if
// set, is given to it (the .deb's config says shadowgate). Without it the
// socket keeps the daemon's own group: under the unit that is shadowgate
// too (Group=), and a demo run by a user needs no group that may not exist.
type API struct {
	Socket string `yaml:"socket"`
	Group  string `yaml:"group"`
}

// Log sets the daemon's logging.
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// Power-on policies: what an actuator is driven to when the daemon starts.
const (
	PowerOnKeep    = "keep"    // leave the hardware as it is and report it
	PowerOnRestore = "restore" // the newest state in history
	PowerOnDesired = "desired" // nothing until the shadow's desired arrives
	PowerOnSafe    = "safe"    // safe_state
)

// Shutdown policies.
const (
	ShutdownKeep = "keep"
	ShutdownSafe = "safe"
)

// Actuator is one device driven through a driver. Options holds the keys the
// actuator block has besides the common ones, for the driver to read.
type Actuator struct {
	Driver     string         `yaml:"driver"`
	Shadow     string         `yaml:"shadow"`
	Key        string         `yaml:"key"`
	PowerOn    string         `yaml:"power_on"`
	OnShutdown string         `yaml:"on_shutdown"`
	SafeState  map[string]any `yaml:"safe_state"`
	Options    *yaml.Node     `yaml:",remain"`

	// Name is the actuator's key under actuators.
	Name string `yaml:"-"`
}

// Commands declares the command types operators may send.
type Commands struct {
	Heartbeat Duration                `yaml:"heartbeat"`
	Retention Duration                `yaml:"retention"`
	Types     map[string]*CommandType `yaml:"types"`
}

// Jobs is AWS IoT Jobs on the gateway (agent/jobrun): the thing's job
// executions run one at a time as commands, their document naming the
// operation as a command does.
type Jobs struct {
	// Enabled runs job executions (default true). Off, the gateway does not
	// subscribe to the jobs topics.
	Enabled *bool `yaml:"enabled"`
	// ConfigUpdate lets a job replace this file (operation CONFIG_UPDATE).
	ConfigUpdate ConfigUpdate `yaml:"config_update"`
}

// On reports whether job executions run.
func (j Jobs) On() bool { return j.Enabled == nil || *j.Enabled }

// ConfigUpdate is the CONFIG_UPDATE job operation: a new file, checked as
// shadowctl config check does, applied with the previous one kept, and
// rolled back by the gateway when it is not healthy within HealthDeadline.
type ConfigUpdate struct {
	// Enabled allows it (default false: a job may not rewrite the file).
	Enabled bool `yaml:"enabled"`
	// HealthDeadline is how long the new configuration has to be healthy
	// (connected, every actuator initialised); default 2m.
	HealthDeadline Duration `yaml:"health_deadline"`
}

// CommandType maps a command name to a change of state. With Actuator set,
// Set is that actuator's state; without, Set maps actuator names to states
// (a group, applied atomically). A string value "{name}" in Set takes the
// argument of that name.
type CommandType struct {
	Actuator         string             `yaml:"actuator"`
	Set              map[string]any     `yaml:"set"`
	Args             map[string]ArgSpec `yaml:"args"`
	RequiresApproval bool               `yaml:"requires_approval"`
	Idempotent       bool               `yaml:"idempotent"`
	Timeout          Duration           `yaml:"timeout"`
}

// ArgSpec declares one command argument.
type ArgSpec struct {
	Type     string   `yaml:"type"` // string, int, number, bool
	Min      *float64 `yaml:"min"`
	Max      *float64 `yaml:"max"`
	Required bool     `yaml:"required"`
}

// Checker adds problems that need more than this package knows (drivers).
type Checker func(c *Config, r *Reporter)

// Load reads, decodes, defaults and validates the file at path, then runs
// the checkers. A file over MaxFileSize, or with more actuators or command
// types than the caps, is refused before it is decoded. An invalid file gives Problems (errors.Is ErrInvalid) listing
// every problem; an unreadable one a wrapped fs error.
func Load(path string, checkers ...Checker) (*Config, error) {
	data, err := readCapped(path)
	var tl *tooLargeError
	switch {
	case errors.As(err, &tl):
		r := &Reporter{file: path, lines: map[string]int{}}
		r.Addf(0, "", "%v", err)
		return nil, r.Err()
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("config file %s does not exist: %w", path, err)
	case err != nil:
		return nil, fmt.Errorf("read config file %s: %w", path, err)
	}
	return Parse(path, data, checkers...)
}

// Parse is Load for bytes already read; name is used in messages.
func Parse(name string, data []byte, checkers ...Checker) (*Config, error) {
	r := &Reporter{file: name, lines: map[string]int{}}
	c := &Config{File: name, Reporter: r}
	if len(data) > MaxFileSize {
		r.Addf(0, "", "%v", errTooLarge(int64(len(data))))
		return nil, r.Err()
	}
	if len(bytes.TrimSpace(data)) == 0 {
		r.Addf(0, "", "the file is empty; start from configs/shadowgate.yaml")
		return nil, r.Err()
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		line, msg := yamlSyntaxError(err, data)
		r.Addf(line, "", "%s", msg)
		return nil, r.Err()
	}
	if len(root.Content) == 0 {
		r.Addf(0, "", "the file holds only comments; start from configs/shadowgate.yaml")
		return nil, r.Err()
	}
	doc := root.Content[0]
	if doc.Kind != yaml.MappingNode {
		r.Addf(doc.Line, "", "the top level must be a mapping of keys (gateway:, cloud:, actuators: …), got %s", kindName(doc))
		return nil, r.Err()
	}
	if !checkCounts(doc, r) {
		return nil, r.Err()
	}
	// Validation runs even after decode problems, so that one run shows
	// everything; a key path with a decode problem gets no second one.
	(&decoder{r: r}).decode(doc, reflect.ValueOf(c).Elem(), "")
	c.applyDefaults()
	c.validate(r)
	for _, check := range checkers {
		check(c, r)
	}
	if err := r.Err(); err != nil {
		return nil, err
	}
	return c, nil
}

// yamlSyntaxError turns a yaml.v3 parse error into a line and a message a
// technician can act on.
func yamlSyntaxError(err error, data []byte) (int, string) {
	msg := err.Error()
	line := 0
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		fmt.Sscan(m[1], &line)
		msg = m[2]
	} else {
		msg = strings.TrimPrefix(msg, "yaml: ")
	}
	lines := strings.Split(string(data), "\n")
	if line > 0 && line <= len(lines) && strings.HasPrefix(strings.TrimLeft(lines[line-1], " "), "\t") {
		return line, "a tab is used for indentation; YAML needs spaces (" + msg + ")"
	}
	for i, l := range lines {
		indent := l[:len(l)-len(strings.TrimLeft(l, " \t"))]
		if strings.Contains(indent, "\t") {
			return i + 1, "a tab is used for indentation; YAML needs spaces (" + msg + ")"
		}
	}
	return line, "YAML syntax: " + msg
}
