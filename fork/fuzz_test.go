package fork

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/frame"
	"github.com/flume-go/flume/internal/crc32c"
)

// fuzzSeed builds a valid file of n entries cut after seq 1 by hand (not
// through the Writer), with a reason and two epoch records.
func fuzzSeed(n int) []byte {
	id := flume.LogID{7}
	prev := flume.GenesisHash(id)
	var es []flume.Entry
	for i := range int64(n) + 2 {
		data := bytes.Repeat([]byte{byte(i)}, int(i*3))
		h := flume.ChainHash(prev, i, 1, data)
		es = append(es, flume.Entry{Seq: i, Epoch: 1, Hash: h, Data: data})
		prev = h
	}
	h := Header{LogID: id, After: 1, AfterHash: es[1].Hash, Since: es[len(es)-1].Seq, SinceHash: es[len(es)-1].Hash,
		Epochs: []flume.EpochRecord{{Epoch: 1, Start: 0}, {Epoch: 2, Start: int64(n) + 2}},
		Reason: "fuzz", Time: time.Unix(0, 1)}
	b := appendHeader(nil, &h)
	start := len(b)
	for _, e := range es[2:] {
		b = frame.AppendMore(b, e, e.Seq == 2)
	}
	return appendTrailer(b, trailer{frames: int64(n), bytes: int64(len(b) - start), crc: crc32c.Checksum(b[start:])})
}

// FuzzDecode: the file decoder never panics, reports every problem as a
// *FileError (a bytes.Reader has no I/O errors), and whatever it accepts
// is a consistent cut whose header re-encodes to the same bytes.
func FuzzDecode(f *testing.F) {
	seed := fuzzSeed(3)
	f.Add(seed)
	f.Add(fuzzSeed(0)[:prefixSize+fixedBody])
	f.Add(seed[:len(seed)-1])
	f.Add(seed[:prefixSize])
	f.Add([]byte{})
	f.Add([]byte(fileMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		var info Info
		var seen int64
		err := decode(bytes.NewReader(b), int64(len(b)), "fuzz", &info, func(e flume.Entry) error {
			if e.Seq != info.Header.After+1+seen {
				t.Fatalf("entry %d has seq %d", seen, e.Seq)
			}
			seen++
			return nil
		})
		if err != nil {
			var fe *FileError
			if !errors.As(err, &fe) || fe.Path != "fuzz" || fe.Offset < 0 || fe.Offset > int64(len(b)) {
				t.Fatalf("error %v: want a *FileError within the input", err)
			}
			return
		}
		h := info.Header
		if seen != h.Entries() || info.Entries != seen {
			t.Fatalf("%d entries read, the header says %d", seen, h.Entries())
		}
		if hb := appendHeader(nil, &h); !bytes.HasPrefix(b, hb) {
			t.Fatal("header does not re-encode to the same bytes")
		}
	})
}
