package filelog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"runtime"
	"sort"
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
//
// Lock order: syncMu before wmu before mu (see LOCKS.md).
type Log struct {
	dir    string
	opts   Options
	fs     vfs.FS
	lock   io.Closer
	logger *slog.Logger
	report OpenReport

	// syncMu serializes the fsyncs that run without wmu (Sync and the
	// interval syncer) with each other and with rotation and Close, so
	// that a sync returning nil covers everything written before it began
	// and a file is never sealed or closed under a running fsync.
	syncMu sync.Mutex

	// wmu serializes everything that touches files for writing: flushing
	// pending batches, fsync, rotation, META writes. Waiting for it is how
	// concurrent appenders form a group commit.
	wmu      sync.Mutex
	wsize    int64 // bytes written to the active segment (guarded by wmu)
	unsynced bool  // written bytes not yet fsynced (guarded by wmu)
	werr     error // sticky write error: set after a failed fsync (guarded by wmu and mu)

	mu      sync.RWMutex // guards the fields below
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
	hasher    *chainHasher
	spareBuf  []byte
	spareOffs []int64

	sinceA atomic.Int64 // published since, for lock-free Since

	stats struct {
		entries, bytes, writes, syncs, syncNanos atomic.Int64
	}

	kick   chan struct{}      // wakes flushLoop (SyncAlways)
	cancel context.CancelFunc // stops syncLoop / flushLoop
	wg     sync.WaitGroup
}

var _ flume.Log = (*Log)(nil)

type encState struct {
	since int64
	head  flume.Hash
	size  int64 // active segment size including pending bytes
}

// batch is the pending group of frames that one flush writes. Appenders keep
// a pointer to the batch they encoded into and read done/err under wmu.
type batch struct {
	buf   []byte
	offs  []int64
	start int64 // offset in the active segment where buf goes
	last  int64
	head  flume.Hash
	done  bool          // guarded by wmu
	err   error         // guarded by wmu; read by waiters after doneC closes
	doneC chan struct{} // closed by finish
}

// finish records the batch's outcome and wakes its waiters. l.wmu is held.
func (b *batch) finish(err error) {
	b.done, b.err = true, err
	if b.doneC != nil {
		close(b.doneC)
	}
}

// maxSpare bounds the buffers kept for reuse between flushes.
const maxSpare = 8 << 20

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
	return r
}

// Dir returns the log's directory.
func (l *Log) Dir() string { return l.dir }

// ID implements flume.Log.
func (l *Log) ID() flume.LogID {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.id
}

// Epoch implements flume.Log.
func (l *Log) Epoch() uint64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.epoch
}

// SetID implements flume.Log. The new ID is durable (META rewritten with
// temp file, fsync, rename, directory fsync) before it returns.
func (l *Log) SetID(id flume.LogID) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.writableLocked(); err != nil {
		return err
	}
	if id == l.id {
		return nil
	}
	if l.enc.since >= 0 {
		return fmt.Errorf("filelog: set ID: %w", flume.ErrNotEmpty)
	}
	if err := writeMeta(l.fs, l.dir, meta{id: id, epoch: l.epoch}); err != nil {
		return err
	}
	l.id, l.genesis = id, flume.GenesisHash(id)
	l.head, l.enc.head = l.genesis, l.genesis
	return nil
}

// SetEpoch implements flume.Log. The epoch is durable before it returns.
func (l *Log) SetEpoch(epoch uint64) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.writableLocked(); err != nil {
		return err
	}
	if epoch < l.epoch {
		return fmt.Errorf("filelog: epoch %d is lower than the current epoch %d", epoch, l.epoch)
	}
	if epoch == l.epoch {
		return nil
	}
	if err := writeMeta(l.fs, l.dir, meta{id: l.id, epoch: epoch}); err != nil {
		return err
	}
	l.epoch = epoch
	return nil
}

func (l *Log) writableLocked() error {
	switch {
	case l.closed:
		return flume.ErrClosed
	case l.opts.ReadOnly:
		return ErrReadOnly
	case l.werr != nil:
		return l.werr
	}
	return nil
}

