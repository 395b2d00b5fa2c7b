package views_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/memlog"
	"github.com/flume-go/flume/views"
)

// benchDB returns a DB over a memlog holding n entries "0".."n-1".
func benchDB(b *testing.B, n int) *flume.DB {
	l := memlog.New()
	batch := make([][]byte, 0, 1024)
	for i := 0; i < n; {
		batch = batch[:0]
		for ; i < n && len(batch) < cap(batch); i++ {
			batch = append(batch, strconv.AppendInt(nil, int64(i), 10))
		}
		if _, err := l.Append(batch...); err != nil {
			b.Fatal(err)
		}
	}
	db, err := flume.Open(l, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	return db
}

// BenchmarkReduceBuild measures building a reduce view (sum of parsed
// numbers) from an existing log: one op = one entry, persisted to a state
// file with the default SaveInterval, or after every batch.
func BenchmarkReduceBuild(b *testing.B) {
	for _, save := range []struct {
		name     string
		interval time.Duration
	}{{"save=default", 0}, {"save=every-batch", -1}} {
		b.Run(save.name, func(b *testing.B) {
			db := benchDB(b, b.N)
			r := views.NewReduce(filepath.Join(b.TempDir(), "sum.state"), "v1", nil,
				func(s int64, e flume.Entry) (int64, error) {
					n, err := strconv.ParseInt(string(e.Data), 10, 64)
					return s + n, err
				}, &views.ReduceOptions[int64]{SaveInterval: save.interval})
			b.ResetTimer()
			if err := db.Use("sum", r); err != nil {
				b.Fatal(err)
			}
			if _, err := r.Get(context.Background()); err != nil {
				b.Fatal(err)
			}
			if err := r.Save(); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "entries/s")
		})
	}
}

// BenchmarkIndexBuild measures building a bbolt index (one key per entry,
// 1000 distinct keys) from an existing log: one op = one entry.
func BenchmarkIndexBuild(b *testing.B) {
	db := benchDB(b, b.N)
	ix := views.NewIndex(filepath.Join(b.TempDir(), "ix.db"), "v1", func(e flume.Entry) ([][]byte, error) {
		return [][]byte{fmt.Appendf(nil, "k%03d", e.Seq%1000)}, nil
	})
	b.ResetTimer()
	if err := db.Use("ix", ix); err != nil {
		b.Fatal(err)
	}
	if _, err := ix.Seqs(context.Background(), []byte("k000")); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "entries/s")
}
