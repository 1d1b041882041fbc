package daemon

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/shadowgate/shadowgate/agent/broker"
	"github.com/shadowgate/shadowgate/agent/config"
	"github.com/shadowgate/shadowgate/agent/link"
	"github.com/shadowgate/shadowgate/drivers"
)

// errStopping refuses a reload asked for while the daemon stops.
var errStopping = errors.New("shadowgated is stopping")

// reloadTimeout bounds building the new parts (opening actuators).
const reloadTimeout = 2 * time.Minute

// Reload reads the configuration file again and switches to it. A reload
// is a difference of configurations: the parts whose configuration did not
// change keep running untouched (actuators, the MQTT session, the embedded
// broker); the changed ones are built beside the running ones and replace
// them only once every one of them started. An invalid file, or a part
// that cannot start (a port in use, a device that does not open), changes
// nothing: the error says why, and the running configuration goes on.
//
// It returns what changed, for people; none when the file is what runs.
// systemd is told RELOADING=1 and READY=1 around it.
func (d *Daemon) Reload(ctx context.Context) ([]string, error) {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	if d.closing {
		return nil, errStopping
	}
	d.watchdog.Reloading()
	defer func() { d.watchdog.Ready(d.statusLine()) }()
	changes, err := d.reload(ctx)
	switch {
	case err != nil:
		d.log.Error("reload failed; the running configuration is kept", "file", d.cfg.File, "err", err)
	case len(changes) == 0:
		d.log.Info("reload: the configuration file is what runs; nothing changed", "file", d.cfg.File)
	default:
		d.log.Info("configuration reloaded", "file", d.cfg.File, "changes", changes)
	}
	return changes, err
}

// plan is what a reload changes.
type plan struct {
	changes []string // for people
	restart []string // keys that take a restart

	open   []string // actuators to open: added, or their driver settings changed
	remove []string // actuators that go
	gen    bool     // shadow sync and commands are built again
	link   bool     // the MQTT link is replaced (cloud settings changed)
	broker bool     // the embedded broker is replaced, started or stopped
	svc    bool     // only the embedded shadow service is replaced
	level  *slog.Level

	linkKey string
}

func (d *Daemon) reload(ctx context.Context) ([]string, error) {
	next, err := LoadConfig(d.cfg.File)
	if err != nil {
		return nil, err
	}
	p, err := d.plan(next)
	if err != nil {
		return nil, err
	}
	if len(p.restart) > 0 {
		return nil, fmt.Errorf("%s changed: that takes a restart of shadowgated (systemctl restart shadowgated); nothing was changed", strings.Join(p.restart, ", "))
	}
	if len(p.changes) == 0 {
		return nil, nil
	}
	bctx, cancel := context.WithTimeout(d.ctx, reloadTimeout)
	defer cancel()

	// Build beside the running parts. Nothing running is touched until
	// every new part is there; a failure closes what was built.
	var opened map[string]drivers.Actuator
	var emb *embedded
	var nl *link.Link
	built := false
	defer func() {
		if built {
			return
		}
		for _, a := range opened {
			a.Close()
		}
		if emb != nil && emb.httpLn != nil {
			emb.httpLn.Close()
		}
		if emb != nil && emb.own {
			emb.broker.Close()
		}
	}()
	if len(p.open) > 0 {
		prepared, err := drivers.Prepare(next)
		if err != nil {
			return nil, err
		}
		if opened, err = d.openActuators(bctx, next, prepared, p.open); err != nil {
			return nil, err
		}
	}
	if p.broker && next.Broker.Embedded || p.svc {
		var reuse = d.embeddedBroker()
		if p.broker {
			reuse = nil
		}
		if emb, err = d.startEmbedded(next, reuse); err != nil {
			return nil, err
		}
	}
	if p.link {
		if nl, _, err = d.newLink(next); err != nil {
			return nil, err
		}
	}
	filters, optional := d.up.filtersNow()
	if p.gen {
		// A generation built and dropped tells which topics the new one
		// subscribes: a first named shadow needs one more, and the session
		// must then be made again to subscribe it.
		g, err := d.buildGeneration(next)
		if err != nil {
			return nil, err
		}
		g.share.Release()
		filters, optional = g.routes.filters(), g.routes.optional
		if nl == nil && !d.up.subscribed(filters) {
			if nl, _, err = d.newLink(next); err != nil {
				return nil, err
			}
			p.changes = append(p.changes, "MQTT session: made again to subscribe the topics of a new shadow")
		}
	}
	built = true

	// Switch. From here on nothing fails that could leave the old
	// configuration half in place.
	d.switchActuators(p, next, opened)
	if nl != nil {
		// Before the gate is taken: the old link's handlers may wait on it.
		d.up.stop()
	}
	switch {
	case p.broker:
		if d.emb != nil {
			if err := d.emb.stop(); err != nil {
				d.log.Warn("reload", "err", err)
			}
		}
		d.emb = emb
		if emb != nil {
			emb.start(d.ctx)
		}
	case p.svc:
		d.emb.stopService()
		d.emb = emb
		emb.start(d.ctx)
	}
	if p.gen {
		d.up.gate.Lock()
		d.gen.stop()
		d.gen.release()
		g, err := d.newGeneration(next)
		if g == nil {
			// The same configuration was built above; this is a store
			// gone bad meanwhile. The old configuration's, then.
			d.log.Error("reload: shadow sync and commands of the new configuration", "err", err)
			g, err = d.newGeneration(d.cfg)
		}
		if err != nil && g != nil {
			// The store could not be read to settle unfinished commands;
			// they wait for the next start. Sync and commands go on.
			d.log.Error("reload: settling unfinished commands", "err", err)
			p.changes = append(p.changes, "commands: unfinished commands could not be settled: "+err.Error())
		}
		if g != nil {
			d.up.install(g.routes)
			d.gen = g
			g.start(d.ctx, nl == nil)
		}
		// Else the stopped generation's handlers go on receiving: command
		// requests stay unacknowledged (the broker delivers them again),
		// and the shadows are fetched again on the next connect.
		d.up.gate.Unlock()
	}
	if nl != nil {
		d.up.attach(nl, filters, optional)
		d.up.start(d.ctx)
		d.linkKey = p.linkKey
	}
	if p.level != nil {
		if h, ok := d.log.Handler().(*leveled); ok {
			h.level.Set(*p.level)
		}
	}
	d.cfg = next
	d.Config, d.Link, d.Sync, d.Commands, d.Jobs = next, d.up.current(), d.gen.sync, d.gen.commands, d.gen.jobs
	d.jobs.Store(d.gen.jobs)
	if d.api != nil {
		d.api.SetBackend(d.backend())
	}
	return p.changes, nil
}

