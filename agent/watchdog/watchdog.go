// Package watchdog tells systemd how the daemon is (sd_notify): READY=1,
// STATUS= lines, STOPPING=1, and WATCHDOG=1 only while every main loop is
// alive. A loop marks when it begins and ends each piece of work; one that
// stays in a piece of work longer than its limit is stuck (a driver that
// ignores its deadline, a handler that never returns), the pings stop, and
// systemd restarts the service after WatchdogSec.
package watchdog

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"
)

// Tracker follows one loop.
type Tracker struct {
	name  string
	limit time.Duration
	since atomic.Int64 // unix nanos the current work began; 0 when idle
}

// Begin marks the start of a piece of work.
func (t *Tracker) Begin() {
	if t != nil {
		t.since.Store(time.Now().UnixNano())
	}
}

// End marks its end.
func (t *Tracker) End() {
	if t != nil {
		t.since.Store(0)
	}
}

func (t *Tracker) stuck(now time.Time) (time.Duration, bool) {
	s := t.since.Load()
	if s == 0 {
		return 0, false
	}
	d := now.Sub(time.Unix(0, s))
	return d, d > t.limit
}

// Watchdog owns the trackers and talks to systemd.
type Watchdog struct {
	mu       sync.Mutex
	trackers []*Tracker
	log      *slog.Logger
	// notify sends a state to systemd; replaceable in tests.
	notify func(state string) (bool, error)
}

// New makes a watchdog that notifies systemd through $NOTIFY_SOCKET (a
// no-op when the daemon does not run under systemd).
func New(log *slog.Logger) *Watchdog {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Watchdog{log: log, notify: func(s string) (bool, error) { return daemon.SdNotify(false, s) }}
}

// Track adds a loop whose pieces of work must each end within limit.
func (w *Watchdog) Track(name string, limit time.Duration) *Tracker {
	t := &Tracker{name: name, limit: limit}
	w.mu.Lock()
	w.trackers = append(w.trackers, t)
	w.mu.Unlock()
	return t
}

// Stuck names the loops stuck now, with how long.
func (w *Watchdog) Stuck() []string {
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, t := range w.trackers {
		if d, stuck := t.stuck(now); stuck {
			out = append(out, fmt.Sprintf("%s (busy %s, limit %s)", t.name, d.Round(time.Second), t.limit))
		}
	}
	sort.Strings(out)
	return out
}

// Ready sends READY=1 with a status line.
func (w *Watchdog) Ready(status string) { w.send("READY=1\nSTATUS=" + status) }

// Status sends a STATUS= line.
func (w *Watchdog) Status(status string) { w.send("STATUS=" + status) }

// Reloading sends RELOADING=1 (READY=1 follows when the reload is over,
// whether it succeeded or not) with MONOTONIC_USEC, the CLOCK_MONOTONIC
// time of the message in microseconds. systemd 253 and later want it with
// RELOADING=1 (Type=notify-reload orders reload cycles by it); older ones,
// such as Debian bookworm's 252, ignore it.
func (w *Watchdog) Reloading() {
	w.send(fmt.Sprintf("RELOADING=1\nSTATUS=reloading the configuration\nMONOTONIC_USEC=%d", monotonicUsec()))
}

// monotonicUsec is CLOCK_MONOTONIC in microseconds.
func monotonicUsec() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return ts.Nano() / 1000
}

// Stopping sends STOPPING=1.
func (w *Watchdog) Stopping() { w.send("STOPPING=1\nSTATUS=stopping") }

func (w *Watchdog) send(state string) {
	if _, err := w.notify(state); err != nil {
		w.log.Warn("sd_notify", "err", err)
	}
}

// Run pings systemd's watchdog at half its interval while no loop is stuck,
// and sends status() as STATUS= every interval, until ctx ends. interval 0
// reads it from $WATCHDOG_USEC (no pings when systemd did not ask).
func (w *Watchdog) Run(ctx context.Context, interval time.Duration, status func() string) {
	if interval == 0 {
		interval, _ = daemon.SdWatchdogEnabled(false)
	}
	every := interval / 2
	if every <= 0 {
		every = 10 * time.Second // status lines only
	}
	t := time.NewTicker(every)
	defer t.Stop()
	wasStuck := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if status != nil {
			w.Status(status())
		}
		if interval <= 0 {
			continue
		}
		if stuck := w.Stuck(); len(stuck) > 0 {
			if !wasStuck {
				w.log.Error("a main loop is stuck; no more watchdog pings, systemd will restart the service", "stuck", stuck)
			}
			wasStuck = true
			continue
		}
		if wasStuck {
			w.log.Info("stuck loops recovered; watchdog pings resume")
			wasStuck = false
		}
		w.send("WATCHDOG=1")
	}
}
