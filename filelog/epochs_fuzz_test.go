package filelog

import (
	"bytes"
	"errors"
	"testing"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/internal/epochs"
)

// FuzzDecodeEpochs feeds arbitrary bytes to the epochs file decoder: it
// never panics; it either refuses them as corruption (a
// *flume.CorruptionError inside the input) or returns records that
// re-encode to exactly the bytes it kept, with anything after them
// reported as a torn tail.
func FuzzDecodeEpochs(f *testing.F) {
	file := encodeEpochsHeader()
	for i := uint64(1); i <= 3; i++ {
		file = appendEpochRecord(file, flume.EpochRecord{Epoch: i, Start: int64(i * 10), Prev: flume.Hash{byte(i)}, When: int64(i), Promoter: uint32(i)})
	}
	f.Add(file)
	f.Add(file[:epochsHeaderSize])
	f.Add(file[:len(file)-7])
	f.Add(append(bytes.Clone(file), make([]byte, 100)...))
	f.Add([]byte{})
	f.Add([]byte(epochsMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := decodeEpochs(b)
		if err != nil {
			var ce *flume.CorruptionError
			if !errors.As(err, &ce) || !errors.Is(err, flume.ErrCorrupt) || ce.Offset < 0 || ce.Offset > int64(len(b)) {
				t.Fatalf("error %v: want a *flume.CorruptionError inside the input", err)
			}
			return
		}
		if c.good != int64(epochsHeaderSize+epochRecordSize*len(c.recs)) || c.good > int64(len(b)) {
			t.Fatalf("%d records but %d good bytes of %d", len(c.recs), c.good, len(b))
		}
		re := encodeEpochsHeader()
		for _, r := range c.recs {
			re = appendEpochRecord(re, r)
		}
		if !bytes.Equal(re, b[:c.good]) {
			t.Fatal("the records do not re-encode to the bytes they came from")
		}
		if (c.torn != "") != (c.good < int64(len(b))) {
			t.Fatalf("torn %q with %d of %d bytes good", c.torn, c.good, len(b))
		}
		// A torn tail is at most one record's worth of non-zero bytes.
		if tail := bytes.TrimRight(b[c.good:], "\x00"); len(tail) > epochRecordSize {
			t.Fatalf("a tail with %d non-zero bytes was taken for a torn write", len(tail))
		}
		epochs.CheckOrder(c.recs) // must not panic on any decoded history
	})
}
