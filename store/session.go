package store

import (
	"errors"
	"fmt"
	"time"
)

// counterSession is the last MQTT session number handed out (meta).
const counterSession = "session"

// ErrSessionUnrecorded: NextSession's number is good to use, but the disk
// refused to record it.
var ErrSessionUnrecorded = errors.New("the session number could not be recorded")

// NextSession returns a session number greater than every one this file
// returned before, and records it before it returns: the gateway's
// presence messages carry it, so that a last will of an older session
// never wins over a newer session's "connected".
//
// The clock never orders sessions: a Pi boots with whatever time it has.
// The number is the last one plus one, raised to now's Unix seconds when
// the clock is ahead of it, so that a gateway whose store was started over
// (moved aside after damage) still outranks its old sessions once its clock
// is right. A clock that is wrong, or goes back, never makes it go back.
//
// When the disk refuses the write, it returns the number all the same
// (above every one recorded and every one this Store returned) with an
// error wrapping ErrSessionUnrecorded: a gateway whose disk is full still
// connects. Only a restart before the disk takes writes again may hand the
// same number out twice (or a lower one, were the clock set back).
func (s *Store) NextSession(now time.Time) (uint64, error) {
	s.sessionMu.Lock()
	defer s.sessionMu.Unlock()
	next := func(tx *Tx) uint64 {
		n := max(tx.counter(counterSession), s.lastSession) + 1
		if sec := now.Unix(); sec > 0 && uint64(sec) > n {
			n = uint64(sec)
		}
		return n
	}
	var n uint64
	err := s.Update(func(tx *Tx) error {
		n = next(tx)
		return tx.bucket(bucketMeta).Put([]byte("counter/"+counterSession), u64(n))
	})
	if err != nil {
		if verr := s.View(func(tx *Tx) error { n = next(tx); return nil }); verr != nil {
			return 0, fmt.Errorf("next session number in %s: %w", s.path, errors.Join(err, verr))
		}
		s.lastSession = n
		return n, fmt.Errorf("next session number in %s: %w: %w", s.path, ErrSessionUnrecorded, err)
	}
	s.lastSession = n
	return n, nil
}
