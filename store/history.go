package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// Change sources.
const (
	SourceDelta    = "delta"
	SourceCommand  = "command"
	SourceLocal    = "local"
	SourceRollback = "rollback"
	SourcePowerOn  = "power_on"
	// SourceShutdown is on_shutdown: safe. It is reported as what the
	// hardware does, never written into the cloud's desired state.
	SourceShutdown = "shutdown"
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
	// TimeUntrusted: no trusted clock when it was recorded; Time is the
	// gateway's system clock, perhaps far off.
	TimeUntrusted bool `json:"time_untrusted,omitempty"`
}

// History layout: one flat bucket, key = actuator + 0x00 + id (8 bytes BE).
// An actuator's changes sit together in id order, so recording one rewrites
// a single leaf and the pages above it. (A bucket per actuator plus an id
// index, the first layout, rewrote about eleven pages per change; on an SD
// card every page is wear.) Actuator names never contain 0x00 (the config
// allows [A-Za-z0-9_-]).

func histPrefix(actuator string) []byte { return append([]byte(actuator), 0) }

func histKey(actuator string, id uint64) []byte {
	return binary.BigEndian.AppendUint64(histPrefix(actuator), id)
}

// splitHistKey returns the actuator and id of a history key.
func splitHistKey(k []byte) (string, uint64, bool) {
	if len(k) < 9 || k[len(k)-9] != 0 {
		return "", 0, false
	}
	return string(k[:len(k)-9]), binary.BigEndian.Uint64(k[len(k)-8:]), true
}

// historyActuators returns every actuator with history, jumping from one
// key range to the next (one seek per actuator, not one step per change).
func (t *Tx) historyActuators() []string {
	var out []string
	c := t.bucket(bucketChanges).Cursor()
	for k, _ := c.First(); k != nil; {
		act, _, ok := splitHistKey(k)
		if !ok {
			k, _ = c.Next()
			continue
		}
		out = append(out, act)
		k, _ = c.Seek(append([]byte(act), 1))
	}
	return out
}

// RecordChange stores c with a new id and keeps the actuator's history to
// the configured depth and all history to its byte quota (oldest first).
func (t *Tx) RecordChange(c *Change) (uint64, error) {
	b := t.bucket(bucketChanges)
	id, err := b.NextSequence()
	if err != nil {
		return 0, err
	}
	c.ID = id
	v, err := json.Marshal(c)
	if err != nil {
		return 0, fmt.Errorf("encode change: %w", err)
	}
	if err := b.Put(histKey(c.Actuator, id), v); err != nil {
		return 0, fmt.Errorf("record change of %s: %w", c.Actuator, err)
	}
	t.histDelta += int64(len(v))
	// Depth: readers see the newest HistoryDepth entries of an actuator.
	// The ones that age out are deleted in batches of depth/8, so that most
	// changes rewrite only the leaf they were added to, not also the leaf
	// of the oldest entry.
	if err := t.trimHistory(c.Actuator); err != nil {
		return 0, err
	}
	// Bytes: drop the oldest entries of any actuator, never the new one.
	t.s.mu.Lock()
	total := t.s.histLen
	t.s.mu.Unlock()
	for total+t.histDelta > t.s.opts.HistoryMaxBytes {
		act, oldest := t.oldestChange()
		if oldest == 0 || oldest == id {
			break
		}
		if err := t.dropChange(act, oldest); err != nil {
			return 0, err
		}
		t.dropped = append(t.dropped, fmt.Sprintf("history #%d of %s (history_max_bytes)", oldest, act))
	}
	return id, nil
}

// trimHistory keeps an actuator's history to its depth after a change was
// added: the entries that aged out are deleted in batches of depth/8, so
// that most changes rewrite only the leaf they were added to, not also the
// leaf of the oldest entry. Between batches it counts the entries (the
// store's histCount) instead of scanning them.
func (t *Tx) trimHistory(actuator string) error {
	depth := t.s.opts.HistoryDepth
	if n, ok := t.s.histCount[actuator]; ok && n+1-depth <= depth/8 {
		t.s.histCount[actuator] = n + 1
		return nil
	}
	ids := t.historyIDs(actuator)
	if over := len(ids) - depth; over > depth/8 {
		for _, old := range ids[:over] {
			if err := t.dropChange(actuator, old); err != nil {
				return err
			}
		}
		ids = ids[over:]
	}
	if t.s.histCount == nil {
		t.s.histCount = map[string]int{}
	}
	t.s.histCount[actuator] = len(ids)
	return nil
}

