// Appending: Append, AppendEntries, group commit and the flush that writes a batch.

package filelog

import (
	"context"
	"fmt"
	"runtime"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/frame"
)

// Append implements flume.Log. Under SyncAlways it returns after the
// entries are fsynced, sharing the write and fsync with concurrent callers.
func (l *Log) Append(data ...[]byte) (int64, error) {
	for _, d := range data {
		if err := checkEntrySize(len(d)); err != nil {
			return 0, err
		}
	}
	if err := l.reserve(len(data)); err != nil {
		return 0, err
	}
	if len(data) == 0 {
		s := l.mu.since
		l.mu.Unlock()
		return s, nil
	}
	b := l.pendingLocked()
	seq, head, epoch := l.mu.enc.since, l.mu.enc.head, l.mu.epoch
	for i, d := range data {
		seq++
		head = flume.ChainHash(head, seq, epoch, d)
		l.encodeLocked(b, flume.Entry{Seq: seq, Epoch: epoch, Hash: head, Data: d}, i < len(data)-1)
	}
	l.mu.Unlock()
	return seq, l.commit(b)
}

// AppendEntries implements flume.Log.
func (l *Log) AppendEntries(entries []flume.Entry) error {
	for _, e := range entries {
		if err := checkEntrySize(len(e.Data)); err != nil {
			return err
		}
	}
	if err := l.reserve(len(entries)); err != nil {
		return err
	}
	if len(entries) == 0 {
		l.mu.Unlock()
		return nil
	}
	// Check the whole batch before encoding any of it: it is all or nothing.
	since, head := l.mu.enc.since, l.mu.enc.head
	for _, e := range entries {
		if err := flume.CheckNext(since, head, e); err != nil {
			l.mu.Unlock()
			return err
		}
		since, head = e.Seq, e.Hash
	}
	b := l.pendingLocked()
	for i, e := range entries {
		l.encodeLocked(b, e, i < len(entries)-1)
	}
	l.mu.Unlock()
	return l.commitNow(b)
}

func checkEntrySize(n int) error {
	if n > flume.MaxEntrySize {
		return fmt.Errorf("filelog: entry of %d bytes exceeds the maximum %d", n, flume.MaxEntrySize)
	}
	return nil
}

// reserve is the step Append and AppendEntries share before they encode a
// batch of n entries. It takes l.mu, checks that the log takes writes
// (writableLocked) and, if the active segment is full, rotates to a new
// one first, so that the batch goes into a segment with room. It returns
// with l.mu held, or with an error and l.mu not held. For n == 0 it only
// checks.
func (l *Log) reserve(n int) error {
	for {
		l.mu.Lock()
		if err := l.writableLocked(); err != nil {
			l.mu.Unlock()
			return err
		}
		if n == 0 || l.mu.enc.size < l.opts.SegmentSize {
			return nil
		}
		l.mu.Unlock()
		if err := l.rotate(); err != nil {
			return err
		}
	}
}

// writableLocked returns why the log takes no writes: closed, read-only, or
// the sticky error of a failed write. l.mu is held.
func (l *Log) writableLocked() error {
	switch {
	case l.mu.closed:
		return flume.ErrClosed
	case l.opts.ReadOnly:
		return ErrReadOnly
	case l.w.err != nil:
		return l.w.err
	}
	return nil
}

// encodeLocked appends e's frame to b, the pending batch, and moves the
// encoder state past it. more is set for every entry of a batch but the
// last. l.mu is held.
func (l *Log) encodeLocked(b *batch, e flume.Entry, more bool) {
	b.offs = append(b.offs, l.mu.enc.size)
	b.buf = frame.AppendMore(b.buf, e, more)
	l.mu.enc = encState{since: e.Seq, head: e.Hash, size: l.mu.enc.size + int64(frame.HeaderSize+len(e.Data))}
	b.last, b.head = e.Seq, e.Hash
}

// commitNow writes (and under SyncAlways fsyncs) b from the calling
// goroutine. commit uses it when no flusher runs; AppendEntries always does:
// a follower has one replication stream,
// so there is no group to gather, and handing the batch to the flusher and
// back costs two goroutine wake-ups, which on an idle machine are tens of
// microseconds each on the synchronous-replication path.
func (l *Log) commitNow(b *batch) error {
	l.w.Lock()
	if !b.done {
		l.flushLocked()
	}
	err := b.err
	l.w.Unlock()
	return err
}

