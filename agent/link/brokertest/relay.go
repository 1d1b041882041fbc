package brokertest

import (
	"net"
	"sync"
	"testing"
)

// relay is what the packet-level proxies (FilterProxy, PolicyProxy) share:
// a free loopback port whose every connection, once serve starts it, is
// paired with one to the broker and handed to the proxy; all of them close
// with the test. mu also guards the proxy's own records.
type relay struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
}

func newRelay(t testing.TB, target string) *relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{ln: ln, target: target}
	t.Cleanup(func() {
		ln.Close()
		r.mu.Lock()
		for _, c := range r.conns {
			c.Close()
		}
		r.mu.Unlock()
	})
	return r
}

// serve accepts connections until the test ends and hands each, with its
// connection to the broker, to fn. Call it once the proxy is complete.
func (r *relay) serve(fn func(client, broker net.Conn)) {
	ln, target := r.ln, r.target
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			r.mu.Lock()
			r.conns = append(r.conns, c, up)
			r.mu.Unlock()
			fn(c, up)
		}
	}()
}

// URL is the proxy's tcp:// URL.
func (r *relay) URL() string { return "tcp://" + r.ln.Addr().String() }
