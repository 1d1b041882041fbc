package store_test

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/shadowgate/shadowgate/store"
)

var ackPayload = []byte(`{"tid":"0123456789abcdef","status":"SUCCESS","ts":"2026-11-23T18:00:00Z"}`)

// BenchmarkOutboxEnqueueRemove is one durable enqueue and one durable
// remove (two fsynced transactions), the outbox's cost per message.
func BenchmarkOutboxEnqueueRemove(b *testing.B) {
	s := open(b, store.Options{})
	w0 := writeBytes()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		seq, err := s.Enqueue(store.OutItem{Kind: store.KindAck, Topic: "commands/gw-0001/ack", Payload: ackPayload, QoS: 1})
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Remove(seq); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if w := writeBytes(); w0 >= 0 && w >= w0 {
		b.ReportMetric(float64(w-w0)/float64(b.N), "disk-B/op")
	}
}

// BenchmarkRawBoltPutDelete is the baseline: the same two fsynced
// transactions as plain bbolt puts and deletes on one bucket.
func BenchmarkRawBoltPutDelete(b *testing.B) {
	db, err := bolt.Open(filepath.Join(b.TempDir(), "raw.db"), 0o600, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("b")); return err })
	w0 := writeBytes()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		key := []byte(strconv.Itoa(i))
		if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("b")).Put(key, ackPayload) }); err != nil {
			b.Fatal(err)
		}
		if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("b")).Delete(key) }); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if w := writeBytes(); w0 >= 0 && w >= w0 {
		b.ReportMetric(float64(w-w0)/float64(b.N), "disk-B/op")
	}
}

// BenchmarkOutboxEnqueueConcurrent8 enqueues from 8 goroutines.
func BenchmarkOutboxEnqueueConcurrent8(b *testing.B) {
	s := open(b, store.Options{OutboxMaxItems: 1 << 30, OutboxMaxBytes: 1 << 40})
	b.ResetTimer()
	var wg sync.WaitGroup
	per := b.N/8 + 1
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				if _, err := s.Enqueue(store.OutItem{Kind: store.KindAck, Topic: "a", Payload: ackPayload}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// BenchmarkOutboxReportCoalesced enqueues reported state under one key (the
// coalescing path a busy actuator takes while offline).
func BenchmarkOutboxReportCoalesced(b *testing.B) {
	s := open(b, store.Options{})
	payload := []byte(`{"state":{"reported":{"porch_light":{"on":true,"brightness":60}}}}`)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.Enqueue(store.OutItem{Kind: store.KindReport, Topic: "$aws/things/gw/shadow/update", Key: "gw//porch_light", Payload: payload}); err != nil {
			b.Fatal(err)
		}
	}
}

// writeBytes is this process's write_bytes from /proc/self/io (bytes that
// reached the block layer), or -1 where it cannot be read.
func writeBytes() int64 {
	f, err := os.Open("/proc/self/io")
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "write_bytes: "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return -1
}
