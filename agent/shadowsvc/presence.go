package shadowsvc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/shadowgate/shadowgate/agent/link"
	"github.com/shadowgate/shadowgate/agent/shadow"
	"github.com/shadowgate/shadowgate/store"
)

// Presence: a gateway publishes a retained message on its presence topic
// when it connects, before it disconnects cleanly, and as its last will.
// The service applies each one to the thing's classic shadow as a reported
// update, through the same pipeline as every request (so update/accepted,
// update/documents and any delta are published as for any update):
//
//	"reported": {"connected": false, "presence": {"session": 42, "since": 1732380000}}
//
// session orders the messages: a gateway takes a greater number each time
// it makes its MQTT session (store.NextSession), so a will of an older
// session that arrives after a newer session's "connected" (a message
// delivered again, a broker that reorders) is ignored. Within one session
// the messages are applied in the order they arrive, which is the order
// the broker published them: a will is published when the broker drops the
// connection, after everything that connection sent. A message of the
// session and state already stored (the retained message delivered again
// when the service subscribes again) changes nothing, and the version does
// not move. since is the service's clock when the state began, for people;
// it orders nothing.

// DefaultPresenceTopic is the gateways' presence topic, {thing} standing
// for the thing name: outside $aws/, which AWS IoT Core reserves (its
// shadow service ignores wills there), so that the same gateway works on
// AWS and here.
const DefaultPresenceTopic = "shadowgate/{thing}/presence"

// Presence is the payload of a presence message.
type Presence struct {
	Connected bool   `json:"connected"`
	Session   uint64 `json:"session"`
}

// JSON is the message's payload.
func (p Presence) JSON() []byte {
	b, _ := json.Marshal(p)
	return b
}

// ErrBadPresence is ParsePresence's error.
var ErrBadPresence = errors.New("invalid presence message")

