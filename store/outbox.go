package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// Kind says what an outbox item is, which decides what a full outbox drops.
type Kind uint8

// Outbox item kinds.
const (
	// KindReport is reported state: coalescable, dropped first when full.
	KindReport Kind = 1
	// KindStatus is presence and other status: coalescable.
	KindStatus Kind = 2
	// KindAck is a command acknowledgement: never coalesced, dropped last.
	KindAck Kind = 3
	// KindJob is an AWS IoT Jobs status update (agent/jobrun). It is settled
	// by the jobs service's answer, not by the broker's PUBACK: the drainer
	// passes it by and agent/jobrun sends and removes it. Coalesced per job
	// execution (only its latest status matters), dropped last like acks.
	KindJob Kind = 4
)

func (k Kind) String() string {
	switch k {
	case KindReport:
		return "report"
	case KindStatus:
		return "status"
	case KindAck:
		return "ack"
	case KindJob:
		return "job"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// OutItem is one message waiting to be published.
type OutItem struct {
	Seq     uint64 // set by Enqueue
	Kind    Kind
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool
	// Key, when set, coalesces: a new item with the same key replaces the
	// queued one (which is removed; the new one goes to the end).
	Key string
}

func (it *OutItem) size() int64 { return int64(len(it.Topic) + len(it.Payload) + len(it.Key) + 16) }

// OutboxStats is the outbox's depth and what it has dropped.
type OutboxStats struct {
	Items   int64
	Bytes   int64
	Dropped uint64 // items dropped because a quota was reached, ever
}

// OutboxStats returns the current outbox depth and drop count.
func (s *Store) OutboxStats() OutboxStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.outbox
}

// Queued says whether an item with the coalescing key waits in the outbox
// (a read, no write).
func (s *Store) Queued(key string) bool {
	var found bool
	s.View(func(tx *Tx) error {
		found = tx.bucket(bucketOutboxKeys).Get([]byte(key)) != nil
		return nil
	})
	return found
}

// QueuedSeq returns the sequence number of the item queued under the
// coalescing key, if one is (a read, no write).
func (s *Store) QueuedSeq(key string) (seq uint64, ok bool) {
	s.View(func(tx *Tx) error {
		if v := tx.bucket(bucketOutboxKeys).Get([]byte(key)); len(v) == 8 {
			seq, ok = binary.BigEndian.Uint64(v), true
		}
		return nil
	})
	return seq, ok
}

// Enqueue appends an item and returns its sequence number.
func (s *Store) Enqueue(it OutItem) (seq uint64, err error) {
	err = s.Update(func(tx *Tx) error {
		seq, err = tx.Enqueue(it)
		return err
	})
	return seq, err
}

// Peek returns up to n of the oldest items, oldest first.
func (s *Store) Peek(n int) (items []OutItem, err error) {
	err = s.View(func(tx *Tx) error {
		items, err = tx.Peek(n)
		return err
	})
	return items, err
}

// PeekAfter returns up to n items queued after seq, oldest first.
func (s *Store) PeekAfter(seq uint64, n int) (items []OutItem, err error) {
	err = s.View(func(tx *Tx) error {
		items, err = tx.PeekAfter(seq, n)
		return err
	})
	return items, err
}

// Remove deletes the item seq (after the broker's PUBACK). Removing an item
// that is gone (coalesced away meanwhile) is not an error.
func (s *Store) Remove(seq uint64) error {
	return s.Update(func(tx *Tx) error { return tx.Remove(seq) })
}

// Enqueue appends an item, coalescing by key and enforcing the quotas.
func (t *Tx) Enqueue(it OutItem) (uint64, error) {
	if it.Kind < KindReport || it.Kind > KindJob {
		return 0, fmt.Errorf("enqueue: invalid kind %d", it.Kind)
	}
	if it.Topic == "" {
		return 0, errors.New("enqueue: empty topic")
	}
	if it.Kind == KindAck && it.Key != "" {
		return 0, errors.New("enqueue: acks are never coalesced")
	}
	ob := t.bucket(bucketOutbox)
	keys := t.bucket(bucketOutboxKeys)
	if it.Key != "" {
		if old := keys.Get([]byte(it.Key)); old != nil {
			if err := t.removeSeq(binary.BigEndian.Uint64(old)); err != nil {
				return 0, err
			}
		}
	}
	if err := t.makeRoom(it.size()); err != nil {
		return 0, err
	}
	seq, err := ob.NextSequence()
	if err != nil {
		return 0, err
	}
	it.Seq = seq
	if err := ob.Put(u64(seq), encodeItem(&it)); err != nil {
		return 0, fmt.Errorf("enqueue: %w", err)
	}
	if it.Key != "" {
		if err := keys.Put([]byte(it.Key), u64(seq)); err != nil {
			return 0, fmt.Errorf("enqueue: %w", err)
		}
	}
	t.outboxDelta.Items++
	t.outboxDelta.Bytes += it.size()
	return seq, nil
}

// makeRoom drops items until one of size n fits the quotas: the oldest
// reports and status first, acks and job statuses only when nothing else is
// left.
func (t *Tx) makeRoom(n int64) error {
	s := t.s
	s.mu.Lock()
	items, bytes := s.outbox.Items+t.outboxDelta.Items, s.outbox.Bytes+t.outboxDelta.Bytes
	s.mu.Unlock()
	full := func() bool {
		return items+1 > int64(s.opts.OutboxMaxItems) || bytes+n > s.opts.OutboxMaxBytes
	}
	if !full() {
		return nil
	}
	for _, acks := range []bool{false, true} {
		c := t.bucket(bucketOutbox).Cursor()
		for k, v := c.First(); k != nil && full(); {
			it, err := decodeItem(k, v)
			if err != nil {
				return err
			}
			if (it.Kind == KindAck || it.Kind == KindJob) != acks {
				k, v = c.Next()
				continue
			}
			if err := t.removeSeq(it.Seq); err != nil {
				return err
			}
			items--
			bytes -= it.size()
			t.outboxDelta.Dropped++
			if err := t.addCounter(counterDropped, 1); err != nil {
				return err
			}
			t.dropped = append(t.dropped, fmt.Sprintf("outbox %s #%d on %s", it.Kind, it.Seq, it.Topic))
			k, v = c.Seek(u64(it.Seq + 1))
		}
	}
	if full() {
		return fmt.Errorf("enqueue: item of %d bytes is larger than the outbox quota", n)
	}
	return nil
}

// Peek returns up to n of the oldest items, oldest first.
func (t *Tx) Peek(n int) ([]OutItem, error) { return t.PeekAfter(0, n) }

// PeekAfter returns up to n items queued after seq, oldest first.
func (t *Tx) PeekAfter(seq uint64, n int) ([]OutItem, error) {
	var out []OutItem
	c := t.bucket(bucketOutbox).Cursor()
	for k, v := c.Seek(u64(seq + 1)); k != nil && len(out) < n; k, v = c.Next() {
		it, err := decodeItem(k, v)
		if err != nil {
			return nil, err
		}
		out = append(out, it)
	}
	return out, nil
}

// Remove deletes the item seq if it is still queued.
func (t *Tx) Remove(seq uint64) error { return t.removeSeq(seq) }

func (t *Tx) removeSeq(seq uint64) error {
	ob := t.bucket(bucketOutbox)
	k := u64(seq)
	v := ob.Get(k)
	if v == nil {
		return nil
	}
	it, err := decodeItem(k, v)
	if err != nil {
		return err
	}
	if it.Key != "" {
		keys := t.bucket(bucketOutboxKeys)
		if cur := keys.Get([]byte(it.Key)); bytes.Equal(cur, k) {
			if err := keys.Delete([]byte(it.Key)); err != nil {
				return err
			}
		}
	}
	if err := ob.Delete(k); err != nil {
		return err
	}
	t.outboxDelta.Items--
	t.outboxDelta.Bytes -= it.size()
	return nil
}

func (t *Tx) scanOutbox() (OutboxStats, error) {
	var st OutboxStats
	err := t.bucket(bucketOutbox).ForEach(func(k, v []byte) error {
		it, err := decodeItem(k, v)
		if err != nil {
			return err
		}
		st.Items++
		st.Bytes += it.size()
		return nil
	})
	return st, err
}

// Item encoding: kind, qos, flags, uvarint topic length, topic, uvarint key
// length, key, payload.
func encodeItem(it *OutItem) []byte {
	b := make([]byte, 0, 3+2*binary.MaxVarintLen32+len(it.Topic)+len(it.Key)+len(it.Payload))
	var flags byte
	if it.Retain {
		flags |= 1
	}
	b = append(b, byte(it.Kind), it.QoS, flags)
	b = binary.AppendUvarint(b, uint64(len(it.Topic)))
	b = append(b, it.Topic...)
	b = binary.AppendUvarint(b, uint64(len(it.Key)))
	b = append(b, it.Key...)
	return append(b, it.Payload...)
}

var errBadItem = errors.New("outbox item is malformed")

func decodeItem(k, v []byte) (OutItem, error) {
	if len(k) != 8 || len(v) < 3 {
		return OutItem{}, errBadItem
	}
	it := OutItem{Seq: binary.BigEndian.Uint64(k), Kind: Kind(v[0]), QoS: v[1], Retain: v[2]&1 != 0}
	rest := v[3:]
	field := func() (string, bool) {
		n, w := binary.Uvarint(rest)
		if w <= 0 || uint64(len(rest)-w) < n {
			return "", false
		}
		s := string(rest[w : w+int(n)])
		rest = rest[w+int(n):]
		return s, true
	}
	var ok bool
	if it.Topic, ok = field(); !ok {
		return OutItem{}, errBadItem
	}
	if it.Key, ok = field(); !ok {
		return OutItem{}, errBadItem
	}
	it.Payload = bytes.Clone(rest) // bbolt's memory is only valid inside the tx
	return it, nil
}
