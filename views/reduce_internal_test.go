package views

import (
	"bytes"
	"testing"

	"github.com/flume-go/flume"
)

func TestReduceFileRoundTrip(t *testing.T) {
	f := reduceFile{version: "v7", since: 42, hash: flume.Hash{9, 8, 7}, state: []byte(`{"a":1}`)}
	b := appendReduceFile(nil, f)
	g, err := decodeReduceFile(b)
	if err != nil || g.version != f.version || g.since != f.since || g.hash != f.hash || !bytes.Equal(g.state, f.state) {
		t.Fatalf("round trip = %+v, %v", g, err)
	}
	for i := range b {
		c := bytes.Clone(b)
		c[i] ^= 0x01
		if _, err := decodeReduceFile(c); err == nil {
			t.Fatalf("flipped byte %d accepted", i)
		}
		if _, err := decodeReduceFile(b[:i]); err == nil {
			t.Fatalf("file cut at %d accepted", i)
		}
	}
}

// FuzzDecodeReduceFile: any bytes give a state or an error, never a panic,
// and whatever decodes re-encodes to the same bytes.
func FuzzDecodeReduceFile(f *testing.F) {
	f.Add(appendReduceFile(nil, reduceFile{version: "v1", since: -1}))
	f.Add(appendReduceFile(nil, reduceFile{version: "", since: 5, state: []byte("xyz")}))
	f.Add([]byte(reduceMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		g, err := decodeReduceFile(b)
		if err != nil {
			return
		}
		if re := appendReduceFile(nil, g); !bytes.Equal(re, b) {
			t.Fatalf("decoded %+v re-encodes differently", g)
		}
	})
}

func TestRowKeyOrderAndRoundTrip(t *testing.T) {
	keys := [][]byte{{0}, {0, 0}, {0, 1}, {0, 0xFF}, {1}, []byte("a"), []byte("a\x00"), []byte("a\x00b"), []byte("a\x01"), []byte("ab"), {0xFF}, {0xFF, 0}}
	for i, k := range keys {
		for _, seq := range []int64{0, 1, 1 << 40} {
			got, s, err := decodeRowKey(appendRowKey(nil, k, seq))
			if err != nil || !bytes.Equal(got, k) || s != seq {
				t.Fatalf("round trip %q/%d = %q/%d, %v", k, seq, got, s, err)
			}
		}
		for j, k2 := range keys {
			a, b := appendRowKey(nil, k, 1<<40), appendRowKey(nil, k2, 0)
			if c := bytes.Compare(a, b); (c < 0) != (i < j) && i != j {
				t.Fatalf("order of %q vs %q not kept", k, k2)
			}
			if i != j && bytes.HasPrefix(appendRowKey(nil, k2, 3), appendEscaped(nil, k)) {
				t.Fatalf("rows of %q match the prefix of %q", k2, k)
			}
		}
	}
}

func FuzzDecodeRowKey(f *testing.F) {
	f.Add(appendRowKey(nil, []byte("a\x00b"), 7))
	f.Add([]byte{0, 1, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		k, s, err := decodeRowKey(b)
		if err != nil {
			return
		}
		if re := appendRowKey(nil, k, s); !bytes.Equal(re, b) && bytes.Count(b[:len(b)-8], []byte{0, 1}) == 1 {
			t.Fatalf("decoded %q/%d re-encodes to %x, not %x", k, s, re, b)
		}
	})
}