// switchActuators drives removed actuators with on_shutdown: safe to their
// safe state, puts the opened ones in place of the old and removes the
// others, and applies the power-on policy of the opened ones. The
// actuators whose configuration did not change are not touched.
func (d *Daemon) switchActuators(p *plan, next *config.Config, opened map[string]drivers.Actuator) {
	if len(p.open) == 0 && len(p.remove) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(d.ctx, reloadTimeout)
	defer cancel()
	removed := map[string]*config.Actuator{}
	for _, n := range p.remove {
		removed[n] = d.cfg.Actuators[n]
	}
	if err := d.Manager.Shutdown(ctx, removed); err != nil {
		d.log.Error("reload: removed actuators to their safe state", "err", err)
	}
	if err := d.Manager.Reconfigure(opened, p.remove); err != nil {
		d.log.Warn("reload: closing replaced actuators", "err", err)
	}
	policies := map[string]*config.Actuator{}
	for _, n := range p.open {
		policies[n] = next.Actuators[n]
	}
	if err := d.Manager.PowerOn(ctx, policies); err != nil {
		d.log.Error("reload: power-on states", "err", err)
	}
}

func (d *Daemon) embeddedBroker() *broker.Server {
	if d.emb == nil {
		return nil
	}
	return d.emb.broker
}

// plan compares the running configuration with next.
func (d *Daemon) plan(next *config.Config) (*plan, error) {
	cur := d.cfg
	p := &plan{}
	change := func(format string, args ...any) { p.changes = append(p.changes, fmt.Sprintf(format, args...)) }

	if !reflect.DeepEqual(cur.Store, next.Store) {
		p.restart = append(p.restart, "store")
	}
	if cur.History != next.History {
		p.restart = append(p.restart, "history")
	}
	if cur.API != next.API {
		p.restart = append(p.restart, "api")
	}
	if cur.Log.Format != next.Log.Format {
		p.restart = append(p.restart, "log.format")
	}
	if cur.Log.Level != next.Log.Level {
		var lv slog.Level
		if lv.UnmarshalText([]byte(next.Log.Level)) == nil {
			if _, ok := d.log.Handler().(*leveled); ok {
				p.level = &lv
				change("log level %s", next.Log.Level)
			} else {
				d.log.Warn("reload: log.level changed, but this logger's level is fixed", "level", next.Log.Level)
			}
		}
	}

	names := map[string]bool{}
	for n := range cur.Actuators {
		names[n] = true
	}
	for n := range next.Actuators {
		names[n] = true
	}
	for _, n := range slices.Sorted(maps.Keys(names)) {
		a, b := cur.Actuators[n], next.Actuators[n]
		switch {
		case a == nil:
			p.open = append(p.open, n)
			change("actuator %s added", n)
		case b == nil:
			p.remove = append(p.remove, n)
			if a.OnShutdown == config.ShutdownSafe {
				change("actuator %s removed (driven to its safe state first)", n)
			} else {
				change("actuator %s removed", n)
			}
		default:
			if a.Driver != b.Driver || !nodeEqual(a.Options, b.Options) {
				p.open = append(p.open, n)
				change("actuator %s opened again: its driver settings changed (power_on %s applies)", n, b.PowerOn)
			}
			if a.Shadow != b.Shadow || a.Key != b.Key {
				change("actuator %s now drives key %q of shadow %s", n, b.Key, shadowLabel(b.Shadow))
			}
			if a.PowerOn != b.PowerOn || a.OnShutdown != b.OnShutdown || !reflect.DeepEqual(a.SafeState, b.SafeState) {
				change("actuator %s: power_on, on_shutdown or safe_state", n)
			}
		}
	}

	if !reflect.DeepEqual(genView(cur), genView(next)) {
		p.gen = true
		if !reflect.DeepEqual(cur.Commands, next.Commands) {
			change("command types and settings")
		}
		if cur.Cloud.Conflict != next.Cloud.Conflict {
			change("conflict policy %s", next.Cloud.Conflict)
		}
		change("shadow sync and commands started again (running commands finished first; queued ones kept)")
	}

	key, err := linkKey(next)
	if err != nil {
		return nil, err
	}
	p.linkKey = key
	if key != d.linkKey {
		p.link = true
		change("MQTT session: the cloud settings changed, reconnecting to %s", next.Cloud.Broker)
	}

	curListen, nextListen := "", ""
	if cur.Broker.Embedded {
		curListen = cur.Broker.Listen
	}
	if next.Broker.Embedded {
		nextListen = next.Broker.Listen
	}
	switch {
	case curListen != nextListen && nextListen == "":
		p.broker = true
		change("embedded broker stopped")
	case curListen != nextListen:
		p.broker = true
		change("embedded broker on %s", nextListen)
	case nextListen != "" && embeddedKey(cur) != embeddedKey(next):
		p.svc = true
		change("embedded shadow service started again")
	}
	return p, nil
}

