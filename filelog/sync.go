// Syncing: the fsync policy, Sync, the interval syncer and sticky write errors.

package filelog

import (
	"context"
	"fmt"
	"time"

	"github.com/flume-go/flume"
)

var _ flume.AppendSyncer = (*Log)(nil)

// SyncsOnAppend implements flume.AppendSyncer: true only under SyncAlways,
// where Append returns after the fsync that covers its entries.
func (l *Log) SyncsOnAppend() bool { return l.opts.Sync == SyncAlways }

var _ flume.WriteObserver = (*Log)(nil)

// ObserveWrites implements flume.WriteObserver. Only under SyncAlways is
// there a window between write and fsync to report: under the other
// policies a batch is published as soon as it is written, and fn is never
// called.
func (l *Log) ObserveWrites(fn func(first, last int64, frames []byte)) {
	if fn == nil {
		l.observer.Store(nil)
		return
	}
	l.observer.Store(&fn)
}

// Sync implements flume.Log: it fsyncs everything appended so far.
func (l *Log) Sync() error {
	l.mu.RLock()
	closed, ro := l.mu.closed, l.opts.ReadOnly
	l.mu.RUnlock()
	if closed {
		return flume.ErrClosed
	}
	if ro {
		return nil
	}
	return l.syncAside()
}

// syncAside flushes pending writes and fsyncs them without holding l.w
// across the fsync, so that appends under SyncInterval and SyncNever are
// not stalled by it (a follower that fsyncs before acknowledging, or the
// interval syncer, would otherwise add an fsync to the latency of the
// appends that arrive meanwhile). When it returns nil, everything written
// before it was called is durable.
func (l *Log) syncAside() error {
	l.sync.Lock()
	defer l.sync.Unlock()
	l.w.Lock()
	l.flushLocked()
	if !l.w.unsynced {
		l.w.Unlock()
		return nil
	}
	if err := l.w.err; err != nil {
		l.w.Unlock()
		return err
	}
	// Writes made during the fsync set unsynced again; l.sync keeps a
	// concurrent syncAside from returning early on this cleared flag
	// before the fsync below completes.
	s := l.mu.active
	l.w.unsynced = false
	l.w.Unlock()
	if err := l.fsync(s); err != nil {
		l.w.Lock()
		l.w.unsynced = true
		l.setSticky(err)
		l.w.Unlock()
		return err
	}
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

// syncLocked fsyncs the active segment. A failed fsync is sticky: after it
// the kernel may have dropped the dirty pages (fsyncgate), so the log
// refuses writes until it is reopened and recovered. l.w must be held.
func (l *Log) syncLocked() error {
	if !l.w.unsynced {
		return nil
	}
	if l.w.err != nil {
		return l.w.err
	}
	if err := l.fsync(l.mu.active); err != nil {
		l.setSticky(err)
		return err
	}
	l.w.unsynced = false
	return nil
}

// fsync fsyncs s's data file and records the time it took.
func (l *Log) fsync(s *segment) error {
	start := time.Now()
	l.stats.syncs.Add(1)
	if err := s.files.f.Sync(); err != nil {
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

// setSticky records err as the sticky write error unless there is one
// already. l.w is held; it takes l.mu, so that holders of either see it.
func (l *Log) setSticky(err error) {
	l.mu.Lock()
	if l.w.err == nil {
		l.w.err = err
		l.logger.Error("filelog: write failure, log is read-only until reopened", "err", err)
	}
	l.mu.Unlock()
}
