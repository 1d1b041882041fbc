// Package daemon assembles shadowgated from its parts: config, store,
// drivers and actuators, the embedded broker and shadow service when asked
// for, the MQTT link, the outbox, shadow sync and commands. cmd/shadowgated
// only parses flags and calls Run.
package daemon

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	gosync "sync"
	"sync/atomic"
	"time"

	"github.com/shadowgate/shadowgate/agent/actuate"
	"github.com/shadowgate/shadowgate/agent/awsapi"
	"github.com/shadowgate/shadowgate/agent/broker"
	"github.com/shadowgate/shadowgate/agent/clock"
	"github.com/shadowgate/shadowgate/agent/command"
	"github.com/shadowgate/shadowgate/agent/config"
	"github.com/shadowgate/shadowgate/agent/jobrun"
	"github.com/shadowgate/shadowgate/agent/jobs"
	"github.com/shadowgate/shadowgate/agent/link"
	"github.com/shadowgate/shadowgate/agent/localapi"
	"github.com/shadowgate/shadowgate/agent/outbox"
	"github.com/shadowgate/shadowgate/agent/resident"
	"github.com/shadowgate/shadowgate/agent/shadowsvc"
	"github.com/shadowgate/shadowgate/agent/sync"
	"github.com/shadowgate/shadowgate/agent/version"
	"github.com/shadowgate/shadowgate/agent/watchdog"
	"github.com/shadowgate/shadowgate/drivers"
	_ "github.com/shadowgate/shadowgate/drivers/all" // every driver
	"github.com/shadowgate/shadowgate/store"
)

// Daemon is a running shadowgated.
//
// The exported fields are the parts as they started. A reload replaces the
// parts whose configuration changed: Config, Link, Sync and Commands may be
// new after one (they are updated, unsynchronised, for the Ready hook's
// users that do not reload); Store, Manager and Outbox stay.
type Daemon struct {
	Config   *config.Config
	Store    *store.Store
	Manager  *actuate.Manager
	Link     *link.Link
	Sync     *sync.Syncer
	Commands *command.Processor
	Jobs     *jobrun.Client
	Outbox   *outbox.Drainer
	// Clock is the trusted time (the system clock while synchronized,
	// else the cloud's, estimated from its responses).
	Clock   *clock.Clock
	Started time.Time

	log      *slog.Logger
	watchdog *watchdog.Watchdog
	hw       *drivers.Hardware
	svcStore *store.Store
	closers  []func() error

	// The running configuration and its parts; a reload changes them with
	// reloadMu held.
	reloadMu gosync.Mutex
	closing  bool
	cfg      *config.Config
	up       *uplink
	linkKey  string
	emb      *embedded // nil without an embedded broker
	gen      *generation
	outbox   *task
	api      *localapi.Server
	ctx      context.Context // the parts run under it; it ends at shutdown

	// jobs is the running generation's jobs client, for the status line
	// (read outside reloadMu).
	jobs atomic.Pointer[jobrun.Client]
	// cfgJobs are the CONFIG_UPDATE executions, run outside the
	// generations they replace (configjob.go).
	cfgJobs configJobs

	memory *resident.Releaser // nil: start-up's memory is not given back

	linkTracker, intakeTracker *watchdog.Tracker
	// The embedded shadow service's loops (its link's handler, its
	// finisher), made once: reloads rebuild the service, not the trackers.
	svcLinkTracker, svcTracker *watchdog.Tracker
	jobsTracker                *watchdog.Tracker // the embedded jobs service's finisher
}

// Hooks let the caller (main, tests) see the daemon come up.
type Hooks struct {
	// Ready is called once the store is open and the actuators are
	// initialised, before the cloud is reached.
	Ready func(d *Daemon)
	// Clock, when set, replaces the system clock and the kernel's
	// synchronization state (tests: a gateway booted days behind).
	Clock *clock.Options
	// Memory, when set, gives back the memory only start-up needed once
	// it is over (see releaseStartup): the process's main sets it, as the
	// memory is the process's, not one daemon's.
	Memory *resident.Releaser
}

