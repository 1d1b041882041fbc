package store

import (
	"bytes"
	"fmt"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// bucket is a bbolt bucket whose changes are also written to the
// transaction's log record (wal.go): every change the store makes goes
// through it. Reads are bbolt's own.
type bucket struct {
	*bolt.Bucket
	t    *Tx
	name []byte
}

// bucket returns the top-level bucket name.
func (t *Tx) bucket(name []byte) *bucket {
	return &bucket{Bucket: t.tx.Bucket(name), t: t, name: name}
}

// Put sets key to value. bbolt keeps both slices until the transaction it
// puts them in commits, which is the next checkpoint: it is given copies,
// never the caller's.
func (b *bucket) Put(key, value []byte) error {
	if b.t.readOnly {
		return bolterrors.ErrTxNotWritable
	}
	k, v := bytes.Clone(key), append(make([]byte, 0, len(value)), value...)
	if err := b.Bucket.Put(k, v); err != nil {
		return err
	}
	b.t.log(walOp{op: opPut, bucket: b.name, key: k, val: v})
	return nil
}

// Delete removes key.
func (b *bucket) Delete(key []byte) error {
	if b.t.readOnly {
		return bolterrors.ErrTxNotWritable
	}
	if err := b.Bucket.Delete(key); err != nil {
		return err
	}
	b.t.log(walOp{op: opDelete, bucket: b.name, key: bytes.Clone(key)})
	return nil
}

// NextSequence returns the bucket's next sequence number.
func (b *bucket) NextSequence() (uint64, error) {
	if b.t.readOnly {
		return 0, bolterrors.ErrTxNotWritable
	}
	n, err := b.Bucket.NextSequence()
	if err != nil {
		return 0, err
	}
	b.t.log(walOp{op: opSeq, bucket: b.name, seq: n})
	return n, nil
}

// log adds an operation to the transaction's record. Only the last
// operation on a key (or on a bucket's sequence) matters to the state a
// replay makes, so it replaces an earlier one: a record written by every
// writer of a group in turn (a job's record, rewritten by each of its
// executions' transitions) goes into the log once.
func (t *Tx) log(o walOp) {
	id := string(o.bucket) + "\x00" + string(o.key)
	if o.op == opSeq {
		id = string(o.bucket) + "\x01"
	}
	if i, ok := t.opAt[id]; ok {
		t.ops[i].op = 0 // replaced
	}
	if t.opAt == nil {
		t.opAt = map[string]int{}
	}
	t.opAt[id] = len(t.ops)
	t.ops = append(t.ops, o)
}

// encodeOps appends the record of ops (those not replaced) to b.
func encodeOps(b []byte, ops []walOp) []byte {
	for _, o := range ops {
		if o.op != 0 {
			b = appendOp(b, o.op, o.bucket, o.key, o.val, o.seq)
		}
	}
	return b
}

// apply makes one logged operation on btx again (replay).
func apply(btx *bolt.Tx, o walOp) error {
	b := btx.Bucket(o.bucket)
	if b == nil {
		return fmt.Errorf("write-ahead log names a bucket the store does not have: %q", o.bucket)
	}
	switch o.op {
	case opPut:
		return b.Put(o.key, o.val)
	case opDelete:
		return b.Delete(o.key)
	case opSeq:
		return b.SetSequence(o.seq)
	}
	return fmt.Errorf("write-ahead log has an unknown operation %d", o.op)
}
