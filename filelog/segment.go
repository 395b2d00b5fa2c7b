package filelog

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
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

// readBufSize is the buffer of iterators and scans: large enough that a
// read syscall carries many small frames, small enough for bounded memory.
const readBufSize = 256 << 10

// frameReader reads frames sequentially from [off, limit) of a file.
type frameReader struct {
	f     io.ReaderAt
	sr    io.SectionReader
	br    *bufio.Reader
	off   int64 // offset of the next frame
	limit int64
	big   []byte // frames larger than the buffer
	more  bool   // the frame last returned by next continues its batch
}

var readerPool = sync.Pool{New: func() any { return &frameReader{br: bufio.NewReaderSize(nil, readBufSize)} }}

func newFrameReader() *frameReader { return readerPool.Get().(*frameReader) }

// release returns r to the pool; r must not be used afterwards.
func (r *frameReader) release() {
	r.f = nil
	r.sr = io.SectionReader{}
	r.br.Reset(nil)
	if cap(r.big) > readBufSize {
		r.big = nil
	}
	readerPool.Put(r)
}

// reset positions r at off in f, reading up to limit.
func (r *frameReader) reset(f io.ReaderAt, off, limit int64) {
	r.f, r.off, r.limit = f, off, limit
	r.sr = *io.NewSectionReader(f, off, limit-off)
	r.br.Reset(&r.sr)
}

// extend raises the limit; valid only when r.off == r.limit.
func (r *frameReader) extend(limit int64) { r.reset(r.f, r.off, limit) }

// next decodes the frame at r.off. The entry's Data aliases r's buffer until
// the next call. It returns io.EOF exactly at the limit, a *flume.FrameError
// for a bad or cut frame, or an I/O error.
func (r *frameReader) next() (flume.Entry, int, error) {
	if r.off >= r.limit {
		return flume.Entry{}, 0, io.EOF
	}
	hdr, err := r.br.Peek(flume.FrameHeaderSize)
	if err != nil {
		if err == io.EOF {
			return flume.Entry{}, 0, &flume.FrameError{Truncated: true, Reason: fmt.Sprintf("header cut after %d bytes", len(hdr))}
		}
		return flume.Entry{}, 0, err
	}
	l := flume.FramePayloadLen(hdr)
	r.more = flume.FrameContinues(hdr)
	if l > flume.MaxEntrySize {
		return flume.Entry{}, 0, &flume.FrameError{Reason: fmt.Sprintf("payload length %d exceeds the maximum %d", l, flume.MaxEntrySize)}
	}
	n := flume.FrameHeaderSize + int(l)
	var b []byte
	if n <= r.br.Size() {
		b, err = r.br.Peek(n)
		if err != nil {
			if err == io.EOF {
				return flume.Entry{}, 0, &flume.FrameError{Truncated: true, Reason: fmt.Sprintf("frame needs %d bytes, have %d", n, len(b))}
			}
			return flume.Entry{}, 0, err
		}
		e, _, err := flume.DecodeFrame(b)
		if err != nil {
			return e, 0, err
		}
		r.br.Discard(n)
		r.off += int64(n)
		return e, n, nil
	}
	if cap(r.big) < n {
		r.big = make([]byte, n)
	}
	b = r.big[:n]
	if m, err := io.ReadFull(r.br, b); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return flume.Entry{}, 0, &flume.FrameError{Truncated: true, Reason: fmt.Sprintf("frame needs %d bytes, have %d", n, m)}
		}
		return flume.Entry{}, 0, err
	}
	// The bytes were consumed: a bad frame leaves r past it, but callers
	// stop at the first error anyway.
	e, _, err := flume.DecodeFrame(b)
	if err != nil {
		return e, 0, err
	}
	r.off += int64(n)
	return e, n, nil
}

// chainHasher computes flume.ChainHash without allocating for large
// payloads (flume.ChainHash allocates a digest above 512 bytes).
type chainHasher struct {
	d   hash.Hash
	hdr [48]byte
	sum []byte
}

