package frame_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"testing"
	"testing/iotest"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/frame"
)

func entries() []flume.Entry {
	var h flume.Hash
	for i := range h {
		h[i] = byte(i * 7)
	}
	return []flume.Entry{
		{Seq: 0, Data: []byte{}},
		{Seq: 1, Epoch: 2, Hash: h, Data: []byte("hello")},
		{Seq: 1 << 40, Epoch: 1<<64 - 1, Hash: h, Data: bytes.Repeat([]byte{7}, 600)},
		{Seq: 1<<63 - 1, Data: bytes.Repeat([]byte{0xff}, 5000)},
	}
}

func sameEntry(a, b flume.Entry) bool {
	return a.Seq == b.Seq && a.Epoch == b.Epoch && a.Hash == b.Hash && bytes.Equal(a.Data, b.Data)
}

// TestLayout checks every field at the offset the package comment gives,
// independently of Decode.
func TestLayout(t *testing.T) {
	for _, e := range entries() {
		for _, more := range []bool{false, true} {
			b := frame.AppendMore([]byte("prefix"), e, more)[len("prefix"):]
			if len(b) != frame.Size(len(e.Data)) || frame.Size(len(e.Data)) != 56+len(e.Data) {
				t.Fatalf("seq %d: frame of %d bytes, Size says %d, want %d", e.Seq, len(b), frame.Size(len(e.Data)), 56+len(e.Data))
			}
			lw := uint32(len(e.Data))
			if more {
				lw |= 1 << 31
			}
			if got := binary.LittleEndian.Uint32(b); got != lw {
				t.Errorf("seq %d: length word %08x, want %08x", e.Seq, got, lw)
			}
			crc := crc32.New(crc32.MakeTable(crc32.Castagnoli))
			crc.Write(b[0:4])
			crc.Write(b[8:])
			if got, want := binary.LittleEndian.Uint32(b[4:]), crc.Sum32(); got != want {
				t.Errorf("seq %d: crc %08x, want %08x", e.Seq, got, want)
			}
			if got := int64(binary.LittleEndian.Uint64(b[8:])); got != e.Seq {
				t.Errorf("seq at 8: got %d, want %d", got, e.Seq)
			}
			if got := binary.LittleEndian.Uint64(b[16:]); got != e.Epoch {
				t.Errorf("epoch at 16: got %d, want %d", got, e.Epoch)
			}
			if !bytes.Equal(b[24:56], e.Hash[:]) || !bytes.Equal(b[56:], e.Data) {
				t.Errorf("seq %d: hash or payload not at 24 and 56", e.Seq)
			}
			if frame.Continues(b) != more || frame.PayloadLen(b) != uint32(len(e.Data)) {
				t.Errorf("seq %d: Continues %v PayloadLen %d, want %v %d", e.Seq, frame.Continues(b), frame.PayloadLen(b), more, len(e.Data))
			}
		}
	}
	if frame.Continues([]byte{0, 0, 0}) {
		t.Error("Continues of 3 bytes: got true, want false")
	}
}

