package awsapi

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// ListenOptions say where and how the server listens.
type ListenOptions struct {
	Addr string // host:port
	// CertFile and KeyFile (PEM) turn TLS on; both or neither.
	CertFile, KeyFile string
	// Authenticated says the server has credentials: without them only a
	// loopback address is allowed.
	Authenticated bool
}

// Errors of Listen that callers name in their own terms (flags, YAML keys).
var (
	ErrPlainNotLoopback = errors.New("plain HTTP is allowed only on a loopback address (127.0.0.1, [::1], localhost); give a TLS certificate and key")
	ErrNoCredentials    = errors.New("a non-loopback address needs a credentials file: without one no request is authenticated")
)

// IsLoopback reports whether addr (host:port) listens on loopback only.
func IsLoopback(addr string) (bool, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false, fmt.Errorf("want host:port, got %q", addr)
	}
	if host == "localhost" {
		return true, nil
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback(), nil
}

// Check applies the rules of Listen without listening: TLS or loopback,
// and credentials off loopback.
func (o ListenOptions) Check() (tlsOn bool, err error) {
	loop, err := IsLoopback(o.Addr)
	if err != nil {
		return false, err
	}
	if (o.CertFile == "") != (o.KeyFile == "") {
		return false, errors.New("a TLS certificate needs its key, and a key its certificate")
	}
	tlsOn = o.CertFile != ""
	if !loop && !tlsOn {
		return false, fmt.Errorf("%s: %w", o.Addr, ErrPlainNotLoopback)
	}
	if !loop && !o.Authenticated {
		return false, fmt.Errorf("%s: %w", o.Addr, ErrNoCredentials)
	}
	return tlsOn, nil
}

// Listen opens the address after Check: a TLS listener when a certificate
// is given, plain TCP on loopback otherwise.
func Listen(o ListenOptions) (net.Listener, error) {
	return listen(o, func() (net.Listener, error) {
		ln, err := net.Listen("tcp", o.Addr)
		if err != nil {
			return nil, fmt.Errorf("listen %s: %w", o.Addr, err)
		}
		return ln, nil
	})
}

// ListenOn is Listen on a new Listener of p, which was opened at o.Addr:
// the server it serves takes turns on the socket with the port's others.
func ListenOn(o ListenOptions, p *Port) (net.Listener, error) {
	if p.Addr() != o.Addr {
		return nil, fmt.Errorf("listen %s: the port given is %s", o.Addr, p.Addr())
	}
	return listen(o, p.Listener)
}

func listen(o ListenOptions, open func() (net.Listener, error)) (net.Listener, error) {
	tlsOn, err := o.Check()
	if err != nil {
		return nil, err
	}
	var cfg *tls.Config
	if tlsOn {
		cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("load TLS certificate: %w", err)
		}
		cfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}}
	}
	ln, err := open()
	if err != nil {
		return nil, err
	}
	if cfg != nil {
		ln = tls.NewListener(ln, cfg)
	}
	return ln, nil
}

// Serve serves ln until ctx ends, then lets requests under way finish (up
// to 10 s) and returns.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := hs.Shutdown(sctx)
	<-errc
	if err != nil {
		return fmt.Errorf("shut down %s: %w", ln.Addr(), err)
	}
	return nil
}