// NewLogger makes the daemon's logger from the config's log section. Its
// level follows log.level on a reload.
func NewLogger(c config.Log, w *os.File) *slog.Logger {
	lv := new(slog.LevelVar)
	lv.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: lv}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if c.Format == "json" {
		h = slog.NewJSONHandler(w, opts)
	}
	return slog.New(&leveled{Handler: h, level: lv})
}

// leveled is NewLogger's handler, with the level a reload can change.
type leveled struct {
	slog.Handler
	level *slog.LevelVar
}

// LoadConfig reads and checks the configuration with every driver's checks.
func LoadConfig(path string) (*config.Config, error) {
	return config.Load(path, drivers.Check)
}

// Run starts the daemon from cfg and runs it until ctx ends, then shuts it
// down: running commands finish their action, actuators with on_shutdown:
// safe are driven safe, the store is flushed and closed. The local API can
// reload it (see Serve).
func Run(ctx context.Context, cfg *config.Config, log *slog.Logger, hooks Hooks) error {
	return Serve(ctx, cfg, log, hooks, nil)
}

// Serve runs the daemon from cfg and reloads it from cfg.File when hup
// fires (SIGHUP) or the local API asks (see Daemon.Reload). It returns when
// ctx ends.
func Serve(ctx context.Context, cfg *config.Config, log *slog.Logger, hooks Hooks, hup <-chan os.Signal) error {
	var co clock.Options
	if hooks.Clock != nil {
		co = *hooks.Clock
	}
	co.Logger = log
	d, err := start(ctx, cfg, log, clock.New(co))
	if err != nil {
		return err
	}
	d.serve(ctx, hooks, hup)
	return d.shutdown()
}

// serve runs the parts until ctx ends, reloading on hup.
func (d *Daemon) serve(ctx context.Context, hooks Hooks, hup <-chan os.Signal) {
	runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	d.ctx = runCtx
	d.memory = hooks.Memory
	var wg gosync.WaitGroup
	if d.emb != nil {
		d.emb.start(runCtx)
	}
	wg.Add(1)
	go func() { defer wg.Done(); d.Clock.Run(runCtx) }()
	d.up.start(runCtx)
	d.outbox = startTask(runCtx, d.Outbox.Run)
	d.gen.start(runCtx, false)
	wg.Add(1)
	go func() { defer wg.Done(); d.runConfigJobs(runCtx) }()
	api, err := localapi.Listen(d.cfg.API.Socket, d.cfg.API.Group, d.backend(), d.log)
	if err != nil {
		// The gateway goes on without its local API: actuators and cloud
		// matter more than shadowctl.
		d.log.Error("local API unavailable", "err", err)
	} else {
		d.api = api
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := api.Serve(runCtx); err != nil {
				d.log.Error("local API stopped", "err", err)
			}
		}()
	}
	// Ready once the store is open and the actuators are initialised; the
	// cloud may take its time (or never come: the gateway still works).
	d.watchdog.Ready(d.statusLine())
	wg.Add(1)
	go func() { defer wg.Done(); d.watchdog.Run(runCtx, 0, d.statusLine) }()
	if hooks.Ready != nil {
		hooks.Ready(d)
	}
	if d.memory != nil {
		wg.Add(1)
		go func() { defer wg.Done(); d.releaseStartup(runCtx) }()
	}
	d.log.Info("shadowgated running", "version", version.Version, "thing", d.cfg.Gateway.Thing,
		"broker", d.cfg.Cloud.Broker, "actuators", len(d.cfg.Actuators), "api", d.cfg.API.Socket)
	for {
		select {
		case <-ctx.Done():
			d.watchdog.Stopping()
			d.log.Info("shutting down: finishing running commands")
			d.reloadMu.Lock()
			d.closing = true // a reload asked for now is refused
			d.reloadMu.Unlock()
			// Running actions finish; queued commands stay in the inbox.
			// The shutdown states (see shutdown) are still reported, through
			// the outbox, for the next start to send.
			stop()
			d.gen.stop()
			d.up.stop() // publishes the offline presence, then disconnects
			d.outbox.stop()
			if d.emb != nil {
				d.emb.awaitOffline(d.cfg.Gateway.Thing, 2*time.Second)
				if err := d.emb.stop(); err != nil {
					d.log.Warn("stopping", "err", err)
				}
			}
			wg.Wait()
			return
		case <-hup:
			d.Reload(ctx) // logged
		}
	}
}

