package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"time"
)

// The jobs data of the self-hosted AWS IoT Jobs (agent/jobs). The store
// keeps its records as opaque JSON under typed keys, with the indexes the
// jobs engine needs: executions per thing and per job, the pending
// executions of a thing in creation order, the targets of a rollout not yet
// released, group memberships, and one time-ordered index of every timer
// (rollout steps, timeouts) that a single scheduler walks. Names (things,
// jobs, groups, templates) hold no 0x00 byte: AWS's patterns allow none.

// JobExecKey names one job execution.
type JobExecKey struct {
	Thing, JobID string
	Number       int64 // executionNumber
}

func (k JobExecKey) bytes() []byte {
	b := make([]byte, 0, len(k.Thing)+len(k.JobID)+10)
	b = append(b, k.Thing...)
	b = append(b, 0)
	b = append(b, k.JobID...)
	b = append(b, 0)
	return binary.BigEndian.AppendUint64(b, uint64(k.Number))
}

func (k JobExecKey) byJob() []byte {
	b := make([]byte, 0, len(k.Thing)+len(k.JobID)+10)
	b = append(b, k.JobID...)
	b = append(b, 0)
	b = append(b, k.Thing...)
	b = append(b, 0)
	return binary.BigEndian.AppendUint64(b, uint64(k.Number))
}

// parseExecKey reads a key of job_execs (first=thing) or job_execs_by_job
// (first=job).
func parseExecKey(b []byte, thingFirst bool) (JobExecKey, error) {
	if len(b) < 10 || b[len(b)-9] != 0 {
		return JobExecKey{}, fmt.Errorf("job execution key %q is malformed", b)
	}
	a, c, ok := strings.Cut(string(b[:len(b)-9]), "\x00")
	if !ok {
		return JobExecKey{}, fmt.Errorf("job execution key %q is malformed", b)
	}
	n := int64(binary.BigEndian.Uint64(b[len(b)-8:]))
	if thingFirst {
		return JobExecKey{Thing: a, JobID: c, Number: n}, nil
	}
	return JobExecKey{Thing: c, JobID: a, Number: n}, nil
}

func pair(a, b string) []byte { return []byte(a + "\x00" + b) }

func prefix(a string) []byte { return []byte(a + "\x00") }

// forPrefix calls fn for every key of bucket b that starts with p, in key
// order, until fn returns an error.
func forPrefix(b *bucket, p []byte, fn func(k, v []byte) error) error {
	c := b.Cursor()
	for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
		if err := fn(k, v); err != nil {
			return err
		}
	}
	return nil
}

