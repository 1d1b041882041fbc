package awsapi

import (
	"errors"
	"fmt"
	"net"
	"sync"
)

// A Port is a TCP address whose listening socket successive servers take
// turns on: a reload builds the new server on a Listener of the same Port
// beside the old one, and closing the old one's Listener ends only its
// Accept. The socket opens with the first Listener and closes with the
// last, so a Port nobody listens on holds nothing.
type Port struct {
	addr string

	mu    sync.Mutex
	sock  *socket // nil while no Listener is open
	views int
}

// socket is one listening socket and its accept loop.
type socket struct {
	ln      net.Listener
	accepts chan accepted
	closed  chan struct{}
}

type accepted struct {
	c   net.Conn
	err error
}

// NewPort is the port at addr (host:port); it listens from the first
// Listener on.
func NewPort(addr string) *Port { return &Port{addr: addr} }

// Addr is the address the port was made with (not the resolved one:
// "127.0.0.1:0" stays that), so that callers can tell whether a
// configuration names this port.
func (p *Port) Addr() string { return p.addr }

// Listener returns a new view of the port's socket, listening first if
// no view is open.
func (p *Port) Listener() (net.Listener, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sock == nil {
		ln, err := net.Listen("tcp", p.addr)
		if err != nil {
			return nil, fmt.Errorf("listen %s: %w", p.addr, err)
		}
		p.sock = &socket{ln: ln, accepts: make(chan accepted), closed: make(chan struct{})}
		go p.sock.accept()
	}
	p.views++
	return &view{p: p, s: p.sock, done: make(chan struct{})}, nil
}

// accept hands each connection (or error) to whichever view asks.
func (s *socket) accept() {
	for {
		c, err := s.ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		select {
		case s.accepts <- accepted{c, err}:
		case <-s.closed:
			if c != nil {
				c.Close()
			}
			return
		}
	}
}

func (p *Port) release() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.views--; p.views > 0 {
		return nil
	}
	s := p.sock
	p.sock = nil
	close(s.closed)
	return s.ln.Close()
}

type view struct {
	p    *Port
	s    *socket
	once sync.Once
	done chan struct{}
}

func (v *view) Accept() (net.Conn, error) {
	select {
	case a := <-v.s.accepts:
		return a.c, a.err
	case <-v.done:
		return nil, net.ErrClosed
	}
}

func (v *view) Close() error {
	err := net.ErrClosed
	v.once.Do(func() {
		close(v.done)
		err = v.p.release()
	})
	return err
}

func (v *view) Addr() net.Addr { return v.s.ln.Addr() }
