package filelog_test

import (
	"errors"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/filelog"
	"github.com/flume-go/flume/vfs"
	"github.com/flume-go/flume/vfs/errorfs"
)

var statePath = filepath.Join(dir, "state")

func TestFencingState(t *testing.T) {
	fs := vfs.NewMem()
	l, err := filelog.Open(dir, &filelog.Options{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	if l.FencedEpoch() != 0 || l.CommittedHint() != -1 {
		t.Fatalf("new log: fenced %d hint %d, want 0 -1", l.FencedEpoch(), l.CommittedHint())
	}
	if _, err := fs.Stat(statePath); err == nil {
		t.Fatal("a new log has a state file before any Fence")
	}
	steps := []struct {
		fence        uint64
		hint         int64
		wantF, wantH int64
	}{{3, -1, 3, -1}, {2, 10, 3, 10}, {3, 9, 3, 10}, {7, 10, 7, 10}, {0, -5, 7, 10}}
	for _, s := range steps {
		if err := l.Fence(s.fence); err != nil {
			t.Fatal(err)
		}
		if err := l.SetCommittedHint(s.hint); err != nil {
			t.Fatal(err)
		}
		if int64(l.FencedEpoch()) != s.wantF || l.CommittedHint() != s.wantH {
			t.Fatalf("after Fence(%d), SetCommittedHint(%d): %d %d, want %d %d", s.fence, s.hint, l.FencedEpoch(), l.CommittedHint(), s.wantF, s.wantH)
		}
	}
	// Durable before return: a power loss now keeps it.
	crash := fs.CrashClone(vfs.CrashConfig{})
	l.Close()
	if err := l.Fence(9); !errors.Is(err, flume.ErrClosed) {
		t.Fatalf("Fence after Close: %v", err)
	}
	if err := l.SetCommittedHint(99); !errors.Is(err, flume.ErrClosed) {
		t.Fatalf("SetCommittedHint after Close: %v", err)
	}
	for _, ro := range []bool{false, true} {
		r, err := filelog.Open(dir, &filelog.Options{FS: crash, ReadOnly: ro})
		if err != nil {
			t.Fatal(err)
		}
		if r.FencedEpoch() != 7 || r.CommittedHint() != 10 {
			t.Fatalf("after power loss (read-only %v): fenced %d hint %d, want 7 10", ro, r.FencedEpoch(), r.CommittedHint())
		}
		if ro {
			if err := r.Fence(8); !errors.Is(err, filelog.ErrReadOnly) {
				t.Fatalf("Fence read-only: %v", err)
			}
		}
		r.Close()
	}
}

func TestDamagedStateFailsOpen(t *testing.T) {
	fs := vfs.NewMem()
	l, err := filelog.Open(dir, &filelog.Options{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Fence(4); err != nil {
		t.Fatal(err)
	}
	l.Close()
	good := readAll(t, fs, statePath)
	for pos := 0; pos <= len(good); pos++ {
		c := fs.CrashClone(vfs.CrashConfig{})
		b := append([]byte(nil), good...)
		if pos < len(good) {
			b[pos] ^= 0x20
		} else {
			b = b[:len(b)-1]
		}
		writeAll(t, c, statePath, b)
		l, err := filelog.Open(dir, &filelog.Options{FS: c})
		if err == nil {
			l.Close()
			t.Fatalf("damage at %d: open succeeded", pos)
		}
		var ce *flume.CorruptionError
		if !errors.As(err, &ce) || ce.Path != statePath {
			t.Fatalf("damage at %d: %v, want a CorruptionError naming %s", pos, err, statePath)
		}
	}
}

// TestFenceRetriesAfterFailure: a Fence whose write failed is written again
// by the next call, even one with the same epoch, and FencedEpoch never
// reports less than may be on disk.
func TestFenceRetriesAfterFailure(t *testing.T) {
	mem := vfs.NewMem()
	var fail atomic.Bool
	efs := errorfs.Wrap(mem, errorfs.OnPredicate(func(op errorfs.Op) bool {
		return fail.Load() && op.Kind == errorfs.OpRename && strings.Contains(op.Path, "state")
	}, nil))
	l, err := filelog.Open(dir, &filelog.Options{FS: efs})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	fail.Store(true)
	if err := l.Fence(5); !errors.Is(err, errorfs.ErrInjected) {
		t.Fatalf("Fence with a failing rename: %v", err)
	}
	if l.FencedEpoch() != 5 {
		t.Fatalf("FencedEpoch after a failed Fence = %d, want 5 (never below what may be on disk)", l.FencedEpoch())
	}
	fail.Store(false)
	if err := l.Fence(5); err != nil {
		t.Fatal(err)
	}
	l.Close()
	l, err = filelog.Open(dir, &filelog.Options{FS: mem})
	if err != nil {
		t.Fatal(err)
	}
	if l.FencedEpoch() != 5 {
		t.Fatalf("after the retried Fence and reopen: fenced %d, want 5", l.FencedEpoch())
	}
}
