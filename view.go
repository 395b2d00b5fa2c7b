package flume

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
)

// View is state derived from the log (flumedb's view). A DB feeds each view
// every entry in seq order, starting after the view's own Since, in batches,
// and live as the log grows. A view persists its state and its since
// together and atomically, so that after a crash it resumes exactly.
//
// The DB calls Open, then Since/Reset, then Apply from one goroutine at a
// time, and Close last; a view's own read methods may run concurrently with
// Apply and must synchronise with it.
//
// Implementations: views.Reduce, views.Index.
type View interface {
	// Open is called once by DB.Use before any other method. The host lets
	// the view's read methods wait for read-your-writes (host.Sync). Open
	// must not wait on the host: the feed starts after Open returns.
	Open(host ViewHost) error
	// Since is the seq of the last entry the view has applied, -1 for none.
	Since() int64
	// Apply folds entries into the view. entries[0].Seq == Since()+1 and the
	// seqs are dense. Entry data is valid only during the call. The view's
	// Since is entries[len-1].Seq once Apply returns nil. An error stops the
	// view's feed for good (ViewHost.Err, Sync return it).
	Apply(entries []Entry) error
	// Reset drops the view's state (Since becomes -1) so it can be rebuilt
	// from the start of the log. The DB calls it when the view is ahead of
	// its log or (for a ChainView) holds another history. A view whose
	// stored format version changed resets itself in Open.
	Reset() error
	// Close releases the view, persisting what it has applied. The DB calls
	// it on Close, after the feed has stopped.
	Close() error
}

// ChainView is an optional interface for views that also record the chain
// hash of the last entry they applied (Entry.Hash of entries[len-1]). Use
// compares it with the log's hash at the view's Since and rebuilds a view
// whose history is not the log's (the log was replaced or truncated and
// rewritten), which Since alone cannot detect.
type ChainView interface {
	View
	// SinceHash is the chain hash of entry Since(); ignored when Since is -1.
	SinceHash() Hash
}

// BatchLimiter is an optional interface for views that want other bounds
// on an Apply batch than ViewBatch entries and 4 MiB of payload: a view
// whose Apply has a high fixed cost (one transaction commit per batch)
// takes larger batches while catching up. Live, batches hold whatever was
// published since the last one, so they stay small either way. Values < 1
// keep the default.
type BatchLimiter interface {
	View
	MaxBatch() (entries, bytes int)
}

// ViewHost is the DB side of a view, handed to View.Open. Its methods are
// safe for concurrent use.
type ViewHost interface {
	// Sync blocks until the view has applied every entry that was published
	// when Sync was called (read-your-writes), ctx ends, the view's feed
	// fails (its error), or the DB closes (ErrClosed).
	Sync(ctx context.Context) error
	// SyncTo is Sync with an explicit target: it waits until the view has
	// applied seq. Waiters with any targets in any order are each released
	// as soon as the view reaches theirs.
	SyncTo(ctx context.Context, seq int64) error
	// LogSince is the log's published since.
	LogSince() int64
	// Changed is DB.Changed: the log's since and a channel closed when it
	// changes, for views that serve live queries.
	Changed() (since int64, ch <-chan struct{})
	// Err is the error that stopped the view's feed, if any.
	Err() error
	// DB is the database the view is attached to, for views that read
	// entries back (index queries returning values, live queries).
	DB() *DB
	// Logger is the DB's logger.
	Logger() *slog.Logger
}

// ViewBatch bounds how many entries a view is fed per Apply call, unless
// the view is a BatchLimiter.
const ViewBatch = 4096

// viewBatchBytes bounds the payload bytes of one Apply batch (at least one
// entry is always fed), so that feeding views uses bounded memory whatever
// the entry sizes.
const viewBatchBytes = 4 << 20

// viewRunner feeds one view and tracks its progress for Sync waiters.
type viewRunner struct {
	db   *DB
	name string
	v    View

	// Progress, guarded by db.mu. waiters are SyncTo callers by target,
	// released when done reaches them, on failure and on Close.
	done    int64
	waiters waitQueue
	err     error
	started bool // Use completed: close() must close the view

	// stop pauses the feed (DB.TruncateAfter): closing it makes run return
	// between batches; stopped is closed when it has. Both are replaced
	// when the feed starts again. Guarded by db.mu.
	stop, stopped chan struct{}
}

// Use attaches view under name and starts feeding it from its Since()+1,
// catching up with the log in the background and then following it live.
// A view that is ahead of the log (its log was replaced or truncated), or a
// ChainView whose hash at its Since differs from the log's, is Reset and
// rebuilt. Use returns once the view is open and its feed started; use the
// view's own read methods (which wait through ViewHost.Sync) to see it
// caught up. The DB closes the view on Close; if Use fails the view is not
// left open by the DB.
func (db *DB) Use(name string, v View) error {
	db.mu.Lock()
	if db.mu.closed {
		db.mu.Unlock()
		return ErrClosed
	}
	if _, dup := db.mu.views[name]; dup {
		db.mu.Unlock()
		return fmt.Errorf("flume: a view named %q is already in use", name)
	}
	r := &viewRunner{db: db, name: name, v: v, done: -1}
	db.mu.views[name] = r
	// Counted from here, under mu, so that Close (which sets closed under
	// mu, then waits) waits for this Use and its feeder.
	db.wg.Add(1)
	db.mu.Unlock()

	fail := func(err error, closeView bool) error {
		if closeView {
			v.Close()
		}
		db.mu.Lock()
		delete(db.mu.views, name)
		db.mu.Unlock()
		db.wg.Done()
		return err
	}
	if err := v.Open(r); err != nil {
		return fail(fmt.Errorf("flume: open view %q: %w", name, err), false)
	}
	if err := db.checkViewHistory(name, v); err != nil {
		return fail(err, true)
	}
	db.mu.Lock()
	r.done = v.Since()
	r.started = true
	r.stop, r.stopped = make(chan struct{}), make(chan struct{})
	stop, stopped := r.stop, r.stopped
	db.mu.Unlock()
	go r.run(stop, stopped)
	return nil
}

