// Package store is the gateway's memory across power cuts: one bbolt file
// holding shadow replicas, the outbox of everything waiting for the uplink,
// the command inbox, actuator history and the group journal.
//
// Every typed operation is a method of Tx, so a caller can make several
// changes durable in one fsync (persist a command and queue its ack);
// Store's methods of the same names run one in a transaction of its own.
package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Sentinel errors callers branch on.
var (
	ErrNotFound     = errors.New("not found")
	ErrLocked       = errors.New("store is locked by another process")
	ErrCorrupt      = errors.New("store file is damaged")
	ErrNewerSchema  = errors.New("store was written by a newer shadowgate")
	ErrClosed       = errors.New("store is closed")
	ErrDuplicateTID = errors.New("command tid already known")
	// ErrCommandFinished: the command has its final status already.
	ErrCommandFinished = errors.New("command is finished")
)

// Options are the store's quotas and behaviour.
type Options struct {
	OutboxMaxItems  int   // default 100000
	OutboxMaxBytes  int64 // default 64 MiB
	HistoryDepth    int   // prior states kept per actuator, default 100
	HistoryMaxBytes int64 // all actuators together, default 8 MiB
	InboxMaxItems   int   // commands kept (queued and finished), default 100000
	InboxMaxBytes   int64 // default 32 MiB
	// LockTimeout is how long Open waits for another process's lock.
	LockTimeout time.Duration // default 2s
	Logger      *slog.Logger
}

