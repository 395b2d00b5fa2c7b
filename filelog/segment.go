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

// segment is one segment file. base, path are immutable; the rest is
// guarded by Log.mu except where noted.
type segment struct {
	base int64  // seq of its first entry (also its file name)
	path string // full path of the .seg file

	sealed bool  // no more appends; count and size final
	count  int64 // entries, when sealed
	size   int64 // bytes, when sealed

	fmu  sync.Mutex // guards f and idx opening
	f    vfs.File   // data file; opened lazily for sealed segments
	idx  vfs.File   // index file of a sealed segment; opened lazily
	fsys vfs.FS
	// closed is set by close; file and idxFile then fail (guarded by fmu).
	closed bool
}

func (s *segment) file() (vfs.File, error) {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	if s.closed {
		return nil, flume.ErrClosed
	}
	if s.f == nil {
		f, err := s.fsys.Open(s.path)
		if err != nil {
			return nil, fmt.Errorf("filelog: open segment: %w", err)
		}
		s.f = f
	}
	return s.f, nil
}

func (s *segment) idxFile() (vfs.File, error) {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	if s.closed {
		return nil, flume.ErrClosed
	}
	if s.idx == nil {
		f, err := s.fsys.Open(s.path[:len(s.path)-len(segExt)] + idxExt)
		if err != nil {
			return nil, fmt.Errorf("filelog: open index: %w", err)
		}
		s.idx = f
	}
	return s.idx, nil
}

func (s *segment) close() error {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	// The handles stay set (closed) so that readers racing with Close get
	// an error from them, which they turn into ErrClosed, rather than
	// reopening the file.
	if s.closed {
		return nil
	}
	s.closed = true
	var err error
	if s.f != nil {
		err = s.f.Close()
	}
	if s.idx != nil {
		s.idx.Close()
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
	return &segment{base: base, path: p, f: f, fsys: l.fs}, nil
}

// rotate seals the active segment (fsync, index file) and starts a new one.
func (l *Log) rotate() error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	l.wmu.Lock()
	defer l.wmu.Unlock()
	var old *segment
	var offs []int64
	var since int64
	for {
		l.flushLocked()
		l.mu.RLock()
		err := l.writableLocked()
		need := l.enc.size >= l.opts.SegmentSize
		// An appender may have encoded into a new pending batch since the
		// flush (the segment was below the limit then): flush it first.
		pending := l.pend != nil
		old, offs, since = l.active, l.activeIdx, l.since
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
	if err := vfs.WriteFileAtomic(l.fs, ip, encodeIndex(old.base, offs, l.wsize)); err != nil {
		return fmt.Errorf("filelog: write index %s: %w", ip, err)
	}
	s, err := l.createSegment(since + 1)
	if err != nil {
		l.fs.Remove(ip)
		return err
	}
	l.mu.Lock()
	old.sealed, old.count, old.size = true, int64(len(offs)), l.wsize
	l.segs = append(l.segs, s)
	l.active, l.activeIdx, l.pubSize = s, nil, 0
	l.enc.size = 0
	l.mu.Unlock()
	l.wsize = 0
	l.unsynced = false
	return nil
}

// writeCheckpoint writes the index of the active segment so that the next
// Open need not scan it. l.wmu is held; everything is flushed.
func (l *Log) writeCheckpoint() error {
	l.mu.RLock()
	s, offs, size := l.active, l.activeIdx, l.pubSize
	l.mu.RUnlock()
	if size != l.wsize {
		return nil // unpublished bytes (a failed fsync): let recovery decide
	}
	return vfs.WriteFileAtomic(l.fs, filepath.Join(l.dir, idxName(s.base)), encodeIndex(s.base, offs, size))
}
