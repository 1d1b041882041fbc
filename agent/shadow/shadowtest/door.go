package shadowtest

import (
	"context"
	"sync"
	"time"

	"github.com/shadowgate/shadowgate/agent/shadow"
)

// Request is one shadow request as the corpus states it.
type Request struct {
	Thing   string
	Shadow  string // named shadow, empty for the classic shadow
	Op      shadow.Op
	Payload []byte
}

// Response is one message the request caused, by its topic suffix.
type Response struct {
	Suffix  shadow.Suffix
	Payload []byte
}

// Door is one way into a shadow service. Send makes the request and returns
// every response it caused (in any order), and only those: a door waits
// until it knows no other response can come. A door over another transport
// maps its answers to the MQTT ones: an HTTP door, for instance, gives its
// 200 body as "accepted", an error status and message as "rejected"
// ({"code":status,"message":…,"clientToken":…}), and collects the delta and
// documents the update published over MQTT.
type Door interface {
	Send(ctx context.Context, r Request) ([]Response, error)
}

// EngineDoor serves requests with agent/shadow directly, one document per
// thing and shadow name, as shadowsvc would (without its store).
type EngineDoor struct {
	Now func() time.Time // default: time.Now

	mu   sync.Mutex
	docs map[[2]string]*shadow.Shadow
}

// Send handles r with shadow.Handle.
func (d *EngineDoor) Send(_ context.Context, r Request) ([]Response, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.docs == nil {
		d.docs = map[[2]string]*shadow.Shadow{}
	}
	key := [2]string{r.Thing, r.Shadow}
	sh := d.docs[key]
	if sh == nil {
		sh = &shadow.Shadow{}
		d.docs[key] = sh
	}
	now := time.Now
	if d.Now != nil {
		now = d.Now
	}
	t := shadow.Topic{Thing: r.Thing, Name: r.Shadow, Op: r.Op}
	msgs, _ := shadow.Handle(sh, t, r.Payload, now())
	out := make([]Response, 0, len(msgs))
	for _, m := range msgs {
		if m.Topic.Thing != t.Thing || m.Topic.Name != t.Name || m.Topic.Op != t.Op {
			out = append(out, Response{Suffix: shadow.Suffix("foreign topic " + m.Topic.Build("")), Payload: m.Payload})
			continue
		}
		out = append(out, Response{Suffix: m.Topic.Suffix, Payload: m.Payload})
	}
	return out, nil
}
