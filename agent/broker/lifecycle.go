package broker

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// AWS IoT Core's lifecycle event topics
// (https://docs.aws.amazon.com/iot/latest/developerguide/life-cycle-events.html),
// followed by the client id.
const (
	TopicConnected    = "$aws/events/presence/connected/"
	TopicDisconnected = "$aws/events/presence/disconnected/"
)

// AWS's disconnectReason values that a loopback broker can have.
const (
	ReasonClientInitiated = "CLIENT_INITIATED_DISCONNECT"
	ReasonClientError     = "CLIENT_ERROR"
	ReasonConnectionLost  = "CONNECTION_LOST"
	ReasonDuplicateID     = "DUPLICATE_CLIENTID"
	ReasonKeepAlive       = "MQTT_KEEP_ALIVE_TIMEOUT"
	ReasonServerInitiated = "SERVER_INITIATED_DISCONNECT"
	ReasonAuthError       = "AUTH_ERROR"
)

// LifecycleEvent is AWS IoT Core's connect and disconnect event (thingName
// only comes with AWS's exclusive thing feature, which this broker lacks).
type LifecycleEvent struct {
	ClientID                  string `json:"clientId"`
	Timestamp                 int64  `json:"timestamp"` // unix milliseconds
	EventType                 string `json:"eventType"` // connected, disconnected
	SessionIdentifier         string `json:"sessionIdentifier"`
	PrincipalIdentifier       string `json:"principalIdentifier"`
	IPAddress                 string `json:"ipAddress,omitempty"`                 // connected only
	ClientInitiatedDisconnect *bool  `json:"clientInitiatedDisconnect,omitempty"` // disconnected only
	DisconnectReason          string `json:"disconnectReason,omitempty"`          // disconnected only
	VersionNumber             int64  `json:"versionNumber"`
}

// lifecycle is the hook that publishes the lifecycle events, as AWS IoT
// Core does, so that apps written against them work on the demo:
//
//   - versionNumber grows with each connection of a client id, the connect
//     and disconnect events of one connection carry the same one, and it
//     starts again at 0 after the id was away an hour, as AWS's;
//   - sessionIdentifier is a random UUID for each connection;
//   - principalIdentifier is the MQTT username, "anonymous" without one
//     (the loopback broker authenticates no one).
//
// A connection taken over by a new one with the same client id ends at
// once, in order, before the new one's CONNACK: its will (AWS publishes the
// will on DUPLICATE_CLIENTID) and its disconnected event. mochi would
// otherwise publish them from the old connection's goroutine, maybe after
// the new connection's first messages, so that an old "offline" would
// follow the new "online".
type lifecycle struct {
	mqtt.HookBase
	srv *mqtt.Server
	pub *mqtt.Client // the inline client the events are published from
	now func() time.Time

	mu    sync.Mutex
	ids   map[string]*clientID
	conns map[*mqtt.Client]*connection
}

type clientID struct {
	next  int64     // the next connection's versionNumber
	open  int       // connections of the id that are up
	since time.Time // when the last one ended
}

type connection struct {
	version int64
	session string
	ended   bool // its disconnected event is out
}

// forgetAfter is how long a client id's versionNumber is kept once it has
// no connection (AWS: "approximately one hour").
const forgetAfter = time.Hour

func newLifecycle(srv *mqtt.Server) *lifecycle {
	return &lifecycle{srv: srv, pub: srv.NewClient(nil, mqtt.LocalListener, "aws-lifecycle", true), now: time.Now,
		ids: map[string]*clientID{}, conns: map[*mqtt.Client]*connection{}}
}

func (h *lifecycle) ID() string { return "aws-lifecycle" }

func (h *lifecycle) Provides(b byte) bool {
	return b == mqtt.OnSessionEstablish || b == mqtt.OnSessionEstablished || b == mqtt.OnDisconnect
}

// OnSessionEstablish runs before the CONNACK of a new connection, and
// before a connection with its client id is taken over.
func (h *lifecycle) OnSessionEstablish(cl *mqtt.Client, _ packets.Packet) {
	old, ok := h.srv.Clients.Get(cl.ID)
	if !ok || old == cl || old.Closed() {
		return
	}
	will := old.Properties.Will
	if will.WillDelayInterval == 0 && atomic.CompareAndSwapUint32(&old.Properties.Will.Flag, 1, 0) {
		// Cleared first, so that the old connection's end does not send it again.
		h.publish(will.TopicName, will.Payload, will.Retain, will.Qos)
	}
	h.disconnected(old, ReasonDuplicateID, false)
}

