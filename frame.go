package flume

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
)

// The entry frame is the unit of storage and of replication: filelog writes
// frames to its segment files and the replication protocol sends the same
// bytes, so a sender does not re-encode and a receiver verifies the CRC and
// chain before appending.
//
//	offset  size  field
//	0       4     payload length L (uint32, little endian; bit 31: batch continues)
//	4       4     CRC32C (Castagnoli) of bytes [0,4) and [8,56+L)
//	8       8     seq (int64)
//	16      8     epoch (uint64)
//	24      32    chain hash h(seq)
//	56      L     payload
//
// The CRC covers the length so that a torn or flipped length is caught
// before the payload is trusted.
//
// Bit 31 of the length word is set on every frame of a multi-entry batch but
// the last (see AppendFrameMore). A log that finds its tail ends on a frame
// with the bit set after a crash knows the batch's end was never written and
// drops the whole batch, which is what makes AppendBatch all-or-nothing
// across power loss. Lengths never reach bit 31 (MaxEntrySize), so frames
// written without batches read the same.
const (
	// FrameHeaderSize is the size of a frame without its payload.
	FrameHeaderSize = 56
	// MaxEntrySize bounds one payload. Larger appends are refused; a frame
	// claiming more is treated as corrupt rather than allocated.
	MaxEntrySize = 64 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// frameMore is the length word's "batch continues" bit.
const frameMore = 1 << 31

// FrameContinues reports whether the frame at the start of b (at least its
// 4-byte length word) is followed by more entries of the same atomic batch.
func FrameContinues(b []byte) bool {
	return len(b) >= 4 && binary.LittleEndian.Uint32(b)&frameMore != 0
}

// FramePayloadLen returns the payload length from a frame's length word (the
// first 4 bytes of b), without the flag bits.
func FramePayloadLen(b []byte) uint32 { return binary.LittleEndian.Uint32(b) &^ frameMore }

// FrameSize is the encoded size of an entry with an n-byte payload.
func FrameSize(n int) int { return FrameHeaderSize + n }

// AppendFrame appends the frame of e to dst and returns the extended slice.
func AppendFrame(dst []byte, e Entry) []byte { return AppendFrameMore(dst, e, false) }

// AppendFrameMore is AppendFrame for an entry of a multi-entry batch: more
// marks that further entries of the same atomic batch follow it. Writers set
// it on all but a batch's last frame.
func AppendFrameMore(dst []byte, e Entry, more bool) []byte {
	n := len(dst)
	dst = append(dst, make([]byte, FrameHeaderSize)...)
	h := dst[n : n+FrameHeaderSize]
	lw := uint32(len(e.Data))
	if more {
		lw |= frameMore
	}
	binary.LittleEndian.PutUint32(h[0:], lw)
	binary.LittleEndian.PutUint64(h[8:], uint64(e.Seq))
	binary.LittleEndian.PutUint64(h[16:], e.Epoch)
	copy(h[24:56], e.Hash[:])
	dst = append(dst, e.Data...)
	crc := crc32.Update(0, castagnoli, dst[n:n+4])
	crc = crc32.Update(crc, castagnoli, dst[n+8:])
	binary.LittleEndian.PutUint32(dst[n+4:], crc)
	return dst
}

// FrameError describes why bytes are not a valid frame. Truncated means the
// input ended inside the frame (a torn tail on disk, a cut connection on the
// wire); otherwise the bytes are present but wrong. It unwraps to ErrCorrupt.
type FrameError struct {
	Truncated bool
	Reason    string
}

func (e *FrameError) Error() string { return "flume: bad frame: " + e.Reason }

// Unwrap makes errors.Is(err, ErrCorrupt) true.
func (e *FrameError) Unwrap() error { return ErrCorrupt }

// DecodeFrame decodes the frame at the start of b. It returns the entry, whose
// Data aliases b, and the frame's length. It checks the length bound and the
// CRC but not the chain (see CheckNext).
func DecodeFrame(b []byte) (Entry, int, error) {
	if len(b) < FrameHeaderSize {
		return Entry{}, 0, &FrameError{Truncated: true, Reason: fmt.Sprintf("header needs %d bytes, have %d", FrameHeaderSize, len(b))}
	}
	l := FramePayloadLen(b)
	if l > MaxEntrySize {
		return Entry{}, 0, &FrameError{Reason: fmt.Sprintf("payload length %d exceeds the maximum %d", l, MaxEntrySize)}
	}
	end := FrameHeaderSize + int(l)
	if len(b) < end {
		return Entry{}, 0, &FrameError{Truncated: true, Reason: fmt.Sprintf("frame needs %d bytes, have %d", end, len(b))}
	}
	crc := crc32.Update(0, castagnoli, b[0:4])
	crc = crc32.Update(crc, castagnoli, b[8:end])
	if got := binary.LittleEndian.Uint32(b[4:]); got != crc {
		return Entry{}, 0, &FrameError{Reason: fmt.Sprintf("checksum mismatch: stored %08x, computed %08x", got, crc)}
	}
	e := Entry{
		Seq:   int64(binary.LittleEndian.Uint64(b[8:])),
		Epoch: binary.LittleEndian.Uint64(b[16:]),
		Data:  b[FrameHeaderSize:end:end],
	}
	copy(e.Hash[:], b[24:56])
	if e.Seq < 0 {
		return Entry{}, 0, &FrameError{Reason: fmt.Sprintf("negative seq %d", e.Seq)}
	}
	return e, end, nil
}

// ReadFrame reads one frame from r into buf (grown as needed) and decodes it.
// At a clean end of input it returns io.EOF; if the input ends inside a frame
// it returns a *FrameError with Truncated set.
func ReadFrame(r io.Reader, buf []byte) (Entry, []byte, error) {
	if cap(buf) < FrameHeaderSize {
		buf = make([]byte, FrameHeaderSize, 4096)
	}
	buf = buf[:FrameHeaderSize]
	if n, err := io.ReadFull(r, buf); err != nil {
		if err == io.EOF {
			return Entry{}, buf, io.EOF
		}
		if err == io.ErrUnexpectedEOF {
			return Entry{}, buf, &FrameError{Truncated: true, Reason: fmt.Sprintf("header cut after %d bytes", n)}
		}
		return Entry{}, buf, err
	}
	l := FramePayloadLen(buf)
	if l > MaxEntrySize {
		return Entry{}, buf, &FrameError{Reason: fmt.Sprintf("payload length %d exceeds the maximum %d", l, MaxEntrySize)}
	}
	end := FrameHeaderSize + int(l)
	if cap(buf) < end {
		nb := make([]byte, end)
		copy(nb, buf)
		buf = nb
	}
	buf = buf[:end]
	if n, err := io.ReadFull(r, buf[FrameHeaderSize:]); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return Entry{}, buf, &FrameError{Truncated: true, Reason: fmt.Sprintf("payload cut after %d of %d bytes", n, l)}
		}
		return Entry{}, buf, err
	}
	e, _, err := DecodeFrame(buf)
	return e, buf, err
}
