package link

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// countingConn counts the reads that reach the connection.
type countingConn struct {
	net.Conn
	reads int
}

func (c *countingConn) Read(b []byte) (int, error) { c.reads++; return c.Conn.Read(b) }

// TestDialedConnectionsReadThroughABuffer: the packets that arrived
// together are read with a few reads of the connection, not three each,
// and come out whole and in order.
func TestDialedConnectionsReadThroughABuffer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const n = 100
	var burst bytes.Buffer
	for i := range n {
		p := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
		p.Qos, p.MessageID, p.TopicName, p.Payload = 1, uint16(i+1), fmt.Sprintf("t/%d", i), []byte(`{"state":{}}`)
		p.Write(&burst)
	}
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.Write(burst.Bytes()) // all at once, as a busy broker sends
		c.Read(make([]byte, 1))
	}()

	u, _ := url.Parse("tcp://" + ln.Addr().String())
	conn, err := dialer(u, 5*time.Second)(u, *mqtt.NewClientOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	bc, ok := conn.(*bufferedConn)
	if !ok {
		t.Fatalf("dialed connection is a %T, want reads through a buffer", conn)
	}
	// Count the reads that reach the socket.
	counted := &countingConn{Conn: bc.Conn}
	bc.r.Reset(counted)
	bc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for i := range n {
		cp, err := packets.ReadPacket(conn)
		if err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		if p, ok := cp.(*packets.PublishPacket); !ok || p.TopicName != fmt.Sprintf("t/%d", i) || string(p.Payload) != `{"state":{}}` {
			t.Fatalf("packet %d: got %v", i, cp)
		}
	}
	// Unbuffered, paho's ReadPacket reads each packet in three reads (300).
	if counted.reads >= n {
		t.Errorf("%d packets took %d reads of the connection, want fewer than one each", n, counted.reads)
	}
}

// gatedConn is a connection whose writes wait for the test's go-ahead and
// are counted.
type gatedConn struct {
	net.Conn
	gate   chan struct{}
	mu     sync.Mutex
	writes int
	fail   error
}

func (c *gatedConn) Write(b []byte) (int, error) {
	<-c.gate
	c.mu.Lock()
	c.writes++
	fail := c.fail
	c.mu.Unlock()
	if fail != nil {
		return 0, fail
	}
	return c.Conn.Write(b)
}

func (c *gatedConn) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes
}

// pipe is a loopback TCP pair: the near end gated, the far end's bytes
// collected.
func pipe(t *testing.T) (near *gatedConn, far <-chan []byte) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		b, _ := io.ReadAll(c)
		got <- b
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &gatedConn{Conn: c, gate: make(chan struct{})}, got
}

// TestWritesWhileTheSocketIsBusyGoOutTogether: the packets written while
// one write is in the socket leave in one more write, whole and in order,
// and Close lets the last ones out before it closes.
func TestWritesWhileTheSocketIsBusyGoOutTogether(t *testing.T) {
	near, far := pipe(t)
	c := newBufferedConn(near)
	var want bytes.Buffer
	wrote := make(chan error, 1)
	go func() {
		for i := range 100 {
			p := fmt.Appendf(nil, "packet %d;", i)
			want.Write(p)
			if n, err := c.Write(p); err != nil || n != len(p) {
				wrote <- fmt.Errorf("write %d: %d, %v", i, n, err)
				return
			}
		}
		wrote <- nil
	}()
	select {
	case err := <-wrote:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Error("Write waits for the socket")
		close(near.gate)
		<-wrote
		return
	}
	close(near.gate) // the socket takes writes again
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-far:
		if !bytes.Equal(got, want.Bytes()) {
			t.Fatalf("the far end got %q, want %q", got, want.Bytes())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the far end got nothing")
	}
	// The first write took packet 0 (or more); the rest waited for it.
	if n := near.count(); n > 2 {
		t.Errorf("100 packets written while the socket was busy took %d writes, want at most 2", n)
	}
}

// TestAWriteErrorIsReturnedByTheNextWrite: a failed write of the flusher
// is every later Write's error, and the reader's.
func TestAWriteErrorIsReturnedByTheNextWrite(t *testing.T) {
	near, _ := pipe(t)
	near.fail = errors.New("broken pipe")
	close(near.gate)
	c := newBufferedConn(near)
	c.Write([]byte("x"))
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := c.Write([]byte("y"))
		if err != nil {
			if err != near.fail {
				t.Fatalf("write error %v, want %v", err, near.fail)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a failed write was never reported")
		}
		time.Sleep(time.Millisecond)
	}
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, near.fail) {
		t.Errorf("read after a failed write: %v, want %v", err, near.fail)
	}
}

// TestWriteFailureEndsTheRead: when the flusher's write fails (the broker
// went away), paho's reader, waiting for a packet, gets that error, not
// one of a connection closed under it, which paho takes for a deliberate
// close and ignores: the link would stay "connected" on a dead socket
// until the keepalive gave up.
func TestWriteFailureEndsTheRead(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			peer <- c
		}
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer (<-peer).Close()
	bc := newBufferedConn(raw)
	defer bc.Close()
	read := make(chan error, 1)
	go func() {
		_, err := bc.Read(make([]byte, 1)) // the peer sends nothing
		read <- err
	}()
	// Writes now fail with EPIPE, while the read side stays open.
	if err := raw.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if _, err := bc.Write([]byte("ping")); err != nil {
		t.Fatalf("the first write only queues: %v", err)
	}
	select {
	case err := <-read:
		if err == nil || strings.Contains(err.Error(), "use of closed network connection") || !errors.Is(err, syscall.EPIPE) {
			t.Fatalf("the reader got %v; want the write's broken pipe", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the reader still waits after the write failed")
	}
	if _, err := bc.Write([]byte("again")); !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("a later write: %v", err)
	}
}
