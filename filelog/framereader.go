// frameReader: buffered sequential decoding of the frames of a file.

package filelog

import (
	"bufio"
	"fmt"
	"io"
	"sync"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/frame"
)

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
// the next call. It returns io.EOF exactly at the limit, a *frame.Error
// for a bad or cut frame, or an I/O error.
func (r *frameReader) next() (flume.Entry, int, error) {
	if r.off >= r.limit {
		return flume.Entry{}, 0, io.EOF
	}
	hdr, err := r.br.Peek(frame.HeaderSize)
	if err != nil {
		if err == io.EOF {
			return flume.Entry{}, 0, &frame.Error{Truncated: true, Reason: fmt.Sprintf("header cut after %d bytes", len(hdr))}
		}
		return flume.Entry{}, 0, err
	}
	l := frame.PayloadLen(hdr)
	r.more = frame.Continues(hdr)
	if l > flume.MaxEntrySize {
		return flume.Entry{}, 0, &frame.Error{Reason: fmt.Sprintf("payload length %d exceeds the maximum %d", l, flume.MaxEntrySize)}
	}
	n := frame.HeaderSize + int(l)
	var b []byte
	if n <= r.br.Size() {
		b, err = r.br.Peek(n)
		if err != nil {
			if err == io.EOF {
				return flume.Entry{}, 0, &frame.Error{Truncated: true, Reason: fmt.Sprintf("frame needs %d bytes, have %d", n, len(b))}
			}
			return flume.Entry{}, 0, err
		}
		e, _, err := frame.Decode(b)
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
			return flume.Entry{}, 0, &frame.Error{Truncated: true, Reason: fmt.Sprintf("frame needs %d bytes, have %d", n, m)}
		}
		return flume.Entry{}, 0, err
	}
	// The bytes were consumed: a bad frame leaves r past it, but callers
	// stop at the first error anyway.
	e, _, err := frame.Decode(b)
	if err != nil {
		return e, 0, err
	}
	r.off += int64(n)
	return e, n, nil
}
