package store

import "fmt"

// The gateway's records of the AWS IoT Jobs executions it ran (agent/jobrun),
// one per execution under the tid it runs as. The value is agent/jobrun's
// JSON; the store only keeps it.

// PutJobRun writes the record of tid; an unchanged record is not rewritten.
func (t *Tx) PutJobRun(tid string, v []byte) error {
	b := t.bucket(bucketJobRuns)
	if old := b.Get([]byte(tid)); old != nil && string(old) == string(v) {
		return nil
	}
	return b.Put([]byte(tid), v)
}

// GetJobRun returns the record of tid or ErrNotFound. The bytes are a copy.
func (t *Tx) GetJobRun(tid string) ([]byte, error) {
	v := t.bucket(bucketJobRuns).Get([]byte(tid))
	if v == nil {
		return nil, fmt.Errorf("job run %q: %w", tid, ErrNotFound)
	}
	return append([]byte(nil), v...), nil
}

// DeleteJobRun removes the record of tid, if there is one.
func (t *Tx) DeleteJobRun(tid string) error {
	return t.bucket(bucketJobRuns).Delete([]byte(tid))
}

// JobRuns calls fn with every record, in tid order; the bytes are valid
// only during the call.
func (t *Tx) JobRuns(fn func(tid string, v []byte) error) error {
	return t.bucket(bucketJobRuns).ForEach(func(k, v []byte) error { return fn(string(k), v) })
}
