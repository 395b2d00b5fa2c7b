package repl

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/filelog"
	"github.com/flume-go/flume/memlog"
)

// benchDB opens a DB for benchmarks on the given log.
func benchDB(b *testing.B, l flume.Log, opts *flume.Options) *flume.DB {
	db, err := flume.Open(l, opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	return db
}

func fill(b *testing.B, db *flume.DB, n, size int) {
	val := bytes.Repeat([]byte{'v'}, size)
	batch := make([][]byte, 4096)
	for i := range batch {
		batch[i] = val
	}
	for i := 0; i < n; i += len(batch) {
		if _, _, err := db.AppendBatch(context.Background(), batch[:min(len(batch), n-i)]); err != nil {
			b.Fatal(err)
		}
	}
}

func benchOpts() *Options {
	return &Options{Heartbeat: 100 * time.Millisecond, DeadAfter: 5 * time.Second}
}

// BenchmarkCatchUp replicates 1M entries into an empty follower over
// loopback TCP. follower=memlog: both logs in memory; file-never: both
// file logs without fsync; sink: primary in memory, follower verifies CRC
// and chain and stores only its head (the replication path alone).
func BenchmarkCatchUp(b *testing.B) {
	const n = 1 << 20
	for _, c := range []struct {
		size int
		log  string
	}{{100, "memlog"}, {1024, "memlog"}, {100, "file-never"}, {1024, "file-never"}, {100, "sink"}, {1024, "sink"}} {
		size := c.size
		b.Run(fmt.Sprintf("size=%d/follower=%s", size, c.log), func(b *testing.B) {
			plog := "memlog"
			if c.log == "file-never" {
				plog = "file-never"
			}
			pdb := benchDB(b, benchLog(b, plog), nil)
			fill(b, pdb, n, size)
			_, addr := servePrimary(b, pdb, benchOpts())
			b.SetBytes(int64(n * size))
			b.ResetTimer()
			var elapsed time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				var fl flume.Log
				if c.log == "sink" {
					fl = newSinkLog()
				} else {
					fl = benchLog(b, c.log)
				}
				fdb := benchDB(b, fl, nil)
				runtime.GC()
				b.StartTimer()
				t0 := time.Now()
				f, err := NewFollower(fdb, addr, benchOpts())
				if err != nil {
					b.Fatal(err)
				}
				if err := fdb.WaitSince(context.Background(), n-1); err != nil {
					b.Fatal(err)
				}
				elapsed += time.Since(t0)
				b.StopTimer()
				f.Close()
				fdb.Close()
				b.StartTimer()
			}
			sec := elapsed.Seconds()
			b.ReportMetric(float64(n*b.N)/sec, "entries/s")
			b.ReportMetric(float64(n*b.N*size)/sec/1e6, "MB/s")
		})
	}
}

func percentiles(d []time.Duration) (p50, p99 time.Duration) {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[len(d)/2], d[len(d)*99/100]
}

// BenchmarkLiveLag measures append returns on the primary → entry readable
// on the follower, one append at a time (async replication; memory logs, or
// file logs without fsync).
func BenchmarkLiveLag(b *testing.B) {
	for _, kind := range []string{"memlog", "file-never", "file-always", "file-always/serial"} {
		b.Run("log="+kind, func(b *testing.B) { benchLiveLag(b, kind) })
	}
}

// benchLiveLag: kind "file-always/serial" is a file-always primary with
// Options.SendAfterSync (no parallel fsyncs), for comparison in one run.
func benchLiveLag(b *testing.B, kind string) {
	popts := benchOpts()
	if k, ok := strings.CutSuffix(kind, "/serial"); ok {
		kind, popts.SendAfterSync = k, true
	}
	pdb := benchDB(b, benchLog(b, kind), nil)
	fdb := benchDB(b, benchLog(b, kind), nil)
	_, addr := servePrimary(b, pdb, popts)
	f, err := NewFollower(fdb, addr, benchOpts())
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := f.Ready(context.Background()); err != nil {
		b.Fatal(err)
	}
	val := bytes.Repeat([]byte{'v'}, 100)
	ctx := context.Background()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		seq, err := pdb.Append(ctx, val)
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		if err := fdb.WaitSince(ctx, seq); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	p50, p99 := percentiles(lat)
	b.ReportMetric(float64(p50.Microseconds()), "p50-µs")
	b.ReportMetric(float64(p99.Microseconds()), "p99-µs")
}

// benchLog opens a log of kind memlog, or filelog with fsync policy
// "always" or "never", in a temporary directory.
func benchLog(b *testing.B, kind string) flume.Log {
	switch kind {
	case "memlog":
		return memlog.New()
	case "file-always", "file-never":
		mode := filelog.SyncAlways
		if kind == "file-never" {
			mode = filelog.SyncNever
		}
		l, err := filelog.Open(b.TempDir(), &filelog.Options{Sync: mode})
		if err != nil {
			b.Fatal(err)
		}
		return l
	}
	b.Fatalf("unknown log kind %q", kind)
	return nil
}

