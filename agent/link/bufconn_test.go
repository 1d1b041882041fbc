package link

import (
	"bytes"
	"fmt"
	"net"
	"net/url"
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
