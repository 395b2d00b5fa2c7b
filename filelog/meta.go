// On-disk names and the encodings of META and index files.

package filelog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/frame"
	"github.com/flume-go/flume/internal/crc32c"
	"github.com/flume-go/flume/vfs"
)

// File names inside a log directory.
const (
	metaName  = "META"
	lockName  = "LOCK"
	segExt    = ".seg"
	idxExt    = ".idx"
	tmpExt    = ".tmp"
	metaMagic = "FLUMEMET"
	idxMagic  = "FLUMEIDX"
	formatV1  = 1
	metaSize  = 44
	idxTrail  = 40
)

type meta struct {
	id    flume.LogID
	epoch uint64
}

func encodeMeta(m meta) []byte {
	b := make([]byte, metaSize)
	copy(b, metaMagic)
	binary.LittleEndian.PutUint32(b[8:], formatV1)
	copy(b[16:32], m.id[:])
	binary.LittleEndian.PutUint64(b[32:], m.epoch)
	binary.LittleEndian.PutUint32(b[40:], crc32c.Checksum(b[:40]))
	return b
}

func decodeMeta(b []byte) (meta, error) {
	var m meta
	if len(b) != metaSize || string(b[:8]) != metaMagic {
		return m, errors.New("not a flume META file")
	}
	if v := binary.LittleEndian.Uint32(b[8:]); v != formatV1 {
		return m, fmt.Errorf("unsupported format version %d", v)
	}
	if crc32c.Checksum(b[:40]) != binary.LittleEndian.Uint32(b[40:]) {
		return m, errors.New("META checksum mismatch")
	}
	copy(m.id[:], b[16:32])
	m.epoch = binary.LittleEndian.Uint64(b[32:])
	return m, nil
}

func writeMeta(fsys vfs.FS, dir string, m meta) error {
	if err := vfs.WriteFileAtomic(fsys, filepath.Join(dir, metaName), encodeMeta(m)); err != nil {
		return fmt.Errorf("filelog: write meta: %w", err)
	}
	return nil
}

func readMeta(fsys vfs.FS, dir string) (meta, error) {
	p := filepath.Join(dir, metaName)
	b, err := vfs.ReadFile(fsys, p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return meta{}, err
		}
		return meta{}, fmt.Errorf("filelog: read meta: %w", err)
	}
	m, err := decodeMeta(b)
	if err != nil {
		return m, &flume.CorruptionError{Path: p, Offset: 0, Seq: -1, Reason: err.Error()}
	}
	return m, nil
}

func segName(base int64) string { return fmt.Sprintf("%020d%s", base, segExt) }
func idxName(base int64) string { return fmt.Sprintf("%020d%s", base, idxExt) }

// encodeIndex returns the index file of a sealed segment: one uint64 offset
// per entry, then a trailer.
func encodeIndex(base int64, offs []int64, size int64) []byte {
	b := make([]byte, 8*len(offs)+idxTrail)
	for i, o := range offs {
		binary.LittleEndian.PutUint64(b[8*i:], uint64(o))
	}
	t := b[8*len(offs):]
	copy(t, idxMagic)
	binary.LittleEndian.PutUint64(t[8:], uint64(base))
	binary.LittleEndian.PutUint64(t[16:], uint64(len(offs)))
	binary.LittleEndian.PutUint64(t[24:], uint64(size))
	binary.LittleEndian.PutUint32(t[32:], formatV1)
	binary.LittleEndian.PutUint32(t[36:], crc32c.Checksum(t[:36]))
	return b
}

// decodeIndexTrailer checks the trailer of an index file of fileSize bytes
// and returns the entry count and segment size it records.
func decodeIndexTrailer(t []byte, base, fileSize int64) (count, segSize int64, err error) {
	if len(t) != idxTrail || string(t[:8]) != idxMagic {
		return 0, 0, errors.New("bad index trailer magic")
	}
	if crc32c.Checksum(t[:36]) != binary.LittleEndian.Uint32(t[36:]) {
		return 0, 0, errors.New("index trailer checksum mismatch")
	}
	if v := binary.LittleEndian.Uint32(t[32:]); v != formatV1 {
		return 0, 0, fmt.Errorf("unsupported index version %d", v)
	}
	if b := int64(binary.LittleEndian.Uint64(t[8:])); b != base {
		return 0, 0, fmt.Errorf("index is for segment %d", b)
	}
	count = int64(binary.LittleEndian.Uint64(t[16:]))
	segSize = int64(binary.LittleEndian.Uint64(t[24:]))
	if count < 0 || count*8+idxTrail != fileSize || segSize < count*frame.HeaderSize {
		return 0, 0, errors.New("index size does not match its trailer")
	}
	return count, segSize, nil
}