// Append implements flume.Log. Under SyncAlways it returns after the
// entries are fsynced, sharing the write and fsync with concurrent callers.
func (l *Log) Append(data ...[]byte) (int64, error) {
	for _, d := range data {
		if len(d) > flume.MaxEntrySize {
			return 0, fmt.Errorf("filelog: entry of %d bytes exceeds the maximum %d", len(d), flume.MaxEntrySize)
		}
	}
	for {
		l.mu.Lock()
		if err := l.writableLocked(); err != nil {
			l.mu.Unlock()
			return 0, err
		}
		if len(data) == 0 {
			s := l.since
			l.mu.Unlock()
			return s, nil
		}
		if l.enc.size >= l.opts.SegmentSize {
			l.mu.Unlock()
			if err := l.rotate(); err != nil {
				return 0, err
			}
			continue
		}
		b := l.pendingLocked()
		since, head, size, epoch := l.enc.since, l.enc.head, l.enc.size, l.epoch
		for i, d := range data {
			since++
			head = l.hasher.next(head, since, epoch, d)
			b.offs = append(b.offs, size)
			b.buf = flume.AppendFrameMore(b.buf, flume.Entry{Seq: since, Epoch: epoch, Hash: head, Data: d}, i < len(data)-1)
			size += int64(flume.FrameHeaderSize + len(d))
		}
		l.enc = encState{since: since, head: head, size: size}
		b.last, b.head = since, head
		l.mu.Unlock()
		return since, l.commit(b)
	}
}

// AppendEntries implements flume.Log.
func (l *Log) AppendEntries(entries []flume.Entry) error {
	for _, e := range entries {
		if len(e.Data) > flume.MaxEntrySize {
			return fmt.Errorf("filelog: entry of %d bytes exceeds the maximum %d", len(e.Data), flume.MaxEntrySize)
		}
	}
	for {
		l.mu.Lock()
		if err := l.writableLocked(); err != nil {
			l.mu.Unlock()
			return err
		}
		if len(entries) == 0 {
			l.mu.Unlock()
			return nil
		}
		if l.enc.size >= l.opts.SegmentSize {
			l.mu.Unlock()
			if err := l.rotate(); err != nil {
				return err
			}
			continue
		}
		since, head := l.enc.since, l.enc.head
		for _, e := range entries {
			if err := flume.CheckNext(since, head, e); err != nil {
				l.mu.Unlock()
				return err
			}
			since, head = e.Seq, e.Hash
		}
		b := l.pendingLocked()
		size := l.enc.size
		for i, e := range entries {
			b.offs = append(b.offs, size)
			b.buf = flume.AppendFrameMore(b.buf, e, i < len(entries)-1)
			size += int64(flume.FrameHeaderSize + len(e.Data))
		}
		l.enc = encState{since: since, head: head, size: size}
		b.last, b.head = since, head
		l.mu.Unlock()
		return l.commitNow(b)
	}
}

// commitNow writes (and under SyncAlways fsyncs) b from the calling
// goroutine. commit uses it when no flusher runs; AppendEntries always does:
// a follower has one replication stream,
// so there is no group to gather, and handing the batch to the flusher and
// back costs two goroutine wake-ups, which on an idle machine are tens of
// microseconds each on the synchronous-replication path.
func (l *Log) commitNow(b *batch) error {
	l.wmu.Lock()
	if !b.done {
		l.flushLocked()
	}
	err := b.err
	l.wmu.Unlock()
	return err
}

func (l *Log) pendingLocked() *batch {
	if l.pend == nil {
		l.pend = &batch{buf: l.spareBuf[:0], offs: l.spareOffs[:0], start: l.enc.size}
		if l.kick != nil {
			l.pend.doneC = make(chan struct{}) // only the flusher's waiters use it
		}
		l.spareBuf, l.spareOffs = nil, nil
	}
	return l.pend
}

// commit waits until b is written (and fsynced per policy) and published.
// Under SyncAlways the flusher goroutine does the work, so that writers
// arriving during an fsync form the next group and writers whose group is
// done return at once. Otherwise the caller writes itself: a write is short
// and needs no handoff.
func (l *Log) commit(b *batch) error {
	if l.kick != nil {
		// A writer that finds no flush running leads its own group: it
		// lets the group grow as the flusher would, then writes and
		// fsyncs it itself, saving the two goroutine wake-ups of a
		// handoff to the flusher and back. Writers that arrive during its
		// fsync form the next group, which the flusher cuts.
		if l.wmu.TryLock() {
			if !b.done {
				l.growGroup()
				l.flushLocked()
			}
			l.wmu.Unlock()
			return b.err
		}
		select {
		case l.kick <- struct{}{}:
		default: // a wake-up is already pending
		}
		<-b.doneC
		return b.err
	}
	return l.commitNow(b)
}

