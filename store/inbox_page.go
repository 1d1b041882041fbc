package store

import (
	"bytes"
	"container/heap"
	"encoding/json"
	"fmt"
	"sort"
)

// RecentCommands returns up to n commands, newest (highest seq) first, as
// Commands does, without decoding the whole inbox: each stored command is
// read only as far as its seq (the second field), the n newest are kept in
// a heap, and only those are decoded. Memory is O(n), not O(inbox), and a
// large stored request is not read past its first bytes.
func (t *Tx) RecentCommands(n int) ([]*Command, error) {
	if n <= 0 {
		return nil, nil
	}
	b := t.bucket(bucketInbox)
	h := &seqHeap{}
	err := b.ForEach(func(k, v []byte) error {
		seq, err := storedSeq(v)
		if err != nil {
			return fmt.Errorf("stored command %q: %w", k, err)
		}
		if h.Len() < n {
			heap.Push(h, seqKey{seq, string(k)})
		} else if seq > (*h)[0].seq {
			(*h)[0] = seqKey{seq, string(k)}
			heap.Fix(h, 0)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	keys := []seqKey(*h)
	sort.Slice(keys, func(i, j int) bool { return keys[i].seq > keys[j].seq })
	out := make([]*Command, 0, len(keys))
	for _, sk := range keys {
		c, err := decodeCommand(b.Get([]byte(sk.tid)))
		if err != nil {
			return out, err
		}
		out = append(out, c)
	}
	return out, nil
}

// storedSeq reads the "seq" member of a stored command's JSON, tokenising
// only up to it (Command marshals tid, then seq).
func storedSeq(v []byte) (uint64, error) {
	dec := json.NewDecoder(bytes.NewReader(v))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return 0, fmt.Errorf("stored command is malformed: not an object")
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return 0, fmt.Errorf("stored command is malformed: %w", err)
		}
		if tok != "seq" {
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return 0, fmt.Errorf("stored command is malformed: %w", err)
			}
			continue
		}
		var seq uint64
		if err := dec.Decode(&seq); err != nil {
			return 0, fmt.Errorf("stored command is malformed: seq: %w", err)
		}
		return seq, nil
	}
	return 0, fmt.Errorf("stored command is malformed: no seq")
}

type seqKey struct {
	seq uint64
	tid string
}

// seqHeap is a min-heap by seq: its root is the oldest of the kept ones.
type seqHeap []seqKey

func (h seqHeap) Len() int           { return len(h) }
func (h seqHeap) Less(i, j int) bool { return h[i].seq < h[j].seq }
func (h seqHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *seqHeap) Push(x any)        { *h = append(*h, x.(seqKey)) }
func (h *seqHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
