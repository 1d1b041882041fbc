package drivers

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tarm/serial"
	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpioreg"
	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/i2c/i2creg"
	"periph.io/x/host/v3"
)

// Hardware hands drivers the buses and ports they drive. NewHardware gives
// the real ones (periph for GPIO and I2C, tarm/serial for serial ports);
// tests fill the functions with fakes (gpiotest pins, an i2ctest playback,
// a pseudo-terminal).
type Hardware struct {
	// GPIO returns a pin by name ("GPIO17") or BCM number ("17").
	GPIO func(name string) (gpio.PinIO, error)
	// I2C opens a bus by name ("1" is /dev/i2c-1; "" the first one).
	I2C func(name string) (i2c.Bus, error)
	// Serial opens a serial port with a read timeout.
	Serial func(port string, baud int, readTimeout time.Duration) (io.ReadWriteCloser, error)

	mu      sync.Mutex
	shared  map[string]any
	closers []io.Closer
}

// NewHardware returns the real hardware. periph's host drivers load once,
// on first use.
func NewHardware() *Hardware {
	var once sync.Once
	var initErr error
	initHost := func() error {
		once.Do(func() {
			if _, err := host.Init(); err != nil {
				initErr = fmt.Errorf("initialise GPIO/I2C drivers: %w", err)
			}
		})
		return initErr
	}
	h := &Hardware{}
	h.GPIO = func(name string) (gpio.PinIO, error) {
		if err := initHost(); err != nil {
			return nil, err
		}
		p := gpioreg.ByName(name)
		if p == nil {
			return nil, fmt.Errorf("no such GPIO %q on this board (is /dev/gpiochip0 there and readable by group gpio?)", name)
		}
		return p, nil
	}
	h.I2C = func(name string) (i2c.Bus, error) {
		if err := initHost(); err != nil {
			return nil, err
		}
		b, err := i2creg.Open(name)
		if err != nil {
			return nil, fmt.Errorf("open I2C bus %q (is I2C enabled: raspi-config nonint do_i2c 0?): %w", name, err)
		}
		h.track(b)
		return b, nil
	}
	h.Serial = func(port string, baud int, readTimeout time.Duration) (io.ReadWriteCloser, error) {
		p, err := serial.OpenPort(&serial.Config{Name: port, Baud: baud, ReadTimeout: readTimeout})
		if err != nil {
			return nil, fmt.Errorf("open serial port %s: %w", port, err)
		}
		return p, nil
	}
	return h
}

func (h *Hardware) track(c io.Closer) {
	h.mu.Lock()
	h.closers = append(h.closers, c)
	h.mu.Unlock()
}

// Shared returns the device stored under key, making it with mk the first
// time: one PCA9685 serves the actuators on its 16 channels.
func (h *Hardware) Shared(key string, mk func() (any, error)) (any, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.shared == nil {
		h.shared = map[string]any{}
	}
	if v, ok := h.shared[key]; ok {
		return v, nil
	}
	v, err := mk()
	if err != nil {
		return nil, err
	}
	h.shared[key] = v
	return v, nil
}

// Close closes the buses the hardware opened.
func (h *Hardware) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	var first error
	for _, c := range h.closers {
		if err := c.Close(); err != nil && first == nil {
			first = err
		}
	}
	h.closers = nil
	return first
}

// ValidPinName checks a GPIO name without touching hardware: GPIO0 to
// GPIO53 or a bare BCM number (the Raspberry Pi's range).
func ValidPinName(name string) (string, error) {
	s := strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(name)), "GPIO")
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 53 {
		return "", fmt.Errorf("no such GPIO %q: use GPIO0 to GPIO53 (BCM numbering) or the bare number", name)
	}
	return "GPIO" + strconv.Itoa(n), nil
}

// FollowUp is implemented by actuators that want a further change some
// time after one (a lock that relocks itself). actuate applies it like any
// other change, so it is recorded and reported.
type FollowUp interface {
	FollowUp(applied State) (next State, after time.Duration, ok bool)
}