func shadowLabel(name string) string {
	if name == "" {
		return "(classic)"
	}
	return name
}

// genView is what shadow sync and commands see of a configuration.
func genView(c *config.Config) any {
	type binding struct{ Shadow, Key string }
	b := map[string]binding{}
	for n, a := range c.Actuators {
		b[n] = binding{a.Shadow, a.Key}
	}
	return struct {
		Thing, Root, Conflict string
		StaleDelta            config.Duration
		Bindings              map[string]binding
		Commands              config.Commands
		Jobs                  config.Jobs
	}{c.Gateway.Thing, c.Cloud.TopicRoot, c.Cloud.Conflict, c.Cloud.StaleDelta, b, c.Commands, c.Jobs}
}

// linkKey is the cloud settings and the contents of the files they name.
func linkKey(c *config.Config) (string, error) {
	cl := c.Cloud
	h := sha256.New()
	fmt.Fprintf(h, "%q %q %q %q %q %d %q %q\n", cl.Broker, cl.ClientID, cl.Username, cl.TopicRoot, c.Gateway.Thing, cl.Keepalive, cl.TLS, cl.PresenceTopic)
	for _, f := range []struct{ path, key string }{
		{cl.TLS.CA, "cloud.tls.ca"}, {cl.TLS.Cert, "cloud.tls.cert"}, {cl.TLS.Key, "cloud.tls.key"}, {cl.PasswordFile, "cloud.password_file"},
	} {
		if f.path == "" {
			continue
		}
		b, err := os.ReadFile(f.path)
		if err != nil {
			return "", fmt.Errorf("%s: %w", f.key, err)
		}
		fmt.Fprintf(h, "%s %x\n", f.key, sha256.Sum256(b))
	}
	return fmt.Sprintf("%x", h.Sum(nil)), nil
}

// nodeEqual compares two YAML values by what they say, not where they are
// written: keys in any order, aliases followed.
func nodeEqual(a, b *yaml.Node) bool {
	if a != nil && a.Kind == yaml.AliasNode {
		a = a.Alias
	}
	if b != nil && b.Kind == yaml.AliasNode {
		b = b.Alias
	}
	if a == nil || b == nil {
		return a == b || isEmptyNode(a) && isEmptyNode(b)
	}
	if a.Kind != b.Kind {
		return false
	}
	switch a.Kind {
	case yaml.ScalarNode:
		return a.ShortTag() == b.ShortTag() && a.Value == b.Value
	case yaml.MappingNode:
		if len(a.Content) != len(b.Content) {
			return false
		}
		bm := map[string]*yaml.Node{}
		for i := 0; i+1 < len(b.Content); i += 2 {
			bm[b.Content[i].Value] = b.Content[i+1]
		}
		for i := 0; i+1 < len(a.Content); i += 2 {
			bv, ok := bm[a.Content[i].Value]
			if !ok || !nodeEqual(a.Content[i+1], bv) {
				return false
			}
		}
		return true
	default: // sequences, documents
		if len(a.Content) != len(b.Content) {
			return false
		}
		for i := range a.Content {
			if !nodeEqual(a.Content[i], b.Content[i]) {
				return false
			}
		}
		return true
	}
}

func isEmptyNode(n *yaml.Node) bool {
	return n == nil || n.Kind == yaml.MappingNode && len(n.Content) == 0
}
