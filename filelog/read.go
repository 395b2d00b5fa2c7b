// Point reads: Since, Head, Get and Entry.

package filelog

import (
	"fmt"
	"io"
	"sort"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/frame"
	"github.com/flume-go/flume/vfs"
)

// Since implements flume.Log.
func (l *Log) Since() int64 { return l.sinceA.Load() }

// Head implements flume.Log.
func (l *Log) Head() (int64, flume.Hash) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.mu.since, l.mu.head
}

// Get implements flume.Log: at most two disk reads (index, frame).
func (l *Log) Get(seq int64) ([]byte, error) {
	e, err := l.Entry(seq)
	return e.Data, err
}

// Entry implements flume.Log.
func (l *Log) Entry(seq int64) (flume.Entry, error) {
	l.mu.RLock()
	if l.mu.closed {
		l.mu.RUnlock()
		return flume.Entry{}, flume.ErrClosed
	}
	if seq < 0 || seq > l.mu.since {
		s := l.mu.since
		l.mu.RUnlock()
		return flume.Entry{}, fmt.Errorf("filelog: get %d (log ends at %d): %w", seq, s, flume.ErrNotFound)
	}
	s := l.segmentLocked(seq)
	if s != l.mu.active {
		l.mu.RUnlock()
		return l.readEntry(s, seq)
	}
	i := seq - s.base
	off, end := l.mu.activeIdx[i], l.mu.pubSize
	if i+1 < int64(len(l.mu.activeIdx)) {
		end = l.mu.activeIdx[i+1]
	}
	f := s.files.f
	l.mu.RUnlock()
	return l.readFrame(s, f, seq, off, end)
}

// segmentLocked returns the segment holding seq (which must be <= since).
func (l *Log) segmentLocked(seq int64) *segment {
	i := sort.Search(len(l.mu.segs), func(i int) bool { return l.mu.segs[i].base > seq }) - 1
	return l.mu.segs[max(i, 0)]
}

// readEntry reads entry seq of sealed segment s.
func (l *Log) readEntry(s *segment, seq int64) (flume.Entry, error) {
	off, end, err := s.offsets(seq - s.base)
	if err != nil {
		return flume.Entry{}, l.readErr(err)
	}
	f, err := s.file()
	if err != nil {
		return flume.Entry{}, l.readErr(err)
	}
	return l.readFrame(s, f, seq, off, end)
}

func (l *Log) readFrame(s *segment, f vfs.File, seq, off, end int64) (flume.Entry, error) {
	n := end - off
	if off < 0 || n < frame.HeaderSize || n > frame.HeaderSize+flume.MaxEntrySize {
		return flume.Entry{}, &flume.CorruptionError{Path: s.path, Offset: off, Seq: seq,
			Reason: fmt.Sprintf("index gives a frame of %d bytes", n)}
	}
	buf := make([]byte, n)
	if _, err := f.ReadAt(buf, off); err != nil {
		if err == io.EOF {
			return flume.Entry{}, &flume.CorruptionError{Path: s.path, Offset: off, Seq: seq, Reason: "segment ends inside the frame"}
		}
		return flume.Entry{}, l.readErr(fmt.Errorf("filelog: read %s: %w", s.path, err))
	}
	e, m, err := frame.Decode(buf)
	if err != nil {
		return flume.Entry{}, &flume.CorruptionError{Path: s.path, Offset: off, Seq: seq, Reason: err.Error()}
	}
	if e.Seq != seq || int64(m) != n {
		return flume.Entry{}, &flume.CorruptionError{Path: s.path, Offset: off, Seq: seq,
			Reason: fmt.Sprintf("frame holds seq %d (%d bytes), index expects seq %d (%d bytes)", e.Seq, m, seq, n)}
	}
	return e, nil
}

// readErr turns a read failure after Close into ErrClosed.
func (l *Log) readErr(err error) error {
	l.mu.RLock()
	closed := l.mu.closed
	l.mu.RUnlock()
	if closed {
		return flume.ErrClosed
	}
	return err
}
