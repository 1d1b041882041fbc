package store

import (
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
// puts them in commits, which is the next checkpoint: it is given the
// copies in the log record, never the caller's.
func (b *bucket) Put(key, value []byte) error {
	if b.t.readOnly {
		return bolterrors.ErrTxNotWritable
	}
	start := len(b.t.rec)
	b.t.rec = appendOp(b.t.rec, opPut, b.name, key, value, 0)
	rec := b.t.rec[start:]
	// The copies are the record's last len(key)+len(value) bytes, after
	// the value's length.
	v := rec[len(rec)-len(value):]
	k := rec[len(rec)-len(value)-uvarintLen(len(value))-len(key) : len(rec)-len(value)-uvarintLen(len(value))]
	if err := b.Bucket.Put(k[:len(k):len(k)], v[:len(v):len(v)]); err != nil {
		b.t.rec = b.t.rec[:start]
		return err
	}
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
	b.t.rec = appendOp(b.t.rec, opDelete, b.name, key, nil, 0)
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
	b.t.rec = appendOp(b.t.rec, opSeq, b.name, nil, nil, n)
	return n, nil
}

func uvarintLen(n int) int {
	l := 1
	for ; n >= 0x80; n >>= 7 {
		l++
	}
	return l
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