func TestRoundTrip(t *testing.T) {
	var stream []byte
	for _, e := range entries() {
		b := frame.Append(nil, e)
		got, n, err := frame.Decode(append(b, "trailing"...))
		if err != nil || n != len(b) || !sameEntry(got, e) {
			t.Fatalf("Decode(Append(seq %d)): got %+v, %d, %v", e.Seq, got.Seq, n, err)
		}
		stream = append(stream, b...)
	}
	readers := map[string]func() io.Reader{
		"plain":   func() io.Reader { return bytes.NewReader(stream) },
		"onebyte": func() io.Reader { return iotest.OneByteReader(bytes.NewReader(stream)) },
		"half":    func() io.Reader { return iotest.HalfReader(bytes.NewReader(stream)) },
		"dataerr": func() io.Reader { return iotest.DataErrReader(bytes.NewReader(stream)) },
	}
	for name, r := range readers {
		t.Run(name, func(t *testing.T) {
			r := r()
			var buf []byte
			for i, want := range entries() {
				var got flume.Entry
				var err error
				got, buf, err = frame.Read(r, buf)
				if err != nil || !sameEntry(got, want) {
					t.Fatalf("frame %d: got seq %d, err %v; want seq %d", i, got.Seq, err, want.Seq)
				}
			}
			if _, _, err := frame.Read(r, buf); err != io.EOF {
				t.Fatalf("after the last frame: got %v, want io.EOF", err)
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	good := frame.Append(nil, flume.Entry{Seq: 3, Epoch: 1, Data: []byte("payload")})
	mutate := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	cases := []struct {
		name      string
		b         []byte
		truncated bool
	}{
		{"empty", nil, true},
		{"header cut", good[:30], true},
		{"payload cut", good[:len(good)-1], true},
		{"payload flipped", mutate(func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), false},
		{"more bit flipped (covered by the crc)", mutate(func(b []byte) []byte { b[3] ^= 0x80; return b }), false},
		{"length over the maximum", mutate(func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b, flume.MaxEntrySize+1)
			return b
		}), false},
		{"negative seq", frame.Append(nil, flume.Entry{Seq: -1}), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := frame.Decode(c.b)
			var fe *frame.Error
			if !errors.As(err, &fe) || !errors.Is(err, flume.ErrCorrupt) {
				t.Fatalf("Decode: got %v, want a *frame.Error wrapping flume.ErrCorrupt", err)
			}
			if fe.Truncated != c.truncated {
				t.Errorf("Decode: Truncated %v, want %v (%v)", fe.Truncated, c.truncated, err)
			}
			_, _, rerr := frame.Read(bytes.NewReader(c.b), nil)
			if len(c.b) == 0 {
				if rerr != io.EOF {
					t.Errorf("Read: got %v, want io.EOF", rerr)
				}
				return
			}
			if !errors.As(rerr, &fe) || fe.Truncated != c.truncated {
				t.Errorf("Read: got %v, want a *frame.Error with Truncated %v", rerr, c.truncated)
			}
		})
	}
}

func TestReadPassesReaderErrors(t *testing.T) {
	boom := errors.New("boom")
	good := frame.Append(nil, flume.Entry{Seq: 3, Data: []byte("payload")})
	for _, cut := range []int{0, 10, frame.HeaderSize, len(good) - 1} {
		r := io.MultiReader(bytes.NewReader(good[:cut]), iotest.ErrReader(boom))
		if _, _, err := frame.Read(r, nil); !errors.Is(err, boom) {
			t.Errorf("cut at %d: got %v, want the reader's error", cut, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	var h flume.Hash
	f.Add(frame.Append(nil, flume.Entry{Seq: 0, Data: []byte("hello")}))
	f.Add(frame.Append(nil, flume.Entry{Seq: 1 << 40, Epoch: 3, Hash: h, Data: bytes.Repeat([]byte{7}, 600)}))
	f.Add(frame.AppendMore(nil, flume.Entry{Seq: 2, Data: []byte("batch")}, true))
	f.Add([]byte{})
	f.Add(make([]byte, 56))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, n, err := frame.Decode(b)
		if err == nil {
			if n < frame.HeaderSize || n > len(b) || len(e.Data) != n-frame.HeaderSize {
				t.Fatalf("bad length %d of %d", n, len(b))
			}
			if re := frame.AppendMore(nil, e, frame.Continues(b)); !bytes.Equal(re, b[:n]) {
				t.Fatal("re-encoding differs")
			}
		} else if !errors.Is(err, flume.ErrCorrupt) {
			t.Fatalf("error not ErrCorrupt: %v", err)
		}
		// Read agrees, whatever the reader's chunking.
		for _, r := range []io.Reader{bytes.NewReader(b), iotest.OneByteReader(bytes.NewReader(b)), iotest.HalfReader(bytes.NewReader(b))} {
			e2, _, err2 := frame.Read(r, nil)
			if (err == nil) != (err2 == nil) {
				if len(b) == 0 && err2 == io.EOF {
					continue
				}
				t.Fatalf("Decode err %v, Read err %v", err, err2)
			}
			if err == nil && !sameEntry(e2, e) {
				t.Fatal("Read decoded differently")
			}
		}
	})
}

func Example() {
	var buf []byte
	var h flume.Hash
	for seq, data := range []string{"a", "bb"} {
		h = flume.ChainHash(h, int64(seq), 1, []byte(data))
		buf = frame.Append(buf, flume.Entry{Seq: int64(seq), Epoch: 1, Hash: h, Data: []byte(data)})
	}
	r := bytes.NewReader(buf)
	var rbuf []byte
	for {
		var e flume.Entry
		var err error
		e, rbuf, err = frame.Read(r, rbuf)
		if err == io.EOF {
			break
		}
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("seq %d epoch %d %q\n", e.Seq, e.Epoch, e.Data)
	}
	// Output:
	// seq 0 epoch 1 "a"
	// seq 1 epoch 1 "bb"
}