// shutdown drives actuators with on_shutdown: safe to their safe state and
// closes what start opened.
func (d *Daemon) shutdown() error {
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	if err := d.Manager.Shutdown(sctx, d.cfg.Actuators); err != nil {
		d.log.Error("shutdown states", "err", err)
	}
	cancel()
	return d.close()
}

func start(ctx context.Context, cfg *config.Config, log *slog.Logger, clk *clock.Clock) (d *Daemon, err error) {
	d = &Daemon{Config: cfg, cfg: cfg, log: log, Clock: clk, Started: time.Now(), watchdog: watchdog.New(log), up: newUplink()}
	d.cfgJobs.wake = make(chan struct{}, 1)
	d.linkTracker = d.watchdog.Track("mqtt message handler", 5*time.Minute)
	d.intakeTracker = d.watchdog.Track("command intake", 2*time.Minute)
	d.svcLinkTracker = d.watchdog.Track("shadow service message handler", time.Minute)
	d.svcTracker = d.watchdog.Track("shadow service", 2*time.Minute)
	d.jobsTracker = d.watchdog.Track("jobs service", 2*time.Minute)
	defer func() {
		if err != nil {
			d.close()
		}
	}()
	d.Store, err = store.Open(cfg.Store.Path, store.Options{
		OutboxMaxItems: cfg.Store.Outbox.MaxItems, OutboxMaxBytes: int64(cfg.Store.Outbox.MaxBytes),
		InboxMaxItems: cfg.Store.Inbox.MaxItems, InboxMaxBytes: int64(cfg.Store.Inbox.MaxBytes),
		HistoryDepth: cfg.History, HistoryMaxBytes: int64(cfg.Store.HistoryMaxBytes), Logger: log,
	})
	if err != nil {
		return d, err
	}
	d.closers = append(d.closers, d.Store.Close)

	prepared, err := drivers.Prepare(cfg)
	if err != nil {
		return d, err
	}
	d.hw = drivers.NewHardware()
	d.closers = append(d.closers, d.hw.Close)
	acts, err := d.openActuators(ctx, cfg, prepared, cfg.ActuatorNames())
	if err != nil {
		return d, err
	}
	d.Manager = actuate.New(acts, actuate.Options{Store: d.Store, Logger: log, Watchdog: d.watchdog, Stamp: d.Clock.Stamp})
	d.closers = append(d.closers, d.Manager.Close)

	if cfg.Broker.Embedded {
		if d.emb, err = d.startEmbedded(cfg, nil); err != nil {
			return d, err
		}
	}

	l, key, err := d.newLink(cfg)
	if err != nil {
		return d, err
	}
	d.Link, d.linkKey = l, key
	d.Outbox = outbox.New(d.Store, d.up, outbox.DefaultWindow, log)
	d.Outbox.Tracker = d.watchdog.Track("outbox", 2*time.Minute)
	d.up.onConnect(func(context.Context) { d.Outbox.Kick() })
	if d.gen, err = d.newGeneration(cfg); err != nil {
		if d.gen != nil {
			d.gen.release()
		}
		return d, err
	}
	d.up.attach(l, d.gen.routes.filters(), d.gen.routes.optional)
	d.up.install(d.gen.routes)
	d.Sync, d.Commands, d.Jobs = d.gen.sync, d.gen.commands, d.gen.jobs
	d.jobs.Store(d.gen.jobs)
	// After sync observes the actuators: a group restored after a crash is
	// a change made at the gateway on purpose, written as desired too (the
	// cloud may hold the desired state of the group's first half).
	if err := d.Sync.UndoInterruptedGroups(); err != nil {
		log.Error("writing the state before interrupted group changes", "err", err)
	}
	if err := d.Manager.Recover(ctx); err != nil {
		log.Error("restoring interrupted group changes", "err", err)
	}
	if err := d.Manager.PowerOn(ctx, cfg.Actuators); err != nil {
		log.Error("power-on states", "err", err)
	}
	return d, nil
}