func (o *Options) setDefaults() {
	if o.OutboxMaxItems <= 0 {
		o.OutboxMaxItems = 100000
	}
	if o.OutboxMaxBytes <= 0 {
		o.OutboxMaxBytes = 64 << 20
	}
	if o.HistoryDepth <= 0 {
		o.HistoryDepth = 100
	}
	if o.HistoryMaxBytes <= 0 {
		o.HistoryMaxBytes = 8 << 20
	}
	if o.InboxMaxItems <= 0 {
		o.InboxMaxItems = 100000
	}
	if o.InboxMaxBytes <= 0 {
		o.InboxMaxBytes = 32 << 20
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = 2 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Store is an open store file. It is safe for concurrent use.
type Store struct {
	db   *bolt.DB
	path string
	opts Options
	log  *slog.Logger

	// Counters kept in memory, rebuilt at open, changed only inside write
	// transactions (bbolt runs one at a time) and published after commit.
	mu      sync.Mutex
	outbox  OutboxStats
	histLen int64 // bytes of history

	writes struct{ Commits, Bytes atomic.Int64 }
	// refused: the disk's error while it refuses commits, and since when
	// (under mu; cleared by the next commit it takes)
	refused      string
	refusedSince time.Time
	refusals     int64

	sessionMu   sync.Mutex
	lastSession uint64 // the last number NextSession returned

	// uptime (uptime.go): the saved uptime at open, and when it opened
	// (a monotonic reading)
	upBase   time.Duration
	upOpened time.Time

	// group commit
	cmu     sync.Mutex
	queue   []*commitReq
	leading bool

	// The open write transaction every commit changes and every read
	// reads, and the log that makes its changes durable (wal.go). txmu
	// serialises their use (a bbolt transaction is not safe for concurrent
	// use) and is held through a commit's flush, so that nobody reads what
	// is not yet durable.
	txmu       sync.Mutex
	wtx        *bolt.Tx
	wal        *wal
	checkpoint time.Time // when the bbolt file last took the log's records
	closed     bool
	// histCount is each actuator's number of history entries in wtx, where
	// known (under txmu): RecordChange counts instead of scanning an
	// actuator's whole history on every change. A new transaction (begin)
	// and every deletion forget it; it is counted again by a scan.
	histCount map[string]int
}

// checkpointInterval bounds how long the log's records wait for the bbolt
// file (and so how much a restart replays) on a gateway that writes little.
const checkpointInterval = 5 * time.Minute

// Open opens (creating if needed) the store file at path. A file locked by
// another process fails with ErrLocked after opts.LockTimeout; a damaged file
// (a zero-length one too) with ErrCorrupt, and the daemon must not start over
// it; a file of a newer schema with ErrNewerSchema.
func Open(path string, opts Options) (s *Store, err error) {
	opts.setDefaults()
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("open store %s: create directory: %w", path, err)
	}
	// bbolt starts a zero-length file over as a new store. Such a file is
	// what a power cut leaves when the file system had not yet written out
	// a store it had just created or replaced (ext4's delayed allocation):
	// the history, the exactly-once inbox and the outbox would be gone
	// without a word.
	if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() && fi.Size() == 0 {
		return nil, corrupt(path, errEmptyFile)
	}
	defer func() {
		// bbolt panics on some damaged pages; a damaged file must end in an
		// error that says what to do, never in a crash loop.
		if r := recover(); r != nil {
			s, err = nil, corrupt(path, fmt.Errorf("%v", r))
		}
	}()
	// The free page list is not written with every commit (NoFreelistSync:
	// one page, 4 KB, less wear per commit); bbolt rebuilds it at open by
	// walking the file, as the check in init does anyway. That walk runs
	// in a goroutine of its own, where a fault on a damaged page would kill
	// the process: so the file is locked and verified (plain file I/O)
	// before bbolt maps it, in the OpenFile hook, and a damaged file ends
	// in the clear refusal below, never in a crash loop.
	var damaged *verifyError
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.LockTimeout, NoFreelistSync: true, FreelistType: bolt.FreelistMapType,
		OpenFile: func(name string, flag int, mode os.FileMode) (*os.File, error) {
			return lockAndVerify(name, flag, mode, opts.LockTimeout)
		}})
	switch {
	case errors.As(err, &damaged):
		return nil, corrupt(path, damaged.err)
	case errors.Is(err, bolterrors.ErrTimeout):
		return nil, fmt.Errorf("open store %s: %w (is another shadowgated running? waited %s)", path, ErrLocked, opts.LockTimeout)
	case errors.Is(err, bolterrors.ErrInvalid), errors.Is(err, bolterrors.ErrChecksum),
		errors.Is(err, bolterrors.ErrVersionMismatch), errors.Is(err, bolterrors.ErrInvalidMapping):
		return nil, corrupt(path, err)
	case err != nil:
		if fi, serr := os.Stat(path); serr == nil && fi.Size() > 0 && !errors.Is(err, os.ErrPermission) {
			return nil, corrupt(path, err)
		}
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	s = &Store{db: db, path: path, opts: opts, log: opts.Logger}
	if err := s.init(); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// begin opens the write transaction commits change (under txmu).
func (s *Store) begin() error {
	tx, err := s.db.Begin(true)
	if err != nil {
		if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
			return ErrClosed
		}
		return err
	}
	s.wtx = tx
	clear(s.histCount)
	return nil
}

// doCheckpoint commits the open transaction to the bbolt file, with the
// log's last sequence number, and starts the log over (under txmu). If
// the commit fails, the transaction is rebuilt from the log, which still
// holds every change.
func (s *Store) doCheckpoint() error {
	if err := s.wtx.Bucket(bucketMeta).Put(keyWALSeq, u64(s.wal.seq)); err != nil {
		return err
	}
	alloc := s.pageAlloc()
	err := s.wtx.Commit()
	s.wtx = nil
	if err != nil {
		if rerr := s.rebuild(); rerr != nil {
			return errors.Join(err, rerr)
		}
		return fmt.Errorf("store %s: checkpoint: %w", s.path, err)
	}
	s.writes.Commits.Add(1)
	s.writes.Bytes.Add(s.pageAlloc() - alloc + int64(s.db.Info().PageSize))
	s.wal.restart()
	s.checkpoint = time.Now()
	return s.begin()
}

