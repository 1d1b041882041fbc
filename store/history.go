package store

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"
)

// Change sources.
const (
	SourceDelta    = "delta"
	SourceCommand  = "command"
	SourceLocal    = "local"
	SourceRollback = "rollback"
	SourcePowerOn  = "power_on"
)

// Change is one recorded change of an actuator: what it was before and what
// it was driven to.
type Change struct {
	ID            uint64         `json:"id"`
	Actuator      string         `json:"actuator"`
	Before        map[string]any `json:"before"`
	After         map[string]any `json:"after"`
	Source        string         `json:"source"`
	ShadowVersion int64          `json:"shadow_version,omitempty"`
	TID           string         `json:"tid,omitempty"`
	Group         string         `json:"group,omitempty"`
	Time          time.Time      `json:"time"`
}

// RecordChange stores c with a new id and keeps the actuator's history to
// the configured depth and all history to its byte quota (oldest first).
func (t *Tx) RecordChange(c *Change) (uint64, error) {
	hist := t.tx.Bucket(bucketHistory)
	ab, err := hist.CreateBucketIfNotExists([]byte(c.Actuator))
	if err != nil {
		return 0, fmt.Errorf("history bucket for %s: %w", c.Actuator, err)
	}
	id, err := hist.NextSequence()
	if err != nil {
		return 0, err
	}
	c.ID = id
	v, err := json.Marshal(c)
	if err != nil {
		return 0, fmt.Errorf("encode change: %w", err)
	}
	if err := ab.Put(u64(id), v); err != nil {
		return 0, err
	}
	if err := t.tx.Bucket(bucketHistoryIDs).Put(u64(id), []byte(c.Actuator)); err != nil {
		return 0, err
	}
	t.histDelta += int64(len(v))
	// Depth: keep the newest HistoryDepth entries of this actuator.
	cur := ab.Cursor()
	k, _ := cur.Last()
	for i := 0; i < t.s.opts.HistoryDepth && k != nil; i++ {
		k, _ = cur.Prev()
	}
	for k != nil {
		if err := t.dropChange(c.Actuator, binary.BigEndian.Uint64(k)); err != nil {
			return 0, err
		}
		k, _ = cur.Last()
		for i := 0; i < t.s.opts.HistoryDepth && k != nil; i++ {
			k, _ = cur.Prev()
		}
	}
	// Bytes: drop the oldest entries of any actuator, never the new one.
	t.s.mu.Lock()
	total := t.s.histLen
	t.s.mu.Unlock()
	ids := t.tx.Bucket(bucketHistoryIDs).Cursor()
	for total+t.histDelta > t.s.opts.HistoryMaxBytes {
		k, act := ids.First()
		if k == nil || binary.BigEndian.Uint64(k) == id {
			break
		}
		if err := t.dropChange(string(act), binary.BigEndian.Uint64(k)); err != nil {
			return 0, err
		}
		t.dropped = append(t.dropped, fmt.Sprintf("history #%d of %s (history_max_bytes)", binary.BigEndian.Uint64(k), act))
	}
	return id, nil
}

func (t *Tx) dropChange(actuator string, id uint64) error {
	ab := t.tx.Bucket(bucketHistory).Bucket([]byte(actuator))
	if ab == nil {
		return nil
	}
	k := u64(id)
	if v := ab.Get(k); v != nil {
		t.histDelta -= int64(len(v))
	}
	if err := ab.Delete(k); err != nil {
		return err
	}
	return t.tx.Bucket(bucketHistoryIDs).Delete(k)
}

// History returns up to n changes of an actuator, newest first.
func (t *Tx) History(actuator string, n int) ([]*Change, error) {
	ab := t.tx.Bucket(bucketHistory).Bucket([]byte(actuator))
	if ab == nil {
		return nil, nil
	}
	var out []*Change
	c := ab.Cursor()
	for k, v := c.Last(); k != nil && len(out) < n; k, v = c.Prev() {
		ch, err := decodeChange(v)
		if err != nil {
			return nil, err
		}
		out = append(out, ch)
	}
	return out, nil
}

// GetChange returns the change with id or ErrNotFound.
func (t *Tx) GetChange(id uint64) (*Change, error) {
	act := t.tx.Bucket(bucketHistoryIDs).Get(u64(id))
	if act == nil {
		return nil, fmt.Errorf("history entry %d: %w", id, ErrNotFound)
	}
	ab := t.tx.Bucket(bucketHistory).Bucket(act)
	if ab == nil {
		return nil, fmt.Errorf("history entry %d: %w", id, ErrNotFound)
	}
	v := ab.Get(u64(id))
	if v == nil {
		return nil, fmt.Errorf("history entry %d: %w", id, ErrNotFound)
	}
	return decodeChange(v)
}

func (t *Tx) historyBytes() int64 {
	var n int64
	t.tx.Bucket(bucketHistory).ForEachBucket(func(name []byte) error {
		return t.tx.Bucket(bucketHistory).Bucket(name).ForEach(func(_, v []byte) error {
			n += int64(len(v))
			return nil
		})
	})
	return n
}

func decodeChange(v []byte) (*Change, error) {
	var c Change
	d := json.NewDecoder(bytesReader(v))
	d.UseNumber()
	if err := d.Decode(&c); err != nil {
		return nil, fmt.Errorf("stored history entry is malformed: %w", err)
	}
	return &c, nil
}

// DeleteChange removes a change that did not happen after all (its Apply
// failed), so that history holds only what the hardware went through.
func (t *Tx) DeleteChange(id uint64) error {
	act := t.tx.Bucket(bucketHistoryIDs).Get(u64(id))
	if act == nil {
		return nil
	}
	return t.dropChange(string(act), id)
}

// DeleteGroup removes the changes a multi-actuator group recorded for the
// given actuators: a group a crash interrupted is undone as if it had never
// happened, so that power-on restore does not bring it back.
func (t *Tx) DeleteGroup(group string, actuators []string) error {
	for _, a := range actuators {
		ab := t.tx.Bucket(bucketHistory).Bucket([]byte(a))
		if ab == nil {
			continue
		}
		var ids []uint64
		c := ab.Cursor()
		for k, v := c.Last(); k != nil; k, v = c.Prev() {
			ch, err := decodeChange(v)
			if err != nil {
				return err
			}
			if ch.Group == group {
				ids = append(ids, ch.ID)
			}
		}
		for _, id := range ids {
			if err := t.dropChange(a, id); err != nil {
				return err
			}
		}
	}
	return nil
}
