// Package frame is the encoding of one flume.Entry: the stable on-disk and
// wire format of an entry. filelog writes frames to its segment files and
// the replication protocol sends the same bytes, so a sender does not
// re-encode and a receiver verifies the CRC and chain before appending. A
// Log implementation outside this module that wants the same format uses
// this package.
//
//	offset  size  field
//	0       4     payload length L (uint32, little endian; bit 31: batch continues)
//	4       4     CRC32C (Castagnoli) of bytes [0,4) and [8,56+L)
//	8       8     seq (int64)
//	16      8     epoch (uint64)
//	24      32    chain hash h(seq) (see flume.ChainHash)
//	56      L     payload
//
// The CRC covers the length so that a torn or flipped length is caught
// before the payload is trusted.
//
// Bit 31 of the length word is set on every frame of a multi-entry batch but
// the last (see AppendMore). A log that finds its tail ends on a frame with
// the bit set after a crash knows the batch's end was never written and
// drops the whole batch, which is what makes an atomic batch all-or-nothing
// across power loss. Lengths never reach bit 31 (flume.MaxEntrySize), so
// frames written without batches read the same.
//
// The format is frozen by filelog's golden fixture (filelog/testdata).
package frame

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/internal/crc32c"
)

// HeaderSize is the size of a frame without its payload.
const HeaderSize = 56

// moreBit is the length word's "batch continues" bit.
const moreBit = 1 << 31

// Continues reports whether the frame at the start of b (at least its
// 4-byte length word) is followed by more entries of the same atomic batch.
func Continues(b []byte) bool {
	return len(b) >= 4 && binary.LittleEndian.Uint32(b)&moreBit != 0
}

// PayloadLen returns the payload length from a frame's length word (the
// first 4 bytes of b), without the flag bits.
func PayloadLen(b []byte) uint32 { return binary.LittleEndian.Uint32(b) &^ moreBit }

// Size is the encoded size of an entry with an n-byte payload.
func Size(n int) int { return HeaderSize + n }

// Append appends the frame of e to dst and returns the extended slice.
func Append(dst []byte, e flume.Entry) []byte { return AppendMore(dst, e, false) }

// AppendMore is Append for an entry of a multi-entry batch: more marks that
// further entries of the same atomic batch follow it. Writers set it on all
// but a batch's last frame.
func AppendMore(dst []byte, e flume.Entry, more bool) []byte {
	n := len(dst)
	dst = append(dst, make([]byte, HeaderSize)...)
	h := dst[n : n+HeaderSize]
	lw := uint32(len(e.Data))
	if more {
		lw |= moreBit
	}
	binary.LittleEndian.PutUint32(h[0:], lw)
	binary.LittleEndian.PutUint64(h[8:], uint64(e.Seq))
	binary.LittleEndian.PutUint64(h[16:], e.Epoch)
	copy(h[24:56], e.Hash[:])
	dst = append(dst, e.Data...)
	crc := crc32c.Update(0, dst[n:n+4])
	crc = crc32c.Update(crc, dst[n+8:])
	binary.LittleEndian.PutUint32(dst[n+4:], crc)
	return dst
}

// Error describes why bytes are not a valid frame. Truncated means the
// input ended inside the frame (a torn tail on disk, a cut connection on the
// wire); otherwise the bytes are present but wrong. It unwraps to
// flume.ErrCorrupt.
type Error struct {
	Truncated bool
	Reason    string
}

func (e *Error) Error() string { return "flume/frame: bad frame: " + e.Reason }

// Unwrap makes errors.Is(err, flume.ErrCorrupt) true.
func (e *Error) Unwrap() error { return flume.ErrCorrupt }

// Decode decodes the frame at the start of b. It returns the entry, whose
// Data aliases b, and the frame's length. It checks the length bound and the
// CRC but not the chain (see flume.CheckNext).
func Decode(b []byte) (flume.Entry, int, error) {
	if len(b) < HeaderSize {
		return flume.Entry{}, 0, &Error{Truncated: true, Reason: fmt.Sprintf("header needs %d bytes, have %d", HeaderSize, len(b))}
	}
	l := PayloadLen(b)
	if l > flume.MaxEntrySize {
		return flume.Entry{}, 0, &Error{Reason: fmt.Sprintf("payload length %d exceeds the maximum %d", l, flume.MaxEntrySize)}
	}
	end := HeaderSize + int(l)
	if len(b) < end {
		return flume.Entry{}, 0, &Error{Truncated: true, Reason: fmt.Sprintf("frame needs %d bytes, have %d", end, len(b))}
	}
	crc := crc32c.Update(0, b[0:4])
	crc = crc32c.Update(crc, b[8:end])
	if got := binary.LittleEndian.Uint32(b[4:]); got != crc {
		return flume.Entry{}, 0, &Error{Reason: fmt.Sprintf("checksum mismatch: stored %08x, computed %08x", got, crc)}
	}
	e := flume.Entry{
		Seq:   int64(binary.LittleEndian.Uint64(b[8:])),
		Epoch: binary.LittleEndian.Uint64(b[16:]),
		Data:  b[HeaderSize:end:end],
	}
	copy(e.Hash[:], b[24:56])
	if e.Seq < 0 {
		return flume.Entry{}, 0, &Error{Reason: fmt.Sprintf("negative seq %d", e.Seq)}
	}
	return e, end, nil
}

// Read reads one frame from r into buf (grown as needed) and decodes it. It
// returns the entry, whose Data aliases the returned buffer, and that buffer
// for reuse. At a clean end of input it returns io.EOF; if the input ends
// inside a frame it returns an *Error with Truncated set.
func Read(r io.Reader, buf []byte) (flume.Entry, []byte, error) {
	if cap(buf) < HeaderSize {
		buf = make([]byte, HeaderSize, 4096)
	}
	buf = buf[:HeaderSize]
	if n, err := io.ReadFull(r, buf); err != nil {
		if err == io.EOF {
			return flume.Entry{}, buf, io.EOF
		}
		if err == io.ErrUnexpectedEOF {
			return flume.Entry{}, buf, &Error{Truncated: true, Reason: fmt.Sprintf("header cut after %d bytes", n)}
		}
		return flume.Entry{}, buf, err
	}
	l := PayloadLen(buf)
	if l > flume.MaxEntrySize {
		return flume.Entry{}, buf, &Error{Reason: fmt.Sprintf("payload length %d exceeds the maximum %d", l, flume.MaxEntrySize)}
	}
	end := HeaderSize + int(l)
	if cap(buf) < end {
		nb := make([]byte, end)
		copy(nb, buf)
		buf = nb
	}
	buf = buf[:end]
	if n, err := io.ReadFull(r, buf[HeaderSize:]); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return flume.Entry{}, buf, &Error{Truncated: true, Reason: fmt.Sprintf("payload cut after %d of %d bytes", n, l)}
		}
		return flume.Entry{}, buf, err
	}
	e, _, err := Decode(buf)
	return e, buf, err
}