// rebuild discards the open transaction and makes a new one from the
// bbolt file and this round's log records: the state of the last commit
// (under txmu).
func (s *Store) rebuild() error {
	if s.wtx != nil {
		s.wtx.Rollback()
		s.wtx = nil
	}
	if err := s.begin(); err != nil {
		return err
	}
	var applied uint64
	if b := s.wtx.Bucket(bucketMeta).Get(keyWALSeq); len(b) == 8 {
		applied = binary.BigEndian.Uint64(b)
	}
	// Up to the last record written: a failed append may have left a
	// whole record after it, which its writer was told failed.
	end, last := s.wal.off, s.wal.seq
	recs, err := s.wal.records(applied, end)
	if err == nil && (s.wal.off != end || s.wal.seq != last) {
		err = fmt.Errorf("write-ahead log %s reads back %d records, not the %d written", s.wal.path, len(recs), last-applied)
	}
	s.wal.off, s.wal.seq = end, last
	if err != nil {
		return err
	}
	for _, r := range recs {
		if err := decodeOps(r, func(o walOp) error { return apply(s.wtx, o) }); err != nil {
			return err
		}
	}
	return nil
}

// verifyError is a damage verify found, from the OpenFile hook.
type verifyError struct{ err error }

func (e *verifyError) Error() string { return e.err.Error() }

// lockAndVerify opens the store file for bbolt, takes its lock (bbolt's own
// flock, which then finds it held by the same open file) and verifies a
// file that has content, all before bbolt reads a page of it.
func lockAndVerify(name string, flag int, mode os.FileMode, timeout time.Duration) (*os.File, error) {
	f, err := os.OpenFile(name, flag, mode)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(timeout)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock: %w", err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, bolterrors.ErrTimeout
		}
		time.Sleep(50 * time.Millisecond)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if fi.Size() > 0 {
		if err := verify(f); err != nil {
			f.Close()
			return nil, &verifyError{err}
		}
	}
	return f, nil
}

var errEmptyFile = errors.New("the file is empty (0 bytes), as a power cut can leave it; its data is lost")

func corrupt(path string, cause error) error {
	return fmt.Errorf("open store %s: %w (%v); shadowgated will not start over it: move it aside (mv %s %s.broken) to start with an empty store, or restore a backup",
		path, ErrCorrupt, cause, path, path)
}

// init checks consistency, migrates the schema and rebuilds the counters.
func (s *Store) init() error {
	if err := s.db.View(func(tx *bolt.Tx) (first error) {
		// The check runs in a goroutine of its own that reads the
		// transaction until it closes the channel: read to the end, or the
		// transaction (and then the file's mapping) goes away under it.
		for cerr := range tx.Check() {
			if first == nil {
				first = cerr
			}
		}
		return first
	}); err != nil {
		return corrupt(s.path, err)
	}
	if err := s.begin(); err != nil {
		return err
	}
	if err := s.open(); err != nil {
		s.wtx.Rollback()
		s.wtx = nil
		if s.wal != nil {
			s.wal.close()
		}
		return err
	}
	return nil
}

// open brings the open write transaction to the store's last commit: it
// applies the log's records the file lacks, migrates the schema, and
// rebuilds the counters (under init).
func (s *Store) open() error {
	v, err := schemaOf(s.wtx)
	if err != nil {
		return corrupt(s.path, err)
	}
	if v > SchemaVersion {
		return fmt.Errorf("open store %s: %w: file schema %d, this build knows up to %d; upgrade shadowgate", s.path, ErrNewerSchema, v, SchemaVersion)
	}
	// A file of schema 8 on has a log (a new one, of schema 0, or an
	// older one has none yet: the migration gives it its identity).
	if v >= 8 {
		if err := s.replay(); err != nil {
			return err
		}
	}
	if v < SchemaVersion {
		if err := migrate(s.wtx); err != nil {
			return corrupt(s.path, err)
		}
		if s.wal == nil {
			w, err := openWAL(s.path, s.wtx.Bucket(bucketMeta).Get(keyWALID))
			if err != nil {
				return err
			}
			s.wal = w
		}
		// The migration is not in the log: the file takes it now,
		// before any record that assumes it.
		if err := s.doCheckpoint(); err != nil {
			return fmt.Errorf("open store %s: write the migrated schema: %w", s.path, err)
		}
	}
	tx := &Tx{tx: s.wtx, s: s, readOnly: true}
	st, err := tx.scanOutbox()
	if err != nil {
		return corrupt(s.path, err)
	}
	st.Dropped = tx.counter(counterDropped)
	s.outbox = st
	s.histLen = tx.historyBytes()
	tx.loadUptime()
	s.checkpoint = time.Now()
	return nil
}

