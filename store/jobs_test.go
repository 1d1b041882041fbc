package store_test

import (
	"errors"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/shadowgate/shadowgate/store"
	bolt "go.etcd.io/bbolt"
)

func TestJobsSchemaMigratesFromVersion3(t *testing.T) {
	// A file of schema 3 (before the jobs buckets) opens, gains them and
	// keeps its shadows.
	path := filepath.Join(t.TempDir(), "s.db")
	s, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutShadow(store.ShadowKey{Thing: "a"}, []byte(`{"version":3}`)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	setSchema(t, path, 3, func(tx *bolt.Tx) error { return tx.DeleteBucket([]byte("jobs")) })
	s, err = store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Update(func(tx *store.Tx) error { return tx.PutJob("j", []byte(`{}`)) }); err != nil {
		t.Fatalf("jobs bucket missing after migration: %v", err)
	}
	if doc, err := s.GetShadow(store.ShadowKey{Thing: "a"}); err != nil || string(doc) != `{"version":3}` {
		t.Fatalf("shadow after migration: %s %v", doc, err)
	}
	s.View(func(tx *store.Tx) error {
		if v := tx.SchemaVersion(); v != store.SchemaVersion {
			t.Errorf("schema %d", v)
		}
		return nil
	})
}

func TestJobsIndexes(t *testing.T) {
	s, err := store.Open(filepath.Join(t.TempDir(), "s.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	t0 := time.Unix(1000, 0)
	err = s.Update(func(tx *store.Tx) error {
		for _, k := range []store.JobExecKey{{"t1", "j", 1}, {"t1", "j", 2}, {"t1", "j2", 1}, {"t1x", "j", 9}, {"t2", "j", 1}} {
			if err := tx.PutJobExecution(k, []byte(k.JobID)); err != nil {
				return err
			}
		}
		for i, k := range []store.JobExecKey{{"t1", "j2", 1}, {"t1", "j", 2}} {
			if err := tx.PutPendingJob(uint64(i+1), k); err != nil {
				return err
			}
		}
		for _, d := range []int{30, 10, 20} {
			if err := tx.PutJobTimer(store.JobTimer{Due: t0.Add(time.Duration(d) * time.Second), Kind: 'T', Payload: "p"}); err != nil {
				return err
			}
		}
		return tx.PushJobTargets("j", []string{"a", "b", "c"})
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Update(func(tx *store.Tx) error {
		k, _, err := tx.LatestJobExecution("t1", "j")
		if err != nil || k.Number != 2 {
			t.Errorf("latest t1/j: %+v %v", k, err)
		}
		if _, _, err := tx.LatestJobExecution("t3", "j"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("latest of nothing: %v", err)
		}
		if k, _, err := tx.LatestJobExecution("t2", "j"); err != nil || k.Number != 1 {
			t.Errorf("latest t2/j (last key): %+v %v", k, err)
		}
		var byJob []store.JobExecKey
		tx.JobExecutionsOfJob("j", func(k store.JobExecKey) error { byJob = append(byJob, k); return nil })
		if want := []store.JobExecKey{{"t1", "j", 1}, {"t1", "j", 2}, {"t1x", "j", 9}, {"t2", "j", 1}}; !reflect.DeepEqual(byJob, want) {
			t.Errorf("by job %v", byJob)
		}
		var pend []store.JobExecKey
		tx.PendingJobs("t1", func(_ uint64, k store.JobExecKey) error { pend = append(pend, k); return nil })
		if want := []store.JobExecKey{{"t1", "j2", 1}, {"t1", "j", 2}}; !reflect.DeepEqual(pend, want) {
			t.Errorf("pending %v", pend)
		}
		if err := tx.DeleteJobExecution(store.JobExecKey{"t1", "j", 2}); err != nil {
			t.Error(err)
		}
		pend = nil
		tx.PendingJobs("t1", func(_ uint64, k store.JobExecKey) error { pend = append(pend, k); return nil })
		if len(pend) != 1 {
			t.Errorf("pending after delete %v", pend)
		}
		due, _ := tx.DueJobTimers(t0.Add(20*time.Second), 10)
		if len(due) != 2 || !due[0].Due.Equal(t0.Add(10*time.Second)) {
			t.Errorf("due %v", due)
		}
		if next, ok := tx.NextJobTimer(); !ok || !next.Equal(t0.Add(10*time.Second)) {
			t.Errorf("next %v", next)
		}
		got, _ := tx.PopJobTargets("j", 2)
		rest, _ := tx.PopJobTargets("j", 5)
		if !reflect.DeepEqual(got, []string{"a", "b"}) || !reflect.DeepEqual(rest, []string{"c"}) {
			t.Errorf("rollout %v %v", got, rest)
		}
		return nil
	})
}