// OnSessionEstablished runs after the CONNACK.
func (h *lifecycle) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	now := h.now()
	h.mu.Lock()
	id := h.ids[cl.ID]
	if id == nil || id.open == 0 && now.Sub(id.since) > forgetAfter {
		id = &clientID{}
		h.ids[cl.ID] = id
	}
	c := &connection{version: id.next, session: uuid()}
	id.next++
	id.open++
	h.conns[cl] = c
	h.mu.Unlock()
	host, _, err := net.SplitHostPort(cl.Net.Remote)
	if err != nil {
		host = cl.Net.Remote
	}
	h.event(cl, TopicConnected, LifecycleEvent{ClientID: cl.ID, Timestamp: now.UnixMilli(), EventType: "connected",
		SessionIdentifier: c.session, PrincipalIdentifier: principal(cl), IPAddress: host, VersionNumber: c.version})
}

// OnDisconnect runs when a connection ends, for any reason.
func (h *lifecycle) OnDisconnect(cl *mqtt.Client, err error, _ bool) {
	reason, byClient := disconnectReason(err, cl.StopCause())
	h.disconnected(cl, reason, byClient)
}

// disconnected publishes the disconnected event of cl's connection, once.
func (h *lifecycle) disconnected(cl *mqtt.Client, reason string, byClient bool) {
	now := h.now()
	h.mu.Lock()
	c := h.conns[cl]
	if c == nil || c.ended { // never established, or told already
		h.mu.Unlock()
		return
	}
	c.ended = true
	delete(h.conns, cl)
	if id := h.ids[cl.ID]; id != nil {
		id.open--
		id.since = now
	}
	h.mu.Unlock()
	h.event(cl, TopicDisconnected, LifecycleEvent{ClientID: cl.ID, Timestamp: now.UnixMilli(), EventType: "disconnected",
		SessionIdentifier: c.session, PrincipalIdentifier: principal(cl), ClientInitiatedDisconnect: &byClient,
		DisconnectReason: reason, VersionNumber: c.version})
}

func (h *lifecycle) event(cl *mqtt.Client, prefix string, e LifecycleEvent) {
	if strings.ContainsAny(cl.ID, "#+") || cl.ID == "" {
		return // AWS: client ids with # or + get no lifecycle events
	}
	b, _ := json.Marshal(e)
	h.publish(prefix+cl.ID, b, false, 1)
}

func (h *lifecycle) publish(topic string, payload []byte, retain bool, qos byte) {
	err := h.srv.InjectPacket(h.pub, packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos, Retain: retain},
		TopicName:   topic, Payload: payload,
		PacketID: uint16(qos), // the inline client's publishes need one, as mochi's own
	})
	if err != nil {
		h.Log.Error("publish", "topic", topic, "err", err)
	}
}

// disconnectReason maps how a mochi connection ended (the read loop's
// error and the cause it was stopped with) to AWS's disconnectReason.
func disconnectReason(err, cause error) (reason string, byClient bool) {
	var code packets.Code
	switch {
	case cause == packets.CodeDisconnect || errors.Is(err, packets.CodeDisconnectWillMessage):
		return ReasonClientInitiated, true
	case cause == packets.ErrSessionTakenOver:
		return ReasonDuplicateID, false
	case cause == packets.ErrServerShuttingDown:
		return ReasonServerInitiated, false
	case errors.Is(err, os.ErrDeadlineExceeded):
		return ReasonKeepAlive, false
	case errors.As(err, &code) && code == packets.ErrNotAuthorized, errors.As(cause, &code) && code == packets.ErrNotAuthorized:
		return ReasonAuthError, false
	case errors.As(err, &code), errors.As(cause, &code) && code.Code >= packets.ErrUnspecifiedError.Code:
		return ReasonClientError, false // a protocol error, a packet too large
	}
	return ReasonConnectionLost, false // EOF, a reset: the network or the client went away
}

func principal(cl *mqtt.Client) string {
	if u := cl.Properties.Username; len(bytes.TrimSpace(u)) > 0 {
		return string(u)
	}
	return "anonymous"
}

// uuid is a random (version 4) UUID.
func uuid() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