// checkViewHistory resets v if it is ahead of the log or, for a ChainView,
// on another history.
func (db *DB) checkViewHistory(name string, v View) error {
	s, logSince := v.Since(), db.Since()
	reason := ""
	switch {
	case s > logSince:
		reason = "view is ahead of its log"
	case s >= 0:
		if cv, ok := v.(ChainView); ok {
			e, err := db.log.Entry(s)
			if err != nil {
				return fmt.Errorf("flume: view %q: read log entry %d: %w", name, s, err)
			}
			if e.Hash != cv.SinceHash() {
				reason = "view's chain hash differs from the log's"
			}
		}
	}
	if reason == "" {
		return nil
	}
	db.opts.Logger.Warn(reason+"; rebuilding", "view", name, "view_since", s, "log_since", logSince)
	if err := v.Reset(); err != nil {
		return fmt.Errorf("flume: reset view %q: %w", name, err)
	}
	if s := v.Since(); s != -1 {
		return fmt.Errorf("flume: view %q: Since is %d after Reset, want -1", name, s)
	}
	return nil
}

// View returns the view attached under name, or nil.
func (db *DB) View(name string) View {
	db.mu.Lock()
	defer db.mu.Unlock()
	if r := db.mu.views[name]; r != nil {
		return r.v
	}
	return nil
}

// run feeds the view until the DB closes or feeding fails. It exits when
// db.closedCh is closed (checked between batches and while waiting) or after
// recording an error.
func (r *viewRunner) run(stop <-chan struct{}, stopped chan<- struct{}) {
	defer r.db.wg.Done()
	defer close(stopped)
	maxEntries, maxBytes := ViewBatch, viewBatchBytes
	if bl, ok := r.v.(BatchLimiter); ok {
		if e, b := bl.MaxBatch(); e > 0 && b > 0 {
			maxEntries, maxBytes = e, b
		} else if e > 0 {
			maxEntries = e
		} else if b > 0 {
			maxBytes = b
		}
	}
	r.db.mu.Lock()
	c := r.db.Cursor(r.done + 1)
	r.db.mu.Unlock()
	defer c.Close()
	for {
		select {
		case <-r.db.closedCh:
			return
		case <-stop:
			return
		default:
		}
		// The entries of a batch are good even when the cursor stopped
		// right after them: the view gets them before the feed ends.
		batch := c.Batch(maxEntries, maxBytes)
		if len(batch) > 0 {
			if err := r.v.Apply(batch); err != nil {
				r.fail(fmt.Errorf("flume: view %q: apply %d..%d: %w", r.name, batch[0].Seq, batch[len(batch)-1].Seq, err))
				return
			}
			r.advance(batch[len(batch)-1].Seq)
		}
		if err := c.Err(); err != nil {
			if !errors.Is(err, ErrClosed) {
				r.fail(fmt.Errorf("flume: view %q: %w", r.name, err))
			}
			return
		}
		if len(batch) == 0 {
			select {
			case <-c.Changed(): // closed by a publish or by Close
			case <-stop:
				return
			}
		}
	}
}

func (r *viewRunner) advance(done int64) {
	r.db.mu.Lock()
	defer r.db.mu.Unlock()
	r.done = done
	r.waiters.release(done)
}

func (r *viewRunner) fail(err error) {
	r.db.opts.Logger.Error("view stopped", "view", r.name, "err", err)
	r.db.mu.Lock()
	defer r.db.mu.Unlock()
	r.err = err
	r.waiters.releaseAll()
}

// Sync implements ViewHost.
func (r *viewRunner) Sync(ctx context.Context) error {
	return r.SyncTo(ctx, r.db.Since())
}

// SyncTo implements ViewHost.
func (r *viewRunner) SyncTo(ctx context.Context, target int64) error {
	for {
		r.db.mu.Lock()
		done, err, closed := r.done, r.err, r.db.mu.closed
		var w *waiter
		if !closed && done < target && err == nil {
			w = r.waiters.add(target)
		}
		r.db.mu.Unlock()
		switch {
		case closed:
			return ErrClosed
		case done >= target:
			return nil
		case err != nil:
			return err
		}
		select {
		case <-w.ch:
			// Released: re-check (reached, failed or closed).
		case <-ctx.Done():
			r.db.mu.Lock()
			released := r.waiters.remove(w)
			r.db.mu.Unlock()
			if !released {
				return fmt.Errorf("flume: view %q at %d waiting for %d: %w", r.name, done, target, ctx.Err())
			}
		}
	}
}

// LogSince implements ViewHost.
func (r *viewRunner) LogSince() int64 { return r.db.Since() }

// Changed implements ViewHost.
func (r *viewRunner) Changed() (int64, <-chan struct{}) { return r.db.Changed() }

// Err implements ViewHost.
func (r *viewRunner) Err() error {
	r.db.mu.Lock()
	defer r.db.mu.Unlock()
	return r.err
}

// DB implements ViewHost.
func (r *viewRunner) DB() *DB { return r.db }

// Logger implements ViewHost.
func (r *viewRunner) Logger() *slog.Logger { return r.db.opts.Logger }

func (r *viewRunner) close() error {
	r.db.mu.Lock()
	started := r.started
	r.db.mu.Unlock()
	if !started {
		return nil
	}
	return r.v.Close()
}
