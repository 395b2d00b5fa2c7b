package flume

import (
	"context"
	"errors"
	"fmt"
)

// StreamOptions select a range of the log, with flumedb's meaning. A nil
// bound is open. Gt/Gte are the lower bound (Gt wins if both are set), Lt/Lte
// the upper.
type StreamOptions struct {
	Gt, Gte, Lt, Lte *int64
	// Reverse yields entries from the highest seq down. It cannot be combined
	// with Live.
	Reverse bool
	// Limit stops the stream after this many entries; 0 is no limit.
	Limit int
	// Live continues after the existing entries with new ones as they are
	// appended, until ctx ends, Close, or the upper bound is passed.
	Live bool
	// SkipOld starts at the end of the log: with Live, only entries appended
	// after the stream was opened (flumedb's old: false).
	SkipOld bool
}

// At returns a pointer to s, for StreamOptions bounds: Gt: flume.At(5).
func At(s int64) *int64 { return &s }

// Stream yields entries of a DB in order. Use it like bufio.Scanner:
//
//	s := db.Stream(ctx, flume.StreamOptions{Live: true})
//	defer s.Close()
//	for s.Next() { e := s.Entry(); ... }
//	if err := s.Err(); err != nil { ... }
//
// It reads from the log as it goes (memory does not depend on the log's
// length), sees only published (durable) entries, and never blocks appends:
// a slow reader just falls behind.
type Stream struct {
	db   *DB
	ctx  context.Context
	opts StreamOptions

	lo, hi int64 // inclusive bounds; hi may be MaxInt64
	next   int64 // next seq to yield (forward) or to yield going down (reverse)
	count  int
	it     Iterator
	cur    Entry
	err    error
	done   bool
}

const maxSeq = int64(^uint64(0) >> 1)

// Stream opens a stream over the DB with opts. Errors (a bad option, a
// corrupt entry, ctx ending on a live stream) are reported by Err after Next
// returns false; a live stream ended by ctx reports ctx.Err().
func (db *DB) Stream(ctx context.Context, opts StreamOptions) *Stream {
	s := &Stream{db: db, ctx: ctx, opts: opts, lo: 0, hi: maxSeq}
	if opts.Gte != nil {
		s.lo = *opts.Gte
	}
	if opts.Gt != nil {
		s.lo = *opts.Gt + 1
	}
	if opts.Lte != nil {
		s.hi = *opts.Lte
	}
	if opts.Lt != nil {
		s.hi = *opts.Lt - 1
	}
	if s.lo < 0 {
		s.lo = 0
	}
	switch {
	case opts.Reverse && opts.Live:
		s.finish(errors.New("flume: stream: Reverse and Live cannot be combined"))
	case opts.Limit < 0:
		s.finish(fmt.Errorf("flume: stream: negative limit %d", opts.Limit))
	case opts.Reverse:
		s.next = min(s.hi, db.Since())
	default:
		s.next = s.lo
		if opts.SkipOld {
			s.next = max(s.lo, db.Since()+1)
		}
	}
	return s
}

// Next advances to the next entry, waiting for one on a live stream. It
// returns false at the end of the range, on error or when ctx ends.
func (s *Stream) Next() bool {
	if s.done {
		return false
	}
	if s.opts.Limit > 0 && s.count >= s.opts.Limit {
		return s.finish(nil)
	}
	if s.opts.Reverse {
		return s.nextReverse()
	}
	for {
		if s.next > s.hi {
			return s.finish(nil)
		}
		since, ch := s.db.Changed()
		if s.next <= since {
			if s.it == nil {
				s.it = s.db.log.Iter(s.next)
			}
			if s.it.Next() {
				e := s.it.Entry()
				if e.Seq != s.next {
					return s.finish(fmt.Errorf("flume: stream: log returned seq %d, expected %d", e.Seq, s.next))
				}
				s.cur = e
				s.next++
				s.count++
				return true
			}
			if err := s.it.Err(); err != nil {
				return s.finish(err)
			}
			// The iterator stopped at the end it saw when it was made;
			// make a fresh one that sees the published entries.
			s.it.Close()
			s.it = s.db.log.Iter(s.next)
			if s.it.Next() {
				s.cur = s.it.Entry()
				if s.cur.Seq != s.next {
					return s.finish(fmt.Errorf("flume: stream: log returned seq %d, expected %d", s.cur.Seq, s.next))
				}
				s.next++
				s.count++
				return true
			}
			if err := s.it.Err(); err != nil {
				return s.finish(err)
			}
			return s.finish(fmt.Errorf("flume: stream: log ends before published seq %d", s.next))
		}
		if !s.opts.Live {
			return s.finish(nil)
		}
		select {
		case <-ch:
		case <-s.ctx.Done():
			return s.finish(s.ctx.Err())
		case <-s.db.closedCh:
			return s.finish(ErrClosed)
		}
	}
}

func (s *Stream) nextReverse() bool {
	if s.next < s.lo {
		return s.finish(nil)
	}
	if err := s.ctx.Err(); err != nil {
		return s.finish(err)
	}
	e, err := s.db.log.Entry(s.next)
	if err != nil {
		return s.finish(err)
	}
	s.cur = e
	s.next--
	s.count++
	return true
}

func (s *Stream) finish(err error) bool {
	if !s.done {
		s.done, s.err = true, err
		if s.it != nil {
			if cerr := s.it.Close(); s.err == nil {
				s.err = cerr
			}
			s.it = nil
		}
	}
	return false
}

// Entry is the current entry. Its Data is valid until the next call to Next.
func (s *Stream) Entry() Entry { return s.cur }

// Err returns the error that ended the stream, nil at a normal end.
func (s *Stream) Err() error { return s.err }

// Close releases the stream. It is safe to call more than once.
func (s *Stream) Close() error {
	s.finish(nil)
	return nil
}
