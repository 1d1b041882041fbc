package config

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/shadowgate/shadowgate/agent/shadow"
)

// Defaults, documented in configs/shadowgate.yaml.
const (
	DefaultListen         = "127.0.0.1:1883"
	DefaultKeepalive      = 30 * time.Second
	DefaultPresenceTopic  = "shadowgate/{thing}/presence"
	DefaultStaleDelta     = 30 * time.Second
	DefaultStorePath      = "/var/lib/shadowgate/state.db"
	DefaultOutboxItems    = 100000
	DefaultOutboxBytes    = 64 << 20
	DefaultInboxItems     = 100000
	DefaultInboxBytes     = 32 << 20
	DefaultHistoryBytes   = 8 << 20
	DefaultHistory        = 100
	DefaultSocket         = "/run/shadowgate/api.sock"
	DefaultHeartbeat      = 10 * time.Second
	DefaultRetention      = 168 * time.Hour
	DefaultCommandTimeout = 60 * time.Second
	DefaultHealthDeadline = 2 * time.Minute
	RollbackCommand       = "ROLLBACK"
	// ConfigUpdateOperation is the job operation that replaces this file
	// (jobs.config_update).
	ConfigUpdateOperation  = "CONFIG_UPDATE"
	maxHistory             = 10000
	minHeartbeat           = time.Second
	minKeepalive           = 5 * time.Second
	minStaleDelta          = time.Second
	maxActuatorNameLen     = 64
	maxCommandTypeNameLen  = 64
	commandTypeNamePattern = `^[A-Za-z0-9_.-]+$`
)

var (
	actuatorNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	commandNameRE  = regexp.MustCompile(commandTypeNamePattern)
	placeholderRE  = regexp.MustCompile(`^\{([A-Za-z0-9_]+)\}$`)
)

func (c *Config) applyDefaults() {
	// broker.http's files are relative to this file, so that the demo's
	// key file is found from any working directory.
	for _, p := range []*string{&c.Broker.HTTP.Credentials, &c.Broker.HTTP.Cert, &c.Broker.HTTP.Key} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(filepath.Dir(c.File), *p)
		}
	}
	if c.Broker.Listen == "" {
		c.Broker.Listen = DefaultListen
	}
	if c.Cloud.Broker == "" && c.Broker.Embedded {
		c.Cloud.Broker = "tcp://" + c.Broker.Listen
	}
	if c.Cloud.ClientID == "" {
		c.Cloud.ClientID = c.Gateway.Thing
	}
	if c.Cloud.TopicRoot == "" {
		c.Cloud.TopicRoot = shadow.DefaultRoot
	}
	if c.Cloud.Keepalive == 0 {
		c.Cloud.Keepalive = Duration(DefaultKeepalive)
	}
	if c.Cloud.PresenceTopic == "" {
		c.Cloud.PresenceTopic = DefaultPresenceTopic
	}
	if c.Cloud.Conflict == "" {
		c.Cloud.Conflict = CloudWins
	}
	if c.Cloud.StaleDelta == 0 {
		c.Cloud.StaleDelta = Duration(DefaultStaleDelta)
	}
	if c.Store.Path == "" {
		c.Store.Path = DefaultStorePath
	}
	if c.Store.Outbox.MaxItems == 0 {
		c.Store.Outbox.MaxItems = DefaultOutboxItems
	}
	if c.Store.Outbox.MaxBytes == 0 {
		c.Store.Outbox.MaxBytes = DefaultOutboxBytes
	}
	if c.Store.Inbox.MaxItems == 0 {
		c.Store.Inbox.MaxItems = DefaultInboxItems
	}
	if c.Store.Inbox.MaxBytes == 0 {
		c.Store.Inbox.MaxBytes = DefaultInboxBytes
	}
	if c.Store.HistoryMaxBytes == 0 {
		c.Store.HistoryMaxBytes = DefaultHistoryBytes
	}
	if c.History == 0 {
		c.History = DefaultHistory
	}
	if c.API.Socket == "" {
		c.API.Socket = DefaultSocket
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "text"
	}
	if c.Commands.Heartbeat == 0 {
		c.Commands.Heartbeat = Duration(DefaultHeartbeat)
	}
	if c.Commands.Retention == 0 {
		c.Commands.Retention = Duration(DefaultRetention)
	}
	if c.Jobs.ConfigUpdate.HealthDeadline == 0 {
		c.Jobs.ConfigUpdate.HealthDeadline = Duration(DefaultHealthDeadline)
	}
	for name, a := range c.Actuators {
		if a == nil {
			continue
		}
		a.Name = name
		if a.Key == "" {
			a.Key = name
		}
		if a.PowerOn == "" {
			a.PowerOn = PowerOnRestore
		}
		if a.OnShutdown == "" {
			a.OnShutdown = ShutdownKeep
		}
	}
	for _, ct := range c.Commands.Types {
		if ct != nil && ct.Timeout == 0 {
			ct.Timeout = Duration(DefaultCommandTimeout)
		}
	}
}