// BenchmarkSyncAppend measures synchronous appends with k=1: latency of one
// writer, and throughput of 64 concurrent writers (group commit). k=0 rows
// are the primary alone (its fsync cost), for reference.
func BenchmarkSyncAppend(b *testing.B) {
	for _, c := range []struct {
		log     string
		writers int
		k       int
		serial  bool // Options.SendAfterSync: the fsyncs one after the other
	}{{"memlog", 1, 1, false}, {"memlog", 64, 1, false}, {"file-always", 1, 1, false}, {"file-always", 64, 1, false},
		// Baselines: the same primary without waiting for a follower, and
		// with the primary's and the follower's fsyncs in series.
		{"file-always", 1, 0, false}, {"file-always", 64, 0, false}, {"file-always", 1, 1, true}, {"file-always", 64, 1, true}} {
		writers := c.writers
		name := fmt.Sprintf("log=%s/writers=%d/k=%d", c.log, writers, c.k)
		if c.serial {
			name += "/serial"
		}
		b.Run(name, func(b *testing.B) {
			pl, fl := benchLog(b, c.log), benchLog(b, c.log)
			pdb := benchDB(b, pl, &flume.Options{SyncReplicas: c.k, SyncTimeout: 10 * time.Second})
			fdb := benchDB(b, fl, nil)
			popts := benchOpts()
			popts.SendAfterSync = c.serial
			prim, addr := servePrimary(b, pdb, popts)
			f, err := NewFollower(fdb, addr, benchOpts())
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			if err := f.Ready(context.Background()); err != nil {
				b.Fatal(err)
			}
			val := bytes.Repeat([]byte{'v'}, 100)
			ctx := context.Background()
			var mu sync.Mutex
			lat := make([]time.Duration, 0, b.N)
			var wg sync.WaitGroup
			per := (b.N + writers - 1) / writers
			b.ResetTimer()
			t0 := time.Now()
			for w := 0; w < writers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					mine := make([]time.Duration, 0, per)
					for i := 0; i < per; i++ {
						s := time.Now()
						if _, err := pdb.Append(ctx, val); err != nil {
							b.Error(err)
							return
						}
						mine = append(mine, time.Since(s))
					}
					mu.Lock()
					lat = append(lat, mine...)
					mu.Unlock()
				}()
			}
			wg.Wait()
			el := time.Since(t0)
			b.StopTimer()
			if len(lat) == 0 {
				b.Fatal("no appends")
			}
			p50, p99 := percentiles(lat)
			b.ReportMetric(float64(p50.Microseconds()), "p50-µs")
			b.ReportMetric(float64(p99.Microseconds()), "p99-µs")
			b.ReportMetric(float64(len(lat))/el.Seconds(), "appends/s")
			if ps, ok := pl.(interface{ Stats() filelog.Stats }); ok {
				fs := fl.(interface{ Stats() filelog.Stats }).Stats()
				b.ReportMetric(float64(ps.Stats().Entries)/float64(max(1, ps.Stats().Syncs)), "entries/primary-fsync")
				b.ReportMetric(float64(fs.Entries)/float64(max(1, fs.Syncs)), "entries/follower-fsync")
				b.ReportMetric(float64(ps.Stats().SyncTime.Microseconds())/float64(max(1, ps.Stats().Syncs)), "µs/primary-fsync")
				b.ReportMetric(float64(fs.SyncTime.Microseconds())/float64(max(1, fs.Syncs)), "µs/follower-fsync")
				st := prim.Stats()
				b.ReportMetric(float64(st.EarlySent)/float64(max(1, ps.Stats().Syncs)), "early-sends/primary-fsync")
			}
		})
	}
}

// BenchmarkCatchUp10MMemory catches up a follower from empty on 10M
// 100-byte entries (file logs, no fsync) and reports the peak memory of the
// process, which holds both the primary and the follower: an upper bound
// for either. It is slow (about a minute); run it alone with -benchtime 1x.
func BenchmarkCatchUp10MMemory(b *testing.B) {
	const n, size = 10_000_000, 100
	pdb := benchDB(b, benchLog(b, "file-never"), nil)
	fill(b, pdb, n, size)
	_, addr := servePrimary(b, pdb, benchOpts())
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	baseSys := ms.Sys
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		fdb := benchDB(b, benchLog(b, "file-never"), nil)
		t0 := time.Now()
		f, err := NewFollower(fdb, addr, benchOpts())
		if err != nil {
			b.Fatal(err)
		}
		var peakHeap, peakSys uint64
		done := make(chan struct{})
		go func() {
			fdb.WaitSince(context.Background(), n-1)
			close(done)
		}()
		tick := time.NewTicker(50 * time.Millisecond)
	wait:
		for {
			select {
			case <-done:
				break wait
			case <-tick.C:
				runtime.ReadMemStats(&ms)
				peakHeap = max(peakHeap, ms.HeapInuse+ms.StackInuse)
				peakSys = max(peakSys, ms.Sys)
			}
		}
		tick.Stop()
		el := time.Since(t0)
		f.Close()
		b.ReportMetric(float64(n)/el.Seconds(), "entries/s")
		b.ReportMetric(float64(peakHeap)/(1<<20), "peak-heap-MiB")
		b.ReportMetric(float64(peakSys)/(1<<20), "peak-sys-MiB")
		b.ReportMetric(float64(baseSys)/(1<<20), "sys-before-MiB")
	}
}
