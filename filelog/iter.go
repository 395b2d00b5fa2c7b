// Iterators: sequential reads of published entries across segments.

package filelog

import (
	"errors"
	"fmt"
	"io"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/frame"
)

// Iter implements flume.Iterator. The iterator reads segment files
// sequentially through a 256 KiB buffer, crossing segment boundaries, and
// sees only published entries. Entry().Data aliases its buffer until the
// next call to Next. A bad frame ends it with a *flume.CorruptionError.
func (l *Log) Iter(from int64) flume.Iterator {
	return &iter{l: l, next: max(from, 0), gen: l.cutGen.Load()}
}

type iter struct {
	l    *Log
	gen  int64    // cuts of the log seen (see afterCut)
	next int64    // seq of the next entry
	seg  *segment // segment r reads, nil when not positioned
	r    *frameReader
	cur  flume.Entry
	err  error
	done bool
}

func (it *iter) Entry() flume.Entry { return it.cur }
func (it *iter) Err() error         { return it.err }

func (it *iter) Close() error {
	it.done = true
	if it.r != nil {
		it.r.release()
	}
	it.seg, it.r = nil, nil
	return nil
}

func (it *iter) fail(err error) bool {
	it.err, it.done = err, true
	it.cur = flume.Entry{}
	return false
}

func (it *iter) Next() bool {
	if it.done {
		return false
	}
	if gen := it.l.cutGen.Load(); gen != it.gen {
		if err := it.afterCut(gen); err != nil {
			return it.fail(err)
		}
	}
	for {
		if it.seg == nil {
			ok, err := it.position()
			if err != nil {
				return it.fail(err)
			}
			if !ok {
				return false
			}
		}
		if it.r.off >= it.r.limit {
			l := it.l
			l.mu.RLock()
			closed := l.mu.closed
			limit, sealed := l.mu.pubSize, it.seg.sealed
			if sealed {
				limit = it.seg.size
			}
			l.mu.RUnlock()
			if closed {
				return it.fail(flume.ErrClosed)
			}
			switch {
			case limit > it.r.limit:
				it.r.extend(limit)
			case sealed:
				it.seg = nil // move on to the next segment
				continue
			default:
				return false // at the end of the published log
			}
		}
		off := it.r.off
		e, _, err := it.r.next()
		if gen := it.l.cutGen.Load(); gen != it.gen {
			// A cut raced with this read (it is published before any
			// file changes): what was read may be gone. Read again.
			if err := it.afterCut(gen); err != nil {
				return it.fail(err)
			}
			continue
		}
		if err != nil {
			var fe *frame.Error
			if errors.As(err, &fe) || err == io.EOF {
				return it.fail(&flume.CorruptionError{Path: it.seg.path, Offset: off, Seq: it.next, Reason: err.Error()})
			}
			return it.fail(it.l.readErr(fmt.Errorf("filelog: read %s: %w", it.seg.path, err)))
		}
		if e.Seq != it.next {
			return it.fail(&flume.CorruptionError{Path: it.seg.path, Offset: off, Seq: it.next,
				Reason: fmt.Sprintf("found seq %d, expected %d", e.Seq, it.next)})
		}
		it.cur = e
		it.next++
		return true
	}
}

// position finds the segment and offset of it.next. It reports false when
// it.next is past the published end.
func (it *iter) position() (bool, error) {
	l := it.l
	l.mu.RLock()
	if l.mu.closed {
		l.mu.RUnlock()
		return false, flume.ErrClosed
	}
	if it.next > l.mu.since+1 {
		l.mu.RUnlock()
		return false, nil
	}
	s := l.segmentLocked(it.next)
	var off, limit int64
	if s == l.mu.active {
		limit = l.mu.pubSize
		if i := it.next - s.base; i < int64(len(l.mu.activeIdx)) {
			off = l.mu.activeIdx[i]
		} else {
			off = limit
		}
		f := s.files.f
		l.mu.RUnlock()
		it.setReader(s, off, limit, f)
		return true, nil
	}
	l.mu.RUnlock()
	limit = s.size
	if it.next-s.base >= s.count {
		// it.next == since+1 just after a rotation: start the next segment.
		it.seg = s
		it.setReader(s, limit, limit, nil)
		return true, nil
	}
	off, _, err := s.offsets(it.next - s.base)
	if err != nil {
		return false, l.readErr(err)
	}
	if off < 0 || off > limit {
		return false, &flume.CorruptionError{Path: s.path, Offset: off, Seq: it.next, Reason: "index offset outside the segment"}
	}
	f, err := s.file()
	if err != nil {
		return false, l.readErr(err)
	}
	it.setReader(s, off, limit, f)
	return true, nil
}

func (it *iter) setReader(s *segment, off, limit int64, f io.ReaderAt) {
	if it.r == nil {
		it.r = newFrameReader()
	}
	it.seg = s
	if f == nil {
		it.r.f, it.r.off, it.r.limit = nil, off, limit
		return
	}
	it.r.reset(f, off, limit)
}