// openActuators opens the named actuators; on an error the ones opened are
// closed again.
func (d *Daemon) openActuators(ctx context.Context, cfg *config.Config, prepared drivers.Prepared, names []string) (map[string]drivers.Actuator, error) {
	acts := map[string]drivers.Actuator{}
	for _, name := range names {
		a, err := prepared[name].Open(ctx, d.hw)
		if err != nil {
			for _, opened := range acts {
				opened.Close()
			}
			return nil, fmt.Errorf("open actuator %s (%s): %w", name, cfg.Actuators[name].Driver, err)
		}
		acts[name] = a
	}
	return acts, nil
}

// newLink makes the MQTT link of cfg's cloud settings (it is not run yet)
// and the key a reload compares to tell whether they changed: the settings
// and the contents of the files they name (a renewed certificate at the
// same path is a change).
func (d *Daemon) newLink(cfg *config.Config) (*link.Link, string, error) {
	key, err := linkKey(cfg)
	if err != nil {
		return nil, "", err
	}
	tlsCfg, err := link.TLSConfig(cfg.Cloud.Broker, link.TLSFiles{CA: cfg.Cloud.TLS.CA, Cert: cfg.Cloud.TLS.Cert, Key: cfg.Cloud.TLS.Key})
	if err != nil {
		return nil, "", err
	}
	if tlsCfg != nil {
		tlsCfg.Time = d.Clock.VerifyTime // the trusted time, or the system clock
	}
	var password string
	if cfg.Cloud.PasswordFile != "" {
		b, err := os.ReadFile(cfg.Cloud.PasswordFile)
		if err != nil {
			return nil, "", fmt.Errorf("read password file: %w", err)
		}
		password = string(trimNewline(b))
	}
	// Each MQTT session (each link: its will is fixed when it is made) has
	// a number greater than any before it, so that a will of an older one
	// never wins over a newer one's connected (see shadowsvc/presence.go).
	session, err := d.Store.NextSession(time.Now())
	switch {
	case errors.Is(err, store.ErrSessionUnrecorded):
		// A full or failing disk must not keep the gateway off the broker:
		// the number is still above every recorded one.
		d.log.Warn("the MQTT session number is not recorded: the disk refuses writes; presence uses it all the same", "session", session, "err", err)
	case err != nil:
		return nil, "", err
	}
	presence := link.Presence{
		Topic:   shadowsvc.PresenceTopic(cfg.Cloud.PresenceTopic, cfg.Gateway.Thing),
		Online:  shadowsvc.Presence{Connected: true, Session: session}.JSON(),
		Offline: shadowsvc.Presence{Connected: false, Session: session}.JSON(),
	}
	l, err := link.New(link.Options{
		Broker: cfg.Cloud.Broker, ClientID: cfg.Cloud.ClientID, Username: cfg.Cloud.Username, Password: password,
		TLS: tlsCfg, Keepalive: cfg.Cloud.Keepalive.D(), Presence: presence, Logger: d.log,
		Tracker: d.linkTracker, Clock: d.Clock,
	})
	if err != nil {
		return nil, "", err
	}
	d.log.Info("mqtt session made", "presence_topic", presence.Topic, "session", session)
	return l, key, nil
}

// generation is shadow sync, commands and jobs for one configuration: a
// reload that changes what they see (thing, topic root, conflict policy,
// which actuator drives which shadow key, command types, jobs) replaces
// them together.
type generation struct {
	cfg      *config.Config
	share    *actuate.Manager // sync observes through it
	sync     *sync.Syncer
	commands *command.Processor
	jobs     *jobrun.Client // job executions, run as commands
	routes   *routes
	run      *task
}

