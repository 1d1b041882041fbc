package link

import (
	"bufio"
	"fmt"
	"net"
	"sync"
	"time"
)

// Sizes of a connection's buffers: the read buffer takes a few dozen
// requests and acknowledgements at a time; past writeBuffer bytes waiting,
// a writer waits for the socket; a write buffer grown past keepBuffer by a
// burst is not kept.
const (
	readBuffer  = 4 << 10
	writeBuffer = 64 << 10
	keepBuffer  = 16 << 10
	// closeFlush is how long Close waits for the bytes still waiting
	// (paho's DISCONNECT among them) to be written.
	closeFlush = time.Second
)

// bufferedConn is the link's connection to the broker, read and written
// through buffers.
//
// Reads: paho reads every packet in at least three reads (the type byte,
// the length, the body), each a system call on a bare connection, and on
// the link's TCP connections another one to re-arm TCP_QUICKACK; through
// the buffer one system call takes every packet that has arrived.
//
// Writes: paho writes every packet (each answer, each PUBACK) with a write
// of its own on one goroutine. Here Write only appends to the bytes
// waiting, and a flusher writes all that waits with one system call as
// soon as the previous one returned: the packets that queue while the
// socket is busy go out together, and none waits for a timer. An idle
// connection pays a goroutine start per write. A write error is returned
// by the next Write and by the reader's Read, so that paho sees a lost
// connection; Close first gives the waiting bytes closeFlush to go out.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader

	mu       sync.Mutex
	cond     *sync.Cond // bytes written, or the writes failed
	pending  []byte     // waiting for the flusher
	spare    []byte     // the flusher's last buffer, for reuse
	flushing bool       // a flusher runs
	err      error      // the first write error
}

func newBufferedConn(c net.Conn) *bufferedConn {
	b := &bufferedConn{Conn: c, r: bufio.NewReaderSize(c, readBuffer)}
	b.cond = sync.NewCond(&b.mu)
	return b
}

// Read reads from the buffer; only paho's reader calls it. Once a write
// failed, a read fails with that error (see flush).
func (c *bufferedConn) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	if err != nil {
		c.mu.Lock()
		werr := c.err
		c.mu.Unlock()
		if werr != nil {
			return n, fmt.Errorf("write to the broker: %w", werr)
		}
	}
	return n, err
}

// Write queues b for the flusher; it waits only while writeBuffer bytes
// are waiting already.
func (c *bufferedConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.err == nil && len(c.pending) >= writeBuffer {
		c.cond.Wait()
	}
	if c.err != nil {
		return 0, c.err
	}
	c.pending = append(c.pending, b...)
	if !c.flushing {
		c.flushing = true
		go c.flush()
	}
	return len(b), nil
}

// flush writes what waits until nothing does, then ends.
func (c *bufferedConn) flush() {
	c.mu.Lock()
	for len(c.pending) > 0 && c.err == nil {
		buf := c.pending
		c.pending, c.spare = c.spare[:0], nil
		c.mu.Unlock()
		_, err := c.Conn.Write(buf)
		c.mu.Lock()
		if cap(buf) <= keepBuffer {
			c.spare = buf[:0]
		}
		if err != nil && c.err == nil {
			c.err = err
			// paho's reader must see the failure: it takes a read error
			// for a lost connection, but one of a connection closed under
			// it for a deliberate close, and says nothing (the link would
			// stay "connected" on a dead socket until the keepalive gave
			// up). The reader's wait ends now, and Read returns err.
			c.Conn.SetReadDeadline(time.Now())
		}
		c.cond.Broadcast()
	}
	c.flushing = false
	c.cond.Broadcast()
	c.mu.Unlock()
}

// Close closes the connection once the bytes waiting are written, or after
// closeFlush.
func (c *bufferedConn) Close() error {
	flushed := make(chan struct{})
	go func() {
		c.mu.Lock()
		for c.flushing {
			c.cond.Wait()
		}
		c.mu.Unlock()
		close(flushed)
	}()
	select {
	case <-flushed:
	case <-time.After(closeFlush):
	}
	return c.Conn.Close()
}