// maxGroupYields bounds how often the flusher yields to let a group grow.
const maxGroupYields = 8

func (l *Log) pendingCount() int {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.pend == nil {
		return 0
	}
	return len(l.pend.offs)
}

// flushLoop is the group-commit flusher under SyncAlways. It exits when
// Close cancels ctx; Close then flushes what is left.
func (l *Log) flushLoop(ctx context.Context) {
	defer l.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.kick:
		}
		// Let writers woken by the previous group (runnable now) append
		// before this group is cut: without it, groups alternate between
		// the writers that missed the last fsync and those it released,
		// each about half of them. Yield while the group keeps growing
		// (a lone writer costs one extra yield).
		l.growGroup()
		l.wmu.Lock()
		l.flushLocked()
		l.wmu.Unlock()
	}
}

// growGroup yields while the pending group keeps growing (at most
// maxGroupYields times), so that writers woken by the previous group join
// this one.
func (l *Log) growGroup() {
	for i, prev := 0, -1; i < maxGroupYields; i++ {
		runtime.Gosched()
		n := l.pendingCount()
		if n == prev {
			break
		}
		prev = n
	}
}

// flushLocked writes the pending batch, fsyncs it per policy and publishes
// it. l.wmu must be held.
func (l *Log) flushLocked() {
	l.mu.Lock()
	b := l.pend
	l.pend = nil
	f := l.active.f
	werr := l.werr
	l.mu.Unlock()
	if b == nil {
		return
	}
	fail := func(err error) {
		b.finish(err)
		l.mu.Lock()
		// Pending entries encoded after b build on b's seqs and hashes: fail
		// them too and roll the encoder back to the published state.
		if p := l.pend; p != nil {
			p.finish(fmt.Errorf("filelog: an earlier entry in the same group failed: %w", err))
			l.pend = nil
		}
		l.enc = encState{since: l.since, head: l.head, size: l.pubSize}
		l.mu.Unlock()
	}
	if werr != nil {
		fail(werr)
		return
	}
	if b.start != l.wsize {
		fail(fmt.Errorf("filelog: internal error: batch at %d, segment at %d", b.start, l.wsize))
		return
	}
	l.stats.writes.Add(1)
	if _, err := f.WriteAt(b.buf, b.start); err != nil {
		err = fmt.Errorf("filelog: write %s: %w", l.active.path, err)
		// Cut any partial write so that the file ends at the last good
		// frame; if even that fails the file's state is unknown: sticky.
		if terr := f.Truncate(l.wsize); terr != nil {
			l.setSticky(fmt.Errorf("%w; truncating the partial write failed too: %v", err, terr))
		}
		fail(err)
		return
	}
	l.wsize += int64(len(b.buf))
	l.unsynced = true
	if l.opts.Sync == SyncAlways {
		if err := l.syncLocked(); err != nil {
			fail(err)
			return
		}
	}
	l.stats.entries.Add(int64(len(b.offs)))
	l.stats.bytes.Add(int64(len(b.buf)))
	l.mu.Lock()
	l.activeIdx = append(l.activeIdx, b.offs...)
	l.since, l.head, l.pubSize = b.last, b.head, l.wsize
	l.sinceA.Store(b.last)
	if cap(b.buf) <= maxSpare && l.spareBuf == nil {
		l.spareBuf, l.spareOffs = b.buf[:0], b.offs[:0]
	}
	l.mu.Unlock()
	b.buf, b.offs = nil, nil
	b.finish(nil)
}

// syncLocked fsyncs the active segment. A failed fsync is sticky: after it
// the kernel may have dropped the dirty pages (fsyncgate), so the log
// refuses writes until it is reopened and recovered. l.wmu must be held.
func (l *Log) syncLocked() error {
	if !l.unsynced {
		return nil
	}
	if l.werr != nil {
		return l.werr
	}
	if err := l.fsync(l.active); err != nil {
		l.setSticky(err)
		return err
	}
	l.unsynced = false
	return nil
}

