// Segment files: lazy opening, index lookups, creation, rotation and the checkpoint index.

package filelog

import (
	"encoding/binary"
	"fmt"
	"path/filepath"
	"sync"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/vfs"
)

// segment is one segment file. base, path and fsys never change; sealed,
// count and size are guarded by Log.mu; the files by files.
type segment struct {
	base int64  // seq of its first entry (also its file name)
	path string // full path of the .seg file
	fsys vfs.FS

	sealed bool  // no more appends; count and size final
	count  int64 // entries, when sealed
	size   int64 // bytes, when sealed

	// files guards opening the segment's files lazily and closing them.
	// Taken last, with or without Log's locks; takes nothing.
	files struct {
		sync.Mutex
		// f is the data file. A segment already sealed at Open opens it
		// lazily (file). The active segment's is set when the segment is
		// created or recovered, before any other goroutine can see it, and
		// never changes: the writer and readers of the active segment use
		// it without the lock.
		f      vfs.File
		idx    vfs.File // index file of a sealed segment; opened lazily
		closed bool     // set by close; file and idxFile then fail
	}
}

func (s *segment) file() (vfs.File, error) {
	s.files.Lock()
	defer s.files.Unlock()
	if s.files.closed {
		return nil, flume.ErrClosed
	}
	if s.files.f == nil {
		f, err := s.fsys.Open(s.path)
		if err != nil {
			return nil, fmt.Errorf("filelog: open segment: %w", err)
		}
		s.files.f = f
	}
	return s.files.f, nil
}

func (s *segment) idxFile() (vfs.File, error) {
	s.files.Lock()
	defer s.files.Unlock()
	if s.files.closed {
		return nil, flume.ErrClosed
	}
	if s.files.idx == nil {
		f, err := s.fsys.Open(s.path[:len(s.path)-len(segExt)] + idxExt)
		if err != nil {
			return nil, fmt.Errorf("filelog: open index: %w", err)
		}
		s.files.idx = f
	}
	return s.files.idx, nil
}

func (s *segment) close() error {
	s.files.Lock()
	defer s.files.Unlock()
	// The handles stay set (closed) so that readers racing with Close get
	// an error from them, which they turn into ErrClosed, rather than
	// reopening the file.
	if s.files.closed {
		return nil
	}
	s.files.closed = true
	var err error
	if s.files.f != nil {
		err = s.files.f.Close()
	}
	if s.files.idx != nil {
		s.files.idx.Close()
	}
	return err
}

// offsets reads the offsets of entries i and i+1 of a sealed segment (the
// second is the segment size for its last entry): one disk read.
func (s *segment) offsets(i int64) (int64, int64, error) {
	f, err := s.idxFile()
	if err != nil {
		return 0, 0, err
	}
	var b [16]byte
	n := 16
	if i == s.count-1 {
		n = 8
	}
	if _, err := f.ReadAt(b[:n], 8*i); err != nil {
		return 0, 0, fmt.Errorf("filelog: read index of %s: %w", s.path, err)
	}
	off := int64(binary.LittleEndian.Uint64(b[:]))
	end := s.size
	if n == 16 {
		end = int64(binary.LittleEndian.Uint64(b[8:]))
	}
	return off, end, nil
}

// createSegment creates an empty segment file for base and syncs the dir.
func (l *Log) createSegment(base int64) (*segment, error) {
	p := filepath.Join(l.dir, segName(base))
	f, err := l.fs.Create(p)
	if err != nil {
		return nil, fmt.Errorf("filelog: create segment: %w", err)
	}
	if err := vfs.SyncDir(l.fs, l.dir); err != nil {
		f.Close()
		l.fs.Remove(p)
		return nil, fmt.Errorf("filelog: sync dir: %w", err)
	}
	s := &segment{base: base, path: p, fsys: l.fs}
	s.files.f = f
	return s, nil
}

// rotate seals the active segment (fsync, index file) and starts a new one.
func (l *Log) rotate() error {
	l.sync.Lock()
	defer l.sync.Unlock()
	l.w.Lock()
	defer l.w.Unlock()
	var old *segment
	var offs []int64
	var since int64
	for {
		l.flushLocked()
		l.mu.RLock()
		err := l.writableLocked()
		need := l.mu.enc.size >= l.opts.SegmentSize
		// An appender may have encoded into a new pending batch since the
		// flush (the segment was below the limit then): flush it first.
		pending := l.mu.pend != nil
		old, offs, since = l.mu.active, l.mu.activeIdx, l.mu.since
		l.mu.RUnlock()
		if err != nil || !need {
			return err
		}
		if !pending {
			break
		}
	}
	// Seal with an fsync even under SyncNever, so that only the last
	// segment can ever have a torn tail.
	if err := l.syncLocked(); err != nil {
		return err
	}
	ip := filepath.Join(l.dir, idxName(old.base))
	if err := vfs.WriteFileAtomic(l.fs, ip, encodeIndex(old.base, offs, l.w.size)); err != nil {
		return fmt.Errorf("filelog: write index %s: %w", ip, err)
	}
	s, err := l.createSegment(since + 1)
	if err != nil {
		l.fs.Remove(ip)
		return err
	}
	l.mu.Lock()
	old.sealed, old.count, old.size = true, int64(len(offs)), l.w.size
	l.mu.segs = append(l.mu.segs, s)
	l.mu.active, l.mu.activeIdx, l.mu.pubSize = s, nil, 0
	l.mu.enc.size = 0
	l.mu.Unlock()
	l.w.size = 0
	l.w.unsynced = false
	return nil
}

// writeCheckpoint writes the index of the active segment so that the next
// Open need not scan it. l.w is held; everything is flushed.
func (l *Log) writeCheckpoint() error {
	l.mu.RLock()
	s, offs, size := l.mu.active, l.mu.activeIdx, l.mu.pubSize
	l.mu.RUnlock()
	if size != l.w.size {
		return nil // unpublished bytes (a failed fsync): let recovery decide
	}
	return vfs.WriteFileAtomic(l.fs, filepath.Join(l.dir, idxName(s.base)), encodeIndex(s.base, offs, size))
}
