package brokertest

import (
	"bufio"
	"io"
	"math"
	"net"
	"sync"
	"testing"
)

// HoldProxy forwards a loopback port to a broker, as Proxy does, and can
// hold back the broker's PUBACKs: after Hold, every packet to the client
// from the first PUBACK on waits (in order) until Release. The client's
// publishes reach the broker, and their subscribers, at once; the client
// hears of none of them. It shows whether a client waits for one
// message's PUBACK before it sends the next. MQTT 3.1.1 only.
type HoldProxy struct {
	*relay
	holding bool
	down    []*heldConn // under relay.mu
}

// heldConn is one client connection's way down, with what waits on it.
type heldConn struct {
	mu   sync.Mutex // serialises writes to c (taken after the proxy's)
	c    net.Conn
	held [][]byte
}

// NewHoldProxy forwards a free loopback port to target (host:port) until
// the test ends.
func NewHoldProxy(t testing.TB, target string) *HoldProxy {
	t.Helper()
	p := &HoldProxy{relay: newRelay(t, target)}
	p.serve(func(c, up net.Conn) {
		h := &heldConn{c: c}
		p.mu.Lock()
		p.down = append(p.down, h)
		p.mu.Unlock()
		go func() { io.Copy(up, c); up.Close() }()
		go func() { p.copyDown(bufio.NewReader(up), h); c.Close() }()
	})
	return p
}

// Hold holds back, from now on, the PUBACKs to the client and every packet
// after the first one held.
func (p *HoldProxy) Hold() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.holding = true
}

// Release sends what was held, in order, and lets everything through.
func (p *HoldProxy) Release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.holding = false
	for _, h := range p.down {
		h.send(math.MaxInt)
	}
}

// ReleasePubacks sends what was held up to and including the n-th PUBACK
// on each connection, in order, and goes on holding the rest: the client
// hears of its first n messages only.
func (p *HoldProxy) ReleasePubacks(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, h := range p.down {
		h.send(n)
	}
}

// send writes what h holds, in order, up to and including its n-th
// PUBACK (under the proxy's lock).
func (h *heldConn) send(n int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for sent := 0; len(h.held) > 0 && sent < n; {
		pkt := h.held[0]
		h.c.Write(pkt)
		h.held = h.held[1:]
		if pkt[0]>>4 == 4 {
			sent++
		}
	}
}

func (p *HoldProxy) copyDown(r *bufio.Reader, h *heldConn) {
	for {
		head, body, err := readPacket(r)
		if err != nil {
			return
		}
		pkt := append(head, body...)
		// Decided and written under the proxy's lock, so that Release
		// never leaves a packet behind.
		p.mu.Lock()
		h.mu.Lock()
		if p.holding && (head[0]>>4 == 4 || len(h.held) > 0) { // PUBACK, or behind one
			h.held = append(h.held, pkt)
		} else {
			_, err = h.c.Write(pkt)
		}
		h.mu.Unlock()
		p.mu.Unlock()
		if err != nil {
			return
		}
	}
}
