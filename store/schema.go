package store

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The whole schema of the store file. Bump SchemaVersion and add a migration
// for every change to what is stored or how.
//
//	meta         "schema" → uint64 version; counters; "inbox/items", "inbox/bytes"
//	             → the inbox's size (uint64), kept by the transactions that change it
//	shadows      "<thing>/<shadow>" → shadow document JSON (agent/shadow's stored form)
//	outbox       seq (8 bytes BE) → encoded OutItem
//	outbox_keys  coalescing key → seq of the queued item with that key
//	inbox        tid → Command JSON
//	inbox_order  seq (8 bytes BE) → tid, arrival order of the unfinished commands; once one
//	             has started, 0x00 + start (8 bytes BE unix nanos) + tid (inbox.go)
//	changes      actuator + 0x00 + id (8 bytes BE) → Change JSON (history.go)
//	journal      group id → journal entry JSON (multi-actuator changes in flight)
//	job_runs     tid → the gateway's record of a job execution it ran (agent/jobrun's JSON; jobruns.go)
//
// The self-hosted AWS IoT Jobs (agent/jobs, in shadowsvc's file; jobs.go):
//
//	jobs                 job id → job JSON (without its targets)
//	job_targets          job id → JSON array of the target ARNs it was made with
//	job_execs            thing 0x00 job id 0x00 execution number (8 bytes BE) → execution JSON
//	job_execs_by_job     job id 0x00 thing 0x00 execution number → nil (index)
//	job_pending          thing 0x00 seq (8 bytes BE) → job id 0x00 execution number (QUEUED and IN_PROGRESS, in creation order)
//	job_timers           due (8 bytes BE unix nanos) + kind byte + payload → nil (the scheduler's time-ordered index)
//	job_rollout          job id 0x00 seq (8 bytes BE) → thing (targets not yet released)
//	job_group_targets    group 0x00 job id → nil (continuous jobs that target a group)
//	job_templates        template id → template JSON
//	thing_groups         group → group JSON
//	thing_group_members  group 0x00 thing → nil
//	thing_memberships    thing 0x00 group → nil
//
// Version 1 kept history as a bucket per actuator under "history" plus an
// id index "history_ids"; version 2 flattened it into "changes"; version 3
// counts the inbox's size in meta (its quota) and no longer keeps the request
// of a finished command; version 4 added the jobs buckets (nothing else
// changed); version 5 keys inbox_done by the store's uptime instead of the
// wall-clock time a command finished (a clock that jumps made records
// expire at once or never).
// Version 6 added job_runs (nothing else changed). Version 7 drops
// inbox_done (the finished commands by uptime, for expiry): a finished
// command's record carries the uptime it finished at, and the expiry pass
// reads the inbox; the index cost two pages (8 KB) with every command.
// The migration copies each index key's uptime into its record (they were
// equal except for the records schema 5 re-filed at uptime 0). Schema 7
// also keeps a command's start in its inbox_order entry instead of
// rewriting its record (schema 6 entries, a plain tid, read as before).
// Version 8 adds the write-ahead log beside the file (wal.go; meta's
// "wal/id" and "wal/seq"), which a shadowgate of before it would not
// replay, and keeps a job's targets in job_targets instead of its record:
// every transition rewrites the record, into the log too, and a job on
// 10,000 things made it 600 KB.
const SchemaVersion = 8

var (
	bucketMeta       = []byte("meta")
	bucketShadows    = []byte("shadows")
	bucketOutbox     = []byte("outbox")
	bucketOutboxKeys = []byte("outbox_keys")
	bucketInbox      = []byte("inbox")
	bucketInboxOrder = []byte("inbox_order")
	bucketInboxDone  = []byte("inbox_done") // schema 3–6
	bucketChanges    = []byte("changes")
	bucketJournal    = []byte("journal")
	bucketJobRuns    = []byte("job_runs")

	bucketJobs             = []byte("jobs")
	bucketJobTargets       = []byte("job_targets") // schema 8
	bucketJobExecs         = []byte("job_execs")
	bucketJobExecsByJob    = []byte("job_execs_by_job")
	bucketJobPending       = []byte("job_pending")
	bucketJobTimers        = []byte("job_timers")
	bucketJobRollout       = []byte("job_rollout")
	bucketJobGroupTargets  = []byte("job_group_targets")
	bucketJobTemplates     = []byte("job_templates")
	bucketThingGroups      = []byte("thing_groups")
	bucketThingGroupThings = []byte("thing_group_members")
	bucketThingMemberships = []byte("thing_memberships")

	jobBuckets = [][]byte{bucketJobs, bucketJobExecs, bucketJobExecsByJob, bucketJobPending, bucketJobTimers,
		bucketJobRollout, bucketJobGroupTargets, bucketJobTemplates, bucketThingGroups, bucketThingGroupThings,
		bucketThingMemberships}

	allBuckets = append([][]byte{bucketMeta, bucketShadows, bucketOutbox, bucketOutboxKeys, bucketInbox,
		bucketInboxOrder, bucketChanges, bucketJournal, bucketJobRuns, bucketJobTargets}, jobBuckets...)

	// schema 1's history buckets
	bucketHistoryV1    = []byte("history")
	bucketHistoryIDsV1 = []byte("history_ids")

	keySchema = []byte("schema")
)

