package store_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/shadowgate/shadowgate/store"
)

// A damaged page anywhere in the file (an SD card's typical failure) never
// crashes Open: the file opens, or it is refused with ErrCorrupt. A file
// that opens can be read and written without crashing either.
func TestRandomDamageNeverCrashes(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.db")
	s, err := store.Open(good, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 400; i++ {
		s.Update(func(tx *store.Tx) error {
			tx.PutShadow(store.ShadowKey{Thing: "gw", Name: fmt.Sprint("s", i%20)}, []byte(fmt.Sprintf(`{"state":{"reported":{"i":%d}}}`, i)))
			tx.RecordChange(&store.Change{Actuator: fmt.Sprint("a", i%7), Before: map[string]any{"on": i%2 == 0}, After: map[string]any{"on": i%2 != 0}, Source: store.SourceDelta, Time: time.Now()})
			if i%3 == 0 {
				tx.Enqueue(store.OutItem{Kind: store.KindAck, Topic: "commands/gw/ack", Payload: []byte(fmt.Sprintf(`{"tid":"t%d"}`, i)), QoS: 1})
			}
			return nil
		})
	}
	s.Close()
	content, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	const page = 4096
	pages := len(content) / page
	// STORE_DAMAGE_SEED and STORE_DAMAGE_N explore further than CI does.
	seed, _ := strconv.ParseUint(os.Getenv("STORE_DAMAGE_SEED"), 10, 64)
	rng := rand.New(rand.NewPCG(seed, 2))
	iterations := 300
	if n, err := strconv.Atoi(os.Getenv("STORE_DAMAGE_N")); err == nil {
		iterations = n
	}
	var opened, refused int
	for i := 0; i < iterations; i++ {
		b := append([]byte(nil), content...)
		p := rng.IntN(pages)
		switch i % 3 {
		case 0: // a page of garbage
			for j := p * page; j < (p+1)*page; j++ {
				b[j] = byte(rng.Uint32())
			}
		case 1: // a zeroed page
			clear(b[p*page : (p+1)*page])
		default: // a few flipped bytes in the page header and body
			for range 4 {
				b[p*page+rng.IntN(64)] ^= byte(1 + rng.IntN(255))
			}
		}
		path := filepath.Join(dir, fmt.Sprintf("damaged-%d.db", i))
		os.WriteFile(path, b, 0o600)
		s, err := store.Open(path, store.Options{})
		if err != nil {
			if !errors.Is(err, store.ErrCorrupt) {
				t.Fatalf("iteration %d, page %d damaged (case %d): want ErrCorrupt or success, got %v", i, p, i%3, err)
			}
			refused++
			os.Remove(path)
			continue
		}
		opened++
		s.View(func(tx *store.Tx) error {
			tx.Shadows(func(store.ShadowKey, []byte) error { return nil })
			tx.History("a1", 100)
			tx.Peek(1000)
			return nil
		})
		s.Update(func(tx *store.Tx) error {
			_, err := tx.RecordChange(&store.Change{Actuator: "a1", After: map[string]any{"on": true}})
			return err
		})
		s.Close()
		os.Remove(path)
	}
	t.Logf("%d pages; %d damaged files opened, %d refused", pages, opened, refused)
}
