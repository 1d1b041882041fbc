// Package watchdogtest serves $NOTIFY_SOCKET as systemd does, for tests of
// sd_notify: it collects every message sent to it.
package watchdogtest

import (
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// Socket is a listening notify socket.
type Socket struct {
	Path string // for NOTIFY_SOCKET

	mu   sync.Mutex
	msgs []string
}

// Listen serves a notify socket in t's temporary directory until t ends.
func Listen(t testing.TB) *Socket {
	t.Helper()
	s := &Socket{Path: filepath.Join(t.TempDir(), "notify.sock")}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: s.Path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { conn.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.msgs = append(s.msgs, string(buf[:n]))
			s.mu.Unlock()
		}
	}()
	return s
}

// Count is how many messages contain field (e.g. "READY=1").
func (s *Socket) Count(field string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := 0
	for _, m := range s.msgs {
		if strings.Contains(m, field) {
			c++
		}
	}
	return c
}

// Messages returns the messages received so far.
func (s *Socket) Messages() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.msgs)
}
