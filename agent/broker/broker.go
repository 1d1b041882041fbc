// Package broker is the embedded MQTT broker of the zero-setup demo and of
// single-box installs (mochi-mqtt), listening on loopback only.
package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"net"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// ErrNotLoopback is returned for a listen address off the loopback range.
var ErrNotLoopback = errors.New("the embedded broker listens on loopback only")

// MaxPayload is the largest message payload the broker takes, as AWS IoT
// Core, which refuses a publish whose payload is over 128 KB.
// MaxPacketSize adds room for the fixed header, a topic (AWS allows 256
// bytes) and MQTT 5 properties. A client that sends a larger packet is
// disconnected and its message is not delivered.
const (
	MaxPayload    = 128 << 10
	MaxPacketSize = MaxPayload + 1<<10
)

// Server is a running embedded broker.
type Server struct {
	srv  *mqtt.Server
	addr string
}

// Start listens on addr (a loopback host:port) and serves MQTT 3.1.1 and 5.
// Anyone who can reach the loopback address may connect.
func Start(addr string, log *slog.Logger) (*Server, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("embedded broker address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("%w, not %q", ErrNotLoopback, addr)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// mochi logs every client disconnect (even a clean EOF) as a warning;
	// keep its errors.
	quiet := slog.New(levelFloor{log.Handler(), slog.LevelError})
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = MaxPacketSize
	srv := mqtt.New(&mqtt.Options{Logger: quiet, InlineClient: false, Capabilities: caps})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	if err := srv.AddHook(newLifecycle(srv), nil); err != nil { // AWS's lifecycle events
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	// Bind first so that a busy port is an error here, not later.
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("embedded broker: listen on %s: %w", addr, err)
	}
	l.Close()
	if err := srv.AddListener(listeners.NewTCP(listeners.Config{ID: "loopback", Address: addr})); err != nil {
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	if err := srv.Serve(); err != nil {
		return nil, fmt.Errorf("embedded broker: serve on %s: %w", addr, err)
	}
	log.Info("embedded MQTT broker listening", "addr", addr)
	return &Server{srv: srv, addr: addr}, nil
}

// Addr is the address it listens on.
func (s *Server) Addr() string { return s.addr }

// Close stops the broker.
func (s *Server) Close() error { return s.srv.Close() }
