package serial

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/shadowgate/shadowgate/agent/config"
	"github.com/shadowgate/shadowgate/drivers"
)

// LineDriver speaks a configurable line protocol (Arduino-style
// controllers):
//
//	gate_motor:                          # {"position": int, "speed": int}
//	  driver: serial.line
//	  port: /dev/ttyUSB0
//	  baud: 9600
//	  timeout: 1s                        # per answer
//	  retries: 2                         # more tries after a timeout or a garbled answer
//	  eol: "\n"
//	  keys:
//	    position: {type: int, min: 0, max: 100, set: "POS {value}", expect: "OK {value}", query: "POS?", reply: 'POS (-?\d+)'}
//	    speed:    {type: int, min: 0, max: 255, set: "SPD {value}", expect: "OK", query: "SPD?", reply: 'SPD (\d+)'}
const LineDriver = "serial.line"

// LineKey is how one state key is set and read.
type LineKey struct {
	Type   string   `yaml:"type"` // int (default), number or bool
	Min    *float64 `yaml:"min"`
	Max    *float64 `yaml:"max"`
	Set    string   `yaml:"set"`    // request, {value} is the value
	Expect string   `yaml:"expect"` // the answer that confirms it; {value} allowed
	Query  string   `yaml:"query"`  // optional: asks for the value
	Reply  string   `yaml:"reply"`  // regexp whose first group is the value
}

// LineOptions are serial.line's keys.
type LineOptions struct {
	Port    string             `yaml:"port"`
	Baud    int                `yaml:"baud"`
	Timeout config.Duration    `yaml:"timeout"`
	Retries int                `yaml:"retries"`
	EOL     string             `yaml:"eol"`
	Keys    map[string]LineKey `yaml:"keys"`
}

type lineDriver struct{}

func init() {
	drivers.Register(LineDriver, lineDriver{})
	drivers.Register(ModbusDriver, modbusDriver{})
}

func checkPort(o *drivers.Options, portName string, baud int, timeout config.Duration, retries int) {
	if portName == "" {
		o.Problem("port", "is required, e.g. /dev/ttyUSB0")
	} else if !strings.HasPrefix(portName, "/dev/") {
		o.Problem("port", "must be a device under /dev, got %q", portName)
	}
	switch baud {
	case 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400:
	default:
		o.Problem("baud", "must be a standard rate (1200 … 230400), got %d", baud)
	}
	if timeout.D() <= 0 || timeout.D() > 30*time.Second {
		o.Problem("timeout", "must be between 1ms and 30s, got %s", timeout)
	}
	if retries < 0 || retries > 10 {
		o.Problem("retries", "must be 0 to 10, got %d", retries)
	}
}

func (lineDriver) Prepare(o *drivers.Options) drivers.Opener {
	opts := LineOptions{Baud: 9600, Timeout: config.Duration(time.Second), Retries: 2, EOL: "\n"}
	if !o.Decode(&opts) {
		return nil
	}
	checkPort(o, opts.Port, opts.Baud, opts.Timeout, opts.Retries)
	if len(opts.Keys) == 0 {
		o.Problem("keys", "is required: at least one key with its set and expect templates")
	}
	replies := map[string]*regexp.Regexp{}
	for name, k := range opts.Keys {
		p := "keys." + name
		switch k.Type {
		case "", "int", "number", "bool":
		default:
			o.Problem(p+".type", "must be int, number or bool, got %q", k.Type)
		}
		if !strings.Contains(k.Set, "{value}") {
			o.Problem(p+".set", "must contain {value}, e.g. \"POS {value}\", got %q", k.Set)
		}
		if k.Expect == "" {
			o.Problem(p+".expect", "is required: the answer that confirms a set, e.g. \"OK {value}\"")
		}
		if (k.Query == "") != (k.Reply == "") {
			o.Problem(p+".reply", "query and reply go together")
		}
		if k.Reply != "" {
			re, err := regexp.Compile("^" + k.Reply + "$")
			if err != nil {
				o.Problem(p+".reply", "invalid regexp: %v", err)
			} else if re.NumSubexp() < 1 {
				o.Problem(p+".reply", "needs a group for the value, e.g. 'POS (\\d+)'")
			} else {
				replies[name] = re
			}
		}
	}
	if o.Failed() {
		return nil
	}
	return drivers.OpenerFunc(func(_ context.Context, hw *drivers.Hardware) (drivers.Actuator, error) {
		return &Line{p: &port{hw: hw, name: opts.Port, baud: opts.Baud, timeout: opts.Timeout.D()}, opts: opts, replies: replies, last: drivers.State{}}, nil
	})
}

