package flume_test

import (
	"context"
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
	ctx := context.Background()
	b.SetBytes(100)
	b.ReportAllocs()
	b.ResetTimer()
	n := 0
	for n < b.N {
		s := db.Stream(ctx, flume.StreamOptions{Limit: b.N - n})
		for s.Next() {
			n++
		}
		if err := s.Err(); err != nil {
			b.Fatal(err)
		}
		s.Close()
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "entries/s")
}
