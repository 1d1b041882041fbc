// Package serial drives controllers on serial ports: simple line-protocol
// controllers (serial.line) and Modbus RTU devices over RS-485
// (serial.modbus). Ports are opened on first use and opened again after an
// I/O error, so a USB adapter that was unplugged and plugged back works
// again without a restart.
package serial

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/shadowgate/shadowgate/drivers"
)

// Sentinel errors.
var (
	ErrTimeout  = errors.New("no answer in time")
	ErrGarbled  = errors.New("garbled answer")
	ErrRejected = errors.New("controller refused")
)

// port is a serial port that reopens itself after an error.
type port struct {
	hw      *drivers.Hardware
	name    string
	baud    int
	timeout time.Duration

	mu sync.Mutex // one exchange at a time on the wire
	rw io.ReadWriteCloser
}

func (p *port) open() (io.ReadWriteCloser, error) {
	if p.rw != nil {
		return p.rw, nil
	}
	if _, err := os.Stat(p.name); err != nil {
		return nil, fmt.Errorf("serial port %s: %w (is the adapter plugged in?)", p.name, err)
	}
	// A short read timeout: reads are repeated until the exchange's deadline.
	rw, err := p.hw.Serial(p.name, p.baud, 50*time.Millisecond)
	if err != nil {
		return nil, err
	}
	p.rw = rw
	return rw, nil
}

// reset closes the port; the next exchange opens it again.
func (p *port) reset() {
	if p.rw != nil {
		p.rw.Close()
		p.rw = nil
	}
}

func (p *port) close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reset()
	return nil
}

// readUntil reads until done says the bytes so far are complete, or the
// deadline passes.
func readUntil(r io.Reader, deadline time.Time, done func([]byte) bool) ([]byte, error) {
	var buf []byte
	chunk := make([]byte, 256)
	for {
		n, err := r.Read(chunk)
		buf = append(buf, chunk[:n]...)
		if done(buf) {
			return buf, nil
		}
		if err != nil && !errors.Is(err, io.EOF) && !isTimeout(err) {
			return buf, err
		}
		if time.Now().After(deadline) {
			return buf, ErrTimeout
		}
		if n == 0 {
			time.Sleep(2 * time.Millisecond)
		}
	}
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// drain discards whatever is waiting (a late answer to an earlier request).
func drain(r io.Reader) {
	chunk := make([]byte, 256)
	for i := 0; i < 8; i++ {
		n, _ := r.Read(chunk)
		if n == 0 {
			return
		}
	}
}

func quote(b []byte) string { return fmt.Sprintf("%q", strings.TrimRight(string(b), "\r\n")) }
