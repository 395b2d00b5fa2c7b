package flume

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
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
//
// Since is published only after the log's Append has returned, so every
// entry a reader can see (Get, Stream, views) is durable per the log's sync
// policy. This relies on the log being durable as a prefix: when Append
// returns for seq s, every seq below s is durable too.
//
// The DB holds none of its locks while it calls a view, a Replicator or a
// Watch callback.
type DB struct {
	log  Log
	opts Options

	// mu guards the published position, the mode and the set of views.
	// Lock order: appendMu before mu, never the other way round.
	mu struct {
		sync.Mutex
		since int64 // last published (durable) seq
		// logSince is the last seq in the log: since, plus the entries a
		// follower holds (HoldAbove).
		logSince int64
		// holding: a follower publishes no entry above hold (HoldAbove).
		holding bool
		hold    int64
		// ownEpoch: the log's current epoch was begun by this DB (Promote,
		// NewEpoch), so every entry of it was written by this process.
		ownEpoch bool
		// changed is closed and replaced when since grows, but only if
		// someone took it (chTaken): appends nobody waits for then cost no
		// allocation. Close closes it and replaces it one last time.
		changed    chan struct{}
		chTaken    bool
		waiters    waitQueue // WaitSince callers, by target
		closed     bool
		primary    string        // address of the primary when follower is set (may be empty)
		follower   bool          // client appends are refused (NotPrimaryError)
		upstream   bool          // an upstream is claimed (ClaimUpstream)
		deposed    *DeposedError // set by Depose: client appends fail with it until Promote
		claims     uint64        // counts ClaimUpstream calls, so a release ends only its own claim
		replicator Replicator
		views      map[string]*viewRunner
	}
	closedCh chan struct{} // closed by Close
	// truncations counts TruncateAfter calls that cut entries; cursors
	// compare it on every Next to notice a cut without taking mu.
	truncations atomic.Uint64
	// ctx is cancelled by Close; waits that outlive a call (sync-replication
	// acks) derive from it so that Close ends them.
	ctx    context.Context
	cancel context.CancelFunc
	// wg counts the goroutines the DB started (view feeders, watchers) and
	// Use calls in progress; Close waits for it.
	wg sync.WaitGroup
	// appendMu is held shared by client appends and exclusively by
	// replicated appends, mode switches and Close: a client append never
	// interleaves with a replicated batch, and Close waits for appends that
	// are inside the log.
	appendMu sync.RWMutex
}

