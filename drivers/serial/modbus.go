package serial

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"time"

	"github.com/shadowgate/shadowgate/agent/config"
	"github.com/shadowgate/shadowgate/drivers"
)

// ModbusDriver drives Modbus RTU devices (motor drives, VFDs) over RS-485:
//
//	pump:                              # {"speed": number, "run": bool}
//	  driver: serial.modbus
//	  port: /dev/ttyUSB0
//	  baud: 9600
//	  unit: 1                          # slave address 1..247
//	  timeout: 500ms
//	  retries: 2
//	  registers:
//	    speed: {holding: 0x2001, scale: 10, min: 0, max: 50}   # 12.5 → 125
//	    run:   {coil: 0}
const ModbusDriver = "serial.modbus"

// Modbus function codes used.
const (
	fnReadCoils       = 0x01
	fnReadHolding     = 0x03
	fnWriteCoil       = 0x05
	fnWriteRegister   = 0x06
	fnWriteRegisters  = 0x10
	exceptionFlag     = 0x80
	maxRegisterNumber = 0xFFFF
)

// ErrException is wrapped by a Modbus exception answer.
var ErrException = errors.New("modbus exception")

var exceptionText = map[byte]string{
	1: "illegal function", 2: "illegal data address", 3: "illegal data value", 4: "slave device failure",
	5: "acknowledge (busy processing)", 6: "slave device busy", 8: "memory parity error",
	10: "gateway path unavailable", 11: "gateway target device failed to respond",
}

// CRC16 is the Modbus RTU CRC (polynomial 0xA001 reflected, initial 0xFFFF),
// sent low byte first.
func CRC16(b []byte) uint16 {
	crc := uint16(0xFFFF)
	for _, x := range b {
		crc ^= uint16(x)
		for i := 0; i < 8; i++ {
			if crc&1 != 0 {
				crc = crc>>1 ^ 0xA001
			} else {
				crc >>= 1
			}
		}
	}
	return crc
}

// Frame appends the CRC to a PDU addressed to unit.
func Frame(unit byte, pdu ...byte) []byte {
	f := append([]byte{unit}, pdu...)
	return binary.LittleEndian.AppendUint16(f, CRC16(f))
}

// Register maps one state key to a holding register (a number, stored ×
// scale; words: 2 for a 32-bit value over two registers) or to a coil (a
// bool).
type Register struct {
	Holding *int     `yaml:"holding"`
	Coil    *int     `yaml:"coil"`
	Scale   float64  `yaml:"scale"`
	Words   int      `yaml:"words"`
	Min     *float64 `yaml:"min"`
	Max     *float64 `yaml:"max"`
}

// ModbusOptions are serial.modbus's keys.
type ModbusOptions struct {
	Port      string              `yaml:"port"`
	Baud      int                 `yaml:"baud"`
	Unit      int                 `yaml:"unit"`
	Timeout   config.Duration     `yaml:"timeout"`
	Retries   int                 `yaml:"retries"`
	Registers map[string]Register `yaml:"registers"`
}

type modbusDriver struct{}

func (modbusDriver) Prepare(o *drivers.Options) drivers.Opener {
	opts := ModbusOptions{Baud: 9600, Unit: 1, Timeout: config.Duration(500 * time.Millisecond), Retries: 2}
	if !o.Decode(&opts) {
		return nil
	}
	checkPort(o, opts.Port, opts.Baud, opts.Timeout, opts.Retries)
	if opts.Unit < 1 || opts.Unit > 247 {
		o.Problem("unit", "must be a slave address from 1 to 247, got %d", opts.Unit)
	}
	if len(opts.Registers) == 0 {
		o.Problem("registers", "is required: the state keys and their registers, e.g. speed: {holding: 0x2001, scale: 10}")
	}
	for name, r := range opts.Registers {
		p := "registers." + name
		switch {
		case (r.Holding == nil) == (r.Coil == nil):
			o.Problem(p, "give exactly one of holding (a register number) or coil")
		case r.Holding != nil && (*r.Holding < 0 || *r.Holding > maxRegisterNumber):
			o.Problem(p+".holding", "must be 0 to 0xFFFF, got %d", *r.Holding)
		case r.Coil != nil && (*r.Coil < 0 || *r.Coil > maxRegisterNumber):
			o.Problem(p+".coil", "must be 0 to 0xFFFF, got %d", *r.Coil)
		}
		if r.Scale < 0 {
			o.Problem(p+".scale", "must be positive")
		}
		if r.Words != 0 && r.Words != 1 && r.Words != 2 {
			o.Problem(p+".words", "must be 1 or 2")
		}
	}
	if o.Failed() {
		return nil
	}
	for name, r := range opts.Registers {
		if r.Scale == 0 {
			r.Scale = 1
		}
		if r.Words == 0 {
			r.Words = 1
		}
		opts.Registers[name] = r
	}
	return drivers.OpenerFunc(func(_ context.Context, hw *drivers.Hardware) (drivers.Actuator, error) {
		return NewModbus(hw, opts), nil
	})
}

