package link

import (
	"bufio"
	"net"
)

// readBuffer is the size of a connection's read buffer: a few dozen
// requests and acknowledgements at a time, small beside paho's own.
const readBuffer = 4 << 10

// bufferedConn reads through a buffer. paho reads every packet in at least
// three reads (the type byte, the length, the body), each a system call on
// a bare connection, and on the link's TCP connections another one to
// re-arm TCP_QUICKACK; through the buffer one system call takes every
// packet that has arrived.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func bufferReads(c net.Conn) net.Conn {
	return &bufferedConn{Conn: c, r: bufio.NewReaderSize(c, readBuffer)}
}

// Read reads from the buffer; only paho's reader calls it.
func (c *bufferedConn) Read(b []byte) (int, error) { return c.r.Read(b) }