// Open opens a DB over log. The log's current content is published at once:
// Since() is the log's Since() when Open returns, never an unknown value.
func Open(log Log, opts *Options) (*DB, error) {
	if log == nil {
		return nil, errors.New("flume: Open: nil log")
	}
	db := &DB{log: log, opts: opts.withDefaults(), closedCh: make(chan struct{})}
	db.ctx, db.cancel = context.WithCancel(context.Background())
	db.mu.since = log.Since()
	db.mu.logSince = db.mu.since
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
// closes (ErrClosed). Any number of waiters with any targets, in any order,
// are each released as soon as their own target is published.
func (db *DB) WaitSince(ctx context.Context, seq int64) error {
	db.mu.Lock()
	if db.mu.closed {
		db.mu.Unlock()
		return ErrClosed
	}
	if db.mu.since >= seq {
		db.mu.Unlock()
		return nil
	}
	// Each waiter sits in a heap by target and is woken once, by the
	// publish that reaches it (or Close): thousands of waiters cost
	// appends nothing until their own targets are published.
	w := db.mu.waiters.add(seq)
	db.mu.Unlock()
	select {
	case <-w.ch:
	case <-ctx.Done():
		db.mu.Lock()
		released := db.mu.waiters.remove(w)
		db.mu.Unlock()
		if !released {
			return ctx.Err()
		}
	}
	if db.isClosed() {
		return ErrClosed
	}
	return nil
}

// Changed returns the current since and a channel that is closed when it
// next changes or the DB closes. It is the building block for observers:
//
//	for {
//		s, ch := db.Changed()
//		use(s)
//		select {
//		case <-ch:
//		case <-db.Done():
//			return
//		}
//	}
//
// Close closes every channel handed out before it; a channel obtained after
// Close never closes, so observers stop on Done.
func (db *DB) Changed() (since int64, ch <-chan struct{}) {
	since, ch, _ = db.changedState()
	return since, ch
}

// changedState is Changed plus whether the DB is closed, read atomically.
func (db *DB) changedState() (since int64, ch <-chan struct{}, closed bool) {
	db.mu.Lock()
	defer db.mu.Unlock()
	db.mu.chTaken = true
	return db.mu.since, db.mu.changed, db.mu.closed
}

// Done returns a channel that is closed when Close begins.
func (db *DB) Done() <-chan struct{} { return db.closedCh }

// Watch calls fn with Since() now and after every change, from one
// goroutine, until the returned stop is called or the DB closes. Changes that
// happen while fn runs are coalesced: fn sees the latest value, never a
// stale one, and values only grow. fn is not called again once stop has
// returned (a call already running may finish). stop may be called more
// than once and from fn itself. On a closed DB Watch starts nothing.
func (db *DB) Watch(fn func(since int64)) (stop func()) {
	done := make(chan struct{})
	var once sync.Once
	stop = func() { once.Do(func() { close(done) }) }
	db.mu.Lock()
	if db.mu.closed {
		db.mu.Unlock()
		return stop
	}
	db.wg.Add(1) // under mu: Close cannot be in wg.Wait yet
	db.mu.Unlock()
	go func() {
		defer db.wg.Done()
		last := int64(-2)
		for {
			s, ch, closed := db.changedState()
			if closed {
				return
			}
			select {
			case <-done:
				return
			default:
			}
			if s != last {
				fn(s)
				last = s
			}
			select {
			case <-ch:
			case <-done:
				return
			}
		}
	}()
	return stop
}

// publish records that the log now ends at last or later and raises since
// to it (never lowering it; capped at the hold of a follower that holds, see
// HoldAbove), waking waiters.
func (db *DB) publish(last int64) {
	db.mu.Lock()
	defer db.mu.Unlock()
	db.publishLocked(last)
}

func (db *DB) publishLocked(last int64) {
	db.mu.logSince = max(db.mu.logSince, last)
	if db.mu.holding {
		last = min(last, db.mu.hold)
	}
	if last <= db.mu.since {
		return
	}
	db.mu.since = last
	db.mu.waiters.release(last)
	if db.mu.chTaken && !db.mu.closed {
		close(db.mu.changed)
		db.mu.changed = make(chan struct{})
		db.mu.chTaken = false
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

// AppendWith is AppendBatch with per-call options. With no values it
// appends nothing and returns (Since()+1, Since(), nil).
//
// With synchronous replication (k > 0 followers required), the entries are
// first made durable and published locally, then AppendWith waits for k
// acknowledgements of the last one, up to the earliest of ctx's deadline,
// Options.SyncTimeout and Close. Short of k it returns the seqs together with
// a *NotReplicatedError saying how many acked; the entries stay in the log.
func (db *DB) AppendWith(ctx context.Context, o AppendOptions, values ...[]byte) (first, last int64, err error) {
	if err := ctx.Err(); err != nil {
		return 0, 0, err
	}
	db.appendMu.RLock()
	db.mu.Lock()
	closed, follower, primary, rep, since := db.mu.closed, db.mu.follower, db.mu.primary, db.mu.replicator, db.mu.since
	deposed := db.mu.deposed
	db.mu.Unlock()
	if closed {
		db.appendMu.RUnlock()
		return 0, 0, ErrClosed
	}
	if deposed != nil && !follower {
		db.appendMu.RUnlock()
		return 0, 0, deposed
	}
	if follower {
		db.appendMu.RUnlock()
		return 0, 0, &NotPrimaryError{Primary: primary}
	}
	if len(values) == 0 {
		db.appendMu.RUnlock()
		return since + 1, since, nil
	}
	last, err = db.log.Append(values...)
	if err == nil {
		// Publish before releasing appendMu so that Close, which takes
		// appendMu exclusively, never races a publish.
		db.publish(last)
	}
	db.appendMu.RUnlock()
	if err != nil {
		if errors.Is(err, ErrClosed) {
			return 0, 0, ErrClosed
		}
		return 0, 0, fmt.Errorf("flume: append: %w", err)
	}
	first = last - int64(len(values)) + 1

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
	// Close ends the wait: a closing DB answers "not replicated (yet)".
	defer context.AfterFunc(db.ctx, cancel)()
	acked, err := rep.WaitAcked(wctx, last, k)
	if acked >= k {
		return first, last, nil
	}
	if err == nil {
		err = errors.New("replicator returned early")
	} else if db.ctx.Err() != nil && ctx.Err() == nil {
		err = ErrClosed
	}
	return first, last, &NotReplicatedError{First: first, Last: last, Acked: acked, Required: k, Cause: err}
}

// ClaimReplicator installs r as the DB's primary side of replication,
// which answers synchronous appends. It fails with ErrHasPrimary while
// another replicator is installed, and with ErrClosed after Close. Whatever
// r's fields hold when ClaimReplicator is called is visible to every
// goroutine that later gets r from Replicator.
func (db *DB) ClaimReplicator(r Replicator) error {
	if r == nil {
		return errors.New("flume: ClaimReplicator: nil replicator")
	}
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.mu.closed {
		return ErrClosed
	}
	if db.mu.replicator != nil {
		return ErrHasPrimary
	}
	db.mu.replicator = r
	if er, ok := r.(EarlyReplicator); ok {
		if wo, ok := db.log.(WriteObserver); ok && SyncsOnAppend(db.log) {
			wo.ObserveWrites(er.Written)
		}
	}
	return nil
}

// ReleaseReplicator removes r as the DB's replicator (nothing happens if r
// is not the installed one). The DB then answers sync appends as having no
// followers.
func (db *DB) ReleaseReplicator(r Replicator) {
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.mu.replicator == r {
		db.mu.replicator = nil
		if wo, ok := db.log.(WriteObserver); ok {
			wo.ObserveWrites(nil)
		}
	}
}

// Replicator returns the replicator installed by ClaimReplicator, or nil.
func (db *DB) Replicator() Replicator {
	db.mu.Lock()
	defer db.mu.Unlock()
	return db.mu.replicator
}

// ClaimUpstream records that a replication follower now feeds the DB from
// primary (an address, for error messages) and makes the DB a read-only
// follower of it, atomically with respect to appends: client appends fail
// with a *NotPrimaryError from then on. It fails with an error wrapping
// ErrHasUpstream (naming the current upstream) while another claim holds,
// and with ErrClosed after Close.
//
// release ends the claim (later calls do nothing), so that another upstream
// may be claimed. With restore false the DB stays a read-only follower of
// primary (a follower that stops does not make its DB writable: promotion
// is an explicit decision); with restore true the role the DB had before
// the claim comes back (a follower that never got going).
func (db *DB) ClaimUpstream(primary string) (release func(restore bool), err error) {
	db.appendMu.Lock()
	defer db.appendMu.Unlock()
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.mu.closed {
		return nil, ErrClosed
	}
	if db.mu.upstream {
		return nil, fmt.Errorf("%w (%s)", ErrHasUpstream, db.mu.primary)
	}
	prevFollower, prevPrimary := db.mu.follower, db.mu.primary
	db.mu.upstream, db.mu.follower, db.mu.primary = true, true, primary
	db.mu.claims++
	claim := db.mu.claims
	var once sync.Once
	return func(restore bool) {
		once.Do(func() {
			db.appendMu.Lock()
			defer db.appendMu.Unlock()
			db.mu.Lock()
			defer db.mu.Unlock()
			if db.mu.claims != claim || !db.mu.upstream {
				return // ended already (Promote) and maybe claimed again since
			}
			db.mu.upstream = false
			if restore {
				db.mu.follower, db.mu.primary = prevFollower, prevPrimary
			}
			if !db.mu.follower {
				// Writable again: what it held is its history now, and a
				// hold would hide its own appends.
				db.endHoldLocked()
			}
		})
	}, nil
}

// SetFollower makes the DB a read-only follower of primary (an address for
// error messages; may be empty) when on is true: client appends then fail
// with a *NotPrimaryError, and only AppendReplicated writes. Turning it off
// makes the DB writable again (manual promotion, after its upstream was
// released). It does not claim or release an upstream.
func (db *DB) SetFollower(on bool, primary string) {
	db.appendMu.Lock()
	defer db.appendMu.Unlock()
	db.mu.Lock()
	defer db.mu.Unlock()
	db.mu.follower, db.mu.primary = on, primary
	if !on {
		db.endHoldLocked()
	}
}

// HoldAbove makes a follower DB keep the entries above seq from its readers
// and views: they are stored (and acknowledged to the primary as durable)
// but not published until a later HoldAbove raises seq past them. It is how
// a follower exposes no more than its primary does, when the primary sends
// entries before its own fsync has made them durable (parallel fsyncs): a
// primary that loses such entries in a power failure never acknowledged
// them, and a follower that held them cuts them when it rejoins, so no
// reader ever saw them. The hold only rises (a lower seq is ignored) and
// lasts while the DB follows, across reconnections to any primary; Promote
// and SetFollower(false) end it and publish every held entry. A DB
// reopened after a crash publishes what its log holds.
func (db *DB) HoldAbove(seq int64) {
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.mu.closed {
		return
	}
	if !db.mu.holding || seq > db.mu.hold {
		db.mu.holding, db.mu.hold = true, max(seq, db.mu.since)
	}
	db.publishLocked(db.mu.logSince)
}

// Held returns how many entries the DB holds above its published since
// (HoldAbove): in the log, not yet visible to readers.
func (db *DB) Held() int64 {
	db.mu.Lock()
	defer db.mu.Unlock()
	return db.mu.logSince - db.mu.since
}

// endHoldLocked ends a follower's hold and publishes what it held. db.mu is
// held.
func (db *DB) endHoldLocked() {
	db.mu.holding = false
	db.publishLocked(db.mu.logSince)
}

// Role reports whether the DB is a follower and of which primary.
func (db *DB) Role() (follower bool, primary string) {
	db.mu.Lock()
	defer db.mu.Unlock()
	return db.mu.follower, db.mu.primary
}

// AppendReplicated appends entries received from a primary: they must
// continue the log exactly (ErrOutOfOrder, ErrDiverged otherwise; nothing is
// appended then). Only a follower takes them (ErrNotFollower otherwise). It returns once they are durable per the log's policy and
// publishes them to streams and views.
func (db *DB) AppendReplicated(entries []Entry) error {
	if len(entries) == 0 {
		return nil
	}
	db.appendMu.Lock()
	db.mu.Lock()
	closed, follower := db.mu.closed, db.mu.follower
	db.mu.Unlock()
	if closed {
		db.appendMu.Unlock()
		return ErrClosed
	}
	if !follower {
		// A DB that takes client appends (never a follower, or promoted)
		// takes no entries from elsewhere: that would be two writers.
		db.appendMu.Unlock()
		return fmt.Errorf("flume: append replicated: %w", ErrNotFollower)
	}
	err := db.log.AppendEntries(entries)
	if err == nil {
		db.publish(entries[len(entries)-1].Seq)
	}
	db.appendMu.Unlock()
	if err != nil {
		if errors.Is(err, ErrClosed) {
			return ErrClosed
		}
		return fmt.Errorf("flume: append replicated: %w", err)
	}
	return nil
}

// AdoptID gives an empty log the identity of the history it is about to
// replicate (ErrNotEmpty if it holds entries).
func (db *DB) AdoptID(id LogID) error {
	db.appendMu.Lock()
	defer db.appendMu.Unlock()
	if db.isClosed() {
		return ErrClosed
	}
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
	b, err := db.log.Get(seq)
	if err != nil && !errors.Is(err, ErrClosed) {
		err = fmt.Errorf("flume: get %d: %w", seq, err)
	} else if err != nil {
		err = ErrClosed
	}
	return b, err
}

func (db *DB) isClosed() bool {
	db.mu.Lock()
	defer db.mu.Unlock()
	return db.mu.closed
}

// Close waits for appends already inside the log, stops every view feeder
// and watcher the DB started and waits for them, ends pending sync-append
// waits (they return *NotReplicatedError), wakes live streams and waiters
// (they end with ErrClosed), closes the views and then the log. Streams the
// caller opened must still be closed by the caller. Close is safe to call
// more than once; later calls return nil. Every other method returns
// ErrClosed after Close. Close waits for the DB's own goroutines, so it must
// not be called from a Watch callback or from a view's methods.
func (db *DB) Close() error {
	db.appendMu.Lock()
	db.mu.Lock()
	if db.mu.closed {
		db.mu.Unlock()
		db.appendMu.Unlock()
		return nil
	}
	db.mu.closed = true
	views := make(map[string]*viewRunner, len(db.mu.views))
	for name, r := range db.mu.views {
		views[name] = r
	}
	close(db.closedCh)
	db.mu.waiters.releaseAll()
	for _, r := range views {
		r.waiters.releaseAll()
	}
	close(db.mu.changed)
	// A fresh channel that never closes: a loop over Changed that does not
	// check Done blocks after Close instead of spinning. The DB's own
	// waiters check closed.
	db.mu.changed = make(chan struct{})
	db.mu.Unlock()
	db.appendMu.Unlock()
	db.cancel()

	db.wg.Wait()
	var errs []error
	for name, r := range views {
		if err := r.close(); err != nil {
			errs = append(errs, fmt.Errorf("flume: close view %q: %w", name, err))
		}
	}
	if err := db.log.Close(); err != nil {
		errs = append(errs, fmt.Errorf("flume: close log: %w", err))
	}
	return errors.Join(errs...)
}

// waitQueue is a min-heap of waits for a position that only grows (the DB's
// since, a view's applied seq). It is guarded by its owner's mutex.
type waitQueue struct{ h waitHeap }

type waiter struct {
	target int64
	ch     chan struct{} // closed when released
	idx    int           // index in the heap, -1 once released or removed
}

// add registers a wait for target.
func (q *waitQueue) add(target int64) *waiter {
	w := &waiter{target: target, ch: make(chan struct{})}
	heap.Push(&q.h, w)
	return w
}

// remove takes w out of the queue (its context ended) and reports whether it
// had been released already.
func (q *waitQueue) remove(w *waiter) (released bool) {
	if w.idx < 0 {
		return true
	}
	heap.Remove(&q.h, w.idx)
	return false
}

// release wakes every waiter whose target is <= pos.
func (q *waitQueue) release(pos int64) {
	for len(q.h) > 0 && q.h[0].target <= pos {
		close(heap.Pop(&q.h).(*waiter).ch)
	}
}

// releaseAll wakes every waiter (close, failure).
func (q *waitQueue) releaseAll() {
	for _, w := range q.h {
		w.idx = -1
		close(w.ch)
	}
	q.h = nil
}

type waitHeap []*waiter

func (h waitHeap) Len() int           { return len(h) }
func (h waitHeap) Less(i, j int) bool { return h[i].target < h[j].target }
func (h waitHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = i, j
}
func (h *waitHeap) Push(x any) {
	w := x.(*waiter)
	w.idx = len(*h)
	*h = append(*h, w)
}
func (h *waitHeap) Pop() any {
	old := *h
	w := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	w.idx = -1
	return w
}
