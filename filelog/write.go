// Appending: Append, AppendEntries, group commit and the flush that writes a batch.

package filelog

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"
	"runtime"

	"github.com/flume-go/flume"
)

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

// chainHasher computes flume.ChainHash without allocating for large
// payloads (flume.ChainHash allocates a digest above 512 bytes).
type chainHasher struct {
	d   hash.Hash
	hdr [48]byte
	sum []byte
}

func newChainHasher() *chainHasher { return &chainHasher{d: sha256.New(), sum: make([]byte, 0, 32)} }

func (c *chainHasher) next(prev flume.Hash, seq int64, epoch uint64, data []byte) flume.Hash {
	if len(data) <= 512 {
		return flume.ChainHash(prev, seq, epoch, data)
	}
	c.d.Reset()
	copy(c.hdr[:32], prev[:])
	binary.LittleEndian.PutUint64(c.hdr[32:], uint64(seq))
	binary.LittleEndian.PutUint64(c.hdr[40:], epoch)
	c.d.Write(c.hdr[:])
	c.d.Write(data)
	c.sum = c.d.Sum(c.sum[:0])
	var h flume.Hash
	copy(h[:], c.sum)
	return h
}
