package brokertest

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"testing"
)

// PolicyProxy forwards a loopback port to a broker and enforces a topic
// policy the way AWS IoT Core does for a policy that lacks some topics
// (mosquitto's acl_file grants every subscription and only withholds the
// messages): a SUBSCRIBE to a denied filter is answered with the failure
// return code 0x80 in the SUBACK, a PUBLISH to the client on a denied topic
// is withheld, and a client that publishes on a denied topic is
// disconnected. MQTT 3.1.1 only (what paho speaks).
type PolicyProxy struct {
	*relay
	deny func(topic string) bool

	refused []string
}

// NewPolicyProxy forwards a free loopback port to target (host:port) until
// the test ends; deny is asked about every filter subscribed and every
// topic published either way.
func NewPolicyProxy(t testing.TB, target string, deny func(topic string) bool) *PolicyProxy {
	t.Helper()
	p := &PolicyProxy{deny: deny}
	p.relay = newRelay(t, target)
	p.serve(func(c, up net.Conn) {
		// Per connection: the packet ids of SUBSCRIBEs and which of their
		// filters are refused, for the SUBACK on the way back; writes to
		// the client from both directions go through one lock.
		pc := &policyConn{client: c, subs: map[uint16][]bool{}}
		go func() { p.up(pc, up); up.Close(); c.Close() }()
		go func() { p.down(pc, up); c.Close() }()
	})
	return p
}

// Refused returns the filters whose subscription was refused so far.
func (p *PolicyProxy) Refused() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.refused...)
}

type policyConn struct {
	client net.Conn
	wmu    sync.Mutex
	smu    sync.Mutex
	subs   map[uint16][]bool
}

func (pc *policyConn) write(b []byte) error {
	pc.wmu.Lock()
	defer pc.wmu.Unlock()
	_, err := pc.client.Write(b)
	return err
}

// up copies the client's packets to the broker: a SUBSCRIBE goes on
// without its denied filters (the SUBACK gets 0x80 for them), a PUBLISH on
// a denied topic ends the connection.
func (p *PolicyProxy) up(pc *policyConn, to io.Writer) {
	r := bufio.NewReader(pc.client)
	for {
		head, body, err := readPacket(r)
		if err != nil {
			return
		}
		switch head[0] >> 4 {
		case 3: // PUBLISH
			if topic, _, ok := parsePublish(head[0], body); ok && p.deny(topic) {
				return // AWS IoT Core disconnects a client that publishes outside its policy
			}
		case 8: // SUBSCRIBE: packet id, then (filter, options) pairs
			if len(body) < 2 {
				return
			}
			id := binary.BigEndian.Uint16(body)
			var refuse []bool
			kept := append([]byte(nil), body[:2]...)
			for rest := body[2:]; len(rest) >= 3; {
				n := int(binary.BigEndian.Uint16(rest))
				if len(rest) < 2+n+1 {
					return
				}
				denied := p.deny(string(rest[2 : 2+n]))
				refuse = append(refuse, denied)
				if denied {
					p.mu.Lock()
					p.refused = append(p.refused, string(rest[2:2+n]))
					p.mu.Unlock()
				} else {
					kept = append(kept, rest[:2+n+1]...)
				}
				rest = rest[2+n+1:]
			}
			if len(kept) == 2 {
				// Every filter refused: the broker never sees it; the
				// SUBACK is answered here.
				ack := append(packetHead(0x90, 2+len(refuse)), body[:2]...)
				for range refuse {
					ack = append(ack, 0x80)
				}
				if pc.write(ack) != nil {
					return
				}
				continue
			}
			pc.smu.Lock()
			pc.subs[id] = refuse
			pc.smu.Unlock()
			head, body = packetHead(0x82, len(kept)), kept
		}
		if _, err := to.Write(append(head, body...)); err != nil {
			return
		}
	}
}

// down copies the broker's packets to the client: a SUBACK gets 0x80 for
// the refused filters, a PUBLISH on a denied topic is withheld.
func (p *PolicyProxy) down(pc *policyConn, from io.Reader) {
	r := bufio.NewReader(from)
	for {
		head, body, err := readPacket(r)
		if err != nil {
			return
		}
		switch head[0] >> 4 {
		case 3:
			if topic, _, ok := parsePublish(head[0], body); ok && p.deny(topic) {
				continue
			}
		case 9: // SUBACK: packet id, then one code per filter the broker saw
			if len(body) >= 2 {
				id := binary.BigEndian.Uint16(body)
				pc.smu.Lock()
				refuse := pc.subs[id]
				delete(pc.subs, id)
				pc.smu.Unlock()
				if refuse != nil {
					codes := body[2:]
					out := append([]byte(nil), body[:2]...)
					for _, denied := range refuse {
						if denied {
							out = append(out, 0x80)
						} else if len(codes) > 0 {
							out = append(out, codes[0])
							codes = codes[1:]
						}
					}
					head, body = packetHead(0x90, len(out)), out
				}
			}
		}
		if pc.write(append(head, body...)) != nil {
			return
		}
	}
}

// packetHead is a fixed header: the type byte and the remaining length.
func packetHead(typ byte, n int) []byte {
	h := []byte{typ}
	for {
		b := byte(n % 128)
		n /= 128
		if n > 0 {
			b |= 0x80
		}
		h = append(h, b)
		if n == 0 {
			return h
		}
	}
}
