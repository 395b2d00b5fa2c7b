package filelog_test

import (
	"bytes"
	"errors"
	"github.com/flume-go/flume/flumetest"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/filelog"
	"github.com/flume-go/flume/vfs"
)

func FuzzDecodeFrame(f *testing.F) {
	var h flume.Hash
	f.Add(flume.AppendFrame(nil, flume.Entry{Seq: 0, Data: []byte("hello")}))
	f.Add(flume.AppendFrame(nil, flume.Entry{Seq: 1 << 40, Epoch: 3, Hash: h, Data: bytes.Repeat([]byte{7}, 600)}))
	f.Add([]byte{})
	f.Add(make([]byte, 56))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, n, err := flume.DecodeFrame(b)
		if err == nil {
			if n < flume.FrameHeaderSize || n > len(b) || len(e.Data) != n-flume.FrameHeaderSize {
				t.Fatalf("bad length %d of %d", n, len(b))
			}
			if re := flume.AppendFrame(nil, e); !bytes.Equal(re, b[:n]) {
				t.Fatal("re-encoding differs")
			}
		} else if !errors.Is(err, flume.ErrCorrupt) {
			t.Fatalf("error not ErrCorrupt: %v", err)
		}
		// ReadFrame agrees, whatever the reader's chunking.
		for _, r := range []io.Reader{bytes.NewReader(b), iotest.OneByteReader(bytes.NewReader(b)), iotest.HalfReader(bytes.NewReader(b))} {
			e2, _, err2 := flume.ReadFrame(r, nil)
			if (err == nil) != (err2 == nil) {
				if len(b) == 0 && err2 == io.EOF {
					continue
				}
				t.Fatalf("DecodeFrame err %v, ReadFrame err %v", err, err2)
			}
			if err == nil && (e2.Seq != e.Seq || !bytes.Equal(e2.Data, e.Data)) {
				t.Fatal("ReadFrame decoded differently")
			}
		}
	})
}

// FuzzRecover writes a valid prefix plus arbitrary bytes as the last
// segment: open never panics; it fails with an error or yields a log that
// reads back consistently.
func FuzzRecover(f *testing.F) {
	// Five single appends, then a batch of three: recovery must never keep
	// part of the batch.
	base, segs := buildLog(f, 5, 30, 1<<20)
	{
		l, err := filelog.Open(dir, &filelog.Options{FS: base, Sync: filelog.SyncNever})
		if err != nil {
			f.Fatal(err)
		}
		if _, err := l.Append(flumetest.Payload(5, 30), flumetest.Payload(6, 30), flumetest.Payload(7, 30)); err != nil {
			f.Fatal(err)
		}
		l.Close()
		base.Remove(strings.TrimSuffix(segs[0], ".seg") + ".idx")
		vfs.SyncDir(base, dir)
	}
	good := readAll(f, base, segs[0])
	f.Add(uint16(len(good)), []byte{})
	f.Add(uint16(len(good)-3), []byte{1, 2, 3})
	f.Add(uint16(10), good[20:])
	f.Add(uint16(len(good)), make([]byte, 100))
	f.Fuzz(func(t *testing.T, keep uint16, tail []byte) {
		fs := base.CrashClone(vfs.CrashConfig{})
		b := append(bytes.Clone(good[:min(int(keep), len(good))]), tail...)
		writeAll(t, fs, segs[0], b)
		l, err := filelog.Open(dir, &filelog.Options{FS: fs})
		if err != nil {
			if !errors.Is(err, flume.ErrCorrupt) {
				t.Fatalf("open: unexpected error class: %v", err)
			}
			return
		}
		defer l.Close()
		it := l.Iter(0)
		n := int64(0)
		for it.Next() {
			n++
		}
		if it.Err() != nil || n != l.Since()+1 {
			t.Fatalf("iter: %d entries, since %d, err %v", n, l.Since(), it.Err())
		}
		if s := l.Since(); s >= 5 && s < 7 {
			t.Fatalf("recovered %d entries: part of the batch of seqs 5..7 survived", s+1)
		}
		for i := int64(0); i <= l.Since(); i++ {
			if _, err := l.Get(i); err != nil {
				t.Fatalf("Get(%d): %v", i, err)
			}
		}
		// Only frames of the original prefix can survive (a forged frame
		// would need a valid CRC and seq); Verify decides on the chain.
		if _, err := l.Verify(t.Context(), nil); err != nil && !errors.Is(err, flume.ErrCorrupt) {
			t.Fatal(err)
		}
	})
}
