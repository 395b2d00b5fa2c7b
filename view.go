package flume

import (
	"context"
	"errors"
	"fmt"
)

// View is state derived from the log (flumedb's view). A DB feeds each view
// every entry in seq order, starting after the view's own Since, in batches,
// and live as the log grows. A view persists its state and its since
// together and atomically, so that after a crash it resumes exactly.
//
// Implementations: views.Reduce, views.Index.
type View interface {
	// Open is called once by DB.Use before any other method. The host lets
	// the view's read methods wait for read-your-writes (host.Sync).
	Open(host ViewHost) error
	// Since is the seq of the last entry the view has applied and
	// persisted, -1 for none.
	Since() int64
	// Apply folds entries into the view. entries[0].Seq == Since()+1 and the
	// seqs are dense. Entry data is valid only during the call. The view's
	// Since is entries[len-1].Seq once Apply returns nil.
	Apply(entries []Entry) error
	// Reset drops the view's state (Since becomes -1) so it can be rebuilt
	// from the start of the log. The DB calls it when the view is ahead of
	// its log. A view whose stored format version changed resets itself in
	// Open.
	Reset() error
	// Close releases the view. The DB calls it on Close.
	Close() error
}

// ViewHost is the DB side of a view, handed to View.Open.
type ViewHost interface {
	// Sync blocks until the view has applied every entry that was in the log
	// when Sync was called (read-your-writes), ctx ends, or the DB closes.
	Sync(ctx context.Context) error
	// Since is the log's published since.
	LogSince() int64
	// Changed is DB.Changed: the log's since and a channel closed when it
	// changes, for views that serve live queries.
	Changed() (since int64, ch <-chan struct{})
	// Err is the error that stopped the view's feed, if any.
	Err() error
}

// ViewBatch bounds how many entries a view is fed per Apply call.
const ViewBatch = 4096

var errViewClosed = errors.New("flume: view closed")

// viewRunner feeds one view and tracks its progress for Sync waiters.
type viewRunner struct {
	db   *DB
	name string
	v    View

	// progress guarded by db.mu: since applied and a channel closed on change
	done    int64
	changed chan struct{}
	err     error
}

// Use attaches view under name and starts feeding it from its Since()+1,
// catching up with the log in the background and then following it live.
// A view that is ahead of the log (its log was replaced or truncated) is
// Reset and rebuilt. It returns the view's host; view read methods use it.
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
	r := &viewRunner{db: db, name: name, v: v, changed: make(chan struct{})}
	db.mu.views[name] = r
	db.mu.Unlock()

	fail := func(err error) error {
		db.mu.Lock()
		delete(db.mu.views, name)
		db.mu.Unlock()
		return err
	}
	if err := v.Open(r); err != nil {
		return fail(fmt.Errorf("flume: open view %q: %w", name, err))
	}
	if s := v.Since(); s > db.Since() {
		db.opts.Logger.Warn("view is ahead of its log; rebuilding", "view", name, "view_since", s, "log_since", db.Since())
		if err := v.Reset(); err != nil {
			v.Close()
			return fail(fmt.Errorf("flume: reset view %q: %w", name, err))
		}
	}
	db.mu.Lock()
	r.done = v.Since()
	db.mu.Unlock()
	db.wg.Add(1)
	go r.run()
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

// run feeds the view until the DB closes or Apply fails. It exits when
// db.closedCh is closed.
func (r *viewRunner) run() {
	defer r.db.wg.Done()
	batch := make([]Entry, 0, 256)
	for {
		r.db.mu.Lock()
		next := r.done + 1
		r.db.mu.Unlock()
		since, ch := r.db.Changed()
		if next > since {
			select {
			case <-ch:
				continue
			case <-r.db.closedCh:
				return
			}
		}
		it := r.db.log.Iter(next)
		for next <= since {
			batch = batch[:0]
			for len(batch) < ViewBatch && next <= since && it.Next() {
				e := it.Entry()
				if e.Seq != next {
					it.Close()
					r.fail(fmt.Errorf("flume: view %q: log iterator returned seq %d, expected %d", r.name, e.Seq, next))
					return
				}
				batch = append(batch, e)
				next++
			}
			if len(batch) == 0 {
				err := it.Err()
				if err == nil {
					err = fmt.Errorf("flume: view %q: log ended at %d before published since %d", r.name, next-1, since)
				}
				it.Close()
				r.fail(err)
				return
			}
			if err := r.v.Apply(batch); err != nil {
				it.Close()
				r.fail(fmt.Errorf("flume: view %q: apply %d..%d: %w", r.name, batch[0].Seq, batch[len(batch)-1].Seq, err))
				return
			}
			r.db.mu.Lock()
			r.done = batch[len(batch)-1].Seq
			close(r.changed)
			r.changed = make(chan struct{})
			r.db.mu.Unlock()
			select {
			case <-r.db.closedCh:
				it.Close()
				return
			default:
			}
		}
		it.Close()
	}
}

func (r *viewRunner) fail(err error) {
	r.db.opts.Logger.Error("view stopped", "view", r.name, "err", err)
	r.db.mu.Lock()
	r.err = err
	close(r.changed)
	r.changed = make(chan struct{})
	r.db.mu.Unlock()
}

// Sync implements ViewHost.
func (r *viewRunner) Sync(ctx context.Context) error {
	target := r.db.Since()
	for {
		r.db.mu.Lock()
		done, ch, err, closed := r.done, r.changed, r.err, r.db.mu.closed
		r.db.mu.Unlock()
		if done >= target {
			return nil
		}
		if err != nil {
			return err
		}
		if closed {
			return ErrClosed
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("flume: view %q at %d waiting for %d: %w", r.name, done, target, ctx.Err())
		case <-r.db.closedCh:
			return ErrClosed
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

func (r *viewRunner) close() error { return r.v.Close() }
