package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
)

// verify checks the structure of an open bbolt file by reading it with plain file
// I/O, before bbolt walks it through its memory map: every page a tree
// refers to lies inside the file, is what its parent says it is, and is
// referred to once; every element's key and value lie inside their page;
// the free list names only pages inside the file.
//
// bbolt trusts what it reads. On a damaged page it can fault reading past
// the end of its mapping, which kills the process wherever it happens (also
// in a goroutine of its own, where nothing can recover), or loop forever on
// a page that points back at itself. Either turns one bad SD-card sector
// into a crash loop. After verify, bbolt's own check (key order, free
// pages) only reads memory inside the file.
//
// The layout is bbolt's on-disk format (go.etcd.io/bbolt/internal/common),
// version 2, in the machine's byte order like bbolt itself.
func verify(f *os.File) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	m, err := readMeta(f)
	if err != nil {
		return err
	}
	if m.highWater*m.pageSize > uint64(fi.Size()) {
		return fmt.Errorf("the file ends at %d bytes but its pages reach %d (truncated)", fi.Size(), m.highWater*m.pageSize)
	}
	v := &verifier{f: f, meta: m, seen: map[uint64]bool{}}
	if m.freelist != noFreelist {
		if err := v.freelist(m.freelist); err != nil {
			return err
		}
	}
	return v.tree(m.root, 0)
}

const (
	pageHeaderSize = 16
	elementSize    = 16
	branchFlag     = 0x01
	leafFlag       = 0x02
	metaFlag       = 0x04
	freelistFlag   = 0x10
	bucketLeafFlag = 0x01
	boltMagic      = 0xED0CDAED
	boltVersion    = 2
	noFreelist     = ^uint64(0)
	maxTreeDepth   = 32 // a B+tree of 4 KB pages this deep would hold more than any disk
)

var ne = binary.NativeEndian

type boltMeta struct {
	pageSize, root, freelist, highWater, txid uint64
}

// readMeta returns the meta page bbolt uses: the valid one of the two with
// the higher transaction id.
func readMeta(f *os.File) (boltMeta, error) {
	var best boltMeta
	var found bool
	var firstErr error
	for i := range 2 {
		// Page 0 is at offset 0; page 1 at the page size, unknown until a
		// meta is read, so page 1 is looked for at each size bbolt allows.
		offsets := []int64{0}
		if i == 1 {
			offsets = nil
			if found {
				offsets = []int64{int64(best.pageSize)}
			} else {
				for ps := int64(1024); ps <= 65536; ps *= 2 {
					offsets = append(offsets, ps)
				}
			}
		}
		for _, off := range offsets {
			b := make([]byte, pageHeaderSize+64)
			if _, err := f.ReadAt(b, off); err != nil {
				firstErr = errors.Join(firstErr, fmt.Errorf("meta page %d: %w", i, err))
				continue
			}
			m, err := parseMeta(b)
			if err != nil {
				firstErr = errors.Join(firstErr, fmt.Errorf("meta page %d: %w", i, err))
				continue
			}
			if i == 1 && uint64(off) != m.pageSize {
				continue
			}
			if !found || m.txid > best.txid {
				best, found = m, true
			}
			break
		}
	}
	if !found {
		return best, firstErr
	}
	return best, nil
}

func parseMeta(b []byte) (boltMeta, error) {
	if ne.Uint16(b[8:]) != metaFlag {
		return boltMeta{}, errors.New("not a meta page")
	}
	d := b[pageHeaderSize:]
	if ne.Uint32(d[0:]) != boltMagic || ne.Uint32(d[4:]) != boltVersion {
		return boltMeta{}, errors.New("not a bbolt meta page")
	}
	h := fnv.New64a()
	h.Write(d[:56])
	if h.Sum64() != ne.Uint64(d[56:]) {
		return boltMeta{}, errors.New("meta page checksum mismatch")
	}
	m := boltMeta{pageSize: uint64(ne.Uint32(d[8:])), root: ne.Uint64(d[16:]), freelist: ne.Uint64(d[32:]), highWater: ne.Uint64(d[40:]), txid: ne.Uint64(d[48:])}
	if m.pageSize < 1024 || m.pageSize > 65536 || m.pageSize&(m.pageSize-1) != 0 {
		return boltMeta{}, fmt.Errorf("page size %d", m.pageSize)
	}
	return m, nil
}