func (l *Log) pendingLocked() *batch {
	if l.mu.pend == nil {
		l.mu.pend = &batch{buf: l.mu.spareBuf[:0], offs: l.mu.spareOffs[:0], start: l.mu.enc.size}
		if l.kick != nil {
			l.mu.pend.doneC = make(chan struct{}) // only the flusher's waiters use it
		}
		l.mu.spareBuf, l.mu.spareOffs = nil, nil
	}
	return l.mu.pend
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
		if l.w.TryLock() {
			if !b.done {
				l.growGroup()
				l.flushLocked()
			}
			l.w.Unlock()
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
	if l.mu.pend == nil {
		return 0
	}
	return len(l.mu.pend.offs)
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
		l.w.Lock()
		l.flushLocked()
		l.w.Unlock()
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
// it. l.w must be held.
func (l *Log) flushLocked() {
	l.mu.Lock()
	b := l.mu.pend
	l.mu.pend = nil
	f := l.mu.active.files.f
	werr := l.w.err
	l.mu.Unlock()
	if b == nil {
		return
	}
	fail := func(err error) {
		b.finish(err)
		l.mu.Lock()
		// Pending entries encoded after b build on b's seqs and hashes: fail
		// them too and roll the encoder back to the published state.
		if p := l.mu.pend; p != nil {
			p.finish(fmt.Errorf("filelog: an earlier entry in the same group failed: %w", err))
			l.mu.pend = nil
		}
		l.mu.enc = encState{since: l.mu.since, head: l.mu.head, size: l.mu.pubSize}
		l.mu.Unlock()
	}
	if werr != nil {
		fail(werr)
		return
	}
	if b.start != l.w.size {
		fail(fmt.Errorf("filelog: internal error: batch at %d, segment at %d", b.start, l.w.size))
		return
	}
	l.stats.writes.Add(1)
	if _, err := f.WriteAt(b.buf, b.start); err != nil {
		err = fmt.Errorf("filelog: write %s: %w", l.mu.active.path, err)
		// Cut any partial write so that the file ends at the last good
		// frame; if even that fails the file's state is unknown: sticky.
		if terr := f.Truncate(l.w.size); terr != nil {
			l.setSticky(fmt.Errorf("%w; truncating the partial write failed too: %v", err, terr))
		}
		fail(err)
		return
	}
	l.w.size += int64(len(b.buf))
	l.w.unsynced = true
	if l.opts.Sync == SyncAlways {
		if fn := l.observer.Load(); fn != nil {
			// Written, not yet durable: replication sends the batch while
			// the fsync below runs. If the fsync fails the error is sticky,
			// so these seqs are never written again with other content.
			(*fn)(b.last-int64(len(b.offs))+1, b.last, b.buf)
		}
		if err := l.syncLocked(); err != nil {
			fail(err)
			return
		}
	}
	l.stats.entries.Add(int64(len(b.offs)))
	l.stats.bytes.Add(int64(len(b.buf)))
	l.mu.Lock()
	l.mu.activeIdx = append(l.mu.activeIdx, b.offs...)
	l.mu.since, l.mu.head, l.mu.pubSize = b.last, b.head, l.w.size
	l.sinceA.Store(b.last)
	if cap(b.buf) <= maxSpare && l.mu.spareBuf == nil {
		l.mu.spareBuf, l.mu.spareOffs = b.buf[:0], b.offs[:0]
	}
	l.mu.Unlock()
	b.buf, b.offs = nil, nil
	b.finish(nil)
}

type encState struct {
	since int64
	head  flume.Hash
	size  int64 // active segment size including pending bytes
}

// batch is the pending group of frames that one flush writes. Appenders keep
// a pointer to the batch they encoded into and read done/err under Log.w.
type batch struct {
	buf   []byte
	offs  []int64
	start int64 // offset in the active segment where buf goes
	last  int64
	head  flume.Hash
	done  bool          // guarded by Log.w
	err   error         // guarded by Log.w; read by waiters after doneC closes
	doneC chan struct{} // closed by finish
}

// finish records the batch's outcome and wakes its waiters. l.w is held.
func (b *batch) finish(err error) {
	b.done, b.err = true, err
	if b.doneC != nil {
		close(b.doneC)
	}
}

// maxSpare bounds the buffers kept for reuse between flushes.
const maxSpare = 8 << 20