func newChainHasher() *chainHasher { return &chainHasher{d: sha256.New(), sum: make([]byte, 0, 32)} }

func (c *chainHasher) next(prev flume.Hash, seq int64, epoch uint64, data []byte) flume.Hash {
	if len(data) <= 512 {
		return flume.ChainHash(prev, seq, epoch, data)
	}
	c.d.Reset()
	copy(c.hdr[:32], prev[:])
	binary.LittleEndian.PutUint64(c.hdr[32:], uint64(seq))
	binary.LittleEndian.PutUint64(c.hdr[40:], epoch)
	c.d.Write(c.hdr[:])
	c.d.Write(data)
	c.sum = c.d.Sum(c.sum[:0])
	var h flume.Hash
	copy(h[:], c.sum)
	return h
}

// scanResult is what scanning a segment found.
type scanResult struct {
	offs     []int64 // offset of each good frame
	size     int64   // end of the last good frame
	lastHash flume.Hash
	problem  error // first bad frame (*flume.FrameError, or seq mismatch), nil if clean
	badOff   int64
	torn     bool // problem is a frame cut by the end of the file

	// The end of the last complete batch: the good frames after it (at
	// most one batch's worth) carry the "batch continues" flag, and a
	// crash cut the batch before its last frame was written.
	batchCount int        // good frames up to the batch end
	batchSize  int64      // offset of the batch end
	batchHash  flume.Hash // hash of the frame that ends it
}

// openBatch reports whether the scan ended inside a batch whose last frame
// is missing.
func (r *scanResult) openBatch() bool { return r.batchCount < len(r.offs) }

var errSeq = errors.New("seq out of sequence")

// scanSegment reads every frame of f (size bytes, first seq base), checking
// CRCs and seq density. I/O errors are returned as err; bad data is reported
// in the result.
func scanSegment(f vfs.File, base, size int64) (scanResult, error) {
	return scanSegmentFrom(f, base, 0, size)
}

// scanSegmentFrom scans from offset start, where the frame of seq first
// begins.
func scanSegmentFrom(f vfs.File, first, start, size int64) (scanResult, error) {
	res := scanResult{size: start, batchSize: start}
	r := newFrameReader()
	defer r.release()
	r.reset(f, start, size)
	want := first
	for {
		off := r.off
		e, _, err := r.next()
		if err == io.EOF {
			return res, nil
		}
		if err != nil {
			var fe *flume.FrameError
			if !errors.As(err, &fe) {
				return res, err
			}
			res.problem, res.badOff, res.torn = err, off, fe.Truncated
			return res, nil
		}
		if e.Seq != want {
			res.problem, res.badOff = fmt.Errorf("%w: found seq %d, expected %d", errSeq, e.Seq, want), off
			return res, nil
		}
		res.offs = append(res.offs, off)
		res.size = r.off
		res.lastHash = e.Hash
		if !r.more {
			res.batchCount, res.batchSize, res.batchHash = len(res.offs), res.size, e.Hash
		}
		want++
	}
}

// validFrameAfter reports whether a valid frame with a seq above after
// starts anywhere in b: the sign that a bad frame is mid-log corruption
// rather than a torn tail.
func validFrameAfter(b []byte, after int64) bool {
	maxSeq := after + int64(len(b)/flume.FrameHeaderSize) + 1
	for i := 0; i+flume.FrameHeaderSize <= len(b); i++ {
		l := flume.FramePayloadLen(b[i:])
		if int(l) > len(b)-i-flume.FrameHeaderSize {
			continue
		}
		s := int64(binary.LittleEndian.Uint64(b[i+8:]))
		if s <= after || s > maxSeq {
			continue
		}
		if _, _, err := flume.DecodeFrame(b[i:]); err == nil {
			return true
		}
	}
	return false
}