type verifier struct {
	f    io.ReaderAt
	meta boltMeta
	seen map[uint64]bool
}

// page reads page id with its overflow pages, checking that it lies in the
// file and has not been seen before.
func (v *verifier) page(id uint64, parent string) ([]byte, error) {
	if id < 2 || id >= v.meta.highWater {
		return nil, fmt.Errorf("%s refers to page %d, outside the file's %d pages", parent, id, v.meta.highWater)
	}
	ps := v.meta.pageSize
	head := make([]byte, pageHeaderSize)
	if _, err := v.f.ReadAt(head, int64(id*ps)); err != nil {
		return nil, fmt.Errorf("page %d: %w", id, err)
	}
	if got := ne.Uint64(head); got != id {
		return nil, fmt.Errorf("page %d calls itself page %d", id, got)
	}
	overflow := uint64(ne.Uint32(head[12:]))
	if id+overflow >= v.meta.highWater {
		return nil, fmt.Errorf("page %d runs %d pages past the end of the file", id, overflow)
	}
	for p := id; p <= id+overflow; p++ {
		if v.seen[p] {
			return nil, fmt.Errorf("%s refers to page %d, which is already in use", parent, p)
		}
		v.seen[p] = true
	}
	b := make([]byte, (overflow+1)*ps)
	if _, err := v.f.ReadAt(b, int64(id*ps)); err != nil {
		return nil, fmt.Errorf("page %d: %w", id, err)
	}
	return b, nil
}

func (v *verifier) freelist(id uint64) error {
	b, err := v.page(id, "the meta page's free list")
	if err != nil {
		return err
	}
	if flags := ne.Uint16(b[8:]); flags != freelistFlag {
		return fmt.Errorf("free list page %d has flags %#x", id, flags)
	}
	start, count := uint64(pageHeaderSize), uint64(ne.Uint16(b[10:]))
	if count == 0xFFFF {
		count = ne.Uint64(b[pageHeaderSize:])
		start += 8
	}
	if count > (uint64(len(b))-start)/8 {
		return fmt.Errorf("free list page %d claims %d ids, more than it holds", id, count)
	}
	for i := range count {
		if p := ne.Uint64(b[start+8*i:]); p < 2 || p >= v.meta.highWater {
			return fmt.Errorf("free list page %d names page %d, outside the file", id, p)
		}
	}
	return nil
}

// tree checks the bucket tree rooted at page id.
func (v *verifier) tree(id uint64, depth int) error {
	_, err := v.subtree(id, depth, nil, nil)
	return err
}

// subtree checks the tree rooted at page id, whose keys must lie in
// [lo, hi) (nil: unbounded), and returns its largest key. bbolt checks the
// same order when it rebuilds its free list at open (NoFreelistSync), and
// there it panics on the first key out of order while its checker goes on
// reading in a goroutine of its own: the file must be refused here first.
func (v *verifier) subtree(id uint64, depth int, lo, hi []byte) ([]byte, error) {
	if depth > maxTreeDepth {
		return nil, fmt.Errorf("page %d is more than %d levels deep", id, maxTreeDepth)
	}
	b, err := v.page(id, "a tree")
	if err != nil {
		return nil, err
	}
	return v.nodes(b, id, depth, lo, hi)
}