// deletePrefix removes every key of b that starts with p.
func deletePrefix(b *bucket, p []byte) error {
	var keys [][]byte
	if err := forPrefix(b, p, func(k, _ []byte) error { keys = append(keys, bytes.Clone(k)); return nil }); err != nil {
		return err
	}
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

func getDoc(b *bucket, key []byte, what string) ([]byte, error) {
	v := b.Get(key)
	if v == nil {
		return nil, fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	return bytes.Clone(v), nil
}

// PutJob stores a job record.
func (t *Tx) PutJob(id string, doc []byte) error {
	if err := t.bucket(bucketJobs).Put([]byte(id), doc); err != nil {
		return fmt.Errorf("put job %s: %w", id, err)
	}
	return nil
}

// PutJobTargets stores a job's targets (once, when it is made: the job's
// record, rewritten by every transition of its executions, stays small).
func (t *Tx) PutJobTargets(id string, doc []byte) error {
	if err := t.bucket(bucketJobTargets).Put([]byte(id), doc); err != nil {
		return fmt.Errorf("put targets of job %s: %w", id, err)
	}
	return nil
}

// GetJobTargets returns a job's targets or ErrNotFound.
func (t *Tx) GetJobTargets(id string) ([]byte, error) {
	return getDoc(t.bucket(bucketJobTargets), []byte(id), "targets of job "+id)
}

// GetJob returns a job record or ErrNotFound.
func (t *Tx) GetJob(id string) ([]byte, error) {
	return getDoc(t.bucket(bucketJobs), []byte(id), "job "+id)
}

// DeleteJob removes a job record with its rollout queue and every
// execution of it (and their pending entries).
func (t *Tx) DeleteJob(id string) error {
	var keys []JobExecKey
	if err := t.JobExecutionsOfJob(id, func(k JobExecKey) error { keys = append(keys, k); return nil }); err != nil {
		return err
	}
	for _, k := range keys {
		if err := t.DeleteJobExecution(k); err != nil {
			return err
		}
	}
	if err := deletePrefix(t.bucket(bucketJobRollout), prefix(id)); err != nil {
		return err
	}
	if err := t.bucket(bucketJobTargets).Delete([]byte(id)); err != nil {
		return err
	}
	return t.bucket(bucketJobs).Delete([]byte(id))
}

// Jobs calls fn for every job record, in id order.
func (t *Tx) Jobs(fn func(id string, doc []byte) error) error {
	return t.bucket(bucketJobs).ForEach(func(k, v []byte) error { return fn(string(k), bytes.Clone(v)) })
}

// PutJobExecution stores an execution record (and indexes it by job).
func (t *Tx) PutJobExecution(k JobExecKey, doc []byte) error {
	if err := t.bucket(bucketJobExecs).Put(k.bytes(), doc); err != nil {
		return fmt.Errorf("put job execution %s/%s/%d: %w", k.Thing, k.JobID, k.Number, err)
	}
	return t.bucket(bucketJobExecsByJob).Put(k.byJob(), nil)
}

// GetJobExecution returns an execution record or ErrNotFound.
func (t *Tx) GetJobExecution(k JobExecKey) ([]byte, error) {
	return getDoc(t.bucket(bucketJobExecs), k.bytes(), fmt.Sprintf("job execution %s/%s/%d", k.Thing, k.JobID, k.Number))
}

// LatestJobExecution returns the execution of job on thing with the highest
// execution number, or ErrNotFound.
func (t *Tx) LatestJobExecution(thing, jobID string) (JobExecKey, []byte, error) {
	p := pair(thing, jobID)
	p = append(p, 0)
	c := t.bucket(bucketJobExecs).Cursor()
	end := append(bytes.Clone(p), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
	var k, v []byte
	if k, _ = c.Seek(end); k == nil {
		k, v = c.Last()
	} else {
		k, v = c.Prev()
	}
	if k == nil || !bytes.HasPrefix(k, p) || len(k) != len(p)+8 {
		return JobExecKey{}, nil, fmt.Errorf("job execution %s/%s: %w", thing, jobID, ErrNotFound)
	}
	key, err := parseExecKey(k, true)
	return key, bytes.Clone(v), err
}

// DeleteJobExecution removes an execution record, its index entry and its
// pending entry (the caller removes its timer).
func (t *Tx) DeleteJobExecution(k JobExecKey) error {
	if err := t.bucket(bucketJobExecs).Delete(k.bytes()); err != nil {
		return err
	}
	if err := t.bucket(bucketJobExecsByJob).Delete(k.byJob()); err != nil {
		return err
	}
	pb := t.bucket(bucketJobPending)
	var drop []byte
	want := binary.BigEndian.AppendUint64(prefix(k.JobID), uint64(k.Number))
	err := forPrefix(pb, prefix(k.Thing), func(key, v []byte) error {
		if bytes.Equal(v, want) {
			drop = bytes.Clone(key)
		}
		return nil
	})
	if err != nil || drop == nil {
		return err
	}
	return pb.Delete(drop)
}

// JobExecutionsOfJob calls fn for the key of every execution of a job, by
// thing and execution number.
func (t *Tx) JobExecutionsOfJob(jobID string, fn func(k JobExecKey) error) error {
	return forPrefix(t.bucket(bucketJobExecsByJob), prefix(jobID), func(k, _ []byte) error {
		key, err := parseExecKey(k, false)
		if err != nil {
			return err
		}
		return fn(key)
	})
}

// JobExecutionsOfThing calls fn for every execution on a thing, by job and
// execution number.
func (t *Tx) JobExecutionsOfThing(thing string, fn func(k JobExecKey, doc []byte) error) error {
	return forPrefix(t.bucket(bucketJobExecs), prefix(thing), func(k, v []byte) error {
		key, err := parseExecKey(k, true)
		if err != nil {
			return err
		}
		return fn(key, bytes.Clone(v))
	})
}

// NextJobSeq returns a new number of the jobs sequence (creation order of
// jobs and executions).
func (t *Tx) NextJobSeq() (uint64, error) { return t.bucket(bucketJobPending).NextSequence() }

func pendingKey(thing string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(prefix(thing), seq)
}

// PutPendingJob files an execution among its thing's pending ones under its
// creation sequence number.
func (t *Tx) PutPendingJob(seq uint64, k JobExecKey) error {
	v := binary.BigEndian.AppendUint64(prefix(k.JobID), uint64(k.Number))
	return t.bucket(bucketJobPending).Put(pendingKey(k.Thing, seq), v)
}

// DeletePendingJob removes a pending entry.
func (t *Tx) DeletePendingJob(thing string, seq uint64) error {
	return t.bucket(bucketJobPending).Delete(pendingKey(thing, seq))
}

// PendingJobs calls fn for the pending executions of thing in creation
// order.
func (t *Tx) PendingJobs(thing string, fn func(seq uint64, k JobExecKey) error) error {
	p := prefix(thing)
	return forPrefix(t.bucket(bucketJobPending), p, func(k, v []byte) error {
		if len(k) != len(p)+8 || len(v) < 9 || v[len(v)-9] != 0 {
			return fmt.Errorf("pending job entry %q is malformed", k)
		}
		return fn(binary.BigEndian.Uint64(k[len(p):]), JobExecKey{Thing: thing, JobID: string(v[:len(v)-9]), Number: int64(binary.BigEndian.Uint64(v[len(v)-8:]))})
	})
}

// JobTimer is one entry of the scheduler's index.
type JobTimer struct {
	Due     time.Time
	Kind    byte
	Payload string
}

func (j JobTimer) key() []byte {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 9+len(j.Payload)), uint64(j.Due.UnixNano()))
	b = append(b, j.Kind)
	return append(b, j.Payload...)
}

// PutJobTimer files a timer.
func (t *Tx) PutJobTimer(j JobTimer) error { return t.bucket(bucketJobTimers).Put(j.key(), nil) }

// DeleteJobTimer removes a timer (absent is fine).
func (t *Tx) DeleteJobTimer(j JobTimer) error { return t.bucket(bucketJobTimers).Delete(j.key()) }

// DueJobTimers returns up to max timers due at or before now, earliest
// first.
func (t *Tx) DueJobTimers(now time.Time, max int) ([]JobTimer, error) {
	var out []JobTimer
	c := t.bucket(bucketJobTimers).Cursor()
	for k, _ := c.First(); k != nil && len(out) < max; k, _ = c.Next() {
		if len(k) < 9 {
			return nil, fmt.Errorf("job timer key %q is malformed", k)
		}
		due := time.Unix(0, int64(binary.BigEndian.Uint64(k)))
		if due.After(now) {
			break
		}
		out = append(out, JobTimer{Due: due, Kind: k[8], Payload: string(k[9:])})
	}
	return out, nil
}

// NextJobTimer returns the earliest timer's due time.
func (t *Tx) NextJobTimer() (time.Time, bool) {
	k, _ := t.bucket(bucketJobTimers).Cursor().First()
	if len(k) < 9 {
		return time.Time{}, false
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(k))), true
}