// replay opens the log and applies to the open write transaction every
// record it has that the file does not (what commits made durable after
// the last checkpoint), and the log goes on after them: a start writes
// nothing, and a store that cannot take a checkpoint (a full disk) opens
// all the same.
func (s *Store) replay() error {
	meta := s.wtx.Bucket(bucketMeta)
	var applied uint64
	if b := meta.Get(keyWALSeq); len(b) == 8 {
		applied = binary.BigEndian.Uint64(b)
	}
	w, err := openWAL(s.path, meta.Get(keyWALID))
	if err != nil {
		return err
	}
	s.wal = w
	recs, err := w.records(applied, walSize)
	if err != nil {
		return err
	}
	for _, r := range recs {
		if err := decodeOps(r, func(o walOp) error { return apply(s.wtx, o) }); err != nil {
			return corrupt(s.path, fmt.Errorf("replay the write-ahead log %s: %w", w.path, err))
		}
	}
	if len(recs) > 0 {
		s.log.Info("store: replayed the write-ahead log", "path", s.path, "records", len(recs))
	}
	return nil
}

// Path is the file's path.
func (s *Store) Path() string { return s.path }

// Close saves the uptime, flushes and closes the file.
func (s *Store) Close() error {
	if err := s.Update(func(tx *Tx) error { return tx.SaveUptime() }); err != nil && !errors.Is(err, ErrClosed) {
		s.log.Warn("save the store's uptime at close", "path", s.path, "err", err)
	}
	s.txmu.Lock()
	defer s.txmu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var errs []error
	if s.wtx != nil {
		if err := s.doCheckpoint(); err != nil {
			errs = append(errs, err)
		}
		if s.wtx != nil {
			s.wtx.Rollback()
			s.wtx = nil
		}
	}
	if err := s.wal.close(); err != nil {
		errs = append(errs, err)
	}
	if err := s.db.Close(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close store %s: %w", s.path, err)
	}
	return nil
}

// WriteStats count what the store has written since it was opened: the
// disk wear it causes (an SD card's lifetime is measured in writes), and
// the commits the disk refused.
type WriteStats struct {
	Commits int64 `json:"commits"`
	Bytes   int64 `json:"bytes"` // pages written, meta page included
	// Refusals counts the commits the disk refused (full, failing).
	Refusals int64 `json:"refusals"`
	// Refused is the disk's last error while it refuses commits, and
	// RefusedSince the first refusal; both clear when a commit lands.
	Refused      string    `json:"refused,omitempty"`
	RefusedSince time.Time `json:"refused_since,omitzero"`
}

// WriteStats returns the commits and bytes written since Open, and whether
// the disk refuses writes now.
func (s *Store) WriteStats() WriteStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return WriteStats{Commits: s.writes.Commits.Load(), Bytes: s.writes.Bytes.Load(),
		Refusals: s.refusals, Refused: s.refused, RefusedSince: s.refusedSince}
}

// noteRefused records that the disk refused a commit with err (publish
// clears it when the disk takes one).
func (s *Store) noteRefused(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refusals++
	if s.refused == "" {
		s.refusedSince = time.Now()
	}
	s.refused = err.Error()
}

// Size is the file's size in bytes.
func (s *Store) Size() int64 {
	s.txmu.Lock()
	defer s.txmu.Unlock()
	if s.wtx == nil {
		return 0
	}
	return s.wtx.Size()
}

