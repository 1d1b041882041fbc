// Package shadowsvc is the self-hosted AWS IoT Device Shadow service for
// fleets on a plain MQTT broker: it answers every thing's shadow requests
// under the topic root exactly as agent/shadow specifies, and keeps the
// documents in its own bbolt file. A document is stored before it is
// accepted.
package shadowsvc

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/shadowgate/shadowgate/agent/link"
	"github.com/shadowgate/shadowgate/agent/shadow"
	"github.com/shadowgate/shadowgate/store"
)

// Link is what the service needs of the MQTT session.
type Link interface {
	Handle(filter string, h link.Handler)
	PublishAsync(topic string, retain bool, payload []byte) (link.Pending, error)
}

// Service answers shadow requests.
type Service struct {
	root  string
	link  Link
	store *store.Store
	log   *slog.Logger
	now   func() time.Time

	requests, rejected, malformed atomic.Int64
}

// Options configure a Service.
type Options struct {
	Root   string // topic root, e.g. "$aws/things/"
	Link   Link
	Store  *store.Store
	Logger *slog.Logger
	Now    func() time.Time
}

// New registers the service's subscriptions on the link: the six request
// topics (classic and named get, update, delete) of every thing, so that it
// never receives its own responses.
func New(o Options) *Service {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	s := &Service{root: o.Root, link: o.Link, store: o.Store, log: o.Logger.With("component", "shadowsvc"), now: o.Now}
	for _, op := range []shadow.Op{shadow.OpGet, shadow.OpUpdate, shadow.OpDelete} {
		s.link.Handle(o.Root+"+/shadow/"+string(op), s.serve)
		s.link.Handle(o.Root+"+/shadow/name/+/"+string(op), s.serve)
	}
	return s
}

// Stats counts requests served, rejected and unreadable.
type Stats struct{ Requests, Rejected, Malformed int64 }

// Stats returns the counters.
func (s *Service) Stats() Stats {
	return Stats{s.requests.Load(), s.rejected.Load(), s.malformed.Load()}
}

func (s *Service) serve(ctx context.Context, m *link.Message) {
	t, err := shadow.ParseTopic(s.root, m.Topic)
	if err != nil {
		// A name AWS would refuse: there is no valid topic to answer on.
		s.malformed.Add(1)
		s.log.Warn("ignoring request on an invalid topic", "topic", m.Topic, "err", err)
		return
	}
	s.requests.Add(1)
	key := store.ShadowKey{Thing: t.Thing, Name: t.Name}
	var sh shadow.Shadow
	doc, err := s.store.GetShadow(key)
	if err == nil {
		err = json.Unmarshal(doc, &sh)
	}
	var out []shadow.Message
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		s.log.Error("load shadow", "thing", t.Thing, "shadow", t.Name, "err", err)
		out = []shadow.Message{internalError(t, s.now())}
	} else {
		var changed bool
		out, changed = shadow.Handle(&sh, t, m.Payload, s.now())
		if changed {
			b, _ := json.Marshal(&sh)
			if _, err := s.store.PutShadow(key, b); err != nil {
				s.log.Error("save shadow", "thing", t.Thing, "shadow", t.Name, "err", err)
				out = []shadow.Message{internalError(t, s.now())}
			}
		}
	}
	pending := make([]link.Pending, 0, len(out))
	for _, msg := range out {
		if msg.Topic.Suffix == shadow.SuffixRejected {
			s.rejected.Add(1)
		}
		p, err := s.link.PublishAsync(msg.Topic.Build(s.root), false, msg.Payload)
		if err != nil {
			s.log.Warn("publish shadow response", "topic", msg.Topic.Build(s.root), "err", err)
			return
		}
		pending = append(pending, p)
	}
	for _, p := range pending {
		if err := p.Wait(ctx); err != nil {
			s.log.Warn("shadow response not acknowledged", "err", err)
			return
		}
	}
}

func internalError(t shadow.Topic, now time.Time) shadow.Message {
	e := &shadow.Error{Code: 500, Message: shadow.MsgInternal, Timestamp: now.Unix()}
	return shadow.Message{Topic: t.With(shadow.SuffixRejected), Payload: e.JSON()}
}