// fsync fsyncs s's data file and records the time it took.
func (l *Log) fsync(s *segment) error {
	start := time.Now()
	l.stats.syncs.Add(1)
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("filelog: fsync %s: %w (the log refuses writes until reopened)", s.path, err)
	}
	d := time.Since(start)
	l.stats.syncNanos.Add(int64(d))
	if d > l.opts.SlowSync {
		l.logger.Warn("filelog: slow fsync", "file", s.path, "duration", d)
	}
	if l.opts.OnSync != nil {
		l.opts.OnSync(d)
	}
	return nil
}

// syncAside flushes pending writes and fsyncs them without holding wmu
// across the fsync, so that appends under SyncInterval and SyncNever are
// not stalled by it (a follower that fsyncs before acknowledging, or the
// interval syncer, would otherwise add an fsync to the latency of the
// appends that arrive meanwhile). When it returns nil, everything written
// before it was called is durable.
func (l *Log) syncAside() error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	l.wmu.Lock()
	l.flushLocked()
	if !l.unsynced {
		l.wmu.Unlock()
		return nil
	}
	if err := l.werr; err != nil {
		l.wmu.Unlock()
		return err
	}
	// Writes made during the fsync set unsynced again; syncMu keeps a
	// concurrent syncAside from returning early on this cleared flag
	// before the fsync below completes.
	s := l.active
	l.unsynced = false
	l.wmu.Unlock()
	if err := l.fsync(s); err != nil {
		l.wmu.Lock()
		l.unsynced = true
		l.setSticky(err)
		l.wmu.Unlock()
		return err
	}
	return nil
}

func (l *Log) setSticky(err error) {
	l.mu.Lock()
	if l.werr == nil {
		l.werr = err
		l.logger.Error("filelog: write failure, log is read-only until reopened", "err", err)
	}
	l.mu.Unlock()
}

// rotate seals the active segment (fsync, index file) and starts a new one.
func (l *Log) rotate() error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	l.wmu.Lock()
	defer l.wmu.Unlock()
	var old *segment
	var offs []int64
	var since int64
	for {
		l.flushLocked()
		l.mu.RLock()
		err := l.writableLocked()
		need := l.enc.size >= l.opts.SegmentSize
		// An appender may have encoded into a new pending batch since the
		// flush (the segment was below the limit then): flush it first.
		pending := l.pend != nil
		old, offs, since = l.active, l.activeIdx, l.since
		l.mu.RUnlock()
		if err != nil || !need {
			return err
		}
		if !pending {
			break
		}
	}
	// Seal with an fsync even under SyncNever, so that only the last
	// segment can ever have a torn tail.
	if err := l.syncLocked(); err != nil {
		return err
	}
	ip := filepath.Join(l.dir, idxName(old.base))
	if err := vfs.WriteFileAtomic(l.fs, ip, encodeIndex(old.base, offs, l.wsize)); err != nil {
		return fmt.Errorf("filelog: write index %s: %w", ip, err)
	}
	s, err := l.createSegment(since + 1)
	if err != nil {
		l.fs.Remove(ip)
		return err
	}
	l.mu.Lock()
	old.sealed, old.count, old.size = true, int64(len(offs)), l.wsize
	l.segs = append(l.segs, s)
	l.active, l.activeIdx, l.pubSize = s, nil, 0
	l.enc.size = 0
	l.mu.Unlock()
	l.wsize = 0
	l.unsynced = false
	return nil
}

func (l *Log) syncLoop(ctx context.Context) {
	defer l.wg.Done()
	t := time.NewTicker(l.opts.SyncInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			l.syncAside() // a failure is sticky and reported to the next writer
		}
	}
}

// Sync implements flume.Log: it fsyncs everything appended so far.
func (l *Log) Sync() error {
	l.mu.RLock()
	closed, ro := l.closed, l.opts.ReadOnly
	l.mu.RUnlock()
	if closed {
		return flume.ErrClosed
	}
	if ro {
		return nil
	}
	return l.syncAside()
}

// Close implements flume.Log: it flushes and fsyncs pending appends, stops
// the background syncer and releases the lock. Later calls return nil.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	if l.cancel != nil {
		l.cancel()
		l.wg.Wait()
	}
	l.syncMu.Lock() // no fsync is running on a file about to be closed
	defer l.syncMu.Unlock()
	l.wmu.Lock()
	l.flushLocked()
	var err error
	if !l.opts.ReadOnly {
		err = l.syncLocked()
		if err == nil && l.werr == nil {
			if cerr := l.writeCheckpoint(); cerr != nil {
				l.logger.Warn("filelog: writing the checkpoint index failed; the next open scans the active segment", "err", cerr)
			}
		}
	}
	if cerr := l.closeFiles(); err == nil {
		err = cerr
	}
	l.wmu.Unlock()
	if lerr := l.lock.Close(); err == nil && lerr != nil {
		err = fmt.Errorf("filelog: release lock: %w", lerr)
	}
	return err
}

