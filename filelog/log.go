// The Log type: Open, Close, stats and identity accessors.

package filelog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/vfs"
)

// ErrReadOnly is returned by writes to a log opened with Options.ReadOnly.
var ErrReadOnly = errors.New("filelog: log is open read-only")

// Log is the durable, segmented flume.Log. Open returns one; it is safe for
// concurrent use.
type Log struct {
	// Lock order: sync, then w, then mu, then a segment's files (LOCKS.md).
	// Each lock is a struct holding the fields it guards.

	// Set by Open and never changed.
	dir    string
	opts   Options
	fs     vfs.FS
	lock   io.Closer
	logger *slog.Logger
	report OpenReport

	// sync serializes the fsyncs that run without w held (Sync and the
	// interval syncer) with each other and with rotation and Close, so
	// that a sync returning nil covers everything written before it began
	// and a file is never sealed or closed under a running fsync. It
	// guards no field: what it excludes is an fsync in progress. Held
	// across that fsync; taken before w.
	sync struct {
		sync.Mutex
	}

	// w serializes everything that touches files for writing: flushing
	// pending batches, fsync, rotation, META writes, Close. Waiting for it
	// is how concurrent appenders form a group commit. Held across I/O;
	// taken after sync and before mu.
	w struct {
		sync.Mutex
		size     int64 // bytes written to the active segment
		unsynced bool  // written bytes not yet fsynced
		// err is the sticky write error, set after a failed fsync (or a
		// failed cut of a partial write). It is written with mu held too,
		// so that appenders can check it under mu alone (writableLocked).
		err error
		// epochsSize is how many bytes of the epochs file hold its header
		// and whole records (0: no file yet); the next record goes there.
		epochsSize int64
	}

	// mu guards the in-memory state that appenders and readers share (and
	// the sealed, count and size of each segment). Not held across data
	// I/O, only across the META writes of SetID and SetEpoch. Taken after
	// w.
	mu struct {
		sync.RWMutex
		closed  bool
		id      flume.LogID
		genesis flume.Hash
		epoch   uint64
		segs    []*segment // in seq order; the last is active
		active  *segment
		// Published state: what readers see.
		since     int64
		head      flume.Hash
		activeIdx []int64 // offset of each published entry of the active segment
		pubSize   int64   // published bytes of the active segment
		// Encoding state: published plus pending.
		enc       encState
		pend      *batch
		spareBuf  []byte
		spareOffs []int64

		// epochs is the epoch history, oldest first (epochs.go).
		epochs []flume.EpochRecord
		// cuts are the seqs of TruncateAfter's cuts, oldest first, for
		// the iterators opened before them; retired are the segments a
		// cut removed or replaced, whose files stay open until Close for
		// the readers still on them (truncate.go).
		cuts    []int64
		retired []*segment
	}

	sinceA atomic.Int64 // published since, for lock-free Since
	// observer is the WriteObserver callback (ObserveWrites), called by
	// flushLocked between a batch's write and its fsync.
	observer atomic.Pointer[func(first, last int64, frames []byte)]
	cutGen   atomic.Int64 // len(mu.cuts), for iterators' lock-free check

	// st guards the fencing state and serializes the writes of the state
	// file (state.go). Taken before mu; Close takes it to wait for a
	// write in flight.
	st stateMu

	stats struct {
		entries, bytes, writes, syncs, syncNanos atomic.Int64
	}

	kick   chan struct{}      // wakes flushLoop (SyncAlways); set by Open
	cancel context.CancelFunc // stops syncLoop / flushLoop; set by Open
	wg     sync.WaitGroup
}

var _ flume.Log = (*Log)(nil)

// OpenReport says what Open found and did.
type OpenReport struct {
	Dir      string
	Created  bool  // the log was new
	Segments int   // segment files
	LastSeq  int64 // Since() after open
	// ScannedBytes is how much of the log recovery read: the active
	// segment plus any segment whose index had to be rebuilt.
	ScannedBytes int64
	// RebuiltIndexes lists sealed segments whose index was missing or bad
	// and was rebuilt by scanning the segment.
	RebuiltIndexes []string
	// TruncatedFile, TruncatedAt and TruncatedBytes describe a torn tail cut
	// off the last segment (TruncatedBytes == 0: none). In a read-only open
	// the tail is only ignored, not cut.
	TruncatedFile   string
	TruncatedAt     int64
	TruncatedBytes  int64
	TruncatedReason string
	Duration        time.Duration

	// Epochs says what recovery did with the epoch history and with an
	// interrupted TruncateAfter.
	Epochs EpochRecovery
}

