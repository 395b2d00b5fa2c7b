package flume

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Options configure a DB. The zero value (or nil) is a standalone primary
// with asynchronous replication.
type Options struct {
	// SyncReplicas is the default number of followers that must acknowledge
	// an append (per the replicator's ack level) before Append returns.
	// 0, the default, is asynchronous replication. AppendOptions overrides it
	// per call.
	SyncReplicas int
	// SyncTimeout bounds the wait for follower acks when the caller's context
	// has no earlier deadline. Default 5s: long enough to ride out a follower
	// reconnect, short enough that a writer learns of a lost follower.
	SyncTimeout time.Duration
	// Logger receives the DB's events. Default: discard.
	Logger *slog.Logger
}

func (o *Options) withDefaults() Options {
	var r Options
	if o != nil {
		r = *o
	}
	if r.SyncTimeout <= 0 {
		r.SyncTimeout = 5 * time.Second
	}
	if r.Logger == nil {
		r.Logger = slog.New(slog.DiscardHandler)
	}
	return r
}

// Replicator is what a DB needs from the primary side of replication to
// answer synchronous appends. repl.Primary implements it.
type Replicator interface {
	// WaitAcked blocks until at least k followers have acknowledged seq (at
	// the replicator's ack level) and returns how many have. It returns early
	// with the count so far and ctx.Err() when ctx ends.
	WaitAcked(ctx context.Context, seq int64, k int) (acked int, err error)
}

// AppendOptions override a DB's defaults for one append.
type AppendOptions struct {
	// SyncReplicas overrides Options.SyncReplicas when >= 0. Use -1 (or
	// DefaultReplicas) for the DB's default.
	SyncReplicas int
}

// DefaultReplicas in AppendOptions.SyncReplicas means "the DB's default".
const DefaultReplicas = -1

// DB is a flume database: one Log plus the views derived from it. It owns
// every write to the log, publishes each durable append to live streams and
// views, and answers synchronous appends with the help of a Replicator.
// All methods are safe for concurrent use.
type DB struct {
	log  Log
	opts Options

	mu struct {
		sync.Mutex
		since      int64         // last published (durable) seq
		changed    chan struct{} // closed and replaced when since changes
		closed     bool
		primary    string // non-empty or follower=true: read-only follower of this address
		follower   bool
		replicator Replicator
		views      map[string]*viewRunner
	}
	closedCh chan struct{} // closed by Close
	wg       sync.WaitGroup
	// appendMu serialises follower appends with the mode switch so that a
	// client append never interleaves with a replicated batch.
	appendMu sync.RWMutex
}

// Open opens a DB over log. The log's current content is published at once:
// Since() is the log's Since() when Open returns, never an unknown value.
func Open(log Log, opts *Options) (*DB, error) {
	if log == nil {
		return nil, errors.New("flume: Open: nil log")
	}
	db := &DB{log: log, opts: opts.withDefaults(), closedCh: make(chan struct{})}
	db.mu.since = log.Since()
	db.mu.changed = make(chan struct{})
	db.mu.views = make(map[string]*viewRunner)
	return db, nil
}

// Log returns the underlying log for reads (Entry, Head, Iter, ID). Writing
// to it directly bypasses the DB and is not supported.
func (db *DB) Log() Log { return db.log }

// Logger returns the DB's logger.
func (db *DB) Logger() *slog.Logger { return db.opts.Logger }

// Options returns the options the DB was opened with, defaults filled in.
func (db *DB) Options() Options { return db.opts }

// Since returns the seq of the last entry published to readers, -1 when the
// log is empty. Every entry up to it is durable per the log's sync policy.
func (db *DB) Since() int64 {
	db.mu.Lock()
	defer db.mu.Unlock()
	return db.mu.since
}

// WaitSince blocks until Since() >= seq, ctx ends (ctx.Err()) or the DB
// closes (ErrClosed).
func (db *DB) WaitSince(ctx context.Context, seq int64) error {
	for {
		db.mu.Lock()
		since, ch, closed := db.mu.since, db.mu.changed, db.mu.closed
		db.mu.Unlock()
		if since >= seq {
			return nil
		}
		if closed {
			return ErrClosed
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-db.closedCh:
		}
	}
}

// Changed returns the current since and a channel that is closed when it
// next changes (or the DB closes). It is the building block for observers:
//
//	for { s, ch := db.Changed(); use(s); <-ch }
func (db *DB) Changed() (since int64, ch <-chan struct{}) {
	db.mu.Lock()
	defer db.mu.Unlock()
	return db.mu.since, db.mu.changed
}

// Watch calls fn with Since() now and after every change, from one
// goroutine, until the returned stop is called or the DB closes. Changes that
// happen while fn runs are coalesced: fn sees the latest value, never a
// stale one, and values only grow.
func (db *DB) Watch(fn func(since int64)) (stop func()) {
	done := make(chan struct{})
	var once sync.Once
	db.wg.Add(1)
	go func() {
		defer db.wg.Done()
		last := int64(-2)
		for {
			s, ch := db.Changed()
			if s != last {
				fn(s)
				last = s
			}
			select {
			case <-ch:
			case <-done:
				return
			case <-db.closedCh:
				return
			}
		}
	}()
	return func() { once.Do(func() { close(done) }) }
}

// publish raises since to last (never lowers it) and wakes waiters.
func (db *DB) publish(last int64) {
	db.mu.Lock()
	defer db.mu.Unlock()
	if last > db.mu.since {
		db.mu.since = last
		close(db.mu.changed)
		db.mu.changed = make(chan struct{})
	}
}

