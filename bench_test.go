package flume_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/memlog"
)

const benchLogSize = 1 << 20

var (
	benchOnce sync.Once
	benchLog  *memlog.Log
)

// sharedLog is a memlog of benchLogSize 100-byte entries, built once.
func sharedLog(b *testing.B) *memlog.Log {
	benchOnce.Do(func() {
		benchLog = memlog.New()
		fillLog(b, benchLog, benchLogSize, 100)
	})
	return benchLog
}

func fillLog(b testing.TB, l flume.Log, n, size int) {
	batch := make([][]byte, 1024)
	v := make([]byte, size)
	for i := range batch {
		batch[i] = v
	}
	for n > 0 {
		k := min(n, len(batch))
		if _, err := l.Append(batch[:k]...); err != nil {
			b.Fatal(err)
		}
		n -= k
	}
}

// BenchmarkStream measures forward stream read throughput (one op = one
// entry) over a 1M-entry log of 100-byte entries.
func BenchmarkStream(b *testing.B) {
	l := sharedLog(b)
	// The DB is not closed: closing it would close the shared log.
	db, err := flume.Open(l, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	benchStream(b, db, flume.StreamOptions{})
}

// benchStream reads b.N entries of 100 bytes from db with opts, streaming
// the log again from the start as often as needed, and reports entries/s.
func benchStream(b *testing.B, db *flume.DB, opts flume.StreamOptions) {
	ctx := context.Background()
	b.SetBytes(100)
	b.ReportAllocs()
	n := 0
	for n < b.N {
		opts.Limit = b.N - n
		s := db.Stream(ctx, opts)
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

// BenchmarkAppend compares the DB's append path with the raw log's, for one
// writer with single appends and with batches of 64, and for concurrent
// writers: the difference is the DB's overhead (publish, checks). One op is
// one 100-byte entry in every case (a batch op appends 64 of them per 64
// ops); memlog keeps every entry, so use a bounded -benchtime Nx.
func BenchmarkAppend(b *testing.B) {
	ctx := context.Background()
	v := make([]byte, 100)
	batch := make([][]byte, 64)
	for i := range batch {
		batch[i] = v
	}
	for _, tc := range []struct {
		name string
		run  func(b *testing.B, l *memlog.Log, db *flume.DB)
	}{
		{"log/single", func(b *testing.B, l *memlog.Log, _ *flume.DB) {
			for i := 0; i < b.N; i++ {
				if _, err := l.Append(v); err != nil {
					b.Fatal(err)
				}
			}
		}},
		{"db/single", func(b *testing.B, _ *memlog.Log, db *flume.DB) {
			for i := 0; i < b.N; i++ {
				if _, err := db.Append(ctx, v); err != nil {
					b.Fatal(err)
				}
			}
		}},
		{"log/batch64", func(b *testing.B, l *memlog.Log, _ *flume.DB) {
			for i := 0; i < b.N; i += 64 {
				if _, err := l.Append(batch...); err != nil {
					b.Fatal(err)
				}
			}
		}},
		{"db/batch64", func(b *testing.B, _ *memlog.Log, db *flume.DB) {
			for i := 0; i < b.N; i += 64 {
				if _, _, err := db.AppendBatch(ctx, batch); err != nil {
					b.Fatal(err)
				}
			}
		}},
		{"db/single/parallel", func(b *testing.B, _ *memlog.Log, db *flume.DB) {
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := db.Append(ctx, v); err != nil {
						b.Fatal(err)
					}
				}
			})
		}},
		{"db/single/live-reader", func(b *testing.B, _ *memlog.Log, db *flume.DB) {
			// A live stream follows the writer: publish must wake it.
			s := db.Stream(ctx, flume.StreamOptions{Live: true})
			done := make(chan struct{})
			go func() {
				defer close(done)
				for n := 0; n < b.N && s.Next(); n++ {
				}
			}()
			for i := 0; i < b.N; i++ {
				if _, err := db.Append(ctx, v); err != nil {
					b.Fatal(err)
				}
			}
			<-done
			s.Close()
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			l := memlog.New()
			db, err := flume.Open(l, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			b.SetBytes(100)
			b.ReportAllocs()
			b.ResetTimer()
			tc.run(b, l, db)
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "entries/s")
		})
	}
}

// nopLog is a Log whose Append only counts: appending through a DB over it
// measures the DB's own cost per append.
type nopLog struct {
	memlog.Log
	since atomic.Int64
}

func (l *nopLog) Append(data ...[]byte) (int64, error) { return l.since.Add(int64(len(data))), nil }
func (l *nopLog) Since() int64                         { return l.since.Load() }
func (l *nopLog) Close() error                         { return nil }

// BenchmarkDBOverhead is the DB's cost per append on top of the log's (over
// a log that does nothing), for a single append, for an append with an
// observer waiting on Changed, and for 64 concurrent appenders.
func BenchmarkDBOverhead(b *testing.B) {
	ctx := context.Background()
	v := make([]byte, 100)
	open := func(b *testing.B) *flume.DB {
		l := &nopLog{}
		l.since.Store(-1)
		db, err := flume.Open(l, nil)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { db.Close() })
		b.ReportAllocs()
		return db
	}
	b.Run("raw-log", func(b *testing.B) {
		l := &nopLog{}
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			l.Append(v)
		}
	})
	b.Run("append", func(b *testing.B) {
		db := open(b)
		for i := 0; i < b.N; i++ {
			if _, err := db.Append(ctx, v); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("append/watched", func(b *testing.B) {
		db := open(b)
		stop := db.Watch(func(int64) {})
		defer stop()
		for i := 0; i < b.N; i++ {
			if _, err := db.Append(ctx, v); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("append/64-writers", func(b *testing.B) {
		db := open(b)
		b.SetParallelism(32) // 32 x GOMAXPROCS(2) = 64 goroutines
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := db.Append(ctx, v); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}