// migrations[i] upgrades a file of schema version i to i+1. Version 0 is a
// new, empty file.
var migrations = []func(tx *bolt.Tx) error{
	0: func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return fmt.Errorf("create bucket %s: %w", b, err)
			}
		}
		return nil
	},
	1: flattenHistory,
	2: countInbox,
	3: createBuckets(jobBuckets),
	4: rekeyInboxDone,
	5: createBuckets([][]byte{bucketJobRuns}),
	6: dropInboxDone,
	7: func(tx *bolt.Tx) error {
		// The store file's identity, in every log record's checksum.
		if err := tx.Bucket(bucketMeta).Put(keyWALID, []byte(rand.Text())); err != nil {
			return err
		}
		return splitJobTargets(tx)
	},
}

// dropInboxDone stamps every finished command with the uptime its
// inbox_done key files it at, and drops inbox_done.
func dropInboxDone(tx *bolt.Tx) error {
	done := tx.Bucket(bucketInboxDone)
	if done == nil {
		return nil
	}
	inbox := tx.Bucket(bucketInbox)
	type stamp struct {
		tid string
		up  time.Duration
	}
	var stamps []stamp
	if err := done.ForEach(func(k, _ []byte) error {
		if len(k) < 8 {
			return fmt.Errorf("inbox_done key of %d bytes", len(k))
		}
		stamps = append(stamps, stamp{string(k[8:]), time.Duration(binary.BigEndian.Uint64(k[:8]))})
		return nil
	}); err != nil {
		return err
	}
	meta := tx.Bucket(bucketMeta)
	size := int64(0)
	if b := meta.Get([]byte(keyInboxBytes)); len(b) == 8 {
		size = int64(binary.BigEndian.Uint64(b))
	}
	for _, st := range stamps {
		v := inbox.Get([]byte(st.tid))
		if v == nil {
			continue
		}
		c, err := decodeCommand(v)
		if err != nil {
			return fmt.Errorf("inbox %q: %w", st.tid, err)
		}
		if c.FinishedUptime == st.up {
			continue
		}
		c.FinishedUptime = st.up
		nv, err := json.Marshal(c)
		if err != nil {
			return err
		}
		if err := inbox.Put([]byte(st.tid), nv); err != nil {
			return err
		}
		size += int64(len(nv) - len(v))
	}
	if err := meta.Put([]byte(keyInboxBytes), u64(uint64(max(size, 0)))); err != nil {
		return err
	}
	return tx.DeleteBucket(bucketInboxDone)
}

// rekeyInboxDone files every finished command for expiry at uptime 0, the
// uptime the file starts from: whatever its wall-clock age was (which may
// be wrong), each is kept for one full retention from the upgrade on.
func rekeyInboxDone(tx *bolt.Tx) error {
	done := tx.Bucket(bucketInboxDone)
	if done == nil {
		return nil
	}
	var keys [][]byte
	if err := done.ForEach(func(k, _ []byte) error {
		if len(k) < 8 {
			return fmt.Errorf("inbox_done key of %d bytes", len(k))
		}
		keys = append(keys, append([]byte(nil), k...))
		return nil
	}); err != nil {
		return err
	}
	for _, k := range keys {
		if err := done.Delete(k); err != nil {
			return err
		}
	}
	for _, k := range keys {
		if err := done.Put(doneKey(0, string(k[8:])), nil); err != nil {
			return err
		}
	}
	return nil
}

// createBuckets is a migration that only adds buckets.
func createBuckets(names [][]byte) func(tx *bolt.Tx) error {
	return func(tx *bolt.Tx) error {
		for _, b := range names {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return fmt.Errorf("create bucket %s: %w", b, err)
			}
		}
		return nil
	}
}