// historyIDs returns an actuator's change ids, oldest first.
func (t *Tx) historyIDs(actuator string) []uint64 {
	var ids []uint64
	prefix := histPrefix(actuator)
	c := t.bucket(bucketChanges).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && len(k) == len(prefix)+8; k, _ = c.Next() {
		ids = append(ids, binary.BigEndian.Uint64(k[len(prefix):]))
	}
	return ids
}

// oldestChange finds the oldest change of all actuators (id 0: none).
func (t *Tx) oldestChange() (string, uint64) {
	var act string
	var oldest uint64
	b := t.bucket(bucketChanges)
	for _, a := range t.historyActuators() {
		k, _ := b.Cursor().Seek(histPrefix(a))
		if _, id, ok := splitHistKey(k); ok && (oldest == 0 || id < oldest) {
			act, oldest = a, id
		}
	}
	return act, oldest
}

func (t *Tx) dropChange(actuator string, id uint64) error {
	delete(t.s.histCount, actuator) // counted again by the next change
	b := t.bucket(bucketChanges)
	k := histKey(actuator, id)
	if v := b.Get(k); v != nil {
		t.histDelta -= int64(len(v))
	}
	return b.Delete(k)
}

// History returns up to n changes of an actuator, newest first.
func (t *Tx) History(actuator string, n int) ([]*Change, error) {
	prefix := histPrefix(actuator)
	c := t.bucket(bucketChanges).Cursor()
	k, v := c.Seek(histKey(actuator, ^uint64(0)))
	if k == nil {
		k, v = c.Last()
	}
	var out []*Change
	for n = min(n, t.s.opts.HistoryDepth); k != nil && len(out) < n; k, v = c.Prev() {
		if !bytes.HasPrefix(k, prefix) || len(k) != len(prefix)+8 {
			if bytes.Compare(k, prefix) < 0 {
				break
			}
			continue // the seek landed past the actuator's last change
		}
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
	act, ok := t.changeActuator(id)
	if !ok {
		return nil, fmt.Errorf("history entry %d: %w", id, ErrNotFound)
	}
	return decodeChange(t.bucket(bucketChanges).Get(histKey(act, id)))
}

// changeActuator finds whose change id is: one lookup per actuator, which
// is cheaper than an id index rewritten on every change. An entry that aged
// out of its actuator's depth but awaits its batch deletion is not found.
func (t *Tx) changeActuator(id uint64) (string, bool) {
	b := t.bucket(bucketChanges)
	for _, a := range t.historyActuators() {
		if b.Get(histKey(a, id)) == nil {
			continue
		}
		ids := t.historyIDs(a)
		newer := len(ids) - 1 - slices.Index(ids, id)
		return a, newer < t.s.opts.HistoryDepth
	}
	return "", false
}

func (t *Tx) historyBytes() int64 {
	var n int64
	t.bucket(bucketChanges).ForEach(func(_, v []byte) error {
		n += int64(len(v))
		return nil
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
	act, ok := t.changeActuator(id)
	if !ok {
		return nil
	}
	return t.dropChange(act, id)
}

// DeleteGroup removes the changes a multi-actuator group recorded for the
// given actuators: a group a crash interrupted is undone as if it had never
// happened, so that power-on restore does not bring it back.
func (t *Tx) DeleteGroup(group string, actuators []string) error {
	b := t.bucket(bucketChanges)
	for _, a := range actuators {
		for _, id := range t.historyIDs(a) {
			ch, err := decodeChange(b.Get(histKey(a, id)))
			if err != nil {
				return err
			}
			if ch.Group != group {
				continue
			}
			if err := t.dropChange(a, id); err != nil {
				return err
			}
		}
	}
	return nil
}
