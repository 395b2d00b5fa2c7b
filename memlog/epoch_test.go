package memlog_test

import (
	"errors"
	"testing"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/flumetest"
	"github.com/flume-go/flume/memlog"
)

func TestBeginEpoch(t *testing.T) {
	l := memlog.New()
	defer l.Close()
	r1 := flumetest.NextEpochRecord(l, 1)
	if err := l.BeginEpoch(r1); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append([]byte("a")); err != nil {
		t.Fatal(err)
	}
	if e, _ := l.Entry(0); e.Epoch != 1 || l.Epoch() != 1 {
		t.Fatalf("entry epoch %d, log epoch %d, want 1", e.Epoch, l.Epoch())
	}
	stale := r1
	stale.Epoch = 2
	if err := l.BeginEpoch(stale); !errors.Is(err, flume.ErrOutOfOrder) {
		t.Fatalf("record with a stale start: %v, want ErrOutOfOrder", err)
	}
	if err := l.BeginEpoch(flumetest.NextEpochRecord(l, 1)); err == nil {
		t.Fatal("BeginEpoch with a repeated epoch succeeded")
	}
	r2 := flumetest.NextEpochRecord(l, 2)
	if err := l.BeginEpoch(r2); err != nil {
		t.Fatal(err)
	}
	if h := l.Epochs(); len(h) != 2 || h[0] != r1 || h[1] != r2 || l.Epoch() != 2 {
		t.Fatalf("history %v epoch %d", h, l.Epoch())
	}
}

func TestFencingState(t *testing.T) {
	l := memlog.New()
	if l.FencedEpoch() != 0 || l.CommittedHint() != -1 {
		t.Fatalf("new log: fenced %d hint %d", l.FencedEpoch(), l.CommittedHint())
	}
	for _, s := range []struct{ f, h uint64 }{{3, 5}, {2, 4}} {
		if err := l.Fence(s.f); err != nil {
			t.Fatal(err)
		}
		if err := l.SetCommittedHint(int64(s.h)); err != nil {
			t.Fatal(err)
		}
	}
	if l.FencedEpoch() != 3 || l.CommittedHint() != 5 {
		t.Fatalf("fenced %d hint %d, want 3 5 (monotonic)", l.FencedEpoch(), l.CommittedHint())
	}
	l.Close()
	if err := l.Fence(4); !errors.Is(err, flume.ErrClosed) {
		t.Fatalf("Fence after Close: %v", err)
	}
}

func TestTruncateAfter(t *testing.T) {
	l := memlog.New()
	defer l.Close()
	for i := 0; i < 10; i++ {
		if _, err := l.Append([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	e4, _ := l.Entry(4)
	if _, err := l.TruncateAfter(4, e4.Hash, nil); err != nil {
		t.Fatal(err)
	}
	if s, h := l.Head(); s != 4 || h != e4.Hash {
		t.Fatalf("head %d, want 4", s)
	}
	if _, err := l.TruncateAfter(3, e4.Hash, nil); !errors.Is(err, flume.ErrDiverged) {
		t.Fatalf("cut with the wrong hash: %v, want ErrDiverged", err)
	}
}

// TestSetIDWithHistory: an empty log with an epoch history keeps its ID
// (the records' prev hashes pin its genesis hash).
func TestSetIDWithHistory(t *testing.T) {
	l := memlog.New()
	defer l.Close()
	if err := l.BeginEpoch(flumetest.NextEpochRecord(l, 1)); err != nil {
		t.Fatal(err)
	}
	if err := l.SetID(flume.NewLogID()); !errors.Is(err, flume.ErrNotEmpty) {
		t.Fatalf("SetID: %v, want ErrNotEmpty", err)
	}
}
