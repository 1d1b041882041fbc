package link

import (
	"net"
	"sync"
	"syscall"
	"time"
)

// conn is the link's TCP connection (see dial.go): it turns TCP_QUICKACK on
// again after every read that returned data, and it coalesces writes.
//
// paho writes each packet with a write of its own, one system call per
// PUBACK or PUBLISH. Here a write only appends to a buffer; one flusher at
// a time sends everything buffered in one system call, so the packets
// written while a send is under way leave together in the next. A lone
// packet goes out at once (the flusher starts with it), so nothing waits
// for more to come, unlike Nagle's algorithm.
type conn struct {
	*net.TCPConn
	raw syscall.RawConn

	mu       sync.Mutex
	cond     *sync.Cond
	buf      []byte // written, not yet sent
	spare    []byte // the buffer last sent, reused
	flushing bool
	err      error // the first send error; every later write returns it
}

const (
	// maxBuffered bounds what a write may leave behind it: past it the
	// writer waits for the flusher, as it would for the socket.
	maxBuffered = 256 << 10
	// sendTimeout bounds one send, as paho's write timeout does.
	sendTimeout = 15 * time.Second
)

func quickAck(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	q := &conn{TCPConn: tc, raw: raw}
	q.cond = sync.NewCond(&q.mu)
	q.arm()
	return q
}

func (c *conn) arm() {
	c.raw.Control(func(fd uintptr) {
		syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1)
	})
}

func (c *conn) Read(b []byte) (int, error) {
	n, err := c.TCPConn.Read(b)
	if n > 0 {
		c.arm()
	}
	return n, err
}

// Write buffers b and makes sure a flusher will send it.
func (c *conn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.buf) >= maxBuffered && c.err == nil {
		c.cond.Wait()
	}
	if c.err != nil {
		return 0, c.err
	}
	c.buf = append(c.buf, b...)
	if !c.flushing {
		c.flushing = true
		go c.flush()
	}
	return len(b), nil
}

// flush sends what is buffered until nothing is; a send error closes the
// connection, so that the reader fails and paho sees the loss at once.
func (c *conn) flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.buf) > 0 && c.err == nil {
		out := c.buf
		c.buf = c.spare[:0]
		c.mu.Unlock()
		c.TCPConn.SetWriteDeadline(time.Now().Add(sendTimeout))
		_, err := c.TCPConn.Write(out)
		c.mu.Lock()
		if err != nil {
			c.err = err
			c.TCPConn.Close()
		}
		if cap(out) <= maxBuffered*2 {
			c.spare = out[:0]
		}
		c.cond.Broadcast()
	}
	c.flushing = false
	c.cond.Broadcast()
}

// SetWriteDeadline is the flusher's to set: paho's per-packet deadlines
// would apply to a send under way, or take its deadline away.
func (c *conn) SetWriteDeadline(time.Time) error { return nil }

// SetDeadline sets the read deadline only, for the same reason.
func (c *conn) SetDeadline(t time.Time) error { return c.TCPConn.SetReadDeadline(t) }

// Close sends what is buffered first (a DISCONNECT must reach the broker,
// or it publishes the will), then closes.
func (c *conn) Close() error {
	c.mu.Lock()
	for c.flushing && c.err == nil {
		c.cond.Wait()
	}
	c.mu.Unlock()
	return c.TCPConn.Close()
}
