package store_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/shadowgate/shadowgate/store"
)

// A cancel of an unknown tid is a finished record: it uses the quota's
// headroom, counts as no refusal, refuses the request arriving later as a
// duplicate, and expires with the finished commands.
func TestPutCanceled(t *testing.T) {
	s := open(t, store.Options{InboxMaxItems: 4, InboxMaxBytes: 64 << 10})
	now := time.Now()
	for i := range 4 {
		if err := putCmd(s, &store.Command{TID: fmt.Sprint("q", i), Cmd: "GO", Received: now}); err != nil {
			t.Fatal(err)
		}
	}
	cancel := func(tid string) error {
		return s.Update(func(tx *store.Tx) error {
			return tx.PutCanceled(&store.Command{TID: tid, Status: store.StatusFailure, LastAck: json.RawMessage(`{"reason":"canceled"}`), Finished: now})
		})
	}
	if err := cancel("c1"); err != nil {
		t.Fatalf("a cancel within the headroom: %v", err)
	}
	if err := cancel("c2"); !errors.Is(err, store.ErrInboxFull) {
		t.Fatalf("a cancel past the headroom: %v", err)
	}
	if err := cancel("q0"); !errors.Is(err, store.ErrDuplicateTID) {
		t.Fatalf("a cancel of a known tid: %v", err)
	}
	if err := s.Update(func(tx *store.Tx) error {
		return tx.PutCanceled(&store.Command{TID: "c3", Status: store.StatusRunning})
	}); err == nil {
		t.Fatal("an unfinished cancel record was stored")
	}
	if st := s.InboxStats(); st.Items != 5 || st.Refused != 0 {
		t.Fatalf("stats %+v", st)
	}
	var old *store.Command
	s.Update(func(tx *store.Tx) (err error) {
		old, err = tx.PutCommand(&store.Command{TID: "c1", Cmd: "GO", Received: now})
		if !errors.Is(err, store.ErrDuplicateTID) || string(old.LastAck) != `{"reason":"canceled"}` {
			t.Errorf("the request after its cancel: %v, %+v", err, old)
		}
		return nil
	})
	var unfinished []*store.Command
	s.View(func(tx *store.Tx) (err error) { unfinished, err = tx.Unfinished(); return err })
	for _, c := range unfinished {
		if c.TID == "c1" {
			t.Fatal("a cancel record is unfinished")
		}
	}
	var n int
	if err := s.Update(func(tx *store.Tx) (err error) { n, err = tx.ExpireCommands(now.Add(time.Second)); return err }); err != nil || n != 1 {
		t.Fatalf("expire: %d, %v", n, err)
	}
	if err := cancel("c2"); err != nil {
		t.Fatalf("room again after the expiry: %v", err)
	}
}