// Tx is one transaction; its typed methods are the store's API.
type Tx struct {
	tx       *bolt.Tx
	s        *Store
	readOnly bool
	ops      []walOp        // its changes, for the log (wal.go); op 0: replaced by a later one
	opAt     map[string]int // the index in ops of the last operation on each key
	onCommit []func()       // OnCommit's
	// pending counter changes, published when the transaction commits
	outboxDelta OutboxStats
	histDelta   int64
	dropped     []string
}

// Update runs fn in a write transaction, made durable (fsync) before it
// returns nil.
//
// Writers group-commit: calls that arrive while a commit is in progress run
// together in the next transaction and share its fsync, so concurrent
// writers (command acks, history, reports) cost one disk flush instead of
// one each, with no delay added when there is no contention. If one
// function of a group fails, the group is rolled back, that caller gets its
// error, and the others run again: fn must act only through tx (it may run
// more than once).
func (s *Store) Update(fn func(tx *Tx) error) error { return s.Submit(fn)() }

// Submit queues fn for the next group commit and returns at once; wait
// blocks until fn's transaction is durable and returns its error (as
// Update). Writes are durable in the order they were submitted: a write
// submitted later never becomes durable before one submitted earlier. This
// lets a caller go on before its fsync ends (accept the next command, free
// an actuator for the next change) while every later write still lands
// after it. wait must be called: a write nobody waits for commits only with
// the next one.
func (s *Store) Submit(fn func(tx *Tx) error) (wait func() error) {
	req := &commitReq{fn: fn, done: make(chan error, 1)}
	s.cmu.Lock()
	s.queue = append(s.queue, req)
	s.cmu.Unlock()
	return func() error {
		select {
		case err := <-req.done:
			// Another writer's commit took it: lead none (a commit led
			// now would carry only what came after, alone).
			return err
		default:
		}
		s.lead(req)
		return <-req.done
	}
}

// SubmitWithin is Submit for a write that may wait for company: it commits
// with the next commit any other writer leads, and only when none has
// within d of its wait being called does wait lead a commit of its own. A
// write that is not urgent (the removal of messages the broker has
// acknowledged, the final status of a command whose lane has another one
// about to record its start) so shares an fsync and the pages it
// rewrites with the write that follows it, instead of costing a commit of
// its own, and it is never delayed by more than d. Order is as for Submit.
func (s *Store) SubmitWithin(d time.Duration, fn func(tx *Tx) error) (wait func() error) {
	req := &commitReq{fn: fn, done: make(chan error, 1), lazy: true}
	s.cmu.Lock()
	s.queue = append(s.queue, req)
	s.cmu.Unlock()
	return func() error {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case err := <-req.done:
			return err
		case <-t.C:
		}
		s.lead(req)
		return <-req.done
	}
}

// lead marks req as waited for and commits the queue unless another caller
// is already doing so. The leader keeps committing while a write is queued
// that is not waiting for company (SubmitWithin), so no waiter is left
// behind and a writer that submits while the previous commit runs (a
// pipeline) finds its commit under way; writes waiting for company stay
// for the next commit instead of a commit of their own right after this
// one.
func (s *Store) lead(req *commitReq) {
	s.cmu.Lock()
	req.waited = true
	if s.leading {
		s.cmu.Unlock()
		return
	}
	s.leading = true
	s.cmu.Unlock()
	for {
		s.cmu.Lock()
		if !slices.ContainsFunc(s.queue, func(r *commitReq) bool { return !r.lazy || r.waited }) {
			s.leading = false
			s.cmu.Unlock()
			return
		}
		batch := s.queue
		s.queue = nil
		s.cmu.Unlock()
		s.commit(batch)
	}
}

type commitReq struct {
	lazy   bool // SubmitWithin's: it waits for company
	waited bool // its wait is called (and, when lazy, gave up waiting for company); under cmu
	fn     func(tx *Tx) error
	done   chan error
}

