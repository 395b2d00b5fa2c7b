package flume

import (
	"context"
	"errors"
	"fmt"
	"slices"
)

// Cursor reads a DB's published log forward from a seq and tails it as it
// grows. It holds the rules for following a log that is being appended to
// (open an iterator lazily, re-open one that reached the end it saw when
// opened, take a fresh one that finds nothing at a published seq for
// corruption, check every seq), so that the readers of the log (streams,
// view feeds, replication) do not repeat them.
//
// Guarantees: Next yields every entry from the cursor's start exactly once,
// in seq order with no gaps, each checked to carry the seq expected; it
// never yields an entry past the DB's published since, so every entry seen
// is durable per the log's sync policy; and it never blocks: once it has
// read everything published it returns false and the caller chooses how to
// wait (Wait, or a select on Changed with its other events). A log that ends before its published
// since, or returns another seq than the one asked for, is reported as
// ErrCorrupt with the seq; after the DB closes the cursor ends with
// ErrClosed. In steady state Next does not allocate.
//
// A Cursor is used by one goroutine at a time. It holds a log iterator
// while it reads; Close releases it.
type Cursor struct {
	db    *DB
	next  int64 // seq of the entry Next reads next
	since int64 // published since as last read; Next reads nothing past it
	// changed was taken together with since: it is closed when the
	// published since grows past it, or when the DB closes.
	changed <-chan struct{}
	it      Iterator // opened lazily at next; nil when none is open
	fresh   bool     // it was opened at next and has yielded nothing yet
	cur     Entry    // the entry Next read last (a reverse Stream sets it too)
	err     error    // sticky: once set, Next returns false
	closed  bool
	gen     uint64 // the DB's truncation count when the cursor last checked
	start   int64  // the first seq asked for: below it nothing was yielded

	// Batch's buffers, reused from call to call: batch holds the entries,
	// their payloads copied into arena at offsets offs.
	batch []Entry
	offs  []int
	arena []byte
}

// Cursor returns a cursor whose first Next yields entry from once it is
// published (a negative from means 0). It opens nothing until Next needs
// the log; on a closed DB the first Next fails with ErrClosed.
func (db *DB) Cursor(from int64) *Cursor {
	from = max(from, 0)
	return &Cursor{db: db, next: from, start: from, since: -1, gen: db.truncations.Load()}
}

// closedChan is a channel that is always ready: what Changed returns when
// there is no need to wait.
var closedChan = func() chan struct{} {
	ch := make(chan struct{})
	close(ch)
	return ch
}()

// Next advances to the next published entry and reports whether there is
// one. It returns false with a nil Err when the cursor has read every entry
// published when it looked (NextSeq is then past the published since): wait
// (Wait, Changed) and call Next again. It returns false with a non-nil Err
// on error, and from then on.
func (c *Cursor) Next() bool { return c.read(&c.cur) }

// read is Next with the entry put in *dst: c.cur for Next, the next slot
// of the batch for Batch (one copy fewer per entry). *dst is the zero Entry
// when read returns false.
func (c *Cursor) read(dst *Entry) bool {
	if g := c.db.truncations.Load(); g != c.gen && c.err == nil {
		c.truncated(g)
	}
	for c.err == nil {
		if c.next > c.since && !c.refresh() {
			break
		}
		if c.it == nil {
			c.it, c.fresh = c.db.log.Iter(c.next), true
		}
		if c.it.Next() {
			*dst = c.it.Entry()
			if dst.Seq != c.next {
				c.fail(fmt.Errorf("%w: log returned seq %d, expected %d", ErrCorrupt, dst.Seq, c.next))
				break
			}
			c.fresh = false
			c.next++
			return true
		}
		if err := c.it.Err(); err != nil {
			if errors.Is(err, ErrClosed) {
				err = ErrClosed
			} else {
				err = fmt.Errorf("flume: read log at seq %d: %w", c.next, err)
			}
			c.fail(err)
			break
		}
		if c.fresh {
			// An iterator opened at a published seq found nothing there.
			c.fail(fmt.Errorf("%w: log ends before published seq %d", ErrCorrupt, c.next))
			break
		}
		// The iterator stopped at the end it saw when it was opened; a new
		// one sees what was published since.
		c.it.Close()
		c.it = nil
	}
	*dst = Entry{}
	return false
}

// refresh reads the published since and reports whether entry c.next is
// published. It fails the cursor with ErrClosed if the DB is closed.
func (c *Cursor) refresh() bool {
	since, ch, closed := c.db.changedState()
	if closed {
		c.fail(ErrClosed)
		return false
	}
	c.since, c.changed = since, ch
	return c.next <= since
}

