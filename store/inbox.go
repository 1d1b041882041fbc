package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"time"
)

// ErrInboxFull is returned by PutCommand when the inbox is at its quota
// (Options.InboxMaxItems, InboxMaxBytes); the error says which limit.
var ErrInboxFull = errors.New("inbox is full")

// InboxStats are the inbox's size, quota and refusals.
type InboxStats struct {
	Items    int64  `json:"items"`
	Bytes    int64  `json:"bytes"`   // stored commands, keys and values
	Refused  uint64 `json:"refused"` // requests refused because the inbox was full, ever
	MaxItems int    `json:"max_items"`
	MaxBytes int64  `json:"max_bytes"`
}

// inbox counters in meta, kept in the transactions that change the inbox
const (
	keyInboxItems  = "inbox/items"
	keyInboxBytes  = "inbox/bytes"
	counterRefused = "inbox_refused"
)

// InboxStats returns the inbox's size, quota and refusals.
func (t *Tx) InboxStats() InboxStats {
	return InboxStats{
		Items: int64(t.metaU64(keyInboxItems)), Bytes: int64(t.metaU64(keyInboxBytes)), Refused: t.counter(counterRefused),
		MaxItems: t.s.opts.InboxMaxItems, MaxBytes: t.s.opts.InboxMaxBytes,
	}
}

// InboxStats returns the inbox's size, quota and refusals.
func (s *Store) InboxStats() InboxStats {
	var st InboxStats
	s.View(func(tx *Tx) error { st = tx.InboxStats(); return nil })
	return st
}

// OnCommit runs fn once the transaction is durable (not if it is rolled
// back): a writer learns that what it wrote landed, inside the commit, before
// any later transaction runs.
func (t *Tx) OnCommit(fn func()) { t.onCommit = append(t.onCommit, fn) }

