package filelog_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/filelog"
	"github.com/flume-go/flume/flumetest"
	"github.com/flume-go/flume/vfs"
)

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
