package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"syscall"
)

// The write-ahead log makes a commit durable with one small sequential
// write and one fdatasync, instead of a bbolt commit's rewrite of every
// page on the path from the root to each changed key (8 to 40 KB, two
// flushes). bbolt keeps one write transaction open, which every commit
// changes; its changes are appended to the log as key-value operations
// (put, delete, set sequence) and flushed, and the transaction itself is
// committed to the bbolt file only now and then (a checkpoint: when the log
// is full, every checkpointInterval, and at Close), which writes each page
// changed since the last checkpoint once, however often it changed. At open
// the operations the file lacks are applied again.
//
// The log is a file of fixed size beside the store, written with zeros
// when it is made: rewriting blocks a file already has changes no file
// system metadata, so the flush writes just the block or two the record
// touched. A checkpoint starts the log over at its beginning; a record's
// sequence number, one more than its predecessor's and recorded in the
// bbolt file at each checkpoint, tells the records of this round from an
// older round's still in the file, and a checksum tells a record from what
// a power cut left half written.

const (
	walSize       = 1 << 20 // bytes; what it holds bounds replay and the open transaction's memory
	walHeaderSize = 16      // length (4), CRC-32C of sequence and operations (4), sequence (8)
	walBlock      = 4096    // the unit a flush writes
)

var (
	keyWALSeq = []byte("wal/seq") // meta: the last log record the bbolt file holds
	keyWALID  = []byte("wal/id")  // meta: the store file's random identity, in every record's checksum
	crcTable  = crc32.MakeTable(crc32.Castagnoli)
)

// Log operations.
const (
	opPut    = 1
	opDelete = 2
	opSeq    = 3 // a bucket's sequence set to a value
)

// wal is the open log file.
type wal struct {
	f    *os.File
	path string
	id   uint32 // the CRC of the store file's identity: the checksum's start
	off  int64  // where the next record goes
	seq  uint64 // the last record's sequence number
	buf  []byte // the record being written (header, then operations)
}

// walPath is the log's file beside the store at path.
func walPath(path string) string { return path + "-wal" }

// openWAL opens the log beside the store, making it (full size, zeros,
// flushed with its directory entry) when it is missing or short.
func openWAL(path string, id []byte) (*wal, error) {
	p := walPath(path)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open write-ahead log: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open write-ahead log: %w", err)
	}
	if fi.Size() < walSize {
		// Block by block: one large write would make the page cache hold
		// the file in one large folio, and the kernel would then charge
		// every block a commit dirties as the whole folio written (only
		// the block reaches the disk, but /proc/PID/io says otherwise).
		zeros := make([]byte, walBlock)
		for off := fi.Size(); off < walSize; off += int64(len(zeros)) {
			if _, err := f.WriteAt(zeros[:min(int64(len(zeros)), walSize-off)], off); err != nil {
				f.Close()
				return nil, fmt.Errorf("make write-ahead log %s: %w", p, err)
			}
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return nil, fmt.Errorf("make write-ahead log %s: %w", p, err)
		}
		if err := syncDir(filepath.Dir(p)); err != nil {
			f.Close()
			return nil, fmt.Errorf("make write-ahead log %s: %w", p, err)
		}
	}
	return &wal{f: f, path: p, id: crc32.Checksum(id, crcTable)}, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// records reads the log's records after sequence number applied, in
// order, from the log's first end bytes, and leaves the log positioned
// after them. It stops at the first
// record that is not the next one: the end of this round (an older round's
// record or zeros follow), a record a power cut left half written, or a
// log of another store file (moved aside, its log left behind), whose
// checksums start from another identity.
func (w *wal) records(applied uint64, end int64) ([][]byte, error) {
	data := make([]byte, end)
	if _, err := w.f.ReadAt(data, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read write-ahead log %s: %w", w.path, err)
	}
	var out [][]byte
	off, want := int64(0), applied+1
	for {
		ops, n, ok := parseRecord(data[off:], want, w.id)
		if !ok {
			break
		}
		out = append(out, ops)
		off += n
		want++
	}
	w.off, w.seq = off, want-1
	return out, nil
}

// parseRecord reads the record at the start of b if it is whole and has
// sequence number want: its operations and its length.
func parseRecord(b []byte, want uint64, id uint32) (ops []byte, n int64, ok bool) {
	if len(b) < walHeaderSize {
		return nil, 0, false
	}
	size := int64(binary.BigEndian.Uint32(b))
	sum := binary.BigEndian.Uint32(b[4:])
	seq := binary.BigEndian.Uint64(b[8:])
	if seq != want || size > int64(len(b)-walHeaderSize) {
		return nil, 0, false
	}
	body := b[8 : walHeaderSize+size]
	if crc32.Update(id, crcTable, body) != sum {
		return nil, 0, false
	}
	return b[walHeaderSize : walHeaderSize+size], walHeaderSize + size, true
}

