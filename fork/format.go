package fork

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/internal/crc32c"
)

// Position is where the new primary stood when it told this node to cut:
// the same four values the replication handshake compares. It is recorded
// for the operator (which primary, at which epoch, caused the cut).
type Position struct {
	LogID flume.LogID
	Epoch uint64
	Since int64
	Hash  flume.Hash // chain hash at Since
}

// String describes the position for tables and logs.
func (p Position) String() string {
	return fmt.Sprintf("epoch %d since %d hash %s", p.Epoch, p.Since, p.Hash.Short())
}

// Header describes one cut. Create writes it at the start of the file under
// a CRC; readers return it in Info.
type Header struct {
	LogID flume.LogID // the log the entries were cut from

	// The cut: the log held (After, Since] before and [0, After] after.
	After     int64      // last seq kept (-1: everything was cut)
	AfterHash flume.Hash // chain hash at After, verified before cutting (GenesisHash(LogID) when After is -1)
	Since     int64      // last seq before the cut: the file holds After+1..Since
	SinceHash flume.Hash // chain hash at Since: names the cut entries exactly

	// Epochs are the log's epoch records that cover the cut entries: the
	// one in effect at After+1 and those starting after it, oldest first
	// (see CutEpochs). May be empty for a log without an epoch history.
	Epochs []flume.EpochRecord

	Primary Position  // the new primary that the cut made this log agree with
	Reason  string    // why the cut happened, for the operator (at most MaxReason bytes of UTF-8)
	Time    time.Time // when the file was created (kept to the nanosecond, as Unix time)
}

// Entries is the number of entries the cut holds.
func (h Header) Entries() int64 { return h.Since - h.After }

// Limits of a header, so that a reader never allocates on a damaged length.
const (
	// MaxReason bounds Header.Reason in bytes: a sentence, not a log.
	MaxReason = 4096
	// MaxEpochs bounds len(Header.Epochs); a cut spanning more promotions
	// than this is not a plausible history.
	MaxEpochs = 1 << 16
)

// Format constants; see the package documentation for the layout.
const (
	fileMagic    = "FLUMEFRK"
	trailerMagic = "FLUMEEND"
	version      = 1

	prefixSize   = 20 // magic, version, flags, body length, CRC
	fixedBody    = 176
	epochRecSize = 76
	trailerSize  = 32

	maxBody = fixedBody + MaxEpochs*epochRecSize + MaxReason

	// Suffix is the extension of a complete fork file; TempSuffix is
	// appended to it while the file is being written.
	Suffix     = ".fork"
	TempSuffix = ".tmp"
)

// validate checks what Create requires of a header.
func (h *Header) validate() error {
	if h.Since <= h.After {
		return fmt.Errorf("%w: cut after seq %d of a log ending at %d", ErrEmptyCut, h.After, h.Since)
	}
	if h.After < -1 {
		return fmt.Errorf("fork: cut after seq %d: want -1 or more", h.After)
	}
	if len(h.Reason) > MaxReason || !utf8.ValidString(h.Reason) {
		return fmt.Errorf("fork: reason must be at most %d bytes of UTF-8", MaxReason)
	}
	if len(h.Epochs) > MaxEpochs {
		return fmt.Errorf("fork: %d epoch records: at most %d", len(h.Epochs), MaxEpochs)
	}
	return nil
}

// appendHeader appends the encoded header (prefix and body) to dst.
func appendHeader(dst []byte, h *Header) []byte {
	n := len(dst)
	bodyLen := fixedBody + epochRecSize*len(h.Epochs) + len(h.Reason)
	dst = append(dst, make([]byte, prefixSize+bodyLen)...)
	p := dst[n:]
	copy(p, fileMagic)
	le := binary.LittleEndian
	le.PutUint16(p[8:], version)
	le.PutUint16(p[10:], 0) // flags: none defined
	le.PutUint32(p[12:], uint32(bodyLen))
	b := p[prefixSize:]
	copy(b[0:], h.LogID[:])
	le.PutUint64(b[16:], uint64(h.After))
	copy(b[24:], h.AfterHash[:])
	le.PutUint64(b[56:], uint64(h.Since))
	copy(b[64:], h.SinceHash[:])
	le.PutUint64(b[96:], uint64(h.Time.UnixNano()))
	copy(b[104:], h.Primary.LogID[:])
	le.PutUint64(b[120:], h.Primary.Epoch)
	le.PutUint64(b[128:], uint64(h.Primary.Since))
	copy(b[136:], h.Primary.Hash[:])
	le.PutUint32(b[168:], uint32(len(h.Epochs)))
	le.PutUint32(b[172:], uint32(len(h.Reason)))
	r := b[fixedBody:]
	for _, e := range h.Epochs {
		le.PutUint64(r[0:], e.Epoch)
		le.PutUint64(r[8:], uint64(e.Start))
		copy(r[16:], e.Prev[:])
		copy(r[48:], e.Promotion[:])
		le.PutUint64(r[64:], uint64(e.When))
		le.PutUint32(r[72:], e.Promoter)
		r = r[epochRecSize:]
	}
	copy(r, h.Reason)
	crc := crc32c.Update(0, p[:16])
	crc = crc32c.Update(crc, b)
	le.PutUint32(p[16:], crc)
	return dst
}

// headerError is a problem found while decoding a header, before the
// caller knows the file's path; the reader turns it into a *FileError.
type headerError struct {
	offset int64
	reason string
	kind   error
}

