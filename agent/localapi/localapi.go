// Package localapi is the daemon's HTTP API over a unix socket, for
// shadowctl on the gateway: status, shadows, actuators, history, rollback,
// local set, commands, approvals, reload. Access is by socket permissions
// (mode 0660, group shadowgate); requests that carry an Origin or Referer
// header (a browser) are refused.
package localapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"
)

// Error is the JSON body of every failed request.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// ErrorBody wraps Error as {"error":{…}}.
type ErrorBody struct {
	Error Error `json:"error"`
}

// Error codes.
const (
	CodeBadRequest = "bad_request"
	CodeNotFound   = "not_found"
	CodeConflict   = "conflict"
	CodeForbidden  = "forbidden"
	CodeFailed     = "failed"
	CodeInternal   = "internal"
)

// apiError is an error with an HTTP status and code.
type apiError struct {
	status int
	code   string
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &apiError{http.StatusBadRequest, CodeBadRequest, fmt.Sprintf(format, args...)}
}

func notFound(format string, args ...any) error {
	return &apiError{http.StatusNotFound, CodeNotFound, fmt.Sprintf(format, args...)}
}

func conflict(format string, args ...any) error {
	return &apiError{http.StatusConflict, CodeConflict, fmt.Sprintf(format, args...)}
}

func failed(format string, args ...any) error {
	return &apiError{http.StatusUnprocessableEntity, CodeFailed, fmt.Sprintf(format, args...)}
}

// handlerFunc serves one route and returns the response value or an error.
type handlerFunc func(r *http.Request) (any, error)

type route struct {
	method, pattern string
	h               handlerFunc
}

// Server serves the API.
type Server struct {
	b   atomic.Pointer[Backend]
	log *slog.Logger
	srv *http.Server
	ln  net.Listener
}

// Listen creates the socket (replacing a stale one), sets its mode and
// group, and returns a server ready to Serve.
func Listen(path, group string, d *Backend, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("local API socket directory: %w", err)
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("local API: listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("local API: chmod %s: %w", path, err)
	}
	if group != "" {
		if g, err := user.LookupGroup(group); err == nil {
			gid, _ := strconv.Atoi(g.Gid)
			if err := os.Chown(path, -1, gid); err != nil {
				log.Warn("local API socket: cannot set its group", "group", group, "err", err)
			}
		} else {
			log.Warn("local API socket: group does not exist; only the daemon's user can use shadowctl", "group", group)
		}
	}
	s := &Server{log: log, ln: ln}
	s.b.Store(d)
	mux := http.NewServeMux()
	for _, rt := range s.routes() {
		mux.Handle(rt.method+" "+rt.pattern, s.wrap(rt.h))
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, notFound("no route %s %s", r.Method, r.URL.Path))
	})
	s.srv = &http.Server{Handler: s.guard(mux), ReadHeaderTimeout: 5 * time.Second,
		// A client that keeps its connection open idle (a script's HTTP
		// client) does not hold the daemon's goroutine and buffers for good.
		IdleTimeout: 30 * time.Second}
	return s, nil
}

// removeStale deletes a socket file no one listens on (left by a crash).
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("local API socket %s: %w", path, err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("local API socket %s exists and is not a socket; remove it", path)
	}
	if c, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
		c.Close()
		return fmt.Errorf("local API socket %s is in use (is another shadowgated running?)", path)
	}
	return os.Remove(path)
}

// SetBackend makes the API serve the daemon's parts in b from the next
// request on (a reload replaced some of them).
func (s *Server) SetBackend(b *Backend) { s.b.Store(b) }

// d is the backend a request works with, read once per request.
func (s *Server) d() *Backend { return s.b.Load() }

// Serve serves until ctx ends.
func (s *Server) Serve(ctx context.Context) error {
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		s.srv.Shutdown(sctx)
	}()
	err := s.srv.Serve(s.ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// guard refuses browser-originated requests.
func (s *Server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Origin") != "" || r.Header.Get("Referer") != "" {
			writeError(w, &apiError{http.StatusForbidden, CodeForbidden, "requests from browsers (with Origin or Referer) are refused"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) wrap(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
		v, err := h(r)
		if err != nil {
			var ae *apiError
			if !errors.As(err, &ae) {
				s.log.Error("local API", "path", r.URL.Path, "err", err)
			}
			writeError(w, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(v)
	})
}

func writeError(w http.ResponseWriter, err error) {
	var ae *apiError
	if !errors.As(err, &ae) {
		ae = &apiError{http.StatusInternalServerError, CodeInternal, err.Error()}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(ae.status)
	json.NewEncoder(w).Encode(ErrorBody{Error{ae.code, ae.msg}})
}

// decode reads a JSON request body strictly.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return badRequest("request body: %v", err)
	}
	return nil
}