// ParsePresence reads a presence payload: an object with a boolean
// "connected" and a positive integer "session".
func ParsePresence(b []byte) (Presence, error) {
	var raw struct {
		Connected *bool       `json:"connected"`
		Session   json.Number `json:"session"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		return Presence{}, fmt.Errorf("%w: %v", ErrBadPresence, err)
	}
	if raw.Connected == nil {
		return Presence{}, fmt.Errorf("%w: no boolean \"connected\"", ErrBadPresence)
	}
	n, err := strconv.ParseUint(raw.Session.String(), 10, 64)
	if err != nil || n == 0 {
		return Presence{}, fmt.Errorf("%w: \"session\" must be a positive integer, got %q", ErrBadPresence, raw.Session)
	}
	return Presence{Connected: *raw.Connected, Session: n}, nil
}

// PresenceTopic is the presence topic of thing under pattern.
func PresenceTopic(pattern, thing string) string {
	return strings.Replace(pattern, "{thing}", thing, 1)
}

// CheckPresenceTopic checks a presence topic pattern: "{thing}" once, as a
// whole topic level, no wildcards, and not a $-topic (brokers reserve
// those; AWS IoT Core's shadow service ignores wills there).
func CheckPresenceTopic(pattern string) error {
	levels := strings.Split(pattern, "/")
	n := 0
	for _, l := range levels {
		if l == "{thing}" {
			n++
		}
	}
	switch {
	case strings.HasPrefix(pattern, "$"):
		return fmt.Errorf("presence topic %q: must not start with '$' (reserved; AWS IoT Core's shadow service ignores wills there)", pattern)
	case strings.ContainsAny(pattern, "+#"):
		return fmt.Errorf("presence topic %q: must hold no '+' or '#'", pattern)
	case n != 1 || strings.Count(pattern, "{thing}") != 1:
		return fmt.Errorf("presence topic %q: must hold {thing} once, as a whole level (e.g. %s)", pattern, DefaultPresenceTopic)
	}
	return nil
}

// presenceTopics matches the presence topics of every thing.
type presenceTopics struct {
	filter         string // the pattern with + for the thing
	prefix, suffix string
}

func newPresenceTopics(pattern string) presenceTopics {
	before, after, _ := strings.Cut(pattern, "{thing}")
	return presenceTopics{filter: before + "+" + after, prefix: before, suffix: after}
}

// thing is the thing a presence topic is of.
func (p presenceTopics) thing(topic string) (string, error) {
	rest, ok := strings.CutPrefix(topic, p.prefix)
	if !ok {
		return "", fmt.Errorf("%q is not a presence topic", topic)
	}
	thing, ok := strings.CutSuffix(rest, p.suffix)
	if !ok {
		return "", fmt.Errorf("%q is not a presence topic", topic)
	}
	return thing, shadow.ValidateThingName(thing)
}

// PresenceState is the presence a thing's classic shadow holds.
type PresenceState struct {
	Presence
	Since int64 // unix seconds, the service's clock
}

// storedPresence reads reported.connected and reported.presence; ok is
// false when the shadow holds no (readable) presence.
func storedPresence(sh *shadow.Shadow) (st PresenceState, ok bool) {
	if !sh.Exists() {
		return st, false
	}
	rep := sh.State.Reported
	p, _ := rep["presence"].(map[string]any)
	connected, isBool := rep["connected"].(bool)
	session, okS := number(p["session"])
	if p == nil || !isBool || !okS {
		return st, false
	}
	since, _ := number(p["since"])
	return PresenceState{Presence{connected, session}, int64(since)}, true
}

func number(v any) (uint64, bool) {
	switch n := v.(type) {
	case json.Number:
		u, err := strconv.ParseUint(n.String(), 10, 64)
		return u, err == nil
	case float64:
		return uint64(n), n >= 0 && n == float64(uint64(n))
	}
	return 0, false
}

// update is the reported update that applies p to sh, or false when p is
// older than what sh holds, or says what it holds already.
func (p Presence) update(sh *shadow.Shadow, now time.Time) ([]byte, bool) {
	if cur, ok := storedPresence(sh); ok {
		if p.Session < cur.Session || p == cur.Presence {
			return nil, false
		}
	}
	b, _ := json.Marshal(map[string]any{"state": map[string]any{"reported": map[string]any{
		"connected": p.Connected,
		"presence":  map[string]any{"session": p.Session, "since": now.Unix()},
	}}})
	return b, true
}

// handlePresence subscribes the presence topics of every thing.
func (s *Service) handlePresence(pattern string) {
	if pattern == "" {
		return
	}
	s.presence = newPresenceTopics(pattern)
	// No shed: a presence message is never answered 429 and lost, as the
	// shadow would then show a dead gateway connected. Past the queue's
	// depth it waits (the broker's in-flight window bounds them).
	s.link.HandleShed(s.presence.filter, s.onPresence, nil)
}

// onPresence runs on the link's dispatcher: it hands the message to the
// pipeline and returns; the message is acknowledged once applied.
func (s *Service) onPresence(_ context.Context, m *link.Message) {
	thing, err := s.presence.thing(m.Topic)
	if err != nil {
		s.malformed.Add(1)
		s.log.Warn("ignoring presence on an invalid topic", "topic", m.Topic, "err", err)
		return
	}
	if len(m.Payload) == 0 {
		return // a retained presence cleared
	}
	p, err := ParsePresence(m.Payload)
	if err != nil {
		s.malformed.Add(1)
		s.log.Warn("ignoring presence message", "thing", thing, "err", err, "bytes", len(m.Payload))
		return
	}
	ack := m.Defer()
	r := &request{
		topic:   shadow.Topic{Thing: thing, Op: shadow.OpUpdate},
		publish: all,
		update:  p.update,
		done: func(out []shadow.Message, _ error) {
			if len(out) == 0 {
				s.log.Debug("presence already applied or older than the shadow's", "thing", thing, "session", p.Session, "connected", p.Connected)
			}
			ack(true)
		},
	}
	if err := s.enqueue(r); err != nil {
		// Too much waiting: the broker delivers it again later.
		s.log.Warn("presence message not taken (overloaded); asking the broker for it again", "thing", thing)
		ack(false)
	}
}

// Presence returns the presence thing's classic shadow holds; ok is false
// when it holds none.
func (s *Service) Presence(thing string) (st PresenceState, ok bool, err error) {
	err = s.store.View(func(tx *store.Tx) error {
		doc, err := tx.GetShadow(store.ShadowKey{Thing: thing})
		if errors.Is(err, store.ErrNotFound) {
			return nil
		} else if err != nil {
			return err
		}
		var sh shadow.Shadow
		if err := json.Unmarshal(doc, &sh); err != nil {
			return fmt.Errorf("stored shadow of %s: %w", thing, err)
		}
		st, ok = storedPresence(&sh)
		return nil
	})
	return st, ok, err
}