// truncated handles a cut of the log (DB.TruncateAfter) since the cursor
// last looked: its iterator may hold entries that are gone, so it is
// dropped; a cursor that has yielded entries past the cut fails with
// ErrTruncated, since what it handed out is no longer the log's history.
func (c *Cursor) truncated(gen uint64) {
	c.gen = gen
	if c.it != nil {
		c.it.Close()
		c.it = nil
	}
	since, ch, closed := c.db.changedState()
	if closed {
		c.fail(ErrClosed)
		return
	}
	if c.next > c.start && c.next-1 > since {
		c.fail(fmt.Errorf("%w: the log now ends at seq %d and this reader had read through %d", ErrTruncated, since, c.next-1))
		return
	}
	c.since, c.changed = since, ch
}

// fail records err and releases the iterator.
func (c *Cursor) fail(err error) {
	c.err = err
	if c.it != nil {
		c.it.Close()
		c.it = nil
	}
}

// Entry is the entry the last successful Next read (the zero Entry after
// Next returned false). It comes straight from the log's iterator: its Data
// is valid only until the next call to Next, Batch or Close.
func (c *Cursor) Entry() Entry { return c.cur }

// NextSeq is the seq of the entry the next successful Next yields: the
// cursor has read every entry below it.
func (c *Cursor) NextSeq() int64 { return c.next }

// Err is the error that stopped the cursor: ErrClosed once the DB (or the
// cursor) is closed, ErrCorrupt-wrapping errors for a log that ends before
// its published since or returns the wrong seq, or the log's read error.
// Every error but ErrClosed names the seq. Nil while the cursor can go on.
func (c *Cursor) Err() error { return c.err }

// Changed returns a channel that is closed when Next may have something new
// to return. While the cursor has read everything published, that is the
// next publish or DB.Close (then Next reports ErrClosed); when entries known
// to be published are left to read, or the cursor has stopped, the channel
// is already closed. A publish that does not reach NextSeq (a cursor that
// started past the end of the log) also closes it: call Next, then wait
// again. Use it in a select with the caller's other events; Wait is the
// plain blocking form.
func (c *Cursor) Changed() <-chan struct{} {
	if c.err == nil && c.changed == nil && c.next > c.since {
		c.refresh() // nothing read yet: take a channel that goes with since
	}
	if c.err != nil || c.next <= c.since {
		return closedChan
	}
	return c.changed
}

// Wait blocks until Next may have something new to return (see Changed) or
// ctx ends (ctx.Err()). It returns Err at once if the cursor has stopped.
func (c *Cursor) Wait(ctx context.Context) error {
	if c.err != nil {
		return c.err
	}
	select {
	case <-c.Changed():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Batch reads what Next would yield, as many entries as are published now
// up to maxEntries, and stops adding entries once their payloads reach
// maxBytes (so one entry larger than that still comes alone; limits below 1
// mean 1). Payloads are copied into a buffer the cursor reuses, because an
// iterator's data is valid only until its next entry: the returned entries
// stay valid together until the next call to Batch, Next or Close. An empty
// batch means nothing is published past NextSeq-1 (Err nil) or the cursor
// has stopped (Err set). Err may also be set after a non-empty batch, for
// the entry that followed it: the entries returned are good either way. In
// steady state Batch does not allocate.
func (c *Cursor) Batch(maxEntries, maxBytes int) []Entry {
	maxEntries, maxBytes = max(maxEntries, 1), max(maxBytes, 1)
	clear(c.batch) // drop the last batch's references into the arena
	if cap(c.arena)/4 > maxBytes {
		c.arena = nil // grown by a huge entry: do not keep it
	}
	batch, offs, arena := c.batch[:0], c.offs[:0], c.arena[:0]
	for len(batch) < maxEntries && len(arena) < maxBytes {
		batch = slices.Grow(batch, 1)[:len(batch)+1]
		e := &batch[len(batch)-1]
		if !c.read(e) {
			batch = batch[:len(batch)-1]
			break
		}
		offs = append(offs, len(arena))
		arena = append(arena, e.Data...)
	}
	offs = append(offs, len(arena))
	// Point the entries at the arena only now: appending may have moved it.
	for i := range batch {
		batch[i].Data = arena[offs[i]:offs[i+1]:offs[i+1]]
	}
	c.batch, c.offs, c.arena = batch, offs, arena
	c.cur = Entry{}
	return batch
}

// Close releases the cursor's iterator and buffers. Next then returns false
// and Err returns ErrClosed, unless an earlier error stopped the cursor.
// Close returns the iterator's Close error, if any; calling Close again
// returns nil.
func (c *Cursor) Close() error {
	if c.closed {
		return nil
	}
	c.closed = true
	var err error
	if c.it != nil {
		if cerr := c.it.Close(); cerr != nil && !errors.Is(cerr, ErrClosed) {
			err = cerr
		}
		c.it = nil
	}
	if c.err == nil {
		c.err = ErrClosed
	}
	c.cur, c.batch, c.offs, c.arena = Entry{}, nil, nil, nil
	return err
}
