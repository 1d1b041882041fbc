package shadowsvc

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/shadowgate/shadowgate/agent/link"
	"github.com/shadowgate/shadowgate/agent/shadow"
	"github.com/shadowgate/shadowgate/store"
)

// StandaloneOptions configure cmd/shadowsvc.
type StandaloneOptions struct {
	Broker, ClientID, Root, StorePath string
	TLS                               link.TLSFiles
	Username, PasswordFile            string
	LogLevel                          string
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
	l, err := link.New(link.Options{Broker: o.Broker, ClientID: o.ClientID, TLS: tlsCfg, Username: o.Username, Password: password, Logger: log})
	if err != nil {
		return err
	}
	New(Options{Root: o.Root, Link: l, Store: st, Logger: log})
	log.Info("shadowsvc serving", "broker", o.Broker, "root", o.Root, "store", o.StorePath)
	l.Run(ctx)
	return nil
}
