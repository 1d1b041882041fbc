// Package awsapi is the HTTP door of the self-hosted services: a server that
// answers AWS REST-JSON APIs as AWS does, so that the AWS CLI and SDKs work
// against it unchanged. It verifies Signature Version 4 by recomputing the
// signature with the SDK's own signer over the request received, with keys
// from a file in the AWS shared-credentials format; applies each key's
// policy and token bucket; caps request bodies before reading them; and
// writes AWS's error shapes (x-amzn-ErrorType, {"message","traceId"}).
//
// What the operations do is not here: an engine registers Routes. A route
// is keyed by the signing services that reach it, the method and a path
// pattern, because AWS serves APIs with the same paths on different
// endpoints (the Jobs control plane "iot" and data plane "iot-jobs-data"
// both have GET /things/{thingName}/jobs/{jobId}); on one server the
// signing service in the request's credential scope tells them apart.
package awsapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	gosync "sync"
	"time"

	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// DefaultMaxBodyBytes caps a request body: the iot-data limit of a message
// payload (128 KB), the same as the MQTT side.
const DefaultMaxBodyBytes = 128 * 1024

// Defaults of the per-key token bucket.
const (
	DefaultRate  = 100 // requests a second, per key
	DefaultBurst = 200
)

// Handler serves one operation. It returns the response, or an error: an
// *Error is written as it is, anything else as InternalFailureException.
type Handler func(ctx context.Context, c *Call) (*Response, error)

// Route is one operation of an API on the server.
type Route struct {
	// Services are the signing names (the credential scope's service) that
	// reach this route, e.g. "iotdata" and "iotdevicegateway".
	Services  []string
	Method    string
	Path      string // pattern: literal segments and {name} segments
	Operation string // e.g. "GetThingShadow", for the logs
	Handler   Handler
}

// Call is one authenticated request.
type Call struct {
	Operation string
	RequestID string
	Key       *Key // the caller; nil when the server runs without credentials
	Params    map[string]string
	Query     url.Values
	Header    http.Header
	Body      []byte
}

// Allows reports whether the caller may do a on thing.
func (c *Call) Allows(a Action, thing string) bool {
	return c.Key == nil || c.Key.Policy.Allows(a, thing)
}

// AllowsEveryThing reports whether the caller may do a on every thing: a
// key without a things restriction. Operations that reach things not named
// in the request (a job on a thing group, a list of the whole fleet) need it.
func (c *Call) AllowsEveryThing(a Action) bool {
	return c.Key == nil || c.Key.Policy.Things == nil && (c.Key.Policy.Actions == nil || c.Key.Policy.Actions[a])
}

// AllowsPublish reports whether the caller may publish on topic.
func (c *Call) AllowsPublish(topic string) bool {
	return c.Key == nil || c.Key.Policy.AllowsPublish(topic)
}

// Response is a successful answer.
type Response struct {
	Status      int // 0: 200
	ContentType string
	Body        []byte
}

// JSON is a 200 response with v as its JSON body.
func JSON(v any) (*Response, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return &Response{ContentType: "application/json", Body: b}, nil
}

// Options configure a Server.
type Options struct {
	// Credentials are the keys accepted. Nil serves without authentication
	// (a SigV4 header is read for its scope but not checked): the caller
	// allows that on loopback only (Listen).
	Credentials *Credentials
	// Region, when set, is the only region a credential scope may name.
	Region string
	// Rate and Burst size each key's token bucket (requests a second);
	// Rate < 0 turns throttling off, 0 means the default.
	Rate  float64
	Burst int
	// MaxBodyBytes caps request bodies (default DefaultMaxBodyBytes).
	MaxBodyBytes int64
	Logger       *slog.Logger
	Now          func() time.Time
}

// Server serves the registered routes.
type Server struct {
	o       Options
	log     *slog.Logger
	signer  *v4.Signer
	limiter *limiter

	mu     gosync.RWMutex
	routes []*route
}

type route struct {
	Route
	services map[string]bool
	segments []string
}

// New makes a server without routes.
func New(o Options) *Server {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if o.Rate == 0 {
		o.Rate = DefaultRate
	}
	if o.Burst <= 0 {
		o.Burst = DefaultBurst
	}
	return &Server{o: o, log: o.Logger.With("component", "awsapi"), signer: v4.NewSigner(), limiter: newLimiter(o.Rate, o.Burst)}
}

// Handle adds routes. It panics on a route without services, method, path
// or handler: a programming error.
func (s *Server) Handle(routes ...Route) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range routes {
		if len(r.Services) == 0 || r.Method == "" || !strings.HasPrefix(r.Path, "/") || r.Handler == nil {
			panic("awsapi: incomplete route " + r.Method + " " + r.Path)
		}
		rt := &route{Route: r, services: map[string]bool{}, segments: strings.Split(r.Path[1:], "/")}
		for _, svc := range r.Services {
			rt.services[svc] = true
		}
		s.routes = append(s.routes, rt)
	}
}

// match returns the route for service, method and path with its
// parameters; otherwise, a route of another service or method on that path
// (for the error). Service "" (an unsigned request to a server without
// credentials) matches the first route registered for method and path.
func (s *Server) match(service, method, escapedPath string) (hit *route, params map[string]string, near *route) {
	segs := strings.Split(strings.TrimPrefix(escapedPath, "/"), "/")
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, rt := range s.routes {
		p, ok := rt.matchPath(segs)
		if !ok {
			continue
		}
		if (service == "" || rt.services[service]) && rt.Method == method {
			return rt, p, nil
		}
		if near == nil || rt.services[service] {
			near = rt
		}
	}
	return nil, nil, near
}

