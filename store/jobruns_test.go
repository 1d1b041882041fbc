package store_test

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/shadowgate/shadowgate/store"
	bolt "go.etcd.io/bbolt"
)

func TestJobRunsSchemaMigratesFromVersion4(t *testing.T) {
	// A file of schema 4 (before job_runs) opens and gains the bucket.
	path := filepath.Join(t.TempDir(), "s.db")
	s, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	setSchema(t, path, 4, func(tx *bolt.Tx) error { return tx.DeleteBucket([]byte("job_runs")) })
	s, err = store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Update(func(tx *store.Tx) error { return tx.PutJobRun("job:a:1", []byte(`{}`)) }); err != nil {
		t.Fatalf("job_runs missing after migration: %v", err)
	}
}

func TestJobRuns(t *testing.T) {
	s, err := store.Open(filepath.Join(t.TempDir(), "s.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	err = s.Update(func(tx *store.Tx) error {
		for _, tid := range []string{"job:b:1", "job:a:2", "job:a:1"} {
			if err := tx.PutJobRun(tid, []byte(`{"tid":"`+tid+`"}`)); err != nil {
				return err
			}
		}
		return tx.DeleteJobRun("job:a:2")
	})
	if err != nil {
		t.Fatal(err)
	}
	s.View(func(tx *store.Tx) error {
		var tids []string
		tx.JobRuns(func(tid string, v []byte) error { tids = append(tids, tid); return nil })
		if len(tids) != 2 || tids[0] != "job:a:1" || tids[1] != "job:b:1" {
			t.Errorf("runs %v", tids)
		}
		if v, err := tx.GetJobRun("job:b:1"); err != nil || string(v) != `{"tid":"job:b:1"}` {
			t.Errorf("get %s %v", v, err)
		}
		if _, err := tx.GetJobRun("job:a:2"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("deleted: %v", err)
		}
		return nil
	})
}

// A job status (KindJob) is coalesced per key and dropped last, with the
// acks, when the outbox is full.
func TestOutboxJobKind(t *testing.T) {
	s, err := store.Open(filepath.Join(t.TempDir(), "s.db"), store.Options{OutboxMaxItems: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	enq := func(it store.OutItem) {
		t.Helper()
		if _, err := s.Enqueue(it); err != nil {
			t.Fatal(err)
		}
	}
	enq(store.OutItem{Kind: store.KindJob, Topic: "j", Payload: []byte("IN_PROGRESS"), Key: "job/a", QoS: 1})
	enq(store.OutItem{Kind: store.KindJob, Topic: "j", Payload: []byte("SUCCEEDED"), Key: "job/a", QoS: 1})
	enq(store.OutItem{Kind: store.KindReport, Topic: "r", Payload: []byte("r1"), Key: "rep/x", QoS: 1})
	enq(store.OutItem{Kind: store.KindAck, Topic: "a", Payload: []byte("a1"), QoS: 1})
	enq(store.OutItem{Kind: store.KindStatus, Topic: "s", Payload: []byte("s1"), Key: "st", QoS: 1}) // full: the report goes
	items, err := s.Peek(10)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, it := range items {
		got = append(got, string(it.Payload))
	}
	if len(got) != 3 || got[0] != "SUCCEEDED" || got[1] != "a1" || got[2] != "s1" {
		t.Fatalf("outbox %v", got)
	}
	if store.KindJob.String() != "job" {
		t.Fatal(store.KindJob.String())
	}
}