// PushJobTargets appends things to a job's rollout queue.
func (t *Tx) PushJobTargets(jobID string, things []string) error {
	b := t.bucket(bucketJobRollout)
	for _, th := range things {
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		if err := b.Put(binary.BigEndian.AppendUint64(prefix(jobID), seq), []byte(th)); err != nil {
			return err
		}
	}
	return nil
}

// PopJobTargets removes and returns up to n things from the front of a job's
// rollout queue.
func (t *Tx) PopJobTargets(jobID string, n int) ([]string, error) {
	b := t.bucket(bucketJobRollout)
	var out []string
	var keys [][]byte
	err := forPrefix(b, prefix(jobID), func(k, v []byte) error {
		if len(out) >= n {
			return errStop
		}
		out = append(out, string(v))
		keys = append(keys, bytes.Clone(k))
		return nil
	})
	if err != nil && err != errStop {
		return nil, err
	}
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// DropJobTargets empties a job's rollout queue.
func (t *Tx) DropJobTargets(jobID string) error {
	return deletePrefix(t.bucket(bucketJobRollout), prefix(jobID))
}

var errStop = fmt.Errorf("stop")

// PutThingGroup stores a thing group record.
func (t *Tx) PutThingGroup(name string, doc []byte) error {
	return t.bucket(bucketThingGroups).Put([]byte(name), doc)
}

// GetThingGroup returns a thing group record or ErrNotFound.
func (t *Tx) GetThingGroup(name string) ([]byte, error) {
	return getDoc(t.bucket(bucketThingGroups), []byte(name), "thing group "+name)
}

// DeleteThingGroup removes a group, its memberships and its continuous-job
// index entries.
func (t *Tx) DeleteThingGroup(name string) error {
	var things []string
	if err := t.ThingsInGroup(name, func(th string) error { things = append(things, th); return nil }); err != nil {
		return err
	}
	for _, th := range things {
		if _, err := t.RemoveThingFromGroup(name, th); err != nil {
			return err
		}
	}
	if err := deletePrefix(t.bucket(bucketJobGroupTargets), prefix(name)); err != nil {
		return err
	}
	return t.bucket(bucketThingGroups).Delete([]byte(name))
}

// ThingGroups calls fn for every group record, in name order.
func (t *Tx) ThingGroups(fn func(name string, doc []byte) error) error {
	return t.bucket(bucketThingGroups).ForEach(func(k, v []byte) error { return fn(string(k), bytes.Clone(v)) })
}

// AddThingToGroup records a membership; added is false if it existed.
func (t *Tx) AddThingToGroup(group, thing string) (added bool, err error) {
	b := t.bucket(bucketThingGroupThings)
	if b.Get(pair(group, thing)) != nil {
		return false, nil
	}
	if err := b.Put(pair(group, thing), nil); err != nil {
		return false, err
	}
	return true, t.bucket(bucketThingMemberships).Put(pair(thing, group), nil)
}

// RemoveThingFromGroup drops a membership; removed is false if there was
// none.
func (t *Tx) RemoveThingFromGroup(group, thing string) (removed bool, err error) {
	b := t.bucket(bucketThingGroupThings)
	if b.Get(pair(group, thing)) == nil {
		return false, nil
	}
	if err := b.Delete(pair(group, thing)); err != nil {
		return false, err
	}
	return true, t.bucket(bucketThingMemberships).Delete(pair(thing, group))
}

func forSecond(b *bucket, first string, fn func(second string) error) error {
	p := prefix(first)
	return forPrefix(b, p, func(k, _ []byte) error { return fn(string(k[len(p):])) })
}

// ThingsInGroup calls fn for every member of a group, in name order.
func (t *Tx) ThingsInGroup(group string, fn func(thing string) error) error {
	return forSecond(t.bucket(bucketThingGroupThings), group, fn)
}

// GroupsOfThing calls fn for every group a thing is in, in name order.
func (t *Tx) GroupsOfThing(thing string, fn func(group string) error) error {
	return forSecond(t.bucket(bucketThingMemberships), thing, fn)
}

// PutGroupJob records that a continuous job targets a group.
func (t *Tx) PutGroupJob(group, jobID string) error {
	return t.bucket(bucketJobGroupTargets).Put(pair(group, jobID), nil)
}

// DeleteGroupJob drops that record.
func (t *Tx) DeleteGroupJob(group, jobID string) error {
	return t.bucket(bucketJobGroupTargets).Delete(pair(group, jobID))
}

// GroupJobs calls fn for every continuous job that targets a group.
func (t *Tx) GroupJobs(group string, fn func(jobID string) error) error {
	return forSecond(t.bucket(bucketJobGroupTargets), group, fn)
}

// PutJobTemplate stores a job template record.
func (t *Tx) PutJobTemplate(id string, doc []byte) error {
	return t.bucket(bucketJobTemplates).Put([]byte(id), doc)
}

// GetJobTemplate returns a template record or ErrNotFound.
func (t *Tx) GetJobTemplate(id string) ([]byte, error) {
	return getDoc(t.bucket(bucketJobTemplates), []byte(id), "job template "+id)
}

// DeleteJobTemplate removes a template record.
func (t *Tx) DeleteJobTemplate(id string) error {
	return t.bucket(bucketJobTemplates).Delete([]byte(id))
}

// JobTemplates calls fn for every template, in id order.
func (t *Tx) JobTemplates(fn func(id string, doc []byte) error) error {
	return t.bucket(bucketJobTemplates).ForEach(func(k, v []byte) error { return fn(string(k), bytes.Clone(v)) })
}
