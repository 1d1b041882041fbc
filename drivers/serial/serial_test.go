package serial_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/shadowgate/shadowgate/agent/config"
	"github.com/shadowgate/shadowgate/drivers"
	"github.com/shadowgate/shadowgate/drivers/serial"
)

// ptyPair opens a pseudo-terminal: the driver uses the tty's path with the
// real serial opener; the test is the controller on the master side.
func ptyPair(t *testing.T) (master *os.File, ttyPath string) {
	t.Helper()
	m, s, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(); s.Close() })
	return m, s.Name()
}

func open(t *testing.T, yaml string, hw *drivers.Hardware) drivers.Actuator {
	t.Helper()
	c, err := config.Parse("t.yaml", []byte("gateway: {thing: gw}\ncloud: {broker: \"tcp://127.0.0.1:1883\"}\nactuators:\n  dev:\n"+yaml), drivers.Check)
	if err != nil {
		t.Fatal(err)
	}
	p, err := drivers.Prepare(c)
	if err != nil {
		t.Fatal(err)
	}
	a, err := p["dev"].Open(context.Background(), hw)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// arduino answers the line protocol; behaviour can be changed mid-test.
type arduino struct {
	mu       sync.Mutex
	pos      string
	garble   int  // answer the next N queries with noise
	short    int  // answer the next N queries without a newline
	late     int  // answer the next N queries after 1.5s
	reject   bool // refuse sets
	requests atomic.Int64
}

func (a *arduino) serve(rw io.ReadWriter) {
	r := bufio.NewReader(rw)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		a.requests.Add(1)
		line = strings.TrimSpace(line)
		a.mu.Lock()
		var answer string
		delay := time.Duration(0)
		switch {
		case strings.HasPrefix(line, "POS "):
			if a.reject {
				answer = "ERR range\n"
			} else {
				a.pos = strings.TrimPrefix(line, "POS ")
				answer = "OK " + a.pos + "\n"
			}
		case line == "POS?":
			answer = "POS " + a.pos + "\n"
			switch {
			case a.garble > 0:
				a.garble--
				answer = "P\x00S ##\n"
			case a.short > 0:
				a.short--
				answer = "POS " + a.pos
			case a.late > 0:
				a.late--
				delay = 1500 * time.Millisecond // later than all three tries together
			}
		default:
			answer = "ERR unknown\n"
		}
		a.mu.Unlock()
		go func() { time.Sleep(delay); rw.Write([]byte(answer)) }()
	}
}

const lineYAML = `    driver: serial.line
    port: %s
    baud: 9600
    timeout: 200ms
    retries: 2
    keys:
      position: {type: int, min: 0, max: 100, set: "POS {value}", expect: "OK {value}", query: "POS?", reply: 'POS (-?\d+)'}
`

func TestLineProtocol(t *testing.T) {
	master, tty := ptyPair(t)
	dev := &arduino{pos: "0"}
	go dev.serve(master)
	a := open(t, fmt.Sprintf(lineYAML, tty), drivers.NewHardware())
	ctx := context.Background()

	if err := a.Apply(ctx, drivers.State{"position": int64(40)}); err != nil {
		t.Fatal(err)
	}
	st, err := a.Read(ctx)
	if err != nil || st["position"] != int64(40) {
		t.Fatalf("read %v %v", st, err)
	}
	// A garbled answer and a short one are retried.
	dev.mu.Lock()
	dev.garble, dev.short = 1, 1
	dev.mu.Unlock()
	if st, err := a.Read(ctx); err != nil || st["position"] != int64(40) {
		t.Fatalf("after garbled and short answers: %v %v", st, err)
	}
	// Answers later than every try are a timeout, and do not confuse the
	// next exchange (they are drained before it).
	dev.mu.Lock()
	dev.late = 3
	dev.mu.Unlock()
	if _, err := a.Read(ctx); !errors.Is(err, serial.ErrTimeout) {
		t.Fatalf("late answers: %v", err)
	}
	time.Sleep(1800 * time.Millisecond)
	if st, err := a.Read(ctx); err != nil || st["position"] != int64(40) {
		t.Fatalf("after late answers: %v %v", st, err)
	}
	// A refusal is not retried.
	dev.mu.Lock()
	dev.reject = true
	dev.mu.Unlock()
	before := dev.requests.Load()
	err = a.Apply(ctx, drivers.State{"position": int64(90)})
	if !errors.Is(err, serial.ErrRejected) || !strings.Contains(err.Error(), `answered "ERR range"`) {
		t.Fatalf("refusal: %v", err)
	}
	if n := dev.requests.Load() - before; n != 1 {
		t.Fatalf("a refusal was retried: %d requests", n)
	}
}

