package shadowsvc

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

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
		MaxInFlightPerThing: o.MaxInFlightPerThing, MaxQueued: o.MaxQueued,
		Tracker: wd.Track("shadow service", 2*time.Minute)})
	log.Info("shadowsvc serving", "broker", o.Broker, "root", o.Root, "store", o.StorePath)
	status := func() string {
		ls, ss := l.Stats(), svc.Stats()
		state := "connected to " + o.Broker
		if !ls.Connected {
			state = "offline (" + cmp.Or(ls.LastError, "connecting") + ")"
		}
		return fmt.Sprintf("%s; %d requests, %d answered 429, %d responses lost", state, ss.Requests, ss.Throttled, ss.Lost)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(2)
	go func() { defer wg.Done(); svc.Run(ctx) }()
	go func() { defer wg.Done(); wd.Run(ctx, 0, status) }()
	wd.Ready(status())
	l.Run(ctx)
	wd.Stopping()
	return nil
}