// Append stores value as one entry and returns its own seq. It returns once
// the entry is durable per the log's sync policy and, when synchronous
// replication is configured, acknowledged by enough followers (else a
// *NotReplicatedError; the entry stays in the log).
func (db *DB) Append(ctx context.Context, value []byte) (int64, error) {
	_, last, err := db.AppendWith(ctx, AppendOptions{SyncReplicas: DefaultReplicas}, value)
	return last, err
}

// AppendBatch stores values as consecutive entries, atomically (all or
// none), and returns the seqs of the first and last. Entry i has seq first+i.
func (db *DB) AppendBatch(ctx context.Context, values [][]byte) (first, last int64, err error) {
	return db.AppendWith(ctx, AppendOptions{SyncReplicas: DefaultReplicas}, values...)
}

// AppendWith is AppendBatch with per-call options.
func (db *DB) AppendWith(ctx context.Context, o AppendOptions, values ...[]byte) (first, last int64, err error) {
	if len(values) == 0 {
		s := db.Since()
		return s + 1, s, nil
	}
	if err := ctx.Err(); err != nil {
		return 0, 0, err
	}
	db.appendMu.RLock()
	db.mu.Lock()
	closed, follower, primary, rep := db.mu.closed, db.mu.follower, db.mu.primary, db.mu.replicator
	db.mu.Unlock()
	if closed {
		db.appendMu.RUnlock()
		return 0, 0, ErrClosed
	}
	if follower {
		db.appendMu.RUnlock()
		return 0, 0, &NotPrimaryError{Primary: primary}
	}
	last, err = db.log.Append(values...)
	db.appendMu.RUnlock()
	if err != nil {
		return 0, 0, fmt.Errorf("flume: append: %w", err)
	}
	first = last - int64(len(values)) + 1
	db.publish(last)

	k := o.SyncReplicas
	if k < 0 {
		k = db.opts.SyncReplicas
	}
	if k == 0 {
		return first, last, nil
	}
	if rep == nil {
		return first, last, &NotReplicatedError{First: first, Last: last, Required: k,
			Cause: errors.New("no replication is configured on this DB")}
	}
	wctx, cancel := context.WithTimeout(ctx, db.opts.SyncTimeout)
	defer cancel()
	acked, err := rep.WaitAcked(wctx, last, k)
	if err != nil || acked < k {
		if err == nil {
			err = errors.New("replicator returned early")
		}
		return first, last, &NotReplicatedError{First: first, Last: last, Acked: acked, Required: k, Cause: err}
	}
	return first, last, nil
}

// SetReplicator installs the primary side of replication, which answers
// synchronous appends. repl.Primary calls it; nil removes it.
func (db *DB) SetReplicator(r Replicator) {
	db.mu.Lock()
	defer db.mu.Unlock()
	db.mu.replicator = r
}

// SetFollower makes the DB a read-only follower of primary (an address for
// error messages; may be empty) when on is true: client appends then fail
// with a *NotPrimaryError, and only AppendReplicated writes. Turning it off
// makes the DB writable again (promotion).
func (db *DB) SetFollower(on bool, primary string) {
	db.appendMu.Lock()
	defer db.appendMu.Unlock()
	db.mu.Lock()
	defer db.mu.Unlock()
	db.mu.follower, db.mu.primary = on, primary
}

// Role reports whether the DB is a follower and of which primary.
func (db *DB) Role() (follower bool, primary string) {
	db.mu.Lock()
	defer db.mu.Unlock()
	return db.mu.follower, db.mu.primary
}

// AppendReplicated appends entries received from a primary: they must
// continue the log exactly (ErrOutOfOrder, ErrDiverged otherwise; nothing is
// appended then). It returns once they are durable per the log's policy and
// publishes them to streams and views.
func (db *DB) AppendReplicated(entries []Entry) error {
	if len(entries) == 0 {
		return nil
	}
	db.appendMu.Lock()
	db.mu.Lock()
	closed := db.mu.closed
	db.mu.Unlock()
	if closed {
		db.appendMu.Unlock()
		return ErrClosed
	}
	err := db.log.AppendEntries(entries)
	db.appendMu.Unlock()
	if err != nil {
		return fmt.Errorf("flume: append replicated: %w", err)
	}
	db.publish(entries[len(entries)-1].Seq)
	return nil
}

// AdoptID gives an empty log the identity of the history it is about to
// replicate (ErrNotEmpty if it holds entries).
func (db *DB) AdoptID(id LogID) error {
	db.appendMu.Lock()
	defer db.appendMu.Unlock()
	return db.log.SetID(id)
}

// Get returns the payload of entry seq (ErrNotFound past Since()).
func (db *DB) Get(ctx context.Context, seq int64) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	db.mu.Lock()
	since, closed := db.mu.since, db.mu.closed
	db.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	if seq < 0 || seq > since {
		return nil, fmt.Errorf("flume: get %d (since %d): %w", seq, since, ErrNotFound)
	}
	return db.log.Get(seq)
}

// Close stops every view and watcher the DB started, waits for them, closes
// the views and then the log. Later calls return nil; every other method
// returns ErrClosed after Close.
func (db *DB) Close() error {
	db.appendMu.Lock()
	db.mu.Lock()
	if db.mu.closed {
		db.mu.Unlock()
		db.appendMu.Unlock()
		return nil
	}
	db.mu.closed = true
	views := db.mu.views
	close(db.closedCh)
	close(db.mu.changed)
	db.mu.changed = make(chan struct{})
	db.mu.Unlock()
	db.appendMu.Unlock()

	db.wg.Wait()
	var errs []error
	for name, v := range views {
		if err := v.close(); err != nil {
			errs = append(errs, fmt.Errorf("flume: close view %q: %w", name, err))
		}
	}
	if err := db.log.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