// flaky wraps the real serial opener: it can "unplug" the adapter, making
// the open port fail, and counts opens.
type flaky struct {
	mu      sync.Mutex
	opens   int
	current *breakable
}

type breakable struct {
	io.ReadWriteCloser
	broken atomic.Bool
}

func (b *breakable) Read(p []byte) (int, error) {
	if b.broken.Load() {
		return 0, errors.New("input/output error")
	}
	return b.ReadWriteCloser.Read(p)
}

func (b *breakable) Write(p []byte) (int, error) {
	if b.broken.Load() {
		return 0, errors.New("input/output error")
	}
	return b.ReadWriteCloser.Write(p)
}

func TestLineReopensAfterUnplug(t *testing.T) {
	master, tty := ptyPair(t)
	go (&arduino{pos: "7"}).serve(master)
	real := drivers.NewHardware()
	f := &flaky{}
	hw := &drivers.Hardware{Serial: func(port string, baud int, rt time.Duration) (io.ReadWriteCloser, error) {
		rw, err := real.Serial(port, baud, rt)
		if err != nil {
			return nil, err
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		f.opens++
		f.current = &breakable{ReadWriteCloser: rw}
		return f.current, nil
	}}
	a := open(t, fmt.Sprintf(lineYAML, tty), hw)
	ctx := context.Background()
	if _, err := a.Read(ctx); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.current.broken.Store(true) // the USB adapter is pulled out
	f.mu.Unlock()
	st, err := a.Read(ctx)
	if err != nil || st["position"] != int64(7) {
		t.Fatalf("after unplug: %v %v", st, err)
	}
	if f.opens != 2 {
		t.Fatalf("port opened %d times, want 2 (reopened after the error)", f.opens)
	}
}

func TestMissingPort(t *testing.T) {
	a := open(t, fmt.Sprintf(lineYAML, "/dev/ttyNOPE9"), drivers.NewHardware())
	_, err := a.Read(context.Background())
	if err == nil || !strings.Contains(err.Error(), "/dev/ttyNOPE9") || !strings.Contains(err.Error(), "plugged in") {
		t.Fatalf("missing port: %v", err)
	}
}

func TestCRC16(t *testing.T) {
	// The Modbus spec's example: read 10 holding registers from 0 at unit 1.
	f := serial.Frame(1, 0x03, 0x00, 0x00, 0x00, 0x0A)
	if fmt.Sprintf("% X", f) != "01 03 00 00 00 0A C5 CD" {
		t.Fatalf("frame % X", f)
	}
}

// slave is a fake Modbus RTU device.
type slave struct {
	mu        sync.Mutex
	holding   map[uint16]uint16
	coils     map[uint16]bool
	exception byte // answer the next request with this exception
	badCRC    int  // corrupt the next N answers
	silent    bool
}

func (s *slave) serve(rw io.ReadWriter) {
	buf := make([]byte, 0, 256)
	chunk := make([]byte, 256)
	for {
		n, err := rw.Read(chunk)
		if err != nil {
			return
		}
		buf = append(buf, chunk[:n]...)
		for len(buf) >= 8 {
			need := 8
			if buf[1] == 0x10 && len(buf) >= 7 {
				need = 9 + int(buf[6])
			}
			if len(buf) < need {
				break
			}
			req := buf[:need]
			buf = buf[need:]
			if binary.LittleEndian.Uint16(req[need-2:]) != serial.CRC16(req[:need-2]) {
				continue // a real slave ignores a bad frame
			}
			if resp := s.answer(req); resp != nil {
				rw.Write(resp)
			}
		}
	}
}

func (s *slave) answer(req []byte) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.silent {
		return nil
	}
	unit, fn := req[0], req[1]
	addr := binary.BigEndian.Uint16(req[2:4])
	var pdu []byte
	switch {
	case s.exception != 0:
		pdu = []byte{fn | 0x80, s.exception}
		s.exception = 0
	case fn == 0x03:
		n := binary.BigEndian.Uint16(req[4:6])
		pdu = []byte{fn, byte(2 * n)}
		for i := uint16(0); i < n; i++ {
			pdu = binary.BigEndian.AppendUint16(pdu, s.holding[addr+i])
		}
	case fn == 0x01:
		v := byte(0)
		if s.coils[addr] {
			v = 1
		}
		pdu = []byte{fn, 1, v}
	case fn == 0x06:
		s.holding[addr] = binary.BigEndian.Uint16(req[4:6])
		pdu = req[1:6]
	case fn == 0x05:
		s.coils[addr] = binary.BigEndian.Uint16(req[4:6]) == 0xFF00
		pdu = req[1:6]
	case fn == 0x10:
		n := binary.BigEndian.Uint16(req[4:6])
		for i := uint16(0); i < n; i++ {
			s.holding[addr+i] = binary.BigEndian.Uint16(req[7+2*i:])
		}
		pdu = req[1:6]
	}
	f := serial.Frame(unit, pdu...)
	if s.badCRC > 0 {
		s.badCRC--
		f[len(f)-1] ^= 0xFF
	}
	return f
}