// Open opens the log in dir, creating it if needed, and recovers it: a torn
// tail of the last segment is truncated (see OpenReport), corruption before
// the tail is a *flume.CorruptionError. A second Open of the same dir
// (this process or another) fails with an error wrapping flume.ErrLocked.
func Open(dir string, opts *Options) (*Log, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	fsys := o.FS
	if o.ReadOnly {
		if _, err := fsys.Stat(dir); err != nil {
			return nil, fmt.Errorf("filelog: open %s: %w", dir, err)
		}
	} else if err := fsys.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("filelog: create %s: %w", dir, err)
	}
	lockPath := filepath.Join(dir, lockName)
	lk, err := fsys.Lock(lockPath)
	if err != nil {
		if errors.Is(err, vfs.ErrLocked) {
			return nil, fmt.Errorf("filelog: %s: %w", lockPath, flume.ErrLocked)
		}
		return nil, fmt.Errorf("filelog: lock %s: %w", lockPath, err)
	}
	l := &Log{dir: dir, opts: o, fs: fsys, lock: lk, logger: o.Logger}
	l.report.Dir = dir
	if err := l.recover(); err != nil {
		l.closeFiles()
		lk.Close()
		return nil, err
	}
	l.report.Duration = time.Since(start)
	l.report.LastSeq = l.mu.since
	l.sinceA.Store(l.mu.since)
	l.mu.enc = encState{since: l.mu.since, head: l.mu.head, size: l.mu.pubSize}
	if !o.ReadOnly && o.Sync != SyncNever {
		ctx, cancel := context.WithCancel(context.Background())
		l.cancel = cancel
		l.wg.Add(1)
		if o.Sync == SyncInterval {
			go l.syncLoop(ctx)
		} else {
			l.kick = make(chan struct{}, 1)
			go l.flushLoop(ctx)
		}
	}
	l.logger.Info("filelog: opened", "dir", dir, "since", l.mu.since, "segments", l.report.Segments,
		"scanned_bytes", l.report.ScannedBytes, "duration", l.report.Duration, "sync", o.Sync.String())
	return l, nil
}

// Close implements flume.Log: it flushes and fsyncs pending appends, stops
// the background syncer and releases the lock. Later calls return nil.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.mu.closed {
		l.mu.Unlock()
		return nil
	}
	l.mu.closed = true
	l.mu.Unlock()
	l.st.Lock() // waits for a state file write in flight
	l.st.closed = true
	l.st.Unlock()
	if l.cancel != nil {
		l.cancel()
		l.wg.Wait()
	}
	l.sync.Lock() // no fsync is running on a file about to be closed
	defer l.sync.Unlock()
	l.w.Lock()
	l.flushLocked()
	var err error
	if !l.opts.ReadOnly {
		err = l.syncLocked()
		if err == nil && l.w.err == nil {
			if cerr := l.writeCheckpoint(); cerr != nil {
				l.logger.Warn("filelog: writing the checkpoint index failed; the next open scans the active segment", "err", cerr)
			}
		}
	}
	if cerr := l.closeFiles(); err == nil {
		err = cerr
	}
	l.w.Unlock()
	if lerr := l.lock.Close(); err == nil && lerr != nil {
		err = fmt.Errorf("filelog: release lock: %w", lerr)
	}
	return err
}

func (l *Log) closeFiles() error {
	var err error
	for _, s := range append(l.mu.segs, l.mu.retired...) {
		if cerr := s.close(); err == nil && cerr != nil {
			err = fmt.Errorf("filelog: close %s: %w", s.path, cerr)
		}
	}
	return err
}

// Stats are counters since Open.
type Stats struct {
	Entries int64 // entries appended
	Bytes   int64 // frame bytes written
	Writes  int64 // write calls to segment files
	Syncs   int64 // fsyncs of segment files
	// SyncTime is the total time spent in those fsyncs.
	SyncTime time.Duration
}

// Stats returns the log's counters.
func (l *Log) Stats() Stats {
	return Stats{l.stats.entries.Load(), l.stats.bytes.Load(), l.stats.writes.Load(), l.stats.syncs.Load(),
		time.Duration(l.stats.syncNanos.Load())}
}

// OpenReport returns what Open found and did.
func (l *Log) OpenReport() OpenReport {
	r := l.report
	r.RebuiltIndexes = append([]string(nil), r.RebuiltIndexes...)
	r.Epochs.Dropped = append([]flume.EpochRecord(nil), r.Epochs.Dropped...)
	return r
}

// Dir returns the log's directory.
func (l *Log) Dir() string { return l.dir }

// ID implements flume.Log.
func (l *Log) ID() flume.LogID {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.mu.id
}

// Epoch implements flume.Log.
func (l *Log) Epoch() uint64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.mu.epoch
}

// SetID implements flume.Log. The new ID is durable (META rewritten with
// temp file, fsync, rename, directory fsync) before it returns. A log with
// an epoch history is not empty: its records pin the genesis hash.
func (l *Log) SetID(id flume.LogID) error {
	l.w.Lock()
	defer l.w.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.writableLocked(); err != nil {
		return err
	}
	if id == l.mu.id {
		return nil
	}
	if l.mu.enc.since >= 0 {
		return fmt.Errorf("filelog: set ID: %w", flume.ErrNotEmpty)
	}
	if len(l.mu.epochs) > 0 { // their prev hashes pin the old genesis
		return fmt.Errorf("filelog: set ID: the log has an epoch history: %w", flume.ErrNotEmpty)
	}
	if err := writeMeta(l.fs, l.dir, meta{id: id, epoch: l.mu.epoch}); err != nil {
		return err
	}
	l.mu.id, l.mu.genesis = id, flume.GenesisHash(id)
	l.mu.head, l.mu.enc.head = l.mu.genesis, l.mu.genesis
	return nil
}

// SetEpoch implements flume.Log. The epoch is durable before it returns.
func (l *Log) SetEpoch(epoch uint64) error {
	l.w.Lock()
	defer l.w.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.writableLocked(); err != nil {
		return err
	}
	if epoch < l.mu.epoch {
		return fmt.Errorf("filelog: epoch %d is lower than the current epoch %d", epoch, l.mu.epoch)
	}
	if epoch == l.mu.epoch {
		return nil
	}
	if err := writeMeta(l.fs, l.dir, meta{id: l.mu.id, epoch: epoch}); err != nil {
		return err
	}
	l.mu.epoch = epoch
	return nil
}