// newGeneration builds sync and commands for cfg and settles the commands
// a stop left unfinished. Their handlers are in routes, not yet installed.
// If only the settling failed (the store could not be read), the
// generation is returned with the error.
func (d *Daemon) newGeneration(cfg *config.Config) (*generation, error) {
	g, err := d.buildGeneration(cfg)
	if err != nil {
		return nil, err
	}
	if err := g.commands.Recover(); err != nil {
		return g, err
	}
	return g, nil
}

func (d *Daemon) buildGeneration(cfg *config.Config) (*generation, error) {
	g := &generation{cfg: cfg, share: d.Manager.Share(), routes: newRoutes(d.up)}
	var err error
	g.sync, err = sync.New(sync.Options{
		Thing: cfg.Gateway.Thing, Root: cfg.Cloud.TopicRoot, Conflict: cfg.Cloud.Conflict, Actuators: cfg.Actuators,
		Store: d.Store, Manager: g.share, Link: g.routes, Logger: d.log, StaleAfter: cfg.Cloud.StaleDelta.D(),
		CloudTime: d.Clock.ObserveUnix,
	})
	if err != nil {
		g.share.Release()
		return nil, err
	}
	// Jobs beside commands: the executions run as commands, whose acks the
	// client turns into job statuses (it is the processor's Sink).
	g.jobs = jobrun.New(jobrun.Options{
		Thing: cfg.Gateway.Thing, Root: cfg.Cloud.TopicRoot, Config: cfg, Store: d.Store, Link: g.routes, Logger: d.log,
		Off: !cfg.Jobs.On(), ConfigUpdate: d.submitConfigUpdate, CloudTime: d.Clock.ObserveUnix,
	})
	g.commands = command.New(command.Options{
		Thing: cfg.Gateway.Thing, Config: cfg, Store: d.Store, Manager: d.Manager, Link: g.routes, Outbox: d.Outbox, Logger: d.log,
		Tracker: d.intakeTracker, Clock: d.Clock, Sink: g.jobs,
	})
	g.jobs.Attach(g.commands)
	return g, nil
}

// start runs sync and commands; hooks runs their connect hooks once (the
// link is up already: they would otherwise wait for the next reconnect to
// fetch the shadows).
func (g *generation) start(parent context.Context, hooks bool) {
	fns := []func(context.Context){g.sync.Run, g.commands.Run, g.jobs.Run}
	if hooks {
		fns = append(fns, func(ctx context.Context) {
			if g.routes.Connected() {
				for _, h := range g.routes.hooks {
					h(ctx)
				}
			}
		})
	}
	g.run = startTask(parent, fns...)
}

// stop ends sync and commands: running actions finish, queued commands
// stay in the inbox for the next generation. Sync still hears of changes
// (and queues their reports in the outbox) until release.
func (g *generation) stop() { g.run.stop() }

// release ends sync's observing: the next generation observes instead.
func (g *generation) release() { g.share.Release() }

// embedded is the loopback broker and the shadow service on it.
type embedded struct {
	listen  string
	key     string // what the shadow service depends on
	broker  *broker.Server
	own     bool // the broker was started for this one (not reused)
	svcLink *link.Link
	svc     *shadowsvc.Service
	http    func(context.Context) // serves the service's HTTP API; nil without one
	httpLn  net.Listener
	port    *awsapi.Port  // where httpLn listens: a reload's service shares its socket
	up      chan struct{} // closed when svcLink first connects
	jobs    *jobs.Service // the self-hosted AWS IoT Jobs on the same link and file
	run     *task
}

func embeddedKey(cfg *config.Config) string {
	h := cfg.Broker.HTTP
	return cfg.Broker.Listen + " " + cfg.Cloud.TopicRoot + " " + cfg.Gateway.Thing + " " + cfg.Cloud.PresenceTopic + " " +
		h.Listen + " " + h.Cert + " " + h.Key + " " + h.Credentials
}

