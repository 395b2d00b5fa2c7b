package repl

import (
	"encoding/binary"
	"fmt"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/internal/crc32c"
)

// The byte-level encoding every message is built from: framing (a length
// and a type, optionally sealed by a CRC32C), strings, positions and epoch
// records, and the sticky-error reader that decodes them.

// beginMsg starts a message of type t in dst; endMsg fills in its length.
func beginMsg(dst []byte, t MsgType) ([]byte, int) {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, byte(t))
	return dst, start
}

func endMsg(dst []byte, start int) []byte {
	binary.LittleEndian.PutUint32(dst[start:], uint32(len(dst)-start-4))
	return dst
}

func appendString(dst []byte, s string) []byte {
	if len(s) > maxStringLen {
		s = s[:maxStringLen]
	}
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(s)))
	return append(dst, s...)
}

func appendPosition(dst []byte, p Position) []byte {
	dst = append(dst, p.LogID[:]...)
	dst = binary.LittleEndian.AppendUint64(dst, p.Epoch)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(p.Since))
	return append(dst, p.Hash[:]...)
}

func boolByte(b bool) byte {
	if b {
		return 1
	}
	return 0
}

// reader decodes fields from a message body; the first failure sticks.
type reader struct {
	b   []byte
	err error
	msg MsgType
}

func (r *reader) fail(what string) {
	if r.err == nil {
		r.err = protoErr("%s message: truncated %s", r.msg, what)
	}
}

func (r *reader) bytes(n int, what string) []byte {
	if r.err != nil {
		return nil
	}
	if len(r.b) < n {
		r.fail(what)
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8(what string) uint8 {
	if b := r.bytes(1, what); b != nil {
		return b[0]
	}
	return 0
}

func (r *reader) u16(what string) uint16 {
	if b := r.bytes(2, what); b != nil {
		return binary.LittleEndian.Uint16(b)
	}
	return 0
}

func (r *reader) u32(what string) uint32 {
	if b := r.bytes(4, what); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

func (r *reader) u64(what string) uint64 {
	if b := r.bytes(8, what); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

func (r *reader) seq(what string) int64 {
	v := int64(r.u64(what))
	if r.err == nil && v < -1 {
		r.err = &ProtocolError{Code: CodeBadPosition, Reason: fmt.Sprintf("%s message: %s %d is not a position (must be >= -1)", r.msg, what, v)}
	}
	return v
}

func (r *reader) boolean(what string) bool {
	v := r.u8(what)
	if r.err == nil && v > 1 {
		r.err = protoErr("%s message: %s flag is %d, want 0 or 1", r.msg, what, v)
	}
	return v == 1
}

func (r *reader) str(what string) string {
	n := int(r.u16(what + " length"))
	if r.err == nil && n > maxStringLen {
		r.err = protoErr("%s message: %s of %d bytes exceeds %d", r.msg, what, n, maxStringLen)
		return ""
	}
	return string(r.bytes(n, what))
}

func (r *reader) position(what string) Position {
	var p Position
	copy(p.LogID[:], r.bytes(16, what+" log ID"))
	p.Epoch = r.u64(what + " epoch")
	p.Since = r.seq(what + " since")
	copy(p.Hash[:], r.bytes(32, what+" hash"))
	return p
}

func (r *reader) done() error {
	if r.err == nil && len(r.b) != 0 {
		r.err = protoErr("%s message: %d unexpected trailing bytes", r.msg, len(r.b))
	}
	return r.err
}

func appendEpochRecord(dst []byte, r flume.EpochRecord) []byte {
	dst = binary.LittleEndian.AppendUint64(dst, r.Epoch)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(r.Start))
	dst = append(dst, r.Prev[:]...)
	dst = append(dst, r.Promotion[:]...)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(r.When))
	return binary.LittleEndian.AppendUint32(dst, r.Promoter)
}

func (r *reader) epochRecord(what string) flume.EpochRecord {
	var e flume.EpochRecord
	e.Epoch = r.u64(what + " epoch")
	e.Start = int64(r.u64(what + " start"))
	copy(e.Prev[:], r.bytes(32, what+" prev hash"))
	copy(e.Promotion[:], r.bytes(16, what+" promotion ID"))
	e.When = int64(r.u64(what + " time"))
	e.Promoter = r.u32(what + " promoter")
	return e
}

// endSealed ends a message whose body carries state a peer acts on durably
// (Hello's fencing state and epoch history, Heartbeat's committed
// watermark, Truncate): a CRC32C of the body is appended, so that a byte
// corrupted in transit is a protocol error (code 9), never a fence at a
// wrong epoch, a deposed primary or a wrong committed hint.
func endSealed(dst []byte, start int) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, crc32c.Checksum(dst[start+5:]))
	return endMsg(dst, start)
}

// unseal checks and strips the CRC32C that endSealed appended.
func unseal(b []byte, t MsgType) ([]byte, error) {
	if len(b) < 4 {
		return nil, protoErr("%s message: truncated checksum", t)
	}
	body := b[:len(b)-4]
	if sum, want := binary.LittleEndian.Uint32(b[len(b)-4:]), crc32c.Checksum(body); sum != want {
		return nil, &ProtocolError{Code: CodeCorrupt, Reason: fmt.Sprintf("%s message: checksum mismatch: stored %08x, computed %08x", t, sum, want)}
	}
	return body, nil
}
