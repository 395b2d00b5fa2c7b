package filelog_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/flume-go/flume/filelog"
	"github.com/flume-go/flume/vfs"
)

// TestNoGoroutineLeak: Close stops the flusher and the interval syncer.
func TestNoGoroutineLeak(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for _, mode := range modes {
		l, err := filelog.Open(dir, &filelog.Options{FS: vfs.NewMem(), Sync: mode})
		if err != nil {
			t.Fatal(err)
		}
		it := l.Iter(0)
		l.Append([]byte("x"))
		it.Next()
		l.Close()
		it.Close()
	}
}

func TestVerifyProgress(t *testing.T) {
	fs, _ := buildLog(t, 3000, 100, 16<<10)
	l, err := filelog.Open(dir, &filelog.Options{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var calls int
	var lastDone, lastTotal int64
	rep, err := l.Verify(t.Context(), func(done, total int64) {
		if done < lastDone || done > total {
			t.Fatalf("progress %d/%d after %d", done, total, lastDone)
		}
		calls++
		lastDone, lastTotal = done, total
	})
	if err != nil || rep.Problem != nil {
		t.Fatal(err)
	}
	if calls == 0 || lastDone != lastTotal || lastDone != rep.Bytes || rep.Entries != 3000 || rep.Since != 2999 {
		t.Fatalf("report %+v, last progress %d/%d after %d calls", rep, lastDone, lastTotal, calls)
	}
	if _, h := l.Head(); h != rep.Head {
		t.Fatal("Verify's recomputed head differs from Head")
	}
	if rep.Segments < 2 {
		t.Fatalf("segments %d", rep.Segments)
	}
}