var zeroHeader [walHeaderSize]byte // a record's header before append fills it

// record encodes a record of ops in the log's buffer (valid until the
// next record).
func (w *wal) record(ops []walOp) []byte {
	w.buf = encodeOps(append(w.buf[:0], zeroHeader[:]...), ops)
	return w.buf
}

// fits says whether rec fits after the records already in the log.
func (w *wal) fits(rec []byte) bool { return w.off+int64(len(rec)) <= walSize }

// append completes rec's header, writes it and flushes it; it returns the
// bytes the flush wrote (whole blocks). The caller has checked that it
// fits.
func (w *wal) append(rec []byte) (int64, error) {
	binary.BigEndian.PutUint32(rec, uint32(len(rec)-walHeaderSize))
	binary.BigEndian.PutUint64(rec[8:], w.seq+1)
	binary.BigEndian.PutUint32(rec[4:], crc32.Update(w.id, crcTable, rec[8:]))
	if _, err := w.f.WriteAt(rec, w.off); err != nil {
		return 0, w.unwrite(fmt.Errorf("write-ahead log %s: %w", w.path, err))
	}
	if err := fdatasync(w.f); err != nil {
		return 0, w.unwrite(fmt.Errorf("write-ahead log %s: flush: %w", w.path, err))
	}
	first, end := w.off/walBlock, (w.off+int64(len(rec))+walBlock-1)/walBlock
	w.off += int64(len(rec))
	w.seq++
	return (end - first) * walBlock, nil
}

// unwrite takes back a record whose append failed with err: its writer is
// told it failed, so no later open may replay it. The page cache still
// holds what the disk did not take, and a restart without a power cut
// reads it from there; the record's header is overwritten with zeros (the
// next record goes in its place), so that the log ends before it.
func (w *wal) unwrite(err error) error {
	if _, zerr := w.f.WriteAt(zeroHeader[:], w.off); zerr != nil {
		return errors.Join(err, fmt.Errorf("write-ahead log %s: take back the failed record: %w", w.path, zerr))
	}
	return err
}

// restart starts a new round at the log's beginning, after a checkpoint
// has made every record so far durable in the bbolt file.
func (w *wal) restart() { w.off = 0 }

func (w *wal) close() error { return w.f.Close() }

func fdatasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

// appendOp adds one operation to a record: op, bucket, key and, for a put,
// the value or, for a sequence, the number; each length-prefixed.
func appendOp(rec []byte, op byte, bucket, key, value []byte, seq uint64) []byte {
	rec = append(rec, op)
	rec = binary.AppendUvarint(rec, uint64(len(bucket)))
	rec = append(rec, bucket...)
	switch op {
	case opPut:
		rec = binary.AppendUvarint(rec, uint64(len(key)))
		rec = append(rec, key...)
		rec = binary.AppendUvarint(rec, uint64(len(value)))
		rec = append(rec, value...)
	case opDelete:
		rec = binary.AppendUvarint(rec, uint64(len(key)))
		rec = append(rec, key...)
	case opSeq:
		rec = binary.AppendUvarint(rec, seq)
	}
	return rec
}

// walOp is one decoded operation; its slices point into the record.
type walOp struct {
	op               byte
	bucket, key, val []byte
	seq              uint64
}

// decodeOps calls fn for each operation of a record.
func decodeOps(rec []byte, fn func(o walOp) error) error {
	field := func() ([]byte, bool) {
		n, k := binary.Uvarint(rec)
		if k <= 0 || n > uint64(len(rec)-k) {
			return nil, false
		}
		v := rec[k : k+int(n)]
		rec = rec[k+int(n):]
		return v, true
	}
	for len(rec) > 0 {
		o := walOp{op: rec[0]}
		rec = rec[1:]
		var ok bool
		if o.bucket, ok = field(); !ok {
			return errors.New("write-ahead log record is malformed")
		}
		switch o.op {
		case opPut:
			if o.key, ok = field(); ok {
				o.val, ok = field()
			}
		case opDelete:
			o.key, ok = field()
		case opSeq:
			var k int
			o.seq, k = binary.Uvarint(rec)
			ok = k > 0
			if ok {
				rec = rec[k:]
			}
		}
		if !ok {
			return errors.New("write-ahead log record is malformed")
		}
		if err := fn(o); err != nil {
			return err
		}
	}
	return nil
}