// Line is a controller speaking a line protocol.
type Line struct {
	p       *port
	opts    LineOptions
	replies map[string]*regexp.Regexp

	mu   sync.Mutex
	last drivers.State
}

// Schema is the configured keys.
func (l *Line) Schema() drivers.Schema {
	sc := drivers.Schema{}
	for name, k := range l.opts.Keys {
		kind := drivers.Int
		switch k.Type {
		case "number":
			kind = drivers.Number
		case "bool":
			kind = drivers.Bool
		}
		sc[name] = drivers.Field{Kind: kind, Min: k.Min, Max: k.Max}
	}
	return sc
}

func format(v any) string {
	switch v := v.(type) {
	case bool:
		if v {
			return "1"
		}
		return "0"
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	return fmt.Sprint(v)
}

// Apply sends each key's set line and checks the answer.
func (l *Line) Apply(ctx context.Context, s drivers.State) error {
	for _, name := range slices.Sorted(maps.Keys(s)) {
		k := l.opts.Keys[name]
		val := format(s[name])
		want := strings.ReplaceAll(k.Expect, "{value}", val)
		_, err := l.exchange(ctx, strings.ReplaceAll(k.Set, "{value}", val), func(line string) error {
			if line != want {
				return fmt.Errorf("%w: answered %q to a set, expected %q", ErrRejected, line, want)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("set %s=%s on %s: %w", name, val, l.p.name, err)
		}
		l.mu.Lock()
		l.last[name] = s[name]
		l.mu.Unlock()
	}
	return nil
}

// Read asks each key with a query; keys without one report the last set.
func (l *Line) Read(ctx context.Context) (drivers.State, error) {
	out := drivers.State{}
	for name, k := range l.opts.Keys {
		if k.Query == "" {
			l.mu.Lock()
			if v, ok := l.last[name]; ok {
				out[name] = v
			}
			l.mu.Unlock()
			continue
		}
		var value any
		_, err := l.exchange(ctx, k.Query, func(line string) error {
			m := l.replies[name].FindStringSubmatch(line)
			if m == nil {
				return fmt.Errorf("%w: %q does not match %q", ErrGarbled, line, k.Reply)
			}
			v, err := parseValue(k.Type, m[1])
			if err != nil {
				return fmt.Errorf("%w: %v", ErrGarbled, err)
			}
			value = v
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("read %s from %s: %w", name, l.p.name, err)
		}
		out[name] = value
	}
	return out, nil
}

func parseValue(typ, s string) (any, error) {
	switch typ {
	case "bool":
		switch strings.ToLower(s) {
		case "1", "true", "on":
			return true, nil
		case "0", "false", "off":
			return false, nil
		}
		return nil, fmt.Errorf("%q is not a boolean", s)
	case "number":
		return strconv.ParseFloat(s, 64)
	}
	return strconv.ParseInt(s, 10, 64)
}

// exchange sends one line and reads one answer, retrying after a timeout or
// a garbled answer and reopening the port after an I/O error.
func (l *Line) exchange(ctx context.Context, request string, check func(line string) error) (string, error) {
	l.p.mu.Lock()
	defer l.p.mu.Unlock()
	var last error
	for try := 0; try <= l.opts.Retries; try++ {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		rw, err := l.p.open()
		if err != nil {
			last = err
			time.Sleep(100 * time.Millisecond)
			continue
		}
		drain(rw)
		if _, err := rw.Write([]byte(request + l.opts.EOL)); err != nil {
			last = fmt.Errorf("write: %w", err)
			l.p.reset()
			continue
		}
		deadline := time.Now().Add(l.p.timeout)
		if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
			deadline = d
		}
		eol := l.opts.EOL[len(l.opts.EOL)-1]
		buf, err := readUntil(rw, deadline, func(b []byte) bool { return len(b) > 0 && b[len(b)-1] == eol })
		if err != nil {
			if errors.Is(err, ErrTimeout) {
				if len(buf) > 0 {
					last = fmt.Errorf("%w: incomplete answer %s", ErrTimeout, quote(buf))
				} else {
					last = fmt.Errorf("%w (%s)", ErrTimeout, l.p.timeout)
				}
				continue
			}
			last = fmt.Errorf("read: %w", err)
			l.p.reset()
			continue
		}
		line := strings.TrimRight(string(buf), "\r\n")
		if err := check(line); err != nil {
			last = err
			if errors.Is(err, ErrRejected) {
				return line, err // a clear no: retrying will not change it
			}
			continue
		}
		return line, nil
	}
	return "", last
}

// Close closes the port.
func (l *Line) Close() error { return l.p.close() }