// validateBrokerHTTP checks broker.http with shadowsvc's rules: plain HTTP
// on loopback only, and credentials off loopback.
func (c *Config) validateBrokerHTTP(r *Reporter) {
	h := c.Broker.HTTP
	if h.Listen == "" {
		if h != (BrokerHTTP{}) {
			r.At("broker.http.listen", "is required when broker.http is set")
		}
		return
	}
	if !c.Broker.Embedded {
		r.At("broker.http", "serves the embedded shadow service: set broker.embedded: true (or run shadowsvc --http)")
	}
	host, _, err := net.SplitHostPort(h.Listen)
	if err != nil {
		r.At("broker.http.listen", "want host:port, got %q", h.Listen)
		return
	}
	ip := net.ParseIP(host)
	loopback := host == "localhost" || (ip != nil && ip.IsLoopback())
	if (h.Cert == "") != (h.Key == "") {
		r.At("broker.http", "cert and key go together: set both or neither")
	}
	if !loopback && h.Cert == "" {
		r.At("broker.http.listen", "plain HTTP is allowed only on a loopback address (127.0.0.1, [::1]); set broker.http.cert and broker.http.key for %q", h.Listen)
	}
	if !loopback && h.Credentials == "" {
		r.At("broker.http.credentials", "is required off loopback (a file in the AWS shared-credentials format)")
	}
	for _, f := range []struct{ path, key string }{{h.Credentials, "broker.http.credentials"}, {h.Cert, "broker.http.cert"}, {h.Key, "broker.http.key"}} {
		if f.path == "" {
			continue
		}
		if fh, err := os.Open(f.path); err != nil {
			r.At(f.key, "cannot read %s: %v", f.path, unwrapPathError(err))
		} else {
			fh.Close()
		}
	}
}

func (c *Config) validate(r *Reporter) {
	if c.Gateway.Thing == "" {
		r.At("gateway.thing", "is required: the AWS IoT thing name of this gateway")
	} else if err := shadow.ValidateThingName(c.Gateway.Thing); err != nil {
		r.At("gateway.thing", "%v", err)
	}
	c.validateCloud(r)
	if c.Broker.Embedded {
		if host, _, err := net.SplitHostPort(c.Broker.Listen); err != nil {
			r.At("broker.listen", "want host:port, got %q", c.Broker.Listen)
		} else if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			r.At("broker.listen", "the embedded broker listens on loopback only (127.0.0.1 or [::1]), got %q", host)
		}
	}
	c.validateBrokerHTTP(r)
	if c.Store.Outbox.MaxItems < 0 {
		r.At("store.outbox.max_items", "must be positive")
	}
	if c.Store.Outbox.MaxBytes < 64<<10 {
		r.At("store.outbox.max_bytes", "must be at least 64KiB, got %s", c.Store.Outbox.MaxBytes)
	}
	if c.Store.Inbox.MaxItems < 0 {
		r.At("store.inbox.max_items", "must be positive")
	}
	if c.Store.Inbox.MaxBytes < 64<<10 {
		r.At("store.inbox.max_bytes", "must be at least 64KiB, got %s", c.Store.Inbox.MaxBytes)
	}
	if c.Store.HistoryMaxBytes < 64<<10 {
		r.At("store.history_max_bytes", "must be at least 64KiB, got %s", c.Store.HistoryMaxBytes)
	}
	if c.History < 1 || c.History > maxHistory {
		r.At("history", "must be between 1 and %d prior states per actuator, got %d", maxHistory, c.History)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		r.At("log.level", "must be debug, info, warn or error, got %q", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		r.At("log.format", "must be text or json, got %q", c.Log.Format)
	}
	c.validateActuators(r)
	c.validateCommands(r)
	if d := c.Jobs.ConfigUpdate.HealthDeadline.D(); d < 5*time.Second || d > time.Hour {
		r.At("jobs.config_update.health_deadline", "must be from 5s to 1h, got %s", c.Jobs.ConfigUpdate.HealthDeadline)
	}
}

