package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sort"
	"time"
)

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
	Request   json.RawMessage `json:"request"` // the request as received
	Received  time.Time       `json:"received"`
	ExpiresAt time.Time       `json:"expires_at,omitzero"`
	Status    string          `json:"status"`
	// Started is when execution began; zero for a command still queued or
	// awaiting approval, which is safe to resume after a crash.
	Started time.Time `json:"started,omitzero"`
	// Approval is "", "pending", "approved" or "rejected".
	Approval string          `json:"approval,omitempty"`
	LastAck  json.RawMessage `json:"last_ack,omitempty"`
	Finished time.Time       `json:"finished,omitzero"`
}

// Done reports whether the command has its final status.
func (c *Command) Done() bool { return c.Status == StatusSuccess || c.Status == StatusFailure }

// PutCommand stores a new request. If the tid is known it stores nothing
// and returns the stored command and ErrDuplicateTID.
func (t *Tx) PutCommand(c *Command) (*Command, error) {
	b := t.tx.Bucket(bucketInbox)
	if v := b.Get([]byte(c.TID)); v != nil {
		old, err := decodeCommand(v)
		if err != nil {
			return nil, err
		}
		return old, ErrDuplicateTID
	}
	seq, err := b.NextSequence()
	if err != nil {
		return nil, err
	}
	c.Seq = seq
	if c.Status == "" {
		c.Status = StatusReceived
	}
	if err := t.putCommand(c); err != nil {
		return nil, err
	}
	if err := t.tx.Bucket(bucketInboxOrder).Put(u64(seq), []byte(c.TID)); err != nil {
		return nil, err
	}
	return c, nil
}

// GetCommand returns the command with tid or ErrNotFound.
func (t *Tx) GetCommand(tid string) (*Command, error) {
	v := t.tx.Bucket(bucketInbox).Get([]byte(tid))
	if v == nil {
		return nil, fmt.Errorf("command %q: %w", tid, ErrNotFound)
	}
	return decodeCommand(v)
}

// UpdateCommand changes a stored command through fn. Finishing it (status
// SUCCESS or FAILURE) files it for expiry and drops it from the arrival
// order. An unchanged command is not rewritten.
func (t *Tx) UpdateCommand(tid string, fn func(c *Command) error) (*Command, error) {
	c, err := t.GetCommand(tid)
	if err != nil {
		return nil, err
	}
	before, _ := json.Marshal(c)
	wasDone := c.Done()
	if err := fn(c); err != nil {
		return nil, err
	}
	after, _ := json.Marshal(c)
	if bytes.Equal(before, after) {
		return c, nil
	}
	if c.Done() && !wasDone {
		if c.Finished.IsZero() {
			c.Finished = time.Now()
		}
		if err := t.tx.Bucket(bucketInboxOrder).Delete(u64(c.Seq)); err != nil {
			return nil, err
		}
		if err := t.tx.Bucket(bucketInboxDone).Put(doneKey(c.Finished, tid), nil); err != nil {
			return nil, err
		}
	}
	return c, t.putCommand(c)
}

func doneKey(at time.Time, tid string) []byte {
	k := make([]byte, 8, 8+len(tid))
	binary.BigEndian.PutUint64(k, uint64(at.UnixNano()))
	return append(k, tid...)
}

func (t *Tx) putCommand(c *Command) error {
	v, err := json.Marshal(c)
	if err != nil {
		return err
	}
	return t.tx.Bucket(bucketInbox).Put([]byte(c.TID), v)
}

// Unfinished returns the commands not yet SUCCESS or FAILURE, in arrival
// order.
func (t *Tx) Unfinished() ([]*Command, error) {
	var out []*Command
	err := t.tx.Bucket(bucketInboxOrder).ForEach(func(_, tid []byte) error {
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
	err := t.tx.Bucket(bucketInbox).ForEach(func(_, v []byte) error {
		c, err := decodeCommand(v)
		if err != nil {
			return err
		}
		out = append(out, c)
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Seq > out[j].Seq })
	if len(out) > n {
		out = out[:n]
	}
	return out, err
}

// ExpireCommands deletes finished commands that finished before cutoff and
// returns how many went.
func (t *Tx) ExpireCommands(cutoff time.Time) (int, error) {
	done := t.tx.Bucket(bucketInboxDone)
	inbox := t.tx.Bucket(bucketInbox)
	limit := u64(uint64(cutoff.UnixNano()))
	var n int
	c := done.Cursor()
	for k, _ := c.First(); k != nil && bytes.Compare(k[:8], limit) < 0; k, _ = c.First() {
		if err := inbox.Delete(k[8:]); err != nil {
			return n, err
		}
		if err := done.Delete(k); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

func decodeCommand(v []byte) (*Command, error) {
	var c Command
	if err := json.Unmarshal(v, &c); err != nil {
		return nil, fmt.Errorf("stored command is malformed: %w", err)
	}
	return &c, nil
}
