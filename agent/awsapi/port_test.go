package awsapi

import (
	"errors"
	"net"
	"testing"
)

// Two listeners of a port take turns on one socket: closing the first
// leaves the second accepting; closing the last frees the address.
func TestPortIsSharedUntilTheLastListenerCloses(t *testing.T) {
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := probe.Addr().String()
	probe.Close()

	p := NewPort(addr)
	old, err := p.Listener()
	if err != nil {
		t.Fatal(err)
	}
	next, err := p.Listener()
	if err != nil {
		t.Fatalf("a second listener on the same port: %v", err)
	}
	if _, err := net.Listen("tcp", addr); err == nil {
		t.Fatal("the port's address is free while it has listeners")
	}
	accepted := make(chan error, 1)
	go func() {
		c, err := next.Accept()
		if err == nil {
			c.Close()
		}
		accepted <- err
	}()
	if err := old.Close(); err != nil {
		t.Fatalf("closing the old listener: %v", err)
	}
	if _, err := old.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("accept on a closed listener: %v", err)
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial after the old listener closed: %v", err)
	}
	c.Close()
	if err := <-accepted; err != nil {
		t.Fatalf("the new listener's accept: %v", err)
	}
	if err := next.Close(); err != nil {
		t.Fatal(err)
	}
	free, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("the address after the last listener closed: %v", err)
	}
	free.Close()
	// The port listens again for a listener made after that.
	again, err := p.Listener()
	if err != nil {
		t.Fatal(err)
	}
	again.Close()
}