const modbusYAML = `    driver: serial.modbus
    port: %s
    baud: 19200
    unit: 3
    timeout: 150ms
    retries: 1
    registers:
      speed: {holding: 0x2001, scale: 10, min: 0, max: 50}
      run: {coil: 0}
      total: {holding: 0x3000, words: 2}
`

func TestModbus(t *testing.T) {
	master, tty := ptyPair(t)
	s := &slave{holding: map[uint16]uint16{}, coils: map[uint16]bool{}}
	go s.serve(master)
	a := open(t, fmt.Sprintf(modbusYAML, tty), drivers.NewHardware())
	ctx := context.Background()

	if err := a.Apply(ctx, drivers.State{"speed": 12.5, "run": true, "total": int64(70000)}); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	if s.holding[0x2001] != 125 || !s.coils[0] || s.holding[0x3000] != 1 || s.holding[0x3001] != 70000-65536 {
		t.Fatalf("registers %v coils %v", s.holding, s.coils)
	}
	s.mu.Unlock()
	st, err := a.Read(ctx)
	if err != nil || st["speed"] != 12.5 || st["run"] != true || st["total"] != int64(70000) {
		t.Fatalf("read %v %v", st, err)
	}

	s.mu.Lock()
	s.exception = 2
	s.mu.Unlock()
	err = a.Apply(ctx, drivers.State{"speed": 5.0})
	if !errors.Is(err, serial.ErrException) || !strings.Contains(err.Error(), "illegal data address") {
		t.Fatalf("exception: %v", err)
	}
	s.mu.Lock()
	s.badCRC = 1 // one bad answer: retried
	s.mu.Unlock()
	if err := a.Apply(ctx, drivers.State{"speed": 5.0}); err != nil {
		t.Fatalf("after one bad CRC: %v", err)
	}
	s.mu.Lock()
	s.badCRC = 5
	s.mu.Unlock()
	if err := a.Apply(ctx, drivers.State{"speed": 6.0}); !errors.Is(err, serial.ErrGarbled) {
		t.Fatalf("bad CRCs: %v", err)
	}
	s.mu.Lock()
	s.badCRC, s.silent = 0, true
	s.mu.Unlock()
	if _, err := a.Read(ctx); !errors.Is(err, serial.ErrTimeout) || !strings.Contains(err.Error(), "is unit 3 on the bus") {
		t.Fatalf("silence: %v", err)
	}
}

func TestSerialOptionProblems(t *testing.T) {
	y := `
gateway: {thing: gw}
cloud: {broker: "tcp://127.0.0.1:1883"}
actuators:
  a: {driver: serial.line, port: ttyUSB0, baud: 9601, keys: {p: {set: "P", expect: "OK"}}}
  b: {driver: serial.modbus, port: /dev/ttyUSB0, unit: 300, registers: {x: {holding: 1, coil: 2}}}
  c: {driver: serial.line, port: /dev/ttyUSB1, keys: {p: {set: "P {value}", expect: "OK", query: "P?", reply: "P (\\d+"}}}
`
	_, err := config.Parse("t.yaml", []byte(y), drivers.Check)
	if err == nil {
		t.Fatal("accepted")
	}
	for _, w := range []string{
		`t.yaml:5: actuators.a.port: must be a device under /dev`,
		`actuators.a.baud: must be a standard rate`,
		`actuators.a.keys.p.set: must contain {value}`,
		`t.yaml:6: actuators.b.unit: must be a slave address from 1 to 247`,
		`actuators.b.registers.x: give exactly one of holding`,
		`t.yaml:7: actuators.c.keys.p.reply: invalid regexp`,
	} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("missing %q in\n%v", w, err)
		}
	}
}
