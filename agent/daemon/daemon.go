// Package daemon assembles shadowgated from its parts: config, store,
// drivers and actuators, the embedded broker and shadow service when asked
// for, the MQTT link, the outbox, shadow sync and commands. cmd/shadowgated
// only parses flags and calls Run.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	gosync "sync"
	"time"

	"github.com/shadowgate/shadowgate/agent/actuate"
	"github.com/shadowgate/shadowgate/agent/broker"
	"github.com/shadowgate/shadowgate/agent/command"
	"github.com/shadowgate/shadowgate/agent/config"
	"github.com/shadowgate/shadowgate/agent/link"
	"github.com/shadowgate/shadowgate/agent/localapi"
	"github.com/shadowgate/shadowgate/agent/outbox"
	"github.com/shadowgate/shadowgate/agent/shadowsvc"
	"github.com/shadowgate/shadowgate/agent/sync"
	"github.com/shadowgate/shadowgate/agent/version"
	"github.com/shadowgate/shadowgate/agent/watchdog"
	"github.com/shadowgate/shadowgate/drivers"
	_ "github.com/shadowgate/shadowgate/drivers/all" // every driver
	"github.com/shadowgate/shadowgate/store"
)

// Daemon is a running shadowgated.
type Daemon struct {
	Config   *config.Config
	Store    *store.Store
	Manager  *actuate.Manager
	Link     *link.Link
	Sync     *sync.Syncer
	Commands *command.Processor
	Outbox   *outbox.Drainer
	Started  time.Time

	log      *slog.Logger
	watchdog *watchdog.Watchdog
	broker   *broker.Server
	svcStore *store.Store
	svcLink  *link.Link
	svc      *shadowsvc.Service
	closers  []func() error
}

// Hooks let the caller (main, tests) see the daemon come up.
type Hooks struct {
	// Ready is called once the store is open and the actuators are
	// initialised, before the cloud is reached.
	Ready func(d *Daemon)
}

// NewLogger makes the daemon's logger from the config's log section.
func NewLogger(c config.Log, w *os.File) *slog.Logger {
	var lv slog.Level
	lv.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: lv}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// LoadConfig reads and checks the configuration with every driver's checks.
func LoadConfig(path string) (*config.Config, error) {
	return config.Load(path, drivers.Check)
}

// Run starts the daemon from cfg and runs it until ctx ends, then shuts it
// down: running commands finish their action, actuators with on_shutdown:
// safe are driven safe, the store is flushed and closed.
func Run(ctx context.Context, cfg *config.Config, log *slog.Logger, hooks Hooks) error {
	_, err := run(ctx, cfg, log, hooks, nil)
	return err
}

// Serve runs the daemon from cfg and reloads it from cfg.File when hup
// fires (SIGHUP) or the local API asks: the file is checked first, and only
// a valid one replaces the running configuration (the daemon's parts stop
// gracefully and start again with it). It returns when ctx ends.
func Serve(ctx context.Context, cfg *config.Config, log *slog.Logger, hooks Hooks, hup <-chan os.Signal) error {
	for {
		next, err := run(ctx, cfg, log, hooks, hup)
		if err != nil || next == nil {
			return err
		}
		log.Info("configuration reloaded; starting again", "file", next.File)
		cfg = next
	}
}

