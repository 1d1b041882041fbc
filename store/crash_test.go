package store_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/shadowgate/shadowgate/store"
)

// TestHelperProcess is not a test: it is the child process of the crash,
// power-cut and lock tests, selected by STORE_HELPER.
func TestHelperProcess(t *testing.T) {
	mode, path := os.Getenv("STORE_HELPER"), os.Getenv("STORE_PATH")
	if mode == "" {
		t.Skip("helper process only")
	}
	s, err := store.Open(path, store.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper open:", err)
		os.Exit(3)
	}
	switch mode {
	case "hold":
		fmt.Println("held")
		time.Sleep(time.Hour)
	case "crash":
		crashWorkload(s)
	case "powercut":
		powercutWorkload(s, filepath.Join(filepath.Dir(path), "control"))
	}
	os.Exit(0)
}

// crashWorkload enqueues an ack and persists a command in one transaction,
// or removes the oldest item, forever. After each commit it prints what it
// committed: "E seq n" or "R seq". Writes to the pipe are unbuffered.
func crashWorkload(s *store.Store) {
	r := rand.New(rand.NewPCG(uint64(os.Getpid()), uint64(time.Now().UnixNano())))
	n := 0
	s.View(func(tx *store.Tx) error {
		cs, _ := tx.Commands(1)
		if len(cs) > 0 {
			n, _ = strconv.Atoi(strings.TrimPrefix(cs[0].TID, "c"))
		}
		return nil
	})
	for {
		if r.IntN(10) < 7 {
			n++
			var seq uint64
			err := s.Update(func(tx *store.Tx) error {
				var err error
				seq, err = tx.Enqueue(store.OutItem{Kind: store.KindAck, Topic: "commands/gw/ack", Payload: []byte(strconv.Itoa(n)), QoS: 1})
				if err != nil {
					return err
				}
				_, err = tx.PutCommand(&store.Command{TID: fmt.Sprint("c", n), Cmd: "GO", Request: json.RawMessage(`{}`)})
				return err
			})
			if err != nil {
				fmt.Fprintln(os.Stderr, "helper enqueue:", err)
				os.Exit(4)
			}
			os.Stdout.WriteString(fmt.Sprintf("E %d %d\n", seq, n))
		} else {
			items, _ := s.Peek(1)
			if len(items) == 0 {
				continue
			}
			if err := s.Remove(items[0].Seq); err != nil {
				fmt.Fprintln(os.Stderr, "helper remove:", err)
				os.Exit(5)
			}
			os.Stdout.WriteString(fmt.Sprintf("R %d\n", items[0].Seq))
		}
	}
}

// TestCrashKill9 kills a writing child at random moments and checks that
// everything it reported as committed is there, in order, exactly once.
func TestCrashKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test")
	}
	path := filepath.Join(t.TempDir(), "state.db")
	committed := map[uint64]string{} // seq → payload, what must be queued
	commands := map[string]bool{}
	r := rand.New(rand.NewPCG(42, 42))
	const rounds = 24
	for round := 0; round < rounds; round++ {
		c := helper(t, "crash", path)
		lines := c.lines()
		time.Sleep(time.Duration(30+r.IntN(250)) * time.Millisecond)
		c.cmd.Process.Signal(syscall.SIGKILL)
		c.cmd.Wait()
		maxPrinted := uint64(0)
		for l := range lines {
			f := strings.Fields(l)
			seq, _ := strconv.ParseUint(f[1], 10, 64)
			switch f[0] {
			case "E":
				committed[seq] = f[2]
				commands["c"+f[2]] = true
				maxPrinted = max(maxPrinted, seq)
			case "R":
				delete(committed, seq)
			}
		}
		s, err := store.Open(path, store.Options{})
		if err != nil {
			t.Fatalf("round %d: reopen after kill -9: %v", round, err)
		}
		items, err := s.Peek(1 << 20)
		if err != nil {
			t.Fatal(err)
		}
		got := map[uint64]string{}
		seenPayload := map[string]bool{}
		for i, it := range items {
			if i > 0 && it.Seq <= items[i-1].Seq {
				t.Fatalf("round %d: out of order: %d after %d", round, it.Seq, items[i-1].Seq)
			}
			if seenPayload[string(it.Payload)] {
				t.Fatalf("round %d: payload %s twice", round, it.Payload)
			}
			seenPayload[string(it.Payload)] = true
			got[it.Seq] = string(it.Payload)
		}
		var missing, extra []uint64
		for seq, p := range committed {
			if got[seq] != p {
				missing = append(missing, seq)
			}
		}
		for seq := range got {
			if _, ok := committed[seq]; !ok {
				extra = append(extra, seq)
			}
		}
		sort.Slice(missing, func(i, j int) bool { return missing[i] < missing[j] })
		// Allowed: one enqueue committed but killed before it printed (newest),
		// one remove committed but killed before it printed (the oldest).
		if len(extra) > 1 || len(extra) == 1 && extra[0] <= maxPrinted {
			t.Fatalf("round %d: unexpected items %v (max printed %d)", round, extra, maxPrinted)
		}
		if len(missing) > 1 || len(missing) == 1 && len(items) > 0 && missing[0] > items[0].Seq {
			t.Fatalf("round %d: committed items lost: %v", round, missing)
		}
		err = s.View(func(tx *store.Tx) error {
			for tid := range commands {
				if _, err := tx.GetCommand(tid); err != nil {
					return fmt.Errorf("command %s reported committed: %w", tid, err)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		s.Close()
		committed = got
	}
	t.Logf("%d rounds, %d commands committed, %d items queued at the end", rounds, len(commands), len(committed))
}

func setSchema(t *testing.T, path string, v uint64, edits ...func(tx *bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		for _, edit := range edits {
			if err := edit(tx); err != nil {
				return err
			}
		}
		b := make([]byte, 8)
		for i := 7; i >= 0; i-- {
			b[i] = byte(v)
			v >>= 8
		}
		return tx.Bucket([]byte("meta")).Put([]byte("schema"), b)
	})
	if err != nil {
		t.Fatal(err)
	}
}