func (c *Config) validateCloud(r *Reporter) {
	cl := c.Cloud
	if cl.Broker == "" {
		r.At("cloud.broker", "is required (e.g. tls://xxxx-ats.iot.eu-west-1.amazonaws.com:8883), or set broker.embedded: true")
	} else if u, err := url.Parse(cl.Broker); err != nil || u.Host == "" {
		r.At("cloud.broker", "want a URL such as tls://host:8883 or tcp://host:1883, got %q", cl.Broker)
	} else {
		switch u.Scheme {
		case "tcp", "mqtt", "ssl", "tls", "mqtts", "ws", "wss":
		default:
			r.At("cloud.broker", "unsupported scheme %q: use tcp, mqtt, ssl, tls, mqtts, ws or wss", u.Scheme)
		}
		if u.Port() == "" {
			r.At("cloud.broker", "%q has no port (AWS IoT Core: 8883 or 443)", cl.Broker)
		}
	}
	if cl.ClientID != "" && (len(cl.ClientID) > 128 || strings.ContainsAny(cl.ClientID, "+#/")) {
		r.At("cloud.client_id", "must be at most 128 characters without '+', '#' or '/', got %q", cl.ClientID)
	}
	if (cl.TLS.Cert == "") != (cl.TLS.Key == "") {
		r.At("cloud.tls", "cert and key go together: set both or neither")
	}
	for _, f := range []struct{ path, key string }{
		{cl.TLS.CA, "cloud.tls.ca"}, {cl.TLS.Cert, "cloud.tls.cert"}, {cl.TLS.Key, "cloud.tls.key"},
		{cl.PasswordFile, "cloud.password_file"},
	} {
		if f.path == "" {
			continue
		}
		if fh, err := os.Open(f.path); err != nil {
			r.At(f.key, "cannot read %s: %v", f.path, unwrapPathError(err))
		} else {
			fh.Close()
		}
	}
	if cl.PasswordFile != "" && cl.Username == "" {
		r.At("cloud.password_file", "needs cloud.username")
	}
	if !strings.HasSuffix(cl.TopicRoot, "/") || strings.ContainsAny(cl.TopicRoot, "+#") {
		r.At("cloud.topic_root", "must end with '/' and hold no '+' or '#', got %q", cl.TopicRoot)
	}
	if msg := presenceTopicProblem(cl.PresenceTopic); msg != "" {
		r.At("cloud.presence_topic", "%s, got %q", msg, cl.PresenceTopic)
	}
	if cl.Keepalive.D() < minKeepalive {
		r.At("cloud.keepalive", "must be at least %s, got %s", minKeepalive, cl.Keepalive)
	}
	if cl.Conflict != CloudWins && cl.Conflict != LocalWins {
		r.At("cloud.conflict", "must be %s or %s, got %q", CloudWins, LocalWins, cl.Conflict)
	}
	if cl.StaleDelta.D() < minStaleDelta {
		r.At("cloud.stale_delta", "must be at least %s, got %s", minStaleDelta, cl.StaleDelta)
	}
}

func unwrapPathError(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}