// inOrder checks the key of element i of page id: after prev (strictly,
// except for the first element, which may equal its lower bound) and
// before hi.
func inOrder(id uint64, i int, key, prev, hi []byte) error {
	if prev != nil {
		if c := bytes.Compare(prev, key); c > 0 || (c == 0 && i > 0) {
			return fmt.Errorf("page %d element %d: key out of order", id, i)
		}
	}
	if hi != nil && bytes.Compare(key, hi) >= 0 {
		return fmt.Errorf("page %d element %d: key beyond its parent's range", id, i)
	}
	return nil
}

// nodes checks the elements of one page (b is the page with its overflow,
// or an inline bucket's page inside a value), whose keys must lie in
// [lo, hi), and returns the largest key under it.
func (v *verifier) nodes(b []byte, id uint64, depth int, lo, hi []byte) ([]byte, error) {
	flags, count := ne.Uint16(b[8:]), int(ne.Uint16(b[10:]))
	if flags != branchFlag && flags != leafFlag {
		return nil, fmt.Errorf("page %d has flags %#x where a tree page belongs", id, flags)
	}
	if pageHeaderSize+count*elementSize > len(b) {
		return nil, fmt.Errorf("page %d claims %d elements, more than it holds", id, count)
	}
	prev, last := lo, []byte(nil)
	for i := range count {
		off := pageHeaderSize + i*elementSize
		e := b[off : off+elementSize]
		if flags == branchFlag {
			pos, ksize := uint64(ne.Uint32(e[0:])), uint64(ne.Uint32(e[4:]))
			if uint64(off)+pos+ksize > uint64(len(b)) {
				return nil, fmt.Errorf("page %d element %d: key outside the page", id, i)
			}
			key := b[uint64(off)+pos : uint64(off)+pos+ksize]
			if err := inOrder(id, i, key, prev, hi); err != nil {
				return nil, err
			}
			next := hi
			if i+1 < count {
				no := pageHeaderSize + (i+1)*elementSize
				ne2 := b[no : no+elementSize]
				npos, nsize := uint64(ne.Uint32(ne2[0:])), uint64(ne.Uint32(ne2[4:]))
				if uint64(no)+npos+nsize > uint64(len(b)) {
					return nil, fmt.Errorf("page %d element %d: key outside the page", id, i+1)
				}
				next = b[uint64(no)+npos : uint64(no)+npos+nsize]
			}
			max, err := v.subtree(ne.Uint64(e[8:]), depth+1, key, next)
			if err != nil {
				return nil, err
			}
			prev, last = max, max
			continue
		}
		eflags, pos, ksize, vsize := ne.Uint32(e[0:]), uint64(ne.Uint32(e[4:])), uint64(ne.Uint32(e[8:])), uint64(ne.Uint32(e[12:]))
		end := uint64(off) + pos + ksize + vsize
		if end > uint64(len(b)) {
			return nil, fmt.Errorf("page %d element %d: key or value outside the page", id, i)
		}
		key := b[uint64(off)+pos : uint64(off)+pos+ksize]
		if err := inOrder(id, i, key, prev, hi); err != nil {
			return nil, err
		}
		prev, last = key, key
		if eflags&bucketLeafFlag == 0 {
			continue
		}
		val := b[uint64(off)+pos+ksize : end]
		if len(val) < 16 {
			return nil, fmt.Errorf("page %d element %d: bucket header of %d bytes", id, i, len(val))
		}
		if root := ne.Uint64(val); root != 0 {
			if err := v.tree(root, depth+1); err != nil {
				return nil, err
			}
			continue
		}
		inline := val[16:]
		if len(inline) < pageHeaderSize {
			return nil, fmt.Errorf("page %d element %d: inline bucket of %d bytes", id, i, len(inline))
		}
		if depth+1 > maxTreeDepth {
			return nil, fmt.Errorf("page %d: buckets nested more than %d deep", id, maxTreeDepth)
		}
		if ne.Uint16(inline[8:]) != leafFlag {
			return nil, fmt.Errorf("page %d element %d: inline bucket is not a leaf", id, i)
		}
		if _, err := v.nodes(inline, id, depth+1, nil, nil); err != nil {
			return nil, err
		}
	}
	return last, nil
}
