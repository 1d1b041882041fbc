package store

import (
	"encoding/binary"
	"time"
)

// The store's uptime is how long the file has been open, summed over every
// run of the daemon: a clock that runs only while the gateway does and
// never jumps with the wall clock (a Pi without a real-time clock boots at
// whatever time it has, and NTP steps it later). The ages the gateway keeps
// across restarts (how long a finished command stays for dedupe) are
// measured on it. It is saved in meta with every command that finishes, by
// SaveUptime (the command pipeline calls it with every expiry pass) and at
// Close; after a crash it resumes from the last save, so a crash can only
// make a record stay longer, by the time since that save, never go sooner.
const keyUptime = "clock/uptime"

// Uptime is the store's uptime now.
func (s *Store) Uptime() time.Duration { return s.upBase + time.Since(s.upOpened) }

// SaveUptime records the uptime in meta.
func (t *Tx) SaveUptime() error {
	return t.bucket(bucketMeta).Put([]byte(keyUptime), u64(uint64(max(t.s.Uptime(), 0))))
}

// loadUptime reads the saved uptime; the store's uptime goes on from it.
func (t *Tx) loadUptime() {
	b := t.bucket(bucketMeta).Get([]byte(keyUptime))
	if len(b) == 8 {
		t.s.upBase = time.Duration(binary.BigEndian.Uint64(b))
	}
	t.s.upOpened = time.Now()
}
