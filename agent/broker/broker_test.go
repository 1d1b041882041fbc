package broker_test

import (
	"bytes"
	"net"
	"strconv"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/shadowgate/shadowgate/agent/broker"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return "127.0.0.1:" + strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

func client(t *testing.T, addr, id string, lost chan<- error) mqtt.Client {
	t.Helper()
	o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetAutoReconnect(false).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			if lost != nil {
				lost <- err
			}
		})
	c := mqtt.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s: %v", id, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}

// The embedded broker takes a message of up to 128 KB, as AWS IoT Core, and
// drops the connection of a client that sends a larger one, without
// delivering it.
func TestMaximumMessageSize(t *testing.T) {
	addr := freeAddr(t)
	srv, err := broker.Start(addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })

	got := make(chan []byte, 10)
	sub := client(t, addr, "sub", nil)
	if tok := sub.Subscribe("commands/gw", 1, func(_ mqtt.Client, m mqtt.Message) { got <- m.Payload() }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	lost := make(chan error, 1)
	pub := client(t, addr, "pub", lost)

	atLimit := bytes.Repeat([]byte("a"), broker.MaxPayload)
	if tok := pub.Publish("commands/gw", 1, false, atLimit); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %d bytes: %v", len(atLimit), tok.Error())
	}
	select {
	case m := <-got:
		if len(m) != broker.MaxPayload {
			t.Fatalf("got %d bytes", len(m))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a message of 128 KB was not delivered")
	}

	pub.Publish("commands/gw", 1, false, bytes.Repeat([]byte("b"), 1<<20))
	select {
	case <-lost:
	case <-time.After(10 * time.Second):
		t.Fatal("the client that sent 1 MB is still connected")
	}
	// Sent after the big one: had the big one been delivered, it would
	// arrive first.
	pub2 := client(t, addr, "pub2", nil)
	if tok := pub2.Publish("commands/gw", 1, false, []byte("small")); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish small: %v", tok.Error())
	}
	select {
	case m := <-got:
		if string(m) != "small" {
			t.Fatalf("a message of %d bytes was delivered", len(m))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("small message not delivered")
	}
}
