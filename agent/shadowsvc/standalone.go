package shadowsvc

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/shadowgate/shadowgate/agent/awsapi"
	"github.com/shadowgate/shadowgate/agent/jobs"
	"github.com/shadowgate/shadowgate/agent/link"
	"github.com/shadowgate/shadowgate/agent/shadow"
	"github.com/shadowgate/shadowgate/agent/watchdog"
	"github.com/shadowgate/shadowgate/store"
)

// StandaloneOptions configure cmd/shadowsvc.
type StandaloneOptions struct {
	Broker, ClientID, Root, StorePath string
	TLS                               link.TLSFiles
	Username, PasswordFile            string
	LogLevel                          string
	// MaxInFlightPerThing and MaxQueued are the load limits (Options).
	MaxInFlightPerThing, MaxQueued int
	// NoJobs turns the self-hosted AWS IoT Jobs (agent/jobs) off; by
	// default the service answers the jobs topics too, from the same file.
	NoJobs bool
	// PresenceTopic is the gateways' presence topic (Options); "" ignores
	// presence.
	PresenceTopic string
	// HTTP is the iot-data HTTP API: off when its address is empty.
	HTTP HTTPOptions
}

// HTTPOptions configure the HTTP API (flags --http, --http-cert, --http-key,
// --credentials, --http-region, --http-rate, --http-burst; the YAML keys of
// broker.http in the gateway).
type HTTPOptions struct {
	Addr              string
	CertFile, KeyFile string
	Credentials       string // a file in the AWS shared-credentials format
	Region            string // the only region accepted; empty: any
	Rate              float64
	Burst             int
	// Port, when set, is where to listen (made for Addr): the server then
	// shares the socket with the one it replaces on the same Port.
	Port *awsapi.Port
}

// HTTPServer is the HTTP API of svc, checked and listening but not yet
// serving: it refuses plain HTTP off loopback, and a non-loopback address
// without credentials. names maps "addr", "cert", "key" and "credentials"
// to what the user calls them (flags, YAML keys) for the errors. More routes
// (the jobs APIs) join the shadow service's on the same server.
func HTTPServer(svc *Service, o HTTPOptions, log *slog.Logger, names map[string]string, more ...awsapi.Route) (*awsapi.Server, net.Listener, error) {
	var creds *awsapi.Credentials
	if o.Credentials != "" {
		c, err := awsapi.LoadCredentials(o.Credentials)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", names["credentials"], err)
		}
		creds = c
	}
	lo := awsapi.ListenOptions{Addr: o.Addr, CertFile: o.CertFile, KeyFile: o.KeyFile, Authenticated: creds != nil}
	if _, err := lo.Check(); err != nil {
		switch {
		case errors.Is(err, awsapi.ErrPlainNotLoopback):
			return nil, nil, fmt.Errorf("%s %s: plain HTTP is allowed only on a loopback address; give %s and %s for TLS", names["addr"], o.Addr, names["cert"], names["key"])
		case errors.Is(err, awsapi.ErrNoCredentials):
			return nil, nil, fmt.Errorf("%s %s: a non-loopback address needs %s (a file in the AWS shared-credentials format)", names["addr"], o.Addr, names["credentials"])
		}
		return nil, nil, fmt.Errorf("%s: %w", names["addr"], err)
	}
	var ln net.Listener
	var err error
	if o.Port != nil {
		ln, err = awsapi.ListenOn(lo, o.Port)
	} else {
		ln, err = awsapi.Listen(lo)
	}
	if err != nil {
		return nil, nil, err
	}
	srv := awsapi.New(awsapi.Options{Credentials: creds, Region: o.Region, Rate: o.Rate, Burst: o.Burst, Logger: log})
	srv.Handle(svc.Routes()...)
	srv.Handle(more...)
	scheme := "http"
	if o.CertFile != "" {
		scheme = "https"
	}
	if creds == nil {
		log.Warn("HTTP API without credentials: requests are not authenticated (allowed on loopback only)", "addr", ln.Addr().String())
	} else {
		log.Info("HTTP API serving", "endpoint", scheme+"://"+ln.Addr().String(), "credentials", creds.File, "keys", creds.Len())
	}
	return srv, ln, nil
}