// startEmbedded starts the loopback broker (or reuses b) and makes a shadow
// service on it, with its own store file beside the gateway's (it is the
// cloud's data, not the gateway's). The service runs with start.
func (d *Daemon) startEmbedded(cfg *config.Config, b *broker.Server) (_ *embedded, err error) {
	e := &embedded{listen: cfg.Broker.Listen, key: embeddedKey(cfg), broker: b, up: make(chan struct{})}
	if b == nil {
		if e.broker, err = broker.Start(cfg.Broker.Listen, d.log); err != nil {
			return nil, err
		}
		e.own = true
	}
	defer func() {
		if err != nil && e.own {
			e.broker.Close()
		}
	}()
	if d.svcStore == nil {
		svcPath := filepath.Join(filepath.Dir(cfg.Store.Path), "shadowsvc.db")
		if d.svcStore, err = store.Open(svcPath, store.Options{Logger: d.log}); err != nil {
			return nil, fmt.Errorf("embedded shadow service: %w", err)
		}
		d.closers = append(d.closers, d.svcStore.Close)
	}
	e.svcLink, err = link.New(link.Options{Broker: "tcp://" + cfg.Broker.Listen, ClientID: cfg.Gateway.Thing + "-shadowsvc",
		MinBackoff: 100 * time.Millisecond, MaxBackoff: 2 * time.Second, Logger: d.log, Tracker: d.svcLinkTracker})
	if err != nil {
		return nil, err
	}
	var once gosync.Once
	e.svcLink.OnConnect(func(context.Context) { once.Do(func() { close(e.up) }) })
	e.svc = shadowsvc.New(shadowsvc.Options{Root: cfg.Cloud.TopicRoot, Link: e.svcLink, Store: d.svcStore, Logger: d.log, Tracker: d.svcTracker,
		PresenceTopic: cfg.Cloud.PresenceTopic})
	e.jobs = jobs.New(jobs.Options{Root: cfg.Cloud.TopicRoot, Link: e.svcLink, Store: d.svcStore, Logger: d.log, Tracker: d.jobsTracker})
	if h := cfg.Broker.HTTP; h.Listen != "" {
		// Listening here, so that a busy port fails the start (or the
		// reload) instead of the running service. A reload that keeps the
		// port takes turns on the running service's socket. The jobs APIs
		// (iot, iot-jobs-data) share the server with iot-data.
		e.port = awsapi.NewPort(h.Listen)
		if d.emb != nil && d.emb.port != nil && d.emb.port.Addr() == h.Listen {
			e.port = d.emb.port
		}
		srv, ln, err := shadowsvc.HTTPServer(e.svc, shadowsvc.HTTPOptions{Addr: h.Listen, CertFile: h.Cert, KeyFile: h.Key, Credentials: h.Credentials, Port: e.port}, d.log,
			map[string]string{"addr": "broker.http.listen", "cert": "broker.http.cert", "key": "broker.http.key", "credentials": "broker.http.credentials"}, e.jobs.Routes()...)
		if err != nil {
			return nil, fmt.Errorf("embedded shadow service: %w", err)
		}
		e.httpLn = ln
		e.http = func(ctx context.Context) {
			if err := srv.Serve(ctx, ln); err != nil && ctx.Err() == nil {
				d.log.Error("embedded shadow service: HTTP API stopped", "err", err)
			}
		}
	}
	return e, nil
}

