package flumetest

import (
	"crypto/sha256"
	"encoding/binary"

	"github.com/flume-go/flume"
)

// NextEpochRecord returns the record that begins epoch e at l's head:
// Start is Since()+1 and Prev the head hash. Its promotion ID is derived
// from e and the head, and When and Promoter are fixed, so that tests are
// reproducible while two promotions at different points still differ.
func NextEpochRecord(l flume.Log, e uint64) flume.EpochRecord {
	since, head := l.Head()
	var b [40]byte
	copy(b[:32], head[:])
	binary.LittleEndian.PutUint64(b[32:], e)
	sum := sha256.Sum256(b[:])
	r := flume.EpochRecord{Epoch: e, Start: since + 1, Prev: head, When: 1_700_000_000_000_000_000 + int64(e), Promoter: 0x0f1e2d3c}
	copy(r.Promotion[:], sum[:])
	return r
}
