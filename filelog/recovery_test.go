package filelog_test

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/filelog"
	"github.com/flume-go/flume/flumetest"
	"github.com/flume-go/flume/frame"
	"github.com/flume-go/flume/vfs"
)

const dir = "/db"

// buildLog writes n entries (entry i = flumetest.Payload(i, size)) to a new
// log on a MemFS and closes it. It returns the FS and the segment files.
func buildLog(t testing.TB, n int64, size int, segSize int64) (*vfs.MemFS, []string) {
	t.Helper()
	fs := vfs.NewMem()
	l, err := filelog.Open(dir, &filelog.Options{FS: fs, SegmentSize: segSize, Sync: filelog.SyncNever})
	if err != nil {
		t.Fatal(err)
	}
	for i := int64(0); i < n; i++ {
		if _, err := l.Append(flumetest.Payload(i, size)); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	segs := segments(t, fs)
	// Close leaves a checkpoint index of the active segment; a crash does
	// not. Recovery tests start from the crash case: the whole active
	// segment is scanned on open.
	if err := fs.Remove(strings.TrimSuffix(segs[len(segs)-1], ".seg") + ".idx"); err != nil {
		t.Fatal(err)
	}
	if err := vfs.SyncDir(fs, dir); err != nil { // tests work on crash clones
		t.Fatal(err)
	}
	return fs, segs
}

func segments(t testing.TB, fs vfs.FS) []string {
	names, err := fs.List(dir)
	if err != nil {
		t.Fatal(err)
	}
	var segs []string
	for _, n := range names {
		if strings.HasSuffix(n, ".seg") {
			segs = append(segs, filepath.Join(dir, n))
		}
	}
	return segs
}

func readAll(t testing.TB, fs vfs.FS, name string) []byte {
	t.Helper()
	b, err := vfs.ReadFile(fs, name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeAll(t testing.TB, fs vfs.FS, name string, b []byte) {
	t.Helper()
	f, err := fs.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(b, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

// frameOffsets returns the offset of every frame in a segment's bytes.
func frameOffsets(t testing.TB, b []byte) []int {
	var offs []int
	for off := 0; off < len(b); {
		_, n, err := frame.Decode(b[off:])
		if err != nil {
			t.Fatalf("frame at %d: %v", off, err)
		}
		offs = append(offs, off)
		off += n
	}
	return offs
}

func frameEnd(offs []int, size, i int) int {
	if i+1 < len(offs) {
		return offs[i+1]
	}
	return size
}

func payload(i int64) []byte { return flumetest.Payload(i, 40) }

// TestTornTailEveryOffset cuts the last segment at every byte offset of its
// last three frames: open succeeds, every frame before the cut one is
// intact, and the report says what was cut.
func TestTornTailEveryOffset(t *testing.T) {
	base, segs := buildLog(t, 30, 40, 1<<20)
	seg := segs[len(segs)-1]
	full := readAll(t, base, seg)
	offs := frameOffsets(t, full)
	first := offs[len(offs)-3]
	for cut := first; cut < len(full); cut++ {
		fs := base.CrashClone(vfs.CrashConfig{})
		writeAll(t, fs, seg, full[:cut])
		l, err := filelog.Open(dir, &filelog.Options{FS: fs})
		if err != nil {
			t.Fatalf("cut at %d: open: %v", cut, err)
		}
		// Frames wholly before the cut survive.
		complete := 0 // frames that end at or before the cut
		for complete < len(offs) && frameEnd(offs, len(full), complete) <= cut {
			complete++
		}
		wantSince := int64(complete - 1)
		if s := l.Since(); s != wantSince {
			t.Fatalf("cut at %d: Since = %d, want %d", cut, s, wantSince)
		}
		rep := l.OpenReport()
		wantCut := int64(cut - offs[complete])
		if rep.TruncatedBytes != wantCut || (wantCut > 0 && (rep.TruncatedAt != int64(offs[complete]) || rep.TruncatedFile != seg)) {
			t.Fatalf("cut at %d: report %+v, want %d bytes cut at %d", cut, rep, wantCut, offs[complete])
		}
		flumetest.CheckLog(t, l, payload)
		// The log continues cleanly after the truncation.
		if s, err := l.Append(payload(wantSince + 1)); err != nil || s != wantSince+1 {
			t.Fatalf("cut at %d: append after recovery = %d, %v", cut, s, err)
		}
		l.Close()
		l, err = filelog.Open(dir, &filelog.Options{FS: fs})
		if err != nil {
			t.Fatalf("cut at %d: reopen: %v", cut, err)
		}
		if rep := l.OpenReport(); rep.TruncatedBytes != 0 {
			t.Fatalf("cut at %d: second open truncated again: %+v", cut, rep)
		}
		flumetest.CheckLog(t, l, payload)
		l.Close()
	}
}

// TestTornBatchEveryOffset cuts the log at every byte offset of a 3-entry
// batch written after 10 single appends, including the offsets where the
// cut falls between two of the batch's frames (whole frames survive but
// the batch's last one does not): recovery keeps all of the batch or none
// of it, and reports what it dropped.
func TestTornBatchEveryOffset(t *testing.T) {
	fs0 := vfs.NewMem()
	l, err := filelog.Open(dir, &filelog.Options{FS: fs0, Sync: filelog.SyncNever})
	if err != nil {
		t.Fatal(err)
	}
	for i := int64(0); i < 10; i++ {
		if _, err := l.Append(payload(i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.Append(payload(10), payload(11), payload(12)); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	seg := segments(t, fs0)[0]
	// Recover as after a crash: no checkpoint index.
	if err := fs0.Remove(strings.TrimSuffix(seg, ".seg") + ".idx"); err != nil {
		t.Fatal(err)
	}
	full := readAll(t, fs0, seg)
	offs := frameOffsets(t, full)
	batchStart := offs[10]
	for i, o := range offs {
		if want := i >= 10 && i < 12; frame.Continues(full[o:]) != want {
			t.Fatalf("frame %d: continues flag %v, want %v", i, !want, want)
		}
	}
	for cut := batchStart; cut <= len(full); cut++ {
		fs := fs0.CrashClone(vfs.CrashConfig{})
		writeAll(t, fs, seg, full[:cut])
		l, err := filelog.Open(dir, &filelog.Options{FS: fs})
		if err != nil {
			t.Fatalf("cut at %d: open: %v", cut, err)
		}
		want := int64(9)
		if cut == len(full) {
			want = 12
		}
		if s := l.Since(); s != want {
			t.Fatalf("cut at %d: Since = %d, want %d (a batch survived in part)", cut, s, want)
		}
		rep := l.OpenReport()
		if wantCut := int64(cut - batchStart); want == 9 && (rep.TruncatedBytes != wantCut || (wantCut > 0 && rep.TruncatedAt != int64(batchStart))) {
			t.Fatalf("cut at %d: report %+v, want %d bytes cut at %d", cut, rep, wantCut, batchStart)
		}
		if cut == offs[11] || cut == offs[12] {
			if !strings.Contains(rep.TruncatedReason, "batch") {
				t.Fatalf("cut at %d between batch frames: reason %q does not mention the batch", cut, rep.TruncatedReason)
			}
		}
		flumetest.CheckLog(t, l, payload)
		// The log continues after the dropped batch with the same seqs.
		if s, err := l.Append(payload(want + 1)); err != nil || s != want+1 {
			t.Fatalf("cut at %d: append after recovery = %d, %v", cut, s, err)
		}
		l.Close()
	}
}

// TestFlipActiveSegment flips every byte of the early frames of the active
// segment: open fails with a CorruptionError naming file, offset and seq.
func TestFlipActiveSegment(t *testing.T) {
	base, segs := buildLog(t, 12, 40, 1<<20)
	seg := segs[len(segs)-1]
	full := readAll(t, base, seg)
	offs := frameOffsets(t, full)
	for pos := 0; pos < offs[len(offs)-2]; pos++ {
		frame := 0
		for frame+1 < len(offs) && offs[frame+1] <= pos {
			frame++
		}
		fs := base.CrashClone(vfs.CrashConfig{})
		b := bytes.Clone(full)
		b[pos] ^= 0x40
		writeAll(t, fs, seg, b)
		l, err := filelog.Open(dir, &filelog.Options{FS: fs})
		if err == nil {
			l.Close()
			t.Fatalf("flip at %d (frame %d): open succeeded", pos, frame)
		}
		var ce *flume.CorruptionError
		if !errors.As(err, &ce) || !errors.Is(err, flume.ErrCorrupt) {
			t.Fatalf("flip at %d: %v, want *CorruptionError", pos, err)
		}
		if ce.Path != seg || ce.Offset != int64(offs[frame]) || ce.Seq != int64(frame) {
			t.Fatalf("flip at %d: got %s@%d seq %d, want %s@%d seq %d", pos, ce.Path, ce.Offset, ce.Seq, seg, offs[frame], frame)
		}
	}
}

// TestFlipSealedSegment flips bytes inside frames of a sealed segment: open
// succeeds (sealed segments are not read), and Get, Iter and Verify report a
// CorruptionError at the entry; nothing before it is lost.
func TestFlipSealedSegment(t *testing.T) {
	base, segs := buildLog(t, 200, 40, 4096)
	if len(segs) < 3 {
		t.Fatalf("want several segments, have %d", len(segs))
	}
	seg := segs[1]
	full := readAll(t, base, seg)
	offs := frameOffsets(t, full)
	var segBase int64
	fmt.Sscanf(filepath.Base(seg), "%d", &segBase)
	for _, frame := range []int{0, 1, len(offs) / 2, len(offs) - 1} {
		for _, delta := range []int{0, 4, 9, 30, 60} {
			pos := offs[frame] + delta
			seq := segBase + int64(frame)
			fs := base.CrashClone(vfs.CrashConfig{})
			b := bytes.Clone(full)
			b[pos] ^= 0x01
			writeAll(t, fs, seg, b)
			l, err := filelog.Open(dir, &filelog.Options{FS: fs})
			if err != nil {
				t.Fatalf("flip at %d: open: %v", pos, err)
			}
			check := func(what string, err error) {
				t.Helper()
				var ce *flume.CorruptionError
				if !errors.As(err, &ce) || ce.Path != seg || ce.Seq != seq || ce.Offset != int64(offs[frame]) {
					t.Fatalf("flip at %d (seq %d): %s: %v", pos, seq, what, err)
				}
			}
			_, err = l.Get(seq)
			check("Get", err)
			for i := int64(0); i < seq; i++ {
				if d, err := l.Get(i); err != nil || !bytes.Equal(d, payload(i)) {
					t.Fatalf("Get(%d) before the bad entry: %v", i, err)
				}
			}
			it := l.Iter(0)
			n := int64(0)
			for it.Next() {
				n++
			}
			check("Iter", it.Err())
			if n != seq {
				t.Fatalf("Iter yielded %d entries before the bad one, want %d", n, seq)
			}
			rep, err := l.Verify(t.Context(), nil)
			check("Verify", err)
			if rep.Problem == nil || rep.Entries != seq {
				t.Fatalf("Verify report %+v", rep)
			}
			l.Close()
		}
	}
}

// TestRecoveryCases is the table of recovery cases.
func TestRecoveryCases(t *testing.T) {
	type tc struct {
		name      string
		mutate    func(t *testing.T, fs *vfs.MemFS, segs []string)
		wantSince int64 // when no error
		wantCut   bool
		wantErr   error
		wantIn    string // substring of the error
	}
	lastSeg := func(segs []string) string { return segs[len(segs)-1] }
	cases := []tc{
		{name: "clean", mutate: func(*testing.T, *vfs.MemFS, []string) {}, wantSince: 99},
		{name: "zeros appended (ext4 after crash)", wantSince: 99, wantCut: true, mutate: func(t *testing.T, fs *vfs.MemFS, segs []string) {
			b := readAll(t, fs, lastSeg(segs))
			writeAll(t, fs, lastSeg(segs), append(b, make([]byte, 300)...))
		}},
		{name: "garbage appended", wantSince: 99, wantCut: true, mutate: func(t *testing.T, fs *vfs.MemFS, segs []string) {
			b := readAll(t, fs, lastSeg(segs))
			writeAll(t, fs, lastSeg(segs), append(b, bytes.Repeat([]byte{0xa5}, 77)...))
		}},
		{name: "last frame's length flipped", wantSince: 98, wantCut: true, mutate: func(t *testing.T, fs *vfs.MemFS, segs []string) {
			b := readAll(t, fs, lastSeg(segs))
			offs := frameOffsets(t, b)
			b[offs[len(offs)-1]+1] ^= 0xff
			writeAll(t, fs, lastSeg(segs), b)
		}},
		{name: "mid frame's length flipped huge", wantErr: flume.ErrCorrupt, wantIn: "not a torn tail", mutate: func(t *testing.T, fs *vfs.MemFS, segs []string) {
			b := readAll(t, fs, lastSeg(segs))
			offs := frameOffsets(t, b)
			b[offs[2]+2] ^= 0x7f
			writeAll(t, fs, lastSeg(segs), b)
		}},
		{name: "frame duplicated (seq out of sequence)", wantErr: flume.ErrCorrupt, wantIn: "expected", mutate: func(t *testing.T, fs *vfs.MemFS, segs []string) {
			b := readAll(t, fs, lastSeg(segs))
			offs := frameOffsets(t, b)
			b = append(b, b[offs[len(offs)-1]:]...)
			writeAll(t, fs, lastSeg(segs), b)
		}},
		{name: "missing index is rebuilt", wantSince: 99, mutate: func(t *testing.T, fs *vfs.MemFS, segs []string) {
			if err := fs.Remove(strings.TrimSuffix(segs[0], ".seg") + ".idx"); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "bad index trailer is rebuilt", wantSince: 99, mutate: func(t *testing.T, fs *vfs.MemFS, segs []string) {
			p := strings.TrimSuffix(segs[0], ".seg") + ".idx"
			b := readAll(t, fs, p)
			b[len(b)-1] ^= 1
			writeAll(t, fs, p, b)
		}},
		{name: "sealed segment shorter than its index", wantErr: flume.ErrCorrupt, wantIn: "sealed", mutate: func(t *testing.T, fs *vfs.MemFS, segs []string) {
			b := readAll(t, fs, segs[0])
			writeAll(t, fs, segs[0], b[:len(b)-10])
		}},
		{name: "middle segment missing", wantErr: flume.ErrCorrupt, wantIn: "previous one ends", mutate: func(t *testing.T, fs *vfs.MemFS, segs []string) {
			fs.Remove(segs[1])
			fs.Remove(strings.TrimSuffix(segs[1], ".seg") + ".idx")
		}},
		{name: "META missing", wantErr: flume.ErrCorrupt, wantIn: "META", mutate: func(t *testing.T, fs *vfs.MemFS, segs []string) {
			fs.Remove(filepath.Join(dir, "META"))
		}},
		{name: "META flipped", wantErr: flume.ErrCorrupt, wantIn: "checksum", mutate: func(t *testing.T, fs *vfs.MemFS, segs []string) {
			p := filepath.Join(dir, "META")
			b := readAll(t, fs, p)
			b[20] ^= 1
			writeAll(t, fs, p, b)
		}},
		{name: "empty last segment", wantSince: 99, mutate: func(t *testing.T, fs *vfs.MemFS, segs []string) {
			writeAll(t, fs, filepath.Join(dir, fmt.Sprintf("%020d.seg", 100)), nil)
		}},
		{name: "stale index of the last segment", wantSince: 99, mutate: func(t *testing.T, fs *vfs.MemFS, segs []string) {
			p := lastSeg(segs)
			writeAll(t, fs, strings.TrimSuffix(p, ".seg")+".idx", []byte("stale"))
		}},
	}
	base, segs := buildLog(t, 100, 40, 2048)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fs := base.CrashClone(vfs.CrashConfig{})
			c.mutate(t, fs, segs)
			l, err := filelog.Open(dir, &filelog.Options{FS: fs, SegmentSize: 2048})
			if c.wantErr != nil {
				if err == nil {
					l.Close()
					t.Fatalf("open succeeded, want %v", c.wantErr)
				}
				if !errors.Is(err, c.wantErr) || !strings.Contains(err.Error(), c.wantIn) {
					t.Fatalf("open: %v, want %v containing %q", err, c.wantErr, c.wantIn)
				}
				return
			}
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			defer l.Close()
			if s := l.Since(); s != c.wantSince {
				t.Fatalf("Since = %d, want %d", s, c.wantSince)
			}
			if cut := l.OpenReport().TruncatedBytes > 0; cut != c.wantCut {
				t.Fatalf("truncated = %v, want %v (%+v)", cut, c.wantCut, l.OpenReport())
			}
			flumetest.CheckLog(t, l, payload)
			if _, err := l.Verify(t.Context(), nil); err != nil {
				t.Fatalf("Verify: %v", err)
			}
		})
	}
}

// TestCheckpoint: after a clean Close, open reads the active segment's
// checkpoint index instead of scanning; corruption under the checkpoint is
// then found by reads and Verify, and a stale checkpoint is a valid prefix.
func TestCheckpoint(t *testing.T) {
	fs := vfs.NewMem()
	opts := &filelog.Options{FS: fs}
	l, err := filelog.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	for i := int64(0); i < 50; i++ {
		l.Append(payload(i))
	}
	l.Close()
	l, err = filelog.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	if rep := l.OpenReport(); rep.ScannedBytes != 0 {
		t.Fatalf("open after clean close scanned %d bytes", rep.ScannedBytes)
	}
	flumetest.CheckLog(t, l, payload)
	// Append more, then "crash" (clone without Close): the old checkpoint
	// is stale but a valid prefix; the rest is scanned.
	for i := int64(50); i < 80; i++ {
		l.Append(payload(i))
	}
	crash := fs.CrashClone(vfs.CrashConfig{})
	l.Close()
	r, err := filelog.Open(dir, &filelog.Options{FS: crash})
	if err != nil {
		t.Fatal(err)
	}
	if r.Since() != 79 {
		t.Fatalf("Since = %d, want 79", r.Since())
	}
	flumetest.CheckLog(t, r, payload)
	r.Close()

	// A flipped byte under the checkpoint: open succeeds, Get and Verify
	// report it with file, offset and seq.
	segs := segments(t, fs)
	seg := segs[len(segs)-1]
	b := readAll(t, fs, seg)
	offs := frameOffsets(t, b)
	b[offs[10]+60] ^= 1
	writeAll(t, fs, seg, b)
	l, err = filelog.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, err = l.Get(10)
	var ce *flume.CorruptionError
	if !errors.As(err, &ce) || ce.Seq != 10 || ce.Offset != int64(offs[10]) || ce.Path != seg {
		t.Fatalf("Get of a flipped entry: %v", err)
	}
	if _, err := l.Verify(t.Context(), nil); !errors.As(err, &ce) || ce.Seq != 10 {
		t.Fatalf("Verify: %v", err)
	}
}