// commit runs a group of writers in one transaction: they change the open
// write transaction, and their changes become durable as one log record
// (or, when the log is full or a checkpoint is due, with the checkpoint).
func (s *Store) commit(batch []*commitReq) {
	s.txmu.Lock()
	defer s.txmu.Unlock()
	for len(batch) > 0 {
		if s.wtx == nil {
			for _, r := range batch {
				r.done <- ErrClosed
			}
			return
		}
		t := &Tx{s: s, tx: s.wtx}
		var failed []*commitReq // told their error
		retry := false          // one failed after it changed the transaction
		for _, r := range batch {
			before, hooks := len(t.ops), len(t.onCommit)
			err := r.fn(t)
			if err == nil {
				continue
			}
			r.done <- err
			t.onCommit = t.onCommit[:hooks]
			if len(t.ops) == before {
				failed = append(failed, r)
				continue
			}
			// It failed after it changed the transaction: undo the group's
			// changes and run the others again.
			failed = append(failed, r)
			retry = true
			break
		}
		batch = slices.DeleteFunc(batch, func(r *commitReq) bool { return slices.Contains(failed, r) })
		if retry {
			if err := s.rebuild(); err != nil {
				err = fmt.Errorf("store %s: undo a failed write: %w", s.path, err)
				s.noteRefused(err)
				s.fail(batch, err)
				return
			}
			continue
		}
		if err := s.persist(t); err != nil {
			s.noteRefused(err)
			s.fail(batch, err)
			return
		}
		s.publish(t)
		for _, fn := range t.onCommit {
			fn()
		}
		for _, r := range batch {
			r.done <- nil
		}
		return
	}
}

// fail ends every writer of a batch with err.
func (s *Store) fail(batch []*commitReq, err error) {
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		err = ErrClosed
	}
	for _, r := range batch {
		r.done <- err
	}
}

// persist makes t's changes durable: a log record, or a checkpoint when
// the log has no room for it or one is due (under txmu). If it fails, the
// changes are undone.
func (s *Store) persist(t *Tx) error {
	if len(t.ops) == 0 {
		return nil // it read only, or changed nothing
	}
	rec := s.wal.record(t.ops)
	if !s.wal.fits(rec) || time.Since(s.checkpoint) >= checkpointInterval {
		return s.doCheckpoint()
	}
	n, err := s.wal.append(rec)
	if err != nil {
		if rerr := s.rebuild(); rerr != nil {
			return errors.Join(err, rerr)
		}
		return fmt.Errorf("store %s: %w", s.path, err)
	}
	s.writes.Commits.Add(1)
	s.writes.Bytes.Add(n)
	return nil
}

// pageAlloc is bbolt's running count of bytes of pages allocated (and so
// written) by write transactions; only the commit leader writes, so the
// difference across a commit is that commit's.
func (s *Store) pageAlloc() int64 {
	st := s.db.Stats()
	return st.TxStats.GetPageAlloc()
}

// publish makes a committed transaction's counter changes visible.
func (s *Store) publish(t *Tx) {
	s.mu.Lock()
	s.outbox.Items += t.outboxDelta.Items
	s.outbox.Bytes += t.outboxDelta.Bytes
	s.outbox.Dropped += t.outboxDelta.Dropped
	s.histLen += t.histDelta
	if len(t.ops) > 0 { // the disk took a commit: it no longer refuses
		s.refused, s.refusedSince = "", time.Time{}
	}
	s.mu.Unlock()
	for _, d := range t.dropped {
		s.log.Warn("store quota reached, dropped an item", "what", d)
	}
}

// View runs fn in a read transaction.
//
// It reads the open write transaction, which holds every durable write and
// nothing else, and so waits for a commit in progress to be flushed, and
// holds up commits while it runs: fn must be quick, and must not call the
// Store.
func (s *Store) View(fn func(tx *Tx) error) error {
	s.txmu.Lock()
	defer s.txmu.Unlock()
	if s.wtx == nil {
		return ErrClosed
	}
	return fn(&Tx{tx: s.wtx, s: s, readOnly: true})
}