// ActuatorNames returns the actuator names in sorted order.
func (c *Config) ActuatorNames() []string {
	names := make([]string, 0, len(c.Actuators))
	for n := range c.Actuators {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func (c *Config) validateActuators(r *Reporter) {
	if len(c.Actuators) == 0 {
		r.At("actuators", "no actuators are configured; a gateway drives at least one")
	}
	slots := map[string]string{} // shadow/key → actuator
	for _, name := range c.ActuatorNames() {
		a := c.Actuators[name]
		p := "actuators." + name
		if a == nil {
			r.At(p, "is empty: give at least a driver")
			continue
		}
		if !actuatorNameRE.MatchString(name) || len(name) > maxActuatorNameLen {
			r.At(p, "name must be letters, digits, '_' or '-' (at most %d)", maxActuatorNameLen)
		}
		if a.Driver == "" {
			r.At(p+".driver", "is required (gpio.relay, gpio.lock, serial.line, serial.modbus, i2c.pca9685, sim)")
		}
		if a.Shadow != "" {
			if err := shadow.ValidateShadowName(a.Shadow); err != nil {
				r.At(p+".shadow", "%v", err)
			}
		}
		if !actuatorNameRE.MatchString(a.Key) {
			r.At(p+".key", "must be letters, digits, '_' or '-', got %q", a.Key)
		}
		if a.Shadow == "" && (a.Key == "connected" || a.Key == "presence") {
			r.At(p+".key", "%q is where the classic shadow says whether the gateway is connected: give the actuator another key (key: …) or a named shadow", a.Key)
		}
		slot := a.Shadow + "/" + a.Key
		if other, taken := slots[slot]; taken {
			r.At(p+".key", "shadow key %q of shadow %q is already driven by actuator %q", a.Key, shadowLabel(a.Shadow), other)
		}
		slots[slot] = name
		switch a.PowerOn {
		case PowerOnKeep, PowerOnRestore, PowerOnDesired:
		case PowerOnSafe:
			if a.SafeState == nil {
				r.At(p+".power_on", "power_on: safe needs a safe_state")
			}
		default:
			r.At(p+".power_on", "must be keep, restore, desired or safe, got %q", a.PowerOn)
		}
		switch a.OnShutdown {
		case ShutdownKeep:
		case ShutdownSafe:
			if a.SafeState == nil {
				r.At(p+".on_shutdown", "on_shutdown: safe needs a safe_state")
			}
		default:
			r.At(p+".on_shutdown", "must be keep or safe, got %q", a.OnShutdown)
		}
	}
}

func shadowLabel(name string) string {
	if name == "" {
		return "(classic)"
	}
	return name
}

func (c *Config) validateCommands(r *Reporter) {
	if c.Commands.Heartbeat.D() < minHeartbeat {
		r.At("commands.heartbeat", "must be at least %s, got %s", minHeartbeat, c.Commands.Heartbeat)
	}
	if c.Commands.Retention.D() < c.Commands.Heartbeat.D() {
		r.At("commands.retention", "must be longer than the heartbeat, got %s", c.Commands.Retention)
	}
	names := make([]string, 0, len(c.Commands.Types))
	for n := range c.Commands.Types {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		ct := c.Commands.Types[name]
		p := "commands.types." + name
		if ct == nil {
			r.At(p, "is empty: give an actuator and a set")
			continue
		}
		if name == RollbackCommand || name == ConfigUpdateOperation {
			r.At(p, "%s is built in and cannot be redefined", name)
		}
		if !commandNameRE.MatchString(name) || len(name) > maxCommandTypeNameLen {
			r.At(p, "name must be letters, digits, '_', '.' or '-' (at most %d)", maxCommandTypeNameLen)
		}
		if ct.Timeout.D() < 0 {
			r.At(p+".timeout", "must not be negative")
		}
		for arg, spec := range ct.Args {
			switch spec.Type {
			case "string", "int", "number", "bool":
			default:
				r.At(p+".args."+arg+".type", "must be string, int, number or bool, got %q", spec.Type)
			}
			if spec.Min != nil && spec.Max != nil && *spec.Min > *spec.Max {
				r.At(p+".args."+arg, "min %v is above max %v", *spec.Min, *spec.Max)
			}
		}
		if len(ct.Set) == 0 {
			r.At(p+".set", "is required: the state the command drives to")
			continue
		}
		used := map[string]bool{}
		if ct.Actuator != "" {
			if _, ok := c.Actuators[ct.Actuator]; !ok {
				r.At(p+".actuator", "no actuator named %q (configured: %s)", ct.Actuator, strings.Join(c.ActuatorNames(), ", "))
			}
			checkPlaceholders(r, p+".set", ct.Set, ct.Args, used)
		} else {
			for act, st := range ct.Set {
				if _, ok := c.Actuators[act]; !ok {
					r.At(p+".set."+act, "no actuator named %q: without 'actuator', set maps actuator names to states", act)
					continue
				}
				m, ok := st.(map[string]any)
				if !ok {
					r.At(p+".set."+act, "want the state of actuator %q as a mapping, got %v", act, st)
					continue
				}
				checkPlaceholders(r, p+".set."+act, m, ct.Args, used)
			}
		}
		for arg := range ct.Args {
			if !used[arg] {
				r.At(p+".args."+arg, "is declared but no {%s} in set uses it", arg)
			}
		}
	}
}

func checkPlaceholders(r *Reporter, path string, set map[string]any, args map[string]ArgSpec, used map[string]bool) {
	for k, v := range set {
		s, ok := v.(string)
		if !ok {
			if sub, isMap := v.(map[string]any); isMap {
				checkPlaceholders(r, path+"."+k, sub, args, used)
			}
			continue
		}
		m := placeholderRE.FindStringSubmatch(s)
		if m == nil {
			continue
		}
		if _, ok := args[m[1]]; !ok {
			r.At(path+"."+k, "uses {%s} but args declares no %q", m[1], m[1])
			continue
		}
		used[m[1]] = true
	}
}

// String describes where the config came from, for logs.
func (c *Config) String() string {
	return fmt.Sprintf("%s (thing %s, %d actuators)", c.File, c.Gateway.Thing, len(c.Actuators))
}

// presenceTopicProblem says what is wrong with a presence topic: it must
// hold {thing} once as a whole level (the shadow service finds the thing
// there), no wildcards, and stay outside the reserved $-topics (AWS IoT
// Core reserves them and its shadow service ignores wills there).
func presenceTopicProblem(topic string) string {
	whole := 0
	for _, level := range strings.Split(topic, "/") {
		if level == "{thing}" {
			whole++
		}
	}
	switch {
	case strings.HasPrefix(topic, "$"):
		return "must not start with '$' ($-topics are reserved: AWS IoT Core's shadow service ignores wills there)"
	case strings.ContainsAny(topic, "+#"):
		return "must hold no '+' or '#'"
	case whole != 1 || strings.Count(topic, "{thing}") != 1:
		return "must hold {thing} once, as a whole level, as " + DefaultPresenceTopic + " does"
	}
	return ""
}
