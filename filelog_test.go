package flume_test

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/filelog"
	"github.com/flume-go/flume/views"
)

// TestViewOverFilelogResumes: a DB over a durable log with a reduce view and
// an index view; after Close and reopen, both views resume from their saved
// since without reapplying an entry, and continue with new appends.
func TestViewOverFilelogResumes(t *testing.T) {
	dir := t.TempDir()
	var reduceCalls, keyCalls atomic.Int64
	open := func() (*flume.DB, *views.Reduce[int64], *views.Index) {
		l, err := filelog.Open(filepath.Join(dir, "log"), &filelog.Options{Sync: filelog.SyncNever})
		if err != nil {
			t.Fatal(err)
		}
		db, err := flume.Open(l, nil)
		if err != nil {
			t.Fatal(err)
		}
		r := views.NewReduce(filepath.Join(dir, "count.state"), "v1", nil, func(n int64, e flume.Entry) (int64, error) {
			reduceCalls.Add(1)
			return n + 1, nil
		}, nil)
		ix := views.NewIndex(filepath.Join(dir, "ix.db"), "v1", func(e flume.Entry) ([][]byte, error) {
			keyCalls.Add(1)
			return [][]byte{e.Data[:1]}, nil
		})
		if err := db.Use("count", r); err != nil {
			t.Fatal(err)
		}
		if err := db.Use("ix", ix); err != nil {
			t.Fatal(err)
		}
		return db, r, ix
	}
	ctx := ctxTimeout(t, 20*time.Second)
	db, r, ix := open()
	for i := 0; i < 5000; i++ {
		if _, err := db.Append(ctx, []byte{'a' + byte(i%3)}); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := r.Get(ctx); err != nil || n != 5000 {
		t.Fatalf("count = %d, %v", n, err)
	}
	if seqs, err := ix.Seqs(ctx, []byte("a")); err != nil || len(seqs) != 1667 {
		t.Fatalf("index a: %d rows, %v", len(seqs), err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	reduceCalls.Store(0)
	keyCalls.Store(0)
	db, r, ix = open()
	defer db.Close()
	if db.Since() != 4999 || r.Since() != 4999 || ix.Since() != 4999 {
		t.Fatalf("after reopen: log %d, reduce %d, index %d; want 4999", db.Since(), r.Since(), ix.Since())
	}
	db.Append(ctx, []byte("a"))
	if n, err := r.Get(ctx); err != nil || n != 5001 {
		t.Fatalf("count = %d, %v", n, err)
	}
	if seqs, err := ix.Seqs(ctx, []byte("a")); err != nil || len(seqs) != 1668 {
		t.Fatalf("index a: %d rows, %v", len(seqs), err)
	}
	if reduceCalls.Load() != 1 || keyCalls.Load() != 1 {
		t.Fatalf("reapplied: reducer %d calls, keyFn %d calls; want 1 each", reduceCalls.Load(), keyCalls.Load())
	}
}

// BenchmarkStreamFilelog measures forward stream read throughput over a
// file log of 1M 100-byte entries (one op = one entry).
func BenchmarkStreamFilelog(b *testing.B) {
	l, err := filelog.Open(b.TempDir(), &filelog.Options{Sync: filelog.SyncNever})
	if err != nil {
		b.Fatal(err)
	}
	fillLog(b, l, benchLogSize, 100)
	db, err := flume.Open(l, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	for _, reverse := range []bool{false, true} {
		name := "forward"
		if reverse {
			name = "reverse"
		}
		b.Run(name, func(b *testing.B) { benchStream(b, db, flume.StreamOptions{Reverse: reverse}) })
	}
}

// TestReverseStreamWindows: reverse streams read the log in windows sized
// by entry size; over a file log of 2,000 entries whose sizes jump from a
// few bytes to 300 KiB, every bounded and limited reverse stream yields
// exactly the entries of its range, highest first, with their payloads.
func TestReverseStreamWindows(t *testing.T) {
	l, err := filelog.Open(t.TempDir(), &filelog.Options{Sync: filelog.SyncNever})
	if err != nil {
		t.Fatal(err)
	}
	db, err := flume.Open(l, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	const n = 2000
	payload := func(i int64) []byte {
		size := 8
		if i >= 700 && i < 760 {
			size = 300 << 10 // a run of big entries shrinks the window
		}
		b := bytes.Repeat([]byte{byte(i)}, size)
		return append(b, fmt.Sprint(i)...)
	}
	ctx := context.Background()
	for i := int64(0); i < n; i++ {
		if _, err := db.Append(ctx, payload(i)); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		lo, hi int64
		limit  int
	}{{0, n - 1, 0}, {0, n - 1, 1}, {0, n - 1, 300}, {650, 800, 0}, {10, 10, 0}, {255, 1300, 777}} {
		s := db.Stream(ctx, flume.StreamOptions{Gte: flume.At(c.lo), Lte: flume.At(c.hi), Reverse: true, Limit: c.limit})
		want := c.hi
		for s.Next() {
			e := s.Entry()
			if e.Seq != want || !bytes.Equal(e.Data, payload(want)) {
				t.Fatalf("range %d..%d limit %d: got seq %d (%d bytes), want seq %d", c.lo, c.hi, c.limit, e.Seq, len(e.Data), want)
			}
			want--
		}
		if err := s.Err(); err != nil {
			t.Fatal(err)
		}
		wantEnd := c.lo - 1
		if c.limit > 0 {
			wantEnd = max(wantEnd, c.hi-int64(c.limit))
		}
		if want != wantEnd {
			t.Fatalf("range %d..%d limit %d: stopped before seq %d, want before %d", c.lo, c.hi, c.limit, want+1, wantEnd+1)
		}
		s.Close()
	}
}
