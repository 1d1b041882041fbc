package brokertest

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
)

// FilterProxy forwards a loopback port to a broker, as Proxy does, and
// swallows the PUBLISH packets on their way to the client that Drop
// selects: the broker believes them sent (a QoS 1 message waits for a
// PUBACK that never comes, until the client connects again), the client
// never sees them. It reproduces a broker that drops messages for a slow
// client, one message at a time. DropFromClient swallows the client's
// own PUBLISH packets the same way (the client waits for a PUBACK that
// never comes). MQTT 3.1.1 only (what paho speaks).
type FilterProxy struct {
	*relay
	drop   func(topic string, payload []byte) bool
	dropUp func(topic string, payload []byte) bool // nil: none

	dropped []string
}

// NewFilterProxy forwards a free loopback port to target (host:port)
// until the test ends; drop is asked about every PUBLISH to the client
// (one call at a time).
func NewFilterProxy(t testing.TB, target string, drop func(topic string, payload []byte) bool) *FilterProxy {
	t.Helper()
	p := &FilterProxy{drop: drop}
	p.relay = newRelay(t, target)
	p.serve(func(c, up net.Conn) {
		go func() { p.copy(c, up, p.fromClient); up.Close() }()
		go func() { p.copy(up, c, p.toClient); c.Close() }()
	})
	return p
}

// DropFromClient makes the proxy swallow, from now on, the PUBLISH packets
// from the client that drop selects; nil forwards them all again.
func (p *FilterProxy) DropFromClient(drop func(topic string, payload []byte) bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dropUp = drop
}

// Dropped returns the topics of the messages swallowed so far.
func (p *FilterProxy) Dropped() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.dropped...)
}

// copy copies packets, leaving out the PUBLISH packets selects picks.
func (p *FilterProxy) copy(from io.Reader, to io.Writer, selects func(topic string, payload []byte) bool) {
	r := bufio.NewReader(from)
	for {
		head, body, err := readPacket(r)
		if err != nil {
			return
		}
		if head[0]>>4 == 3 { // PUBLISH
			if topic, payload, ok := parsePublish(head[0], body); ok && selects(topic, payload) {
				continue
			}
		}
		if _, err := to.Write(append(head, body...)); err != nil {
			return
		}
	}
}

func (p *FilterProxy) toClient(topic string, payload []byte) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.drop(topic, payload) {
		return false
	}
	p.dropped = append(p.dropped, topic)
	return true
}

func (p *FilterProxy) fromClient(topic string, payload []byte) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dropUp != nil && p.dropUp(topic, payload)
}

// readPacket reads one MQTT control packet: its fixed header (type byte
// and remaining length) and its body.
func readPacket(r *bufio.Reader) (head, body []byte, err error) {
	b, err := r.ReadByte()
	if err != nil {
		return nil, nil, err
	}
	head = []byte{b}
	n, mult := 0, 1
	for i := 0; ; i++ {
		if i == 4 {
			return nil, nil, errors.New("mqtt: malformed remaining length")
		}
		c, err := r.ReadByte()
		if err != nil {
			return nil, nil, err
		}
		head = append(head, c)
		n += int(c&0x7f) * mult
		if c&0x80 == 0 {
			break
		}
		mult *= 128
	}
	body = make([]byte, n)
	_, err = io.ReadFull(r, body)
	return head, body, err
}

// parsePublish reads a PUBLISH body: topic, packet id when QoS > 0, payload.
func parsePublish(flags byte, body []byte) (topic string, payload []byte, ok bool) {
	if len(body) < 2 {
		return "", nil, false
	}
	n := int(binary.BigEndian.Uint16(body))
	rest := body[2:]
	if len(rest) < n {
		return "", nil, false
	}
	topic, rest = string(rest[:n]), rest[n:]
	if (flags>>1)&3 > 0 {
		if len(rest) < 2 {
			return "", nil, false
		}
		rest = rest[2:]
	}
	return topic, rest, true
}