// awaitOffline waits (up to wait) while the shadow service shows thing
// connected, so that it applies the offline presence the gateway published
// as it stopped: the service stops with the daemon, and its store would
// keep the thing connected.
func (e *embedded) awaitOffline(thing string, wait time.Duration) {
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		if st, ok, err := e.svc.Presence(thing); err != nil || !ok || !st.Connected {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// start runs the service, its jobs, its link and its HTTP API until stop or
// stopService, not until parent ends: at shutdown it outlives the gateway's
// link, whose offline presence it applies. The gateway GETs its shadows once
// per connect: start waits (a few seconds at most) for the service to
// subscribe, or that GET would find no one and the shadows would not be
// created until the next reconnect.
func (e *embedded) start(parent context.Context) {
	fns := []func(context.Context){e.svc.Run, e.jobs.Run, func(ctx context.Context) { e.svcLink.Run(ctx) }}
	if e.http != nil {
		fns = append(fns, e.http)
	}
	e.run = startTask(context.WithoutCancel(parent), fns...)
	wait := time.NewTimer(5 * time.Second)
	defer wait.Stop()
	select {
	case <-e.up:
	case <-wait.C:
	case <-parent.Done():
	}
}

// stopService stops the shadow service and its HTTP API, leaving the broker.
func (e *embedded) stopService() {
	e.run.stop()
	if e.httpLn != nil {
		e.httpLn.Close()
	}
}

// stop stops the shadow service and the broker.
func (e *embedded) stop() error {
	e.stopService()
	if err := e.broker.Close(); err != nil {
		return fmt.Errorf("close embedded broker %s: %w", e.listen, err)
	}
	return nil
}

func (d *Daemon) close() error {
	var errs []error
	for i := len(d.closers) - 1; i >= 0; i-- {
		if err := d.closers[i](); err != nil {
			errs = append(errs, err)
		}
	}
	d.closers = nil
	return errors.Join(errs...)
}

// Start-up is over when the link's first session has gone this long
// without a message (the shadows' first synchronization is done), or at
// the latest this long after READY (a cloud that does not answer), unless
// the Releaser says otherwise.
const (
	startupQuiet  = time.Second
	startupAtMost = time.Minute
)

// releaseStartup gives back the memory only start-up needed
// (agent/resident) once start-up is over, and logs what it gave back.
func (d *Daemon) releaseStartup(ctx context.Context) {
	quiet, atMost := cmp.Or(d.memory.Quiet, startupQuiet), cmp.Or(d.memory.AtMost, startupAtMost)
	tick := time.NewTicker(quiet / 4)
	defer tick.Stop()
	deadline := time.Now().Add(atMost)
	last, since := int64(-1), time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			st := d.up.current().Stats()
			if n := st.Published + st.Received; !st.Connected || n != last {
				last, since = n, now
			}
			if now.Sub(since) < quiet && now.Before(deadline) {
				continue
			}
			before, after, err := d.memory.Release()
			switch {
			case errors.Is(err, resident.ErrNoPageout): // nothing to mend: an old kernel
				d.log.Info("start-up's memory: the executable's pages stay", "why", err)
			case err != nil:
				d.log.Warn("start-up's memory: the executable's pages stay", "err", err)
			}
			d.log.Info("gave back start-up's memory", "resident_mb", fmt.Sprintf("%.1f → %.1f", mib(before.Resident), mib(after.Resident)),
				"binary_mb", fmt.Sprintf("%.1f → %.1f", mib(before.File), mib(after.File)), "own_mb", fmt.Sprintf("%.1f → %.1f", mib(before.Anon), mib(after.Anon)))
			return
		}
	}
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// backend is the running parts as the local API sees them.
func (d *Daemon) backend() *localapi.Backend {
	return &localapi.Backend{
		Config: d.cfg, Store: d.Store, Manager: d.Manager, Sync: d.gen.sync, Commands: d.gen.commands, Jobs: d.gen.jobs, Link: d.up.current(),
		Outbox: d.Outbox, Clock: d.Clock, Started: d.Started, Reload: d.Reload, Memory: d.memory,
	}
}

// statusLine is the one-line state systemctl status shows.
func (d *Daemon) statusLine() string {
	st := d.up.current().Stats()
	ob := d.Store.OutboxStats()
	clk := d.Clock.Status().Summary()
	degraded := "" // what works less than it should
	if why := d.jobs.Load().Unavailable(); why != "" {
		degraded = "; jobs unavailable (" + why + ")"
	}
	if w := d.Store.WriteStats(); w.Refused != "" {
		degraded += fmt.Sprintf("; the disk refuses writes since %s (%s)", w.RefusedSince.Format(time.TimeOnly), w.Refused)
	}
	if st.Connected {
		return fmt.Sprintf("connected to %s; outbox %d waiting, %d dropped%s; clock: %s", st.Broker, ob.Items, ob.Dropped, degraded, clk)
	}
	why := st.LastError
	if why == "" {
		why = "connecting"
	}
	return fmt.Sprintf("offline (%s); outbox %d waiting, %d dropped%s; clock: %s", why, ob.Items, ob.Dropped, degraded, clk)
}

func trimNewline(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}