func (t *Tx) metaU64(key string) uint64 {
	b := t.bucket(bucketMeta).Get([]byte(key))
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

// inboxGrow adds to the inbox counters (negative to shrink).
func (t *Tx) inboxGrow(items, bytes int64) error {
	meta := t.bucket(bucketMeta)
	if items != 0 {
		if err := meta.Put([]byte(keyInboxItems), u64(uint64(int64(t.metaU64(keyInboxItems))+items))); err != nil {
			return err
		}
	}
	if bytes != 0 {
		return meta.Put([]byte(keyInboxBytes), u64(uint64(int64(t.metaU64(keyInboxBytes))+bytes)))
	}
	return nil
}

// inboxRoom checks that one more record of size bytes fits the quota, or,
// with headroom, the quota and a sixteenth more.
func (t *Tx) inboxRoom(size int, headroom bool) error {
	st := t.InboxStats()
	maxItems, maxBytes := int64(st.MaxItems), st.MaxBytes
	if headroom {
		maxItems += max(maxItems/16, 1)
		maxBytes += max(maxBytes/16, 4<<10)
	}
	switch {
	case st.Items+1 > maxItems:
		return fmt.Errorf("%w: %d commands stored, the limit is %d (store.inbox.max_items)", ErrInboxFull, st.Items, st.MaxItems)
	case st.Bytes+int64(size) > maxBytes:
		return fmt.Errorf("%w: %d bytes stored, the limit is %d (store.inbox.max_bytes)", ErrInboxFull, st.Bytes, st.MaxBytes)
	}
	return nil
}

// Command states as stored in the inbox.
const (
	StatusReceived = "RECEIVED" // persisted, not yet acked
	StatusRunning  = "RUNNING"
	StatusSuccess  = "SUCCESS"
	StatusFailure  = "FAILURE"
)

// Command is one request in the inbox and what became of it.
type Command struct {
	TID       string          `json:"tid"`
	Seq       uint64          `json:"seq"` // arrival order
	Cmd       string          `json:"cmd"`
	Request   json.RawMessage `json:"request,omitempty"` // what of the request the command needs (no request once finished)
	Received  time.Time       `json:"received"`
	ExpiresAt time.Time       `json:"expires_at,omitzero"`
	Status    string          `json:"status"`
	// Started is when execution began; zero for a command still queued or
	// awaiting approval, which is safe to resume after a crash.
	Started time.Time `json:"started,omitzero"`
	// Approval is "", "pending", "approved" or "rejected".
	Approval string          `json:"approval,omitempty"`
	LastAck  json.RawMessage `json:"last_ack,omitempty"`
	// Finished is when it finished, by the gateway's clock (for people;
	// it may be untrusted).
	Finished time.Time `json:"finished,omitzero"`
	// FinishedUptime is the store's uptime when it finished (set by the
	// store): its record expires by this, never by a wall-clock time.
	FinishedUptime time.Duration `json:"finished_uptime,omitempty"`
}

// Done reports whether the command has its final status.
func (c *Command) Done() bool { return c.Status == StatusSuccess || c.Status == StatusFailure }

// PutCommand stores a new request (or one already finished: refused at
// intake). If the tid is known it stores nothing and returns the stored
// command and ErrDuplicateTID; if the inbox is at its quota, nothing and an
// error wrapping ErrInboxFull.
func (t *Tx) PutCommand(c *Command) (*Command, error) {
	return t.putNew(c, false)
}

// PutRefused records a request refused because the inbox was full (c is
// finished: FAILURE and its ack), so that the same tid sent again gets the
// same answer, and counts the refusal. The record may use a headroom of a
// sixteenth over the quota; past that it is not kept (kept false) and a
// resend of the tid is answered anew.
func (t *Tx) PutRefused(c *Command) (kept bool, err error) {
	if err := t.addCounter(counterRefused, 1); err != nil {
		return false, err
	}
	_, err = t.putNew(c, true)
	switch {
	case errors.Is(err, ErrInboxFull):
		return false, nil
	case errors.Is(err, ErrDuplicateTID):
		return true, nil
	}
	return err == nil, err
}

// PutCanceled records a cancel for a tid the inbox does not know (c is
// finished: FAILURE canceled and its ack), so that the request, arriving
// later, is answered with that ack and never runs. Like PutRefused it may
// use the headroom of a sixteenth over the quota (a cancel matters more
// than a new request); past that it returns an error wrapping ErrInboxFull.
// It expires with the finished commands (commands.retention). If the tid is
// known it stores nothing and returns ErrDuplicateTID.
func (t *Tx) PutCanceled(c *Command) error {
	if !c.Done() {
		return fmt.Errorf("store a cancel of %q: the record must be finished, got status %q", c.TID, c.Status)
	}
	_, err := t.putNew(c, true)
	return err
}

func (t *Tx) putNew(c *Command, headroom bool) (*Command, error) {
	if c.TID == "" || c.TID[0] == 0 {
		return nil, fmt.Errorf("store command: tid %q is empty or begins with a NUL byte", c.TID)
	}
	b := t.bucket(bucketInbox)
	if v := b.Get([]byte(c.TID)); v != nil {
		old, err := decodeCommand(v)
		if err != nil {
			return nil, err
		}
		return old, ErrDuplicateTID
	}
	if c.Status == "" {
		c.Status = StatusReceived
	}
	v, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	// The sequence number adds at most 20 bytes to the record.
	if err := t.inboxRoom(len(c.TID)+len(v)+20, headroom); err != nil {
		return nil, err
	}
	seq, err := b.NextSequence()
	if err != nil {
		return nil, err
	}
	c.Seq = seq
	if c.Done() {
		if c.Finished.IsZero() {
			c.Finished = time.Now()
		}
		if err := t.fileDone(c); err != nil {
			return nil, err
		}
	} else if err := t.bucket(bucketInboxOrder).Put(u64(seq), []byte(c.TID)); err != nil {
		return nil, err
	}
	if err := t.putCommand(c); err != nil {
		return nil, err
	}
	return c, nil
}

// GetCommand returns the command with tid or ErrNotFound.
func (t *Tx) GetCommand(tid string) (*Command, error) {
	v := t.bucket(bucketInbox).Get([]byte(tid))
	if v == nil {
		return nil, fmt.Errorf("command %q: %w", tid, ErrNotFound)
	}
	c, err := decodeCommand(v)
	if err != nil {
		return nil, err
	}
	t.withStarted(c)
	return c, nil
}

// An unfinished command's entry in inbox_order is its tid, or, once it has
// started (schema 7), 0x00, the start (8 bytes BE unix nanoseconds) and
// the tid: the start goes into that small bucket, not into a rewrite of
// the command's record in the large inbox (a leaf and its branches, up to
// 12 KB, with every command); the record gets it with its final status.
func orderTID(v []byte) (tid []byte, started time.Time) {
	if len(v) > 9 && v[0] == 0 {
		return v[9:], time.Unix(0, int64(binary.BigEndian.Uint64(v[1:9])))
	}
	return v, time.Time{}
}

// withStarted fills in the start of an unfinished command kept in
// inbox_order.
func (t *Tx) withStarted(c *Command) {
	if c.Done() || !c.Started.IsZero() {
		return
	}
	if v := t.bucket(bucketInboxOrder).Get(u64(c.Seq)); v != nil {
		if tid, at := orderTID(v); string(tid) == c.TID {
			c.Started = at
		}
	}
}

// MarkStarted records that the unfinished command tid began executing at
// at (its Started), unless it has already; first says whether this call
// recorded it. For a finished command it records nothing and fails with
// ErrCommandFinished.
func (t *Tx) MarkStarted(tid string, at time.Time) (first bool, err error) {
	c, err := t.GetCommand(tid)
	if err != nil {
		return false, err
	}
	if c.Done() {
		return false, fmt.Errorf("mark command %q started: %w (%s)", tid, ErrCommandFinished, c.Status)
	}
	if !c.Started.IsZero() {
		return false, nil
	}
	v := make([]byte, 9, 9+len(tid))
	binary.BigEndian.PutUint64(v[1:], uint64(at.UnixNano()))
	return true, t.bucket(bucketInboxOrder).Put(u64(c.Seq), append(v, tid...))
}

// UpdateCommand changes a stored command through fn (which replaces its
// Request and LastAck, never changes their bytes). Finishing it (status
// SUCCESS or FAILURE) files it for expiry and drops it from the arrival
// order. An unchanged command is not rewritten.
func (t *Tx) UpdateCommand(tid string, fn func(c *Command) error) (*Command, error) {
	c, err := t.GetCommand(tid)
	if err != nil {
		return nil, err
	}
	before := *c
	if err := fn(c); err != nil {
		return nil, err
	}
	if sameCommand(&before, c) {
		return c, nil
	}
	if c.Done() && !before.Done() {
		if c.Finished.IsZero() {
			c.Finished = time.Now()
		}
		if err := t.bucket(bucketInboxOrder).Delete(u64(c.Seq)); err != nil {
			return nil, err
		}
		if err := t.fileDone(c); err != nil {
			return nil, err
		}
	}
	return c, t.putCommand(c)
}

// sameCommand says whether a and b hold the same (encoding both to compare
// cost two of a command's four JSON passes on every final status). It
// covers every field, also one added later; a time set again to the same
// instant may compare unequal (its monotonic reading), which only rewrites
// the record.
func sameCommand(a, b *Command) bool { return reflect.DeepEqual(a, b) }

// fileDone stamps a command that just finished with the store's uptime,
// by which it expires; the uptime is saved in the same transaction, so
// that after a crash the uptime is never behind a record. (Schema 6 also
// filed it in an index by that uptime, inbox_done: two more pages, 8 KB,
// written with every command, for a pass that runs every ten minutes;
// the pass reads the inbox instead, see ExpireCommands.)
func (t *Tx) fileDone(c *Command) error {
	c.FinishedUptime = t.s.Uptime()
	return t.SaveUptime()
}

// doneKey is schema 4–6's inbox_done key (migrations only).
func doneKey(up time.Duration, tid string) []byte {
	k := make([]byte, 8, 8+len(tid))
	binary.BigEndian.PutUint64(k, uint64(max(up, 0)))
	return append(k, tid...)
}

// putCommand writes c's record and keeps the inbox counters.
func (t *Tx) putCommand(c *Command) error {
	v, err := json.Marshal(c)
	if err != nil {
		return err
	}
	b := t.bucket(bucketInbox)
	items, size := int64(1), int64(len(c.TID)+len(v))
	if old := b.Get([]byte(c.TID)); old != nil {
		items, size = 0, size-int64(len(c.TID)+len(old))
	}
	if err := b.Put([]byte(c.TID), v); err != nil {
		return err
	}
	return t.inboxGrow(items, size)
}

// Unfinished returns the commands not yet SUCCESS or FAILURE, in arrival
// order.
func (t *Tx) Unfinished() ([]*Command, error) {
	var out []*Command
	err := t.bucket(bucketInboxOrder).ForEach(func(_, v []byte) error {
		tid, _ := orderTID(v)
		c, err := t.GetCommand(string(tid))
		if err != nil {
			return err
		}
		out = append(out, c)
		return nil
	})
	return out, err
}

// Commands returns up to n commands, newest first.
func (t *Tx) Commands(n int) ([]*Command, error) {
	var out []*Command
	err := t.bucket(bucketInbox).ForEach(func(_, v []byte) error {
		c, err := decodeCommand(v)
		if err != nil {
			return err
		}
		t.withStarted(c)
		out = append(out, c)
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Seq > out[j].Seq })
	if len(out) > n {
		out = out[:n]
	}
	return out, err
}

// ExpireCommands deletes the finished commands that finished before the
// store's uptime was before (a command finished at uptime u goes once
// before > u), and returns how many went. The daemon passes its uptime
// less the retention: the age of a record is measured on a clock that
// only runs while the gateway does and never jumps, so no step of the
// wall clock, forward or back, shortens or lengthens the dedupe window.
// It reads the whole inbox; Store.ExpiredCommands with ExpireCommandsIn
// do the reading in short reads, without holding up writers for long.
func (t *Tx) ExpireCommands(before time.Duration) (int, error) {
	return t.ExpireCommandsIn(t.expired(before), before)
}

// ExpiredCommands returns the tids of the commands that ExpireCommands
// would delete. It reads the inbox expiryChunk records at a time, each in
// a View of its own: a reader holds up writers (Store.View), and an inbox
// of 100,000 records must not hold up a command for the whole read.
func (s *Store) ExpiredCommands(before time.Duration) ([]string, error) {
	if before <= 0 {
		return nil, nil
	}
	var out []string
	var after []byte
	for {
		n := 0
		err := s.View(func(tx *Tx) error {
			c := tx.bucket(bucketInbox).Cursor()
			k, v := c.First()
			if after != nil {
				if k, v = c.Seek(after); k != nil && bytes.Equal(k, after) {
					k, v = c.Next()
				}
			}
			for ; k != nil && n < expiryChunk; k, v = c.Next() {
				n++
				if finishedBefore(v, before) {
					out = append(out, string(k))
				}
				after = append(after[:0], k...)
			}
			return nil
		})
		if err != nil || n < expiryChunk {
			return out, err
		}
	}
}

const expiryChunk = 1000

// ExpireCommandsIn deletes those of tids that are finished commands that
// finished before before (judged again: one may have changed since they
// were read), and returns how many went.
func (t *Tx) ExpireCommandsIn(tids []string, before time.Duration) (int, error) {
	inbox := t.bucket(bucketInbox)
	var n int
	var gone int64
	for _, tid := range tids {
		v := inbox.Get([]byte(tid))
		if v == nil || !finishedBefore(v, before) {
			continue
		}
		gone += int64(len(tid) + len(v))
		if err := inbox.Delete([]byte(tid)); err != nil {
			return n, err
		}
		n++
	}
	if n == 0 {
		return 0, nil
	}
	return n, t.inboxGrow(-int64(n), -gone)
}

func (t *Tx) expired(before time.Duration) []string {
	if before <= 0 {
		return nil
	}
	var out []string
	t.bucket(bucketInbox).ForEach(func(k, v []byte) error {
		if finishedBefore(v, before) {
			out = append(out, string(k))
		}
		return nil
	})
	return out
}

var finalStatus = [][]byte{[]byte(`"status":"` + StatusSuccess + `"`), []byte(`"status":"` + StatusFailure + `"`)}

// finishedBefore says whether the stored command v finished before the
// store's uptime was before. A record that cannot be read is never
// expired (nothing is deleted that cannot be told finished).
func finishedBefore(v []byte, before time.Duration) bool {
	if !bytes.Contains(v, finalStatus[0]) && !bytes.Contains(v, finalStatus[1]) {
		return false // cheaply: not finished
	}
	var c struct {
		Status         string        `json:"status"`
		FinishedUptime time.Duration `json:"finished_uptime"`
	}
	if json.Unmarshal(v, &c) != nil {
		return false
	}
	return (c.Status == StatusSuccess || c.Status == StatusFailure) && c.FinishedUptime < before
}

func decodeCommand(v []byte) (*Command, error) {
	var c Command
	if err := json.Unmarshal(v, &c); err != nil {
		return nil, fmt.Errorf("%w: stored command is malformed: %v", ErrCorrupt, err)
	}
	return &c, nil
}