// RunStandalone runs the service until ctx ends.
func RunStandalone(ctx context.Context, o StandaloneOptions, logOut io.Writer) error {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(o.LogLevel)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", o.LogLevel)
	}
	log := slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: lv}))
	if !strings.HasSuffix(o.Root, "/") || strings.ContainsAny(o.Root, "+#") {
		return fmt.Errorf("--topic-root %q must end with '/' and hold no '+' or '#'", o.Root)
	}
	if _, err := shadow.ParseTopic(o.Root, o.Root+"x/shadow/get"); err != nil {
		return fmt.Errorf("--topic-root %q: %w", o.Root, err)
	}
	if o.PresenceTopic != "" {
		if err := CheckPresenceTopic(o.PresenceTopic); err != nil {
			return fmt.Errorf("--presence-topic: %w", err)
		}
	}
	tlsCfg, err := link.TLSConfig(o.Broker, o.TLS)
	if err != nil {
		return err
	}
	var password string
	if o.PasswordFile != "" {
		b, err := os.ReadFile(o.PasswordFile)
		if err != nil {
			return fmt.Errorf("read password file: %w", err)
		}
		password = strings.TrimRight(string(b), "\r\n")
	}
	st, err := store.Open(o.StorePath, store.Options{Logger: log})
	if err != nil {
		return err
	}
	defer st.Close()
	wd := watchdog.New(log)
	l, err := link.New(link.Options{Broker: o.Broker, ClientID: o.ClientID, TLS: tlsCfg, Username: o.Username, Password: password, Logger: log,
		Tracker: wd.Track("mqtt message handler", time.Minute)})
	if err != nil {
		return err
	}
	svc := New(Options{Root: o.Root, Link: l, Store: st, Logger: log,
		MaxInFlightPerThing: o.MaxInFlightPerThing, MaxQueued: o.MaxQueued, PresenceTopic: o.PresenceTopic,
		Tracker: wd.Track("shadow service", 2*time.Minute)})
	var js *jobs.Service
	var jobRoutes []awsapi.Route
	if !o.NoJobs {
		// With --http-region, the region of every ARN the jobs API returns.
		js = jobs.New(jobs.Options{Root: o.Root, Link: l, Store: st, Logger: log, Region: o.HTTP.Region, Tracker: wd.Track("jobs service", 2*time.Minute)})
		jobRoutes = js.Routes()
	}
	var api *awsapi.Server
	var apiLn net.Listener
	if o.HTTP.Addr != "" {
		api, apiLn, err = HTTPServer(svc, o.HTTP, log, map[string]string{"addr": "--http", "cert": "--http-cert", "key": "--http-key", "credentials": "--credentials"}, jobRoutes...)
		if err != nil {
			return err
		}
	} else if o.HTTP.CertFile != "" || o.HTTP.KeyFile != "" || o.HTTP.Credentials != "" {
		return fmt.Errorf("--http-cert, --http-key and --credentials need --http ADDR")
	}
	log.Info("shadowsvc serving", "broker", o.Broker, "root", o.Root, "store", o.StorePath, "jobs", !o.NoJobs, "presence", o.PresenceTopic)
	status := func() string {
		ls, ss := l.Stats(), svc.Stats()
		state := "connected to " + o.Broker
		if !ls.Connected {
			state = "offline (" + cmp.Or(ls.LastError, "connecting") + ")"
		}
		line := fmt.Sprintf("%s; %d requests, %d answered 429, %d responses lost", state, ss.Requests, ss.Throttled, ss.Lost)
		if js != nil {
			st := js.Stats()
			line += fmt.Sprintf("; jobs: %d requests, %d throttled", st.Requests, st.Throttled)
		}
		return line
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(2)
	go func() { defer wg.Done(); svc.Run(ctx) }()
	go func() { defer wg.Done(); wd.Run(ctx, 0, status) }()
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	var apiErr error
	if api != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := api.Serve(lctx, apiLn); err != nil && lctx.Err() == nil {
				apiErr = err
				log.Error("HTTP API stopped", "err", err)
				stop()
			}
		}()
	}
	if js != nil {
		wg.Add(1)
		go func() { defer wg.Done(); js.Run(ctx) }()
	}
	wd.Ready(status())
	l.Run(lctx)
	wd.Stopping()
	stop()
	wg.Wait()
	return apiErr
}
