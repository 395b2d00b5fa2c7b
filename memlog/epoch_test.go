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