// countInbox drops the requests of finished commands (only their last ack
// answers a resend) and records the inbox's size in meta.
func countInbox(btx *bolt.Tx) error {
	inbox := btx.Bucket(bucketInbox)
	if inbox == nil {
		return nil
	}
	var items, size int64
	var shrink []*Command
	err := inbox.ForEach(func(k, v []byte) error {
		c, err := decodeCommand(v)
		if err != nil {
			return fmt.Errorf("inbox %q: %w", k, err)
		}
		if c.Done() && c.Request != nil {
			c.Request = nil
			shrink = append(shrink, c)
			v, _ = json.Marshal(c)
		}
		items, size = items+1, size+int64(len(k)+len(v))
		return nil
	})
	if err != nil {
		return err
	}
	for _, c := range shrink {
		v, err := json.Marshal(c)
		if err != nil {
			return err
		}
		if err := inbox.Put([]byte(c.TID), v); err != nil {
			return err
		}
	}
	meta := btx.Bucket(bucketMeta)
	if err := meta.Put([]byte(keyInboxItems), u64(uint64(items))); err != nil {
		return err
	}
	return meta.Put([]byte(keyInboxBytes), u64(uint64(size)))
}

// flattenHistory moves schema 1's per-actuator history buckets into the
// flat "changes" bucket, keeping ids and the id sequence.
func flattenHistory(tx *bolt.Tx) error {
	changes, err := tx.CreateBucketIfNotExists(bucketChanges)
	if err != nil {
		return fmt.Errorf("create bucket %s: %w", bucketChanges, err)
	}
	old := tx.Bucket(bucketHistoryV1)
	if old == nil {
		return nil // a new file: migration 0 made the current buckets
	}
	err = old.ForEachBucket(func(act []byte) error {
		return old.Bucket(act).ForEach(func(id, v []byte) error {
			if len(id) != 8 {
				return fmt.Errorf("history of %s: key of %d bytes", act, len(id))
			}
			return changes.Put(histKey(string(act), binary.BigEndian.Uint64(id)), v)
		})
	})
	if err != nil {
		return err
	}
	if err := changes.SetSequence(old.Sequence()); err != nil {
		return err
	}
	if err := tx.DeleteBucket(bucketHistoryV1); err != nil {
		return err
	}
	if tx.Bucket(bucketHistoryIDsV1) != nil {
		return tx.DeleteBucket(bucketHistoryIDsV1)
	}
	return nil
}

// schemaOf is the schema version a file records (0: a new file).
func schemaOf(tx *bolt.Tx) (uint64, error) {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		return 0, nil
	}
	b := meta.Get(keySchema)
	if b == nil {
		return 0, nil
	}
	if len(b) != 8 {
		return 0, fmt.Errorf("schema version record has %d bytes", len(b))
	}
	return binary.BigEndian.Uint64(b), nil
}

// migrate upgrades a file of an older schema to SchemaVersion.
func migrate(tx *bolt.Tx) error {
	v, err := schemaOf(tx)
	if err != nil {
		return err
	}
	if v > SchemaVersion {
		return fmt.Errorf("%w: file schema %d, this build knows up to %d; upgrade shadowgate", ErrNewerSchema, v, SchemaVersion)
	}
	if _, err := tx.CreateBucketIfNotExists(bucketMeta); err != nil {
		return err
	}
	for ; v < SchemaVersion; v++ {
		if err := migrations[v](tx); err != nil {
			return fmt.Errorf("migrate schema %d to %d: %w", v, v+1, err)
		}
	}
	return tx.Bucket(bucketMeta).Put(keySchema, u64(SchemaVersion))
}

func u64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

// counters in meta
const (
	counterDropped = "outbox_dropped"
)

func (t *Tx) counter(name string) uint64 {
	b := t.bucket(bucketMeta).Get([]byte("counter/" + name))
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

func (t *Tx) addCounter(name string, n uint64) error {
	return t.bucket(bucketMeta).Put([]byte("counter/"+name), u64(t.counter(name)+n))
}

// SchemaVersion returns the schema version recorded in the file.
func (t *Tx) SchemaVersion() uint64 {
	b := t.bucket(bucketMeta).Get(keySchema)
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

// splitJobTargets moves each job record's "targets" into job_targets
// (schema 8).
func splitJobTargets(tx *bolt.Tx) error {
	targets, err := tx.CreateBucketIfNotExists(bucketJobTargets)
	if err != nil {
		return err
	}
	jobs := tx.Bucket(bucketJobs)
	if jobs == nil {
		return nil
	}
	type record struct{ id, job, targets []byte }
	var split []record
	if err := jobs.ForEach(func(k, v []byte) error {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(v, &m); err != nil {
			return fmt.Errorf("job %s: %w", k, err)
		}
		t, ok := m["targets"]
		if !ok {
			return nil
		}
		delete(m, "targets")
		b, err := json.Marshal(m)
		if err != nil {
			return err
		}
		split = append(split, record{bytes.Clone(k), b, bytes.Clone(t)})
		return nil
	}); err != nil {
		return err
	}
	for _, r := range split {
		if err := targets.Put(r.id, r.targets); err != nil {
			return err
		}
		if err := jobs.Put(r.id, r.job); err != nil {
			return err
		}
	}
	return nil
}