// Modbus is a Modbus RTU device.
type Modbus struct {
	p    *port
	opts ModbusOptions
	// charTime is the time of one character (11 bits: start, 8 data,
	// parity or stop, stop); frames are separated by 3.5 of them.
	charTime time.Duration
	lastIO   time.Time // guarded by p.mu
}

// NewModbus makes a device on the hardware's serial port.
func NewModbus(hw *drivers.Hardware, opts ModbusOptions) *Modbus {
	ct := time.Duration(11 * float64(time.Second) / float64(opts.Baud))
	return &Modbus{p: &port{hw: hw, name: opts.Port, baud: opts.Baud, timeout: opts.Timeout.D()}, opts: opts, charTime: ct}
}

// Schema is the configured registers.
func (m *Modbus) Schema() drivers.Schema {
	sc := drivers.Schema{}
	for name, r := range m.opts.Registers {
		switch {
		case r.Coil != nil:
			sc[name] = drivers.Field{Kind: drivers.Bool}
		case r.Scale == 1:
			lo, hi := r.bounds()
			sc[name] = drivers.Field{Kind: drivers.Int, Min: lo, Max: hi}
		default:
			lo, hi := r.bounds()
			sc[name] = drivers.Field{Kind: drivers.Number, Min: lo, Max: hi}
		}
	}
	return sc
}

// bounds is the configured min/max within what the register holds (0 to
// 65535, or a signed 32-bit value over two words, divided by the scale):
// Apply would write a value beyond it wrapped.
func (r Register) bounds() (lo, hi *float64) {
	rawLo, rawHi := 0.0, float64(math.MaxUint16)
	if r.Words == 2 {
		rawLo, rawHi = math.MinInt32, math.MaxInt32
	}
	l, h := rawLo/r.Scale, rawHi/r.Scale
	if r.Min != nil {
		l = max(l, *r.Min)
	}
	if r.Max != nil {
		h = min(h, *r.Max)
	}
	return &l, &h
}

// interFrame is the silence before a frame: 3.5 characters, at least
// 1.75 ms (the spec's fixed value above 19200 baud).
func (m *Modbus) interFrame() time.Duration {
	return max(time.Duration(3.5*float64(m.charTime)), 1750*time.Microsecond)
}

// Apply writes each key's register or coil.
func (m *Modbus) Apply(ctx context.Context, s drivers.State) error {
	for _, name := range slices.Sorted(maps.Keys(s)) {
		r := m.opts.Registers[name]
		var pdu []byte
		switch {
		case r.Coil != nil:
			v := uint16(0x0000)
			if on, _ := s[name].(bool); on {
				v = 0xFF00
			}
			pdu = binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16([]byte{fnWriteCoil}, uint16(*r.Coil)), v)
		default:
			f, _ := toFloat(s[name])
			raw := int64(math.Round(f * r.Scale))
			if r.Words == 2 {
				pdu = binary.BigEndian.AppendUint16([]byte{fnWriteRegisters}, uint16(*r.Holding))
				pdu = append(binary.BigEndian.AppendUint16(pdu, 2), 4)
				pdu = binary.BigEndian.AppendUint32(pdu, uint32(int32(raw)))
			} else {
				if raw < math.MinInt16 || raw > math.MaxUint16 {
					return fmt.Errorf("%s=%v: %d does not fit a 16-bit register (scale %v)", name, s[name], raw, r.Scale)
				}
				pdu = binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16([]byte{fnWriteRegister}, uint16(*r.Holding)), uint16(raw))
			}
		}
		if _, err := m.transact(ctx, pdu); err != nil {
			return fmt.Errorf("write %s on %s unit %d: %w", name, m.opts.Port, m.opts.Unit, err)
		}
	}
	return nil
}

func toFloat(v any) (float64, bool) {
	switch v := v.(type) {
	case float64:
		return v, true
	case int64:
		return float64(v), true
	case int:
		return float64(v), true
	}
	return 0, false
}