func (l *Log) closeFiles() error {
	var err error
	for _, s := range l.segs {
		if cerr := s.close(); err == nil && cerr != nil {
			err = fmt.Errorf("filelog: close %s: %w", s.path, cerr)
		}
	}
	return err
}

// Since implements flume.Log.
func (l *Log) Since() int64 { return l.sinceA.Load() }

// Head implements flume.Log.
func (l *Log) Head() (int64, flume.Hash) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.since, l.head
}

// Get implements flume.Log: at most two disk reads (index, frame).
func (l *Log) Get(seq int64) ([]byte, error) {
	e, err := l.Entry(seq)
	return e.Data, err
}

// Entry implements flume.Log.
func (l *Log) Entry(seq int64) (flume.Entry, error) {
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		return flume.Entry{}, flume.ErrClosed
	}
	if seq < 0 || seq > l.since {
		s := l.since
		l.mu.RUnlock()
		return flume.Entry{}, fmt.Errorf("filelog: get %d (log ends at %d): %w", seq, s, flume.ErrNotFound)
	}
	s := l.segmentLocked(seq)
	if s != l.active {
		l.mu.RUnlock()
		return l.readEntry(s, seq)
	}
	i := seq - s.base
	off, end := l.activeIdx[i], l.pubSize
	if i+1 < int64(len(l.activeIdx)) {
		end = l.activeIdx[i+1]
	}
	f := s.f
	l.mu.RUnlock()
	return l.readFrame(s, f, seq, off, end)
}

// segmentLocked returns the segment holding seq (which must be <= since).
func (l *Log) segmentLocked(seq int64) *segment {
	i := sort.Search(len(l.segs), func(i int) bool { return l.segs[i].base > seq }) - 1
	return l.segs[max(i, 0)]
}

// readEntry reads entry seq of sealed segment s.
func (l *Log) readEntry(s *segment, seq int64) (flume.Entry, error) {
	off, end, err := s.offsets(seq - s.base)
	if err != nil {
		return flume.Entry{}, l.readErr(err)
	}
	f, err := s.file()
	if err != nil {
		return flume.Entry{}, l.readErr(err)
	}
	return l.readFrame(s, f, seq, off, end)
}

func (l *Log) readFrame(s *segment, f vfs.File, seq, off, end int64) (flume.Entry, error) {
	n := end - off
	if off < 0 || n < flume.FrameHeaderSize || n > flume.FrameHeaderSize+flume.MaxEntrySize {
		return flume.Entry{}, &flume.CorruptionError{Path: s.path, Offset: off, Seq: seq,
			Reason: fmt.Sprintf("index gives a frame of %d bytes", n)}
	}
	buf := make([]byte, n)
	if _, err := f.ReadAt(buf, off); err != nil {
		if err == io.EOF {
			return flume.Entry{}, &flume.CorruptionError{Path: s.path, Offset: off, Seq: seq, Reason: "segment ends inside the frame"}
		}
		return flume.Entry{}, l.readErr(fmt.Errorf("filelog: read %s: %w", s.path, err))
	}
	e, m, err := flume.DecodeFrame(buf)
	if err != nil {
		return flume.Entry{}, &flume.CorruptionError{Path: s.path, Offset: off, Seq: seq, Reason: err.Error()}
	}
	if e.Seq != seq || int64(m) != n {
		return flume.Entry{}, &flume.CorruptionError{Path: s.path, Offset: off, Seq: seq,
			Reason: fmt.Sprintf("frame holds seq %d (%d bytes), index expects seq %d (%d bytes)", e.Seq, m, seq, n)}
	}
	return e, nil
}

// readErr turns a read failure after Close into ErrClosed.
func (l *Log) readErr(err error) error {
	l.mu.RLock()
	closed := l.closed
	l.mu.RUnlock()
	if closed {
		return flume.ErrClosed
	}
	return err
}
