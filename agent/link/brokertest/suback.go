package brokertest

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"testing"
)

// SubackHold forwards a loopback port to a broker and holds the broker's
// SUBACKs back until the client has sent SUBSCRIBEs for a given number of
// topic filters: a client that waits for each SUBACK before its next
// SUBSCRIBE never gets one. It records how many filters each SUBSCRIBE
// carried. MQTT 3.1.1 only (what paho speaks).
type SubackHold struct {
	*relay
	want    int
	cond    *sync.Cond // on relay.mu
	filters []int      // per SUBSCRIBE
	seen    int
}

// NewSubackHold forwards a free loopback port to target (host:port) until
// the test ends, holding SUBACKs until want filters were subscribed.
func NewSubackHold(t testing.TB, target string, want int) *SubackHold {
	t.Helper()
	p := &SubackHold{want: want}
	p.relay = newRelay(t, target)
	p.cond = sync.NewCond(&p.mu)
	t.Cleanup(func() { // a held SUBACK goes, so that its copier ends
		p.mu.Lock()
		p.seen = p.want
		p.cond.Broadcast()
		p.mu.Unlock()
	})
	p.serve(func(c, up net.Conn) {
		go func() { p.copy(c, up, p.subscribe); up.Close() }()
		go func() { p.copy(up, c, p.suback); c.Close() }()
	})
	return p
}

// Filters returns how many filters each SUBSCRIBE so far carried.
func (p *SubackHold) Filters() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]int(nil), p.filters...)
}

// copy copies packets, showing each to see first.
func (p *SubackHold) copy(from io.Reader, to io.Writer, see func(typ byte, body []byte)) {
	r := bufio.NewReader(from)
	for {
		head, body, err := readPacket(r)
		if err != nil {
			return
		}
		see(head[0]>>4, body)
		if _, err := to.Write(append(head, body...)); err != nil {
			return
		}
	}
}

func (p *SubackHold) subscribe(typ byte, body []byte) {
	if typ != 8 || len(body) < 2 { // SUBSCRIBE: packet id, then (filter, options) pairs
		return
	}
	n := 0
	for rest := body[2:]; len(rest) >= 3 && len(rest) >= 2+int(binary.BigEndian.Uint16(rest))+1; n++ {
		rest = rest[2+int(binary.BigEndian.Uint16(rest))+1:]
	}
	p.mu.Lock()
	p.filters = append(p.filters, n)
	p.seen += n
	p.cond.Broadcast()
	p.mu.Unlock()
}

func (p *SubackHold) suback(typ byte, _ []byte) {
	if typ != 9 {
		return
	}
	p.mu.Lock()
	for p.seen < p.want {
		p.cond.Wait()
	}
	p.mu.Unlock()
}