// Read reads every register and coil.
func (m *Modbus) Read(ctx context.Context) (drivers.State, error) {
	out := drivers.State{}
	for name, r := range m.opts.Registers {
		if r.Coil != nil {
			resp, err := m.transact(ctx, binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16([]byte{fnReadCoils}, uint16(*r.Coil)), 1))
			if err != nil {
				return nil, fmt.Errorf("read %s on %s unit %d: %w", name, m.opts.Port, m.opts.Unit, err)
			}
			out[name] = resp[2]&1 == 1
			continue
		}
		resp, err := m.transact(ctx, binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16([]byte{fnReadHolding}, uint16(*r.Holding)), uint16(r.Words)))
		if err != nil {
			return nil, fmt.Errorf("read %s on %s unit %d: %w", name, m.opts.Port, m.opts.Unit, err)
		}
		var raw int64
		if r.Words == 2 {
			raw = int64(int32(binary.BigEndian.Uint32(resp[2:6])))
		} else {
			raw = int64(binary.BigEndian.Uint16(resp[2:4]))
		}
		if r.Scale == 1 {
			out[name] = raw
		} else {
			out[name] = float64(raw) / r.Scale
		}
	}
	return out, nil
}

// expectedLen is the length of a normal answer to a request PDU.
func expectedLen(pdu []byte) int {
	switch pdu[0] {
	case fnReadCoils:
		n := int(binary.BigEndian.Uint16(pdu[3:5]))
		return 1 + 2 + (n+7)/8 + 2
	case fnReadHolding:
		return 1 + 2 + 2*int(binary.BigEndian.Uint16(pdu[3:5])) + 2
	}
	return 1 + 5 + 2 // writes echo function, address and value/quantity
}

// transact sends a request and returns the answer's PDU, retrying after a
// timeout or a bad CRC and reopening the port after an I/O error. An
// exception answer is not retried: it is the device saying no.
func (m *Modbus) transact(ctx context.Context, pdu []byte) ([]byte, error) {
	m.p.mu.Lock()
	defer m.p.mu.Unlock()
	unit := byte(m.opts.Unit)
	req := Frame(unit, pdu...)
	want := expectedLen(pdu)
	var last error
	for try := 0; try <= m.opts.Retries; try++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		rw, err := m.p.open()
		if err != nil {
			last = err
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if gap := m.interFrame() - time.Since(m.lastIO); gap > 0 {
			time.Sleep(gap)
		}
		drain(rw)
		if _, err := rw.Write(req); err != nil {
			last = fmt.Errorf("write: %w", err)
			m.p.reset()
			continue
		}
		deadline := time.Now().Add(m.p.timeout)
		buf, err := readUntil(rw, deadline, func(b []byte) bool {
			if len(b) >= 5 && b[1] == pdu[0]|exceptionFlag {
				return true
			}
			return len(b) >= want
		})
		m.lastIO = time.Now()
		if err != nil && !errors.Is(err, ErrTimeout) {
			last = fmt.Errorf("read: %w", err)
			m.p.reset()
			continue
		}
		if errors.Is(err, ErrTimeout) {
			if len(buf) == 0 {
				last = fmt.Errorf("%w (%s): is unit %d on the bus, and baud %d right?", ErrTimeout, m.p.timeout, unit, m.opts.Baud)
			} else {
				last = fmt.Errorf("%w: short answer of %d bytes % x", ErrTimeout, len(buf), buf)
			}
			continue
		}
		frame := buf
		if frame[1] == pdu[0]|exceptionFlag {
			frame = buf[:5]
		} else {
			frame = buf[:want]
		}
		if got := binary.LittleEndian.Uint16(frame[len(frame)-2:]); got != CRC16(frame[:len(frame)-2]) {
			last = fmt.Errorf("%w: bad CRC in % x", ErrGarbled, frame)
			continue
		}
		if frame[0] != unit {
			last = fmt.Errorf("%w: answer from unit %d, asked unit %d", ErrGarbled, frame[0], unit)
			continue
		}
		if frame[1] == pdu[0]|exceptionFlag {
			code := frame[2]
			text := exceptionText[code]
			if text == "" {
				text = "unknown exception"
			}
			return nil, fmt.Errorf("%w %d: %s (function %#02x)", ErrException, code, text, pdu[0])
		}
		if frame[1] != pdu[0] {
			last = fmt.Errorf("%w: answer to function %#02x, asked %#02x", ErrGarbled, frame[1], pdu[0])
			continue
		}
		return frame[1 : len(frame)-2], nil
	}
	return nil, last
}

// Close closes the port.
func (m *Modbus) Close() error { return m.p.close() }