// run runs one configuration; it returns the next one for a reload.
func run(ctx context.Context, cfg *config.Config, log *slog.Logger, hooks Hooks, hup <-chan os.Signal) (*config.Config, error) {
	d, err := start(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	reloads := make(chan *config.Config, 1)
	reload := func(context.Context) error {
		next, err := LoadConfig(cfg.File)
		if err != nil {
			log.Error("reload refused; keeping the running configuration", "err", err)
			return err
		}
		select {
		case reloads <- next:
		default: // a reload is already on its way
		}
		return nil
	}
	runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	var wg gosync.WaitGroup
	goRun := func(fn func(context.Context)) {
		wg.Add(1)
		go func() { defer wg.Done(); fn(runCtx) }()
	}
	if d.svcLink != nil {
		goRun(d.svc.Run)
		goRun(func(c context.Context) { d.svcLink.Run(c) })
	}
	goRun(func(c context.Context) { d.Link.Run(c) })
	goRun(d.Outbox.Run)
	goRun(d.Sync.Run)
	goRun(d.Commands.Run)
	api, err := localapi.Listen(cfg.API.Socket, cfg.API.Group, &localapi.Backend{
		Config: cfg, Store: d.Store, Manager: d.Manager, Sync: d.Sync, Commands: d.Commands, Link: d.Link,
		Outbox: d.Outbox, Started: d.Started, Reload: reload,
	}, log)
	if err != nil {
		// The gateway goes on without its local API: actuators and cloud
		// matter more than shadowctl.
		log.Error("local API unavailable", "err", err)
	} else {
		goRun(func(c context.Context) {
			if err := api.Serve(c); err != nil {
				log.Error("local API stopped", "err", err)
			}
		})
	}
	// Ready once the store is open and the actuators are initialised; the
	// cloud may take its time (or never come: the gateway still works).
	d.watchdog.Ready(d.statusLine())
	goRun(func(c context.Context) { d.watchdog.Run(c, 0, d.statusLine) })
	if hooks.Ready != nil {
		hooks.Ready(d)
	}
	log.Info("shadowgated running", "version", version.Version, "thing", cfg.Gateway.Thing,
		"broker", cfg.Cloud.Broker, "actuators", len(cfg.Actuators), "api", cfg.API.Socket)

	var next *config.Config
wait:
	for {
		select {
		case <-ctx.Done():
			break wait
		case <-hup:
			if reload(ctx) == nil {
				next = <-reloads
				break wait
			}
		case next = <-reloads:
			break wait
		}
	}
	if next != nil {
		d.watchdog.Status("reloading")
		d.watchdog.Reloading()
	} else {
		d.watchdog.Stopping()
	}
	log.Info("shutting down: finishing running commands")
	stop() // running actions finish; queued commands stay in the inbox
	wg.Wait()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	if err := d.Manager.Shutdown(sctx, cfg.Actuators); err != nil {
		log.Error("shutdown states", "err", err)
	}
	cancel()
	return next, d.close()
}

func start(ctx context.Context, cfg *config.Config, log *slog.Logger) (d *Daemon, err error) {
	d = &Daemon{Config: cfg, log: log, Started: time.Now(), watchdog: watchdog.New(log)}
	defer func() {
		if err != nil {
			d.close()
		}
	}()
	d.Store, err = store.Open(cfg.Store.Path, store.Options{
		OutboxMaxItems: cfg.Store.Outbox.MaxItems, OutboxMaxBytes: int64(cfg.Store.Outbox.MaxBytes),
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
	acts := map[string]drivers.Actuator{}
	hw := drivers.NewHardware()
	d.closers = append(d.closers, hw.Close)
	for _, name := range cfg.ActuatorNames() {
		a, err := prepared[name].Open(ctx, hw)
		if err != nil {
			for _, opened := range acts {
				opened.Close()
			}
			return d, fmt.Errorf("open actuator %s (%s): %w", name, cfg.Actuators[name].Driver, err)
		}
		acts[name] = a
	}
	d.Manager = actuate.New(acts, actuate.Options{Store: d.Store, Logger: log, Watchdog: d.watchdog})
	d.closers = append(d.closers, d.Manager.Close)

	if cfg.Broker.Embedded {
		if err := d.startEmbedded(cfg, log); err != nil {
			return d, err
		}
	}

	tlsCfg, err := link.TLSConfig(cfg.Cloud.Broker, link.TLSFiles{CA: cfg.Cloud.TLS.CA, Cert: cfg.Cloud.TLS.Cert, Key: cfg.Cloud.TLS.Key})
	if err != nil {
		return d, err
	}
	var password string
	if cfg.Cloud.PasswordFile != "" {
		b, err := os.ReadFile(cfg.Cloud.PasswordFile)
		if err != nil {
			return d, fmt.Errorf("read password file: %w", err)
		}
		password = string(trimNewline(b))
	}
	d.Link, err = link.New(link.Options{
		Broker: cfg.Cloud.Broker, ClientID: cfg.Cloud.ClientID, Username: cfg.Cloud.Username, Password: password,
		TLS: tlsCfg, Keepalive: cfg.Cloud.Keepalive.D(),
		StatusTopic: cfg.Cloud.TopicRoot + cfg.Gateway.Thing + "/status", Logger: log,
		Tracker: d.watchdog.Track("mqtt message handler", 5*time.Minute),
	})
	if err != nil {
		return d, err
	}
	d.Outbox = outbox.New(d.Store, d.Link, outbox.DefaultWindow, log)
	d.Outbox.Tracker = d.watchdog.Track("outbox", 2*time.Minute)
	d.Link.OnConnect(func(context.Context) { d.Outbox.Kick() })
	d.Sync, err = sync.New(sync.Options{
		Thing: cfg.Gateway.Thing, Root: cfg.Cloud.TopicRoot, Conflict: cfg.Cloud.Conflict, Actuators: cfg.Actuators,
		Store: d.Store, Manager: d.Manager, Link: d.Link, Logger: log, StaleAfter: cfg.Cloud.StaleDelta.D(),
	})
	if err != nil {
		return d, err
	}
	// After sync observes the actuators: a group restored after a crash is
	// a change made at the gateway on purpose, written as desired too (the
	// cloud may hold the desired state of the group's first half).
	if err := d.Manager.Recover(ctx); err != nil {
		log.Error("restoring interrupted group changes", "err", err)
	}
	if err := d.Manager.PowerOn(ctx, cfg.Actuators); err != nil {
		log.Error("power-on states", "err", err)
	}
	d.Commands = command.New(command.Options{
		Thing: cfg.Gateway.Thing, Config: cfg, Store: d.Store, Manager: d.Manager, Link: d.Link, Outbox: d.Outbox, Logger: log,
		Tracker: d.watchdog.Track("command intake", 2*time.Minute),
	})
	if err := d.Commands.Recover(); err != nil {
		return d, err
	}
	return d, nil
}

// startEmbedded starts the loopback broker and a shadow service on it, with
// its own store file beside the gateway's (it is the cloud's data, not the
// gateway's).
func (d *Daemon) startEmbedded(cfg *config.Config, log *slog.Logger) error {
	var err error
	d.broker, err = broker.Start(cfg.Broker.Listen, log)
	if err != nil {
		return err
	}
	d.closers = append(d.closers, d.broker.Close)
	svcPath := filepath.Join(filepath.Dir(cfg.Store.Path), "shadowsvc.db")
	d.svcStore, err = store.Open(svcPath, store.Options{Logger: log})
	if err != nil {
		return fmt.Errorf("embedded shadow service: %w", err)
	}
	d.closers = append(d.closers, d.svcStore.Close)
	d.svcLink, err = link.New(link.Options{Broker: "tcp://" + cfg.Broker.Listen, ClientID: cfg.Gateway.Thing + "-shadowsvc",
		MinBackoff: 100 * time.Millisecond, MaxBackoff: 2 * time.Second, Logger: log,
		Tracker: d.watchdog.Track("shadow service message handler", time.Minute)})
	if err != nil {
		return err
	}
	d.svc = shadowsvc.New(shadowsvc.Options{Root: cfg.Cloud.TopicRoot, Link: d.svcLink, Store: d.svcStore, Logger: log,
		Tracker: d.watchdog.Track("shadow service", 2*time.Minute)})
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

// statusLine is the one-line state systemctl status shows.
func (d *Daemon) statusLine() string {
	st := d.Link.Stats()
	ob := d.Store.OutboxStats()
	if st.Connected {
		return fmt.Sprintf("connected to %s; outbox %d waiting, %d dropped", st.Broker, ob.Items, ob.Dropped)
	}
	why := st.LastError
	if why == "" {
		why = "connecting"
	}
	return fmt.Sprintf("offline (%s); outbox %d waiting, %d dropped", why, ob.Items, ob.Dropped)
}

func trimNewline(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}
