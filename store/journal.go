package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
)

// JournalEntry records a multi-actuator change before it starts, so that a
// restart after a crash in the middle can drive the actuators already
// changed back to their prior state.
type JournalEntry struct {
	Group  string                    `json:"group"`
	Before map[string]map[string]any `json:"before"` // actuator → state before
	Source string                    `json:"source"`
	TID    string                    `json:"tid,omitempty"`
}

// PutJournal records an entry; the group must remove it when it ends.
func (t *Tx) PutJournal(e *JournalEntry) error {
	v, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode journal entry: %w", err)
	}
	return t.bucket(bucketJournal).Put([]byte(e.Group), v)
}

// DeleteJournal removes a group's entry.
func (t *Tx) DeleteJournal(group string) error {
	return t.bucket(bucketJournal).Delete([]byte(group))
}

// Journal returns every entry left behind (groups a crash interrupted).
func (t *Tx) Journal() ([]*JournalEntry, error) {
	var out []*JournalEntry
	err := t.bucket(bucketJournal).ForEach(func(_, v []byte) error {
		var e JournalEntry
		d := json.NewDecoder(bytesReader(v))
		d.UseNumber()
		if err := d.Decode(&e); err != nil {
			return fmt.Errorf("stored journal entry is malformed: %w", err)
		}
		out = append(out, &e)
		return nil
	})
	return out, err
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }
