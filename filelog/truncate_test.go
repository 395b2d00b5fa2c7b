package filelog_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/filelog"
	"github.com/flume-go/flume/flumetest"
	"github.com/flume-go/flume/vfs"
	"github.com/flume-go/flume/vfs/errorfs"
)

// TestCutInsideBatchSurvivesCrash: a cut inside a batch leaves the batch's
// first frames, which carry the "batch continues" flag, at the end of the
// log; the cut clears the flag of the last one, so that recovery after a
// power loss (no checkpoint index) keeps them rather than dropping them as
// a batch whose end was never written.
func TestCutInsideBatchSurvivesCrash(t *testing.T) {
	for _, segSize := range []int64{1 << 20, 1024} { // the cut in the active, or in a sealed segment
		fs := vfs.NewMem()
		l, err := filelog.Open(dir, &filelog.Options{FS: fs, SegmentSize: segSize})
		if err != nil {
			t.Fatal(err)
		}
		for i := int64(0); i < 60; i += 5 {
			if _, err := l.Append(payload(i), payload(i+1), payload(i+2), payload(i+3), payload(i+4)); err != nil {
				t.Fatal(err)
			}
		}
		e, _ := l.Entry(22) // inside the batch 20..24
		if _, err := l.TruncateAfter(22, e.Hash, nil); err != nil {
			t.Fatal(err)
		}
		crash := fs.CrashClone(vfs.CrashConfig{})
		l.Close()
		r, err := filelog.Open(dir, &filelog.Options{FS: crash, SegmentSize: segSize})
		if err != nil {
			t.Fatal(err)
		}
		if s, h := r.Head(); s != 22 || h != e.Hash || r.OpenReport().TruncatedBytes != 0 {
			t.Fatalf("segment size %d: after a crash: head %d %s, report %+v; want 22 %s and nothing cut",
				segSize, s, h.Short(), r.OpenReport(), e.Hash.Short())
		}
		flumetest.CheckLog(t, r, payload)
		if _, err := r.Verify(t.Context(), nil); err != nil {
			t.Fatal(err)
		}
		r.Close()
	}
}

// TestInterruptedCut: when the last step of a cut (removing the intent)
// fails, TruncateAfter returns the error and the log refuses writes until
// reopened; a read-only open cannot complete the cut and says so; a
// read-write open completes and reports it.
func TestInterruptedCut(t *testing.T) {
	mem := vfs.NewMem()
	var fail atomic.Bool
	efs := errorfs.Wrap(mem, errorfs.OnPredicate(func(op errorfs.Op) bool {
		return fail.Load() && op.Kind == errorfs.OpRemove && filepath.Base(op.Path) == "truncate"
	}, nil))
	l, err := filelog.Open(dir, &filelog.Options{FS: efs, SegmentSize: 1024})
	if err != nil {
		t.Fatal(err)
	}
	for i := int64(0); i < 50; i++ {
		if _, err := l.Append(payload(i)); err != nil {
			t.Fatal(err)
		}
	}
	e, _ := l.Entry(9)
	fail.Store(true)
	if _, err := l.TruncateAfter(9, e.Hash, nil); !errors.Is(err, errorfs.ErrInjected) {
		t.Fatalf("TruncateAfter with a failing intent removal: %v", err)
	}
	fail.Store(false)
	if l.Since() != 9 {
		t.Fatalf("Since = %d after the failed last step, want 9 (the cut is published)", l.Since())
	}
	if _, err := l.Append(payload(10)); !errors.Is(err, errorfs.ErrInjected) {
		t.Fatalf("append after a failed cut: %v, want the sticky error", err)
	}
	l.Close()
	if _, err := mem.Stat(filepath.Join(dir, "truncate")); err != nil {
		t.Fatalf("the intent is gone: %v", err)
	}
	if _, err := filelog.Open(dir, &filelog.Options{FS: mem, ReadOnly: true}); err == nil || !strings.Contains(err.Error(), "read-write") {
		t.Fatalf("read-only open with an interrupted cut: %v, want an error asking for a read-write open", err)
	}
	for round := 0; round < 2; round++ {
		l, err := filelog.Open(dir, &filelog.Options{FS: mem, SegmentSize: 1024})
		if err != nil {
			t.Fatal(err)
		}
		rep := l.OpenReport().Epochs
		if rep.Truncated != (round == 0) || (round == 0 && rep.TruncatedAfter != 9) {
			t.Fatalf("open %d: report %+v", round, rep)
		}
		if s, h := l.Head(); s != 9 || h != e.Hash {
			t.Fatalf("open %d: head %d %s, want 9 %s", round, s, h.Short(), e.Hash.Short())
		}
		flumetest.CheckLog(t, l, payload)
		if _, err := l.Append(payload(10)); err != nil {
			t.Fatal(err)
		}
		e, _ = l.Entry(9)
		if _, err := l.TruncateAfter(9, e.Hash, nil); err != nil {
			t.Fatal(err)
		}
		l.Close()
	}
}

// TestDamagedIntentFailsOpen: a truncate file that fails its checksum is
// corruption, not a cut to guess at.
func TestDamagedIntentFailsOpen(t *testing.T) {
	mem := vfs.NewMem()
	var fail atomic.Bool
	efs := errorfs.Wrap(mem, errorfs.OnPredicate(func(op errorfs.Op) bool {
		return fail.Load() && op.Kind == errorfs.OpRemove && filepath.Base(op.Path) == "truncate"
	}, nil))
	l, err := filelog.Open(dir, &filelog.Options{FS: efs})
	if err != nil {
		t.Fatal(err)
	}
	for i := int64(0); i < 5; i++ {
		l.Append(payload(i))
	}
	e, _ := l.Entry(2)
	fail.Store(true)
	l.TruncateAfter(2, e.Hash, nil)
	l.Close()
	p := filepath.Join(dir, "truncate")
	b := readAll(t, mem, p)
	b[20] ^= 1
	writeAll(t, mem, p, b)
	_, err = filelog.Open(dir, &filelog.Options{FS: mem})
	var ce *flume.CorruptionError
	if !errors.As(err, &ce) || ce.Path != p {
		t.Fatalf("open with a damaged intent: %v, want a CorruptionError naming %s", err, p)
	}
}

// TestCutKeepsOpenReaders: a reader on a segment that a cut removes keeps
// its file until Close; entries below the cut stay readable through it.
func TestCutKeepsOpenReaders(t *testing.T) {
	l, err := filelog.Open(dir, &filelog.Options{FS: vfs.NewMem(), SegmentSize: 1024})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i := int64(0); i < 100; i++ {
		l.Append(payload(i))
	}
	it := l.Iter(0)
	defer it.Close()
	for i := 0; i < 5; i++ {
		it.Next()
	}
	e, _ := l.Entry(30)
	var fork bytes.Buffer
	if _, err := l.TruncateAfter(30, e.Hash, &fork); err != nil {
		t.Fatal(err)
	}
	n := int64(5)
	for it.Next() {
		if got := it.Entry(); got.Seq != n || !bytes.Equal(got.Data, payload(n)) {
			t.Fatalf("iterator: got %d %q, want %d", got.Seq, got.Data, n)
		}
		n++
	}
	if it.Err() != nil || n != 31 {
		t.Fatalf("iterator ended at %d (err %v), want 31", n, it.Err())
	}
	if _, err := l.Verify(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
}

// TestCutRacesAppendsAndReaders cuts a log again and again while writers
// append and readers iterate: appends either succeed or fail because they
// raced with a cut, iterators either read a consistent prefix or stop with
// ErrDiverged, and the log stays sound (also after a power loss).
func TestCutRacesAppendsAndReaders(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			fs := vfs.NewMem()
			opts := &filelog.Options{FS: fs, SegmentSize: 2048, Sync: mode, SyncInterval: time.Millisecond}
			l, err := filelog.Open(dir, opts)
			if err != nil {
				t.Fatal(err)
			}
			var stop atomic.Bool
			var wg sync.WaitGroup
			defer func() { // stop the goroutines before the log closes
				stop.Store(true)
				wg.Wait()
				l.Close()
			}()
			for w := 0; w < 3; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; !stop.Load(); i++ {
						_, err := l.Append(fmt.Appendf(nil, "w%d-%d", w, i), []byte("second"))
						if err != nil && !strings.Contains(err.Error(), "TruncateAfter") {
							t.Errorf("Append: %v", err)
							return
						}
					}
				}()
			}
			for r := 0; r < 2; r++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for !stop.Load() {
						it := l.Iter(0)
						for n := int64(0); it.Next(); n++ {
							if it.Entry().Seq != n {
								t.Errorf("iterator: seq %d, want %d", it.Entry().Seq, n)
							}
						}
						if err := it.Err(); err != nil && !errors.Is(err, flume.ErrTruncated) {
							t.Errorf("iterator: %v", err)
						}
						it.Close()
					}
				}()
			}
			for cut := 0; cut < 20; cut++ {
				time.Sleep(time.Millisecond)
				if l.Since() < 0 {
					continue
				}
				seq := l.Since() / 2
				e, err := l.Entry(seq)
				if err != nil {
					t.Fatal(err)
				}
				rep, err := l.TruncateAfter(seq, e.Hash, io.Discard)
				if err != nil {
					t.Fatalf("TruncateAfter(%d): %v", seq, err)
				}
				if rep.After != seq {
					t.Fatalf("report %+v", rep)
				}
			}
			stop.Store(true)
			wg.Wait()
			flumetest.CheckLog(t, l, nil)
			if _, err := l.Verify(t.Context(), nil); err != nil {
				t.Fatal(err)
			}
			if err := l.Sync(); err != nil {
				t.Fatal(err)
			}
			since, head := l.Head()
			c, err := filelog.Open(dir, &filelog.Options{FS: fs.CrashClone(vfs.CrashConfig{}), SegmentSize: 2048})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if s, h := c.Head(); s != since || h != head {
				t.Fatalf("after a power loss: head %d %s, want %d %s", s, h.Short(), since, head.Short())
			}
			flumetest.CheckLog(t, c, nil)
		})
	}
}

// TestTornFrameFixIsRepaired: a power loss can tear the rewrite of frame
// seq's length word and CRC (a cut inside a batch) in the middle; the
// intent holds the fix, so Open rewrites it whole instead of taking frame
// seq for a torn tail (or corruption).
func TestTornFrameFixIsRepaired(t *testing.T) {
	for _, tear := range []int{4, 5, 7} { // bytes of the 8-byte fix that reached the disk
		mem := vfs.NewMem()
		efs := errorfs.Wrap(mem, nil)
		l, err := filelog.Open(dir, &filelog.Options{FS: efs})
		if err != nil {
			t.Fatal(err)
		}
		for i := int64(0); i < 30; i += 5 {
			l.Append(payload(i), payload(i+1), payload(i+2), payload(i+3), payload(i+4))
		}
		seg := segments(t, mem)[0]
		old := readAll(t, mem, seg)
		fixOff := frameOffsets(t, old)[27] // inside the batch 25..29
		e, _ := l.Entry(27)
		// Stop the cut right after the fix is written: fail the truncate.
		efs.SetInjector(errorfs.OnPredicate(func(op errorfs.Op) bool {
			return op.Kind == errorfs.OpTruncate && op.Path == seg
		}, nil))
		if _, err := l.TruncateAfter(27, e.Hash, nil); !errors.Is(err, errorfs.ErrInjected) {
			t.Fatalf("TruncateAfter: %v", err)
		}
		efs.SetInjector(nil)
		l.Close()
		b := readAll(t, mem, seg)
		if bytes.Equal(b[fixOff:fixOff+8], old[fixOff:fixOff+8]) {
			t.Fatal("the fix was not written before the truncate")
		}
		copy(b[fixOff+tear:fixOff+8], old[fixOff+tear:fixOff+8]) // torn
		writeAll(t, mem, seg, b)
		l, err = filelog.Open(dir, &filelog.Options{FS: mem})
		if err != nil {
			t.Fatalf("tear after %d bytes: open: %v", tear, err)
		}
		if s, h := l.Head(); s != 27 || h != e.Hash || !l.OpenReport().Epochs.Truncated {
			t.Fatalf("tear after %d bytes: head %d, report %+v; want 27 and the cut completed", tear, s, l.OpenReport())
		}
		flumetest.CheckLog(t, l, payload)
		l.Close()
	}
}