// decodePrefix checks the magic and the body length of the 20-byte prefix
// and returns the body length. decodeBody checks the rest under the CRC.
func decodePrefix(p []byte) (int, *headerError) {
	if string(p[:8]) != fileMagic {
		return 0, &headerError{0, fmt.Sprintf("bad magic %q, want %q: not a fork file", p[:8], fileMagic), flume.ErrCorrupt}
	}
	le := binary.LittleEndian
	n := le.Uint32(p[12:])
	if n < fixedBody || n > maxBody {
		return 0, &headerError{12, fmt.Sprintf("header length %d out of range [%d, %d]", n, fixedBody, maxBody), flume.ErrCorrupt}
	}
	return int(n), nil
}

// decodeBody checks the CRC over prefix and body and decodes the body.
func decodeBody(prefix, b []byte) (Header, *headerError) {
	le := binary.LittleEndian
	crc := crc32c.Update(0, prefix[:16])
	crc = crc32c.Update(crc, b)
	if got := le.Uint32(prefix[16:]); got != crc {
		return Header{}, &headerError{16, fmt.Sprintf("header checksum mismatch: stored %08x, computed %08x", got, crc), flume.ErrCorrupt}
	}
	// Version and flags are trusted only under a valid CRC, so that a
	// flipped version byte reads as damage, not as a newer format.
	if v := le.Uint16(prefix[8:]); v != version {
		return Header{}, &headerError{8, fmt.Sprintf("format version %d, this flume reads version %d", v, version), ErrVersion}
	}
	if f := le.Uint16(prefix[10:]); f != 0 {
		return Header{}, &headerError{10, fmt.Sprintf("unknown flags %#x", f), flume.ErrCorrupt}
	}
	var h Header
	copy(h.LogID[:], b[0:])
	h.After = int64(le.Uint64(b[16:]))
	copy(h.AfterHash[:], b[24:])
	h.Since = int64(le.Uint64(b[56:]))
	copy(h.SinceHash[:], b[64:])
	h.Time = time.Unix(0, int64(le.Uint64(b[96:]))).UTC()
	copy(h.Primary.LogID[:], b[104:])
	h.Primary.Epoch = le.Uint64(b[120:])
	h.Primary.Since = int64(le.Uint64(b[128:]))
	copy(h.Primary.Hash[:], b[136:])
	ne := le.Uint32(b[168:])
	nr := le.Uint32(b[172:])
	bad := func(off int64, format string, a ...any) (Header, *headerError) {
		return Header{}, &headerError{prefixSize + off, fmt.Sprintf(format, a...), flume.ErrCorrupt}
	}
	if ne > MaxEpochs || nr > MaxReason || fixedBody+int64(ne)*epochRecSize+int64(nr) != int64(len(b)) {
		return bad(168, "%d epoch records and a %d-byte reason do not fill the %d-byte header", ne, nr, len(b))
	}
	if h.After < -1 || h.Since <= h.After {
		return bad(16, "cut after seq %d of a log ending at %d holds no entries", h.After, h.Since)
	}
	r := b[fixedBody:]
	if ne > 0 {
		h.Epochs = make([]flume.EpochRecord, ne)
	}
	for i := range h.Epochs {
		e := &h.Epochs[i]
		e.Epoch = le.Uint64(r[0:])
		e.Start = int64(le.Uint64(r[8:]))
		copy(e.Prev[:], r[16:])
		copy(e.Promotion[:], r[48:])
		e.When = int64(le.Uint64(r[64:]))
		e.Promoter = le.Uint32(r[72:])
		r = r[epochRecSize:]
	}
	if !utf8.Valid(r) {
		return bad(int64(len(b)-len(r)), "reason is not UTF-8")
	}
	h.Reason = string(r)
	return h, nil
}

// trailer closes a complete file: written last, it says how many frame
// bytes precede it and what they sum to.
type trailer struct {
	frames int64
	bytes  int64
	crc    uint32 // CRC32C of the frame bytes
}

func appendTrailer(dst []byte, t trailer) []byte {
	n := len(dst)
	dst = append(dst, make([]byte, trailerSize)...)
	p := dst[n:]
	le := binary.LittleEndian
	copy(p, trailerMagic)
	le.PutUint64(p[8:], uint64(t.frames))
	le.PutUint64(p[16:], uint64(t.bytes))
	le.PutUint32(p[24:], t.crc)
	le.PutUint32(p[28:], crc32c.Checksum(p[:28]))
	return dst
}

func decodeTrailer(p []byte) (trailer, string) {
	le := binary.LittleEndian
	if string(p[:8]) != trailerMagic {
		return trailer{}, fmt.Sprintf("bad trailer magic %q, want %q", p[:8], trailerMagic)
	}
	if got, want := le.Uint32(p[28:]), crc32c.Checksum(p[:28]); got != want {
		return trailer{}, fmt.Sprintf("trailer checksum mismatch: stored %08x, computed %08x", got, want)
	}
	return trailer{frames: int64(le.Uint64(p[8:])), bytes: int64(le.Uint64(p[16:])), crc: le.Uint32(p[24:])}, ""
}

// fileName is the name of the n-th fork file: the zero-padded counter
// first, so that lexical order is creation order, then the creation time
// for people.
func fileName(n uint64, t time.Time) string {
	return fmt.Sprintf("%08d-%d%s", n, t.UnixNano(), Suffix)
}

// fileNumber parses the counter of a fork file name (complete or temp).
func fileNumber(name string) (uint64, bool) {
	if !strings.HasSuffix(name, Suffix) && !strings.HasSuffix(name, Suffix+TempSuffix) {
		return 0, false
	}
	num, _, ok := strings.Cut(name, "-")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(num, 10, 64)
	return n, err == nil
}
