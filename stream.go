package flume

import (
	"context"
	"errors"
	"fmt"
)

// StreamOptions select a range of the log, with flumedb's meaning. A nil
// bound is open. Every bound that is set applies: Gt and Gte together mean
// the stricter of the two (flumedb lets Gt win; with Gt >= Gte-1, the usual
// case, the two agree), and likewise Lt and Lte.
type StreamOptions struct {
	Gt, Gte, Lt, Lte *int64
	// Reverse yields entries from the highest seq down. It cannot be combined
	// with Live.
	Reverse bool
	// Limit stops the stream after this many entries; 0 is no limit.
	// Negative is an error.
	Limit int
	// Live continues after the existing entries with new ones as they are
	// published, until ctx ends, the DB closes, Limit is reached or the
	// upper bound is passed. Without Live a stream ends at the entry that
	// was last when the stream was opened (a snapshot of the range).
	Live bool
	// SkipOld starts at the end of the log: only entries published after
	// the stream was opened are yielded (flumedb's old: false). Without
	// Live the stream is then empty.
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
// Guarantees: every entry in the range is yielded exactly once, in seq order
// (descending with Reverse), with no gaps; only published (durable) entries
// are seen. The stream reads from the log as it goes, so its memory does
// not depend on the log's length, and it never blocks appends: a slow
// reader just falls behind. A Stream is used by one goroutine at a time.
type Stream struct {
	db   *DB
	ctx  context.Context
	opts StreamOptions

	lo, hi int64 // inclusive bounds; hi may be maxSeq
	// c reads forward streams. c.cur is the current entry in both
	// directions (reverse streams set it), so Entry has one place to look.
	c     Cursor
	next  int64 // reverse streams: next seq to yield going down
	count int   // entries yielded
	polls int   // entries since ctx was last checked
	err   error
	done  bool

	// Reverse streams read the log forward in windows and yield each one
	// backwards: one sequential read per window rather than an indexed
	// read per entry. rbuf holds the window not yet yielded, its payloads
	// copied into rdata; rwin is the window's length in entries.
	rbuf  []Entry
	rdata []byte
	roffs []int // payload offsets in rdata while a window is read
	rwin  int64
}

// A reverse stream's window: at most this many entries and, after the
// first window shows the entry size, about this many payload bytes.
const (
	reverseWindow      = 256
	reverseWindowBytes = 1 << 20
)

const maxSeq = int64(^uint64(0) >> 1)

// ctxCheckEvery is how many entries a stream yields between checks of its
// context when it does not wait: often enough that a cancelled reader of a
// long range stops within microseconds, rarely enough to cost nothing.
const ctxCheckEvery = 256

// Stream opens a stream over the DB with opts. It does not fail: a bad option,
// a closed DB, a corrupt entry or ctx ending is reported by Err after Next
// returns false. A live stream ended by ctx reports ctx.Err(); one ended by
// Close reports ErrClosed.
func (db *DB) Stream(ctx context.Context, opts StreamOptions) *Stream {
	// polls starts full so that the first Next checks ctx.
	s := &Stream{db: db, ctx: ctx, opts: opts, lo: 0, hi: maxSeq, polls: ctxCheckEvery - 1}
	empty := false
	if opts.Gte != nil {
		s.lo = max(s.lo, *opts.Gte)
	}
	if opts.Gt != nil {
		if *opts.Gt == maxSeq {
			empty = true
		} else {
			s.lo = max(s.lo, *opts.Gt+1)
		}
	}
	if opts.Lte != nil {
		s.hi = min(s.hi, *opts.Lte)
	}
	if opts.Lt != nil {
		if *opts.Lt <= 0 {
			empty = true
		} else {
			s.hi = min(s.hi, *opts.Lt-1)
		}
	}
	since, _, closed := db.changedState()
	switch {
	case opts.Reverse && opts.Live:
		s.finish(errors.New("flume: stream: Reverse and Live cannot be combined"))
	case opts.Limit < 0:
		s.finish(fmt.Errorf("flume: stream: negative limit %d", opts.Limit))
	case closed:
		s.finish(ErrClosed)
	case empty || s.lo > s.hi:
		s.finish(nil)
	case opts.Reverse:
		if opts.SkipOld {
			s.finish(nil)
		}
		s.next = min(s.hi, since)
	default:
		from := s.lo
		if opts.SkipOld {
			from = max(s.lo, since+1)
		}
		if !opts.Live {
			// A snapshot: the range ends where the log ended at open.
			s.hi = min(s.hi, since)
		}
		// The cursor starts from the since read above rather than
		// reading it again.
		s.c = Cursor{db: db, next: from, since: since}
	}
	return s
}

// Next advances to the next entry, waiting for one on a live stream. It
// returns false at the end of the range, at Limit, on error, when ctx ends
// or when the DB closes.
func (s *Stream) Next() bool {
	if s.done {
		return false
	}
	if s.opts.Limit > 0 && s.count >= s.opts.Limit {
		return s.finish(nil)
	}
	if s.polls++; s.polls >= ctxCheckEvery {
		s.polls = 0
		if err := s.ctx.Err(); err != nil {
			return s.finish(err)
		}
	}
	if s.opts.Reverse {
		return s.nextReverse()
	}
	for {
		if s.c.next > s.hi {
			return s.finish(nil)
		}
		if s.c.Next() {
			s.count++
			return true
		}
		if err := s.c.Err(); err != nil {
			if errors.Is(err, ErrClosed) {
				return s.finish(ErrClosed)
			}
			return s.finish(fmt.Errorf("flume: stream: %w", err))
		}
		if !s.opts.Live {
			return s.finish(nil)
		}
		select {
		case <-s.c.Changed():
		case <-s.ctx.Done():
			return s.finish(s.ctx.Err())
		}
	}
}

func (s *Stream) nextReverse() bool {
	if len(s.rbuf) == 0 {
		if s.next < s.lo {
			return s.finish(nil)
		}
		if err := s.fillReverse(); err != nil {
			return s.finish(s.wrap(err))
		}
	}
	s.c.cur = s.rbuf[len(s.rbuf)-1]
	s.rbuf = s.rbuf[:len(s.rbuf)-1]
	s.count++
	return true
}

// fillReverse reads the window that ends at s.next into rbuf and moves
// s.next below it.
func (s *Stream) fillReverse() error {
	if s.rwin == 0 {
		s.rwin = reverseWindow
	}
	win := s.rwin
	if s.opts.Limit > 0 {
		win = min(win, int64(s.opts.Limit-s.count))
	}
	from := max(s.lo, s.next-win+1)
	it := s.db.log.Iter(from)
	defer it.Close()
	s.rbuf, s.rdata = s.rbuf[:0], s.rdata[:0]
	offs := s.roffs[:0]
	for seq := from; seq <= s.next; seq++ {
		if !it.Next() {
			if err := it.Err(); err != nil {
				return err
			}
			return fmt.Errorf("%w: the log ends at seq %d, below its published since %d", ErrCorrupt, seq-1, s.next)
		}
		e := it.Entry()
		if e.Seq != seq {
			return fmt.Errorf("%w: the log iterator returned seq %d, expected %d", ErrCorrupt, e.Seq, seq)
		}
		offs = append(offs, len(s.rdata))
		s.rdata = append(s.rdata, e.Data...)
		e.Data = nil
		s.rbuf = append(s.rbuf, e)
	}
	offs = append(offs, len(s.rdata))
	for i := range s.rbuf {
		s.rbuf[i].Data = s.rdata[offs[i]:offs[i+1]:offs[i+1]]
	}
	s.roffs = offs
	s.next = from - 1
	if avg := int64(len(s.rdata)) / int64(len(s.rbuf)); avg > 0 {
		s.rwin = max(1, min(reverseWindow, reverseWindowBytes/avg))
	}
	if cap(s.rdata) > 4*reverseWindowBytes {
		s.rdata = nil // not kept after a window of huge entries
	}
	return nil
}

func (s *Stream) wrap(err error) error {
	if errors.Is(err, ErrClosed) {
		return ErrClosed
	}
	return fmt.Errorf("flume: stream at seq %d: %w", s.next, err)
}

func (s *Stream) finish(err error) bool {
	if !s.done {
		s.done, s.err = true, err
		if cerr := s.c.Close(); s.err == nil && cerr != nil {
			s.err = cerr
		}
	}
	return false
}

// Entry is the current entry. Its Data is valid until the next call to Next
// or Close; copy it to keep it.
func (s *Stream) Entry() Entry { return s.c.cur }

// Err returns the error that ended the stream, nil at a normal end (range
// exhausted, Limit reached, or Close called by the user).
func (s *Stream) Err() error { return s.err }

// Close releases the stream (its log iterator). It is safe to call more
// than once, and Next returns false afterwards.
func (s *Stream) Close() error {
	s.finish(nil)
	return nil
}
