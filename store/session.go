package store

import (
	"fmt"
	"time"
)

// counterSession is the last MQTT session number handed out (meta).
const counterSession = "session"

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
func (s *Store) NextSession(now time.Time) (uint64, error) {
	var n uint64
	err := s.Update(func(tx *Tx) error {
		n = tx.counter(counterSession) + 1
		if sec := now.Unix(); sec > 0 && uint64(sec) > n {
			n = uint64(sec)
		}
		return tx.bucket(bucketMeta).Put([]byte("counter/"+counterSession), u64(n))
	})
	if err != nil {
		return 0, fmt.Errorf("next session number in %s: %w", s.path, err)
	}
	return n, nil
}