func (rt *route) matchPath(segs []string) (map[string]string, bool) {
	if len(segs) != len(rt.segments) {
		return nil, false
	}
	var params map[string]string
	for i, want := range rt.segments {
		if strings.HasPrefix(want, "{") && strings.HasSuffix(want, "}") {
			v, err := url.PathUnescape(segs[i])
			if err != nil || v == "" {
				return nil, false
			}
			if params == nil {
				params = map[string]string{}
			}
			params[want[1:len(want)-1]] = v
			continue
		}
		if segs[i] != want {
			return nil, false
		}
	}
	return params, true
}

// ServeHTTP authenticates, throttles and routes a request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	id := newRequestID()
	res, op, key, e := s.serve(r, id)
	attrs := []any{"method", r.Method, "path", r.URL.EscapedPath(), "op", op, "request_id", id, "duration", time.Since(start)}
	if key != nil {
		attrs = append(attrs, "key", key)
	}
	if e != nil {
		attrs = append(attrs, "status", e.Status, "error", e.Type, "message", e.Message)
		if e.Status == http.StatusForbidden || e.Status == http.StatusTooManyRequests {
			s.log.Warn("request refused", attrs...)
		} else {
			s.log.Debug("request failed", attrs...)
		}
		writeError(w, id, e)
		return
	}
	status := res.Status
	if status == 0 {
		status = http.StatusOK
	}
	s.log.Debug("request", append(attrs, "status", status)...)
	h := w.Header()
	if res.ContentType != "" {
		h.Set("Content-Type", res.ContentType)
	}
	h["x-amzn-RequestId"] = []string{id}
	w.WriteHeader(status)
	w.Write(res.Body)
}

func (s *Server) serve(r *http.Request, id string) (res *Response, op string, key *Key, e *Error) {
	// Cap the body before anything reads it.
	if r.ContentLength > s.o.MaxBodyBytes {
		return nil, "", nil, Errorf(RequestEntityTooLarge, "%s", MsgTooLarge)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, s.o.MaxBodyBytes+1))
	if err != nil {
		return nil, "", nil, Errorf(InvalidRequest, "could not read the request body")
	}
	if int64(len(body)) > s.o.MaxBodyBytes {
		return nil, "", nil, Errorf(RequestEntityTooLarge, "%s", MsgTooLarge)
	}
	service, key, e := s.authenticate(r, body)
	if e != nil {
		return nil, "", key, e
	}
	bucket := "-"
	if key != nil {
		bucket = key.ID
	}
	if !s.limiter.allow(bucket, s.o.Now()) {
		return nil, "", key, Errorf(Throttling, "%s", MsgRateExceeded)
	}
	rt, params, near := s.match(service, r.Method, r.URL.EscapedPath())
	if rt == nil {
		if near != nil && service != "" && !near.services[service] {
			return nil, near.Operation, key, Errorf(Forbidden, "Credential should be scoped to correct service: '%s'. ", near.Services[0])
		}
		return nil, "", key, Errorf(MethodNotAllowed, "%s", MsgMethodNotAllowed)
	}
	call := &Call{Operation: rt.Operation, RequestID: id, Key: key, Params: params, Query: r.URL.Query(), Header: r.Header, Body: body}
	res, err = rt.Handler(r.Context(), call)
	if err != nil {
		var ae *Error
		if errors.As(err, &ae) {
			return nil, rt.Operation, key, ae
		}
		s.log.Error("request failed", "op", rt.Operation, "request_id", id, "err", err)
		return nil, rt.Operation, key, Errorf(InternalFailure, "%s", MsgInternal)
	}
	return res, rt.Operation, key, nil
}

// authenticate checks the request's SigV4 signature; it returns the
// signing service of the credential scope and the key.
func (s *Server) authenticate(r *http.Request, body []byte) (service string, key *Key, e *Error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		if s.o.Credentials == nil {
			return "", nil, nil // unsigned, unauthenticated: routed by method and path alone
		}
		return "", nil, Errorf(Forbidden, "%s", MsgMissingToken)
	}
	a, e := parseAuth(h)
	if e != nil {
		return "", nil, e
	}
	if s.o.Region != "" && a.region != s.o.Region {
		return "", nil, Errorf(Forbidden, "Credential should be scoped to a valid region, not '%s'. ", a.region)
	}
	if s.o.Credentials == nil {
		return a.service, nil, nil
	}
	k, ok := s.o.Credentials.Lookup(a.keyID)
	if !ok || r.Header.Get("X-Amz-Security-Token") != "" {
		// AWS's answer to an unknown key; session tokens are never issued here.
		s.log.Warn("unknown access key", "key", a.keyID)
		return "", nil, Errorf(Forbidden, "%s", MsgInvalidToken)
	}
	at, e := requestTime(r, a, s.o.Now())
	if e != nil {
		return "", k, e
	}
	if ok, why := verify(r.Context(), s.signer, r, body, a, k, at); !ok {
		s.log.Warn("signature refused", "key", k, "why", why)
		return "", k, Errorf(Forbidden, "%s", MsgSignatureInvalid)
	}
	return a.service, k, nil
}

func newRequestID() string {
	var b [16]byte
	rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
