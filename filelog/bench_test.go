package filelog_test

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/filelog"
	"github.com/flume-go/flume/flumetest"
)

// Benchmarks run on the OS filesystem in a temp dir. The 10M-entry open and
// iteration benchmarks need about 1.6 GB of disk and a minute to build:
// set FLUME_BENCH_10M=1 to run them.

var fixtures struct {
	sync.Mutex
	dirs map[int64]string
	tmp  []string
}

func TestMain(m *testing.M) {
	code := m.Run()
	for _, d := range fixtures.tmp {
		os.RemoveAll(d)
	}
	os.Exit(code)
}

// fixture returns a closed log of n entries of 100 B, built once per run.
func fixture(b *testing.B, n int64) string {
	fixtures.Lock()
	defer fixtures.Unlock()
	if d, ok := fixtures.dirs[n]; ok {
		return d
	}
	d, err := os.MkdirTemp("", "flume-bench-")
	if err != nil {
		b.Fatal(err)
	}
	fixtures.tmp = append(fixtures.tmp, d)
	l, err := filelog.Open(d, &filelog.Options{Sync: filelog.SyncNever})
	if err != nil {
		b.Fatal(err)
	}
	flumetest.Fill(b, l, n, 100)
	if err := l.Close(); err != nil {
		b.Fatal(err)
	}
	if fixtures.dirs == nil {
		fixtures.dirs = map[int64]string{}
	}
	fixtures.dirs[n] = d
	return d
}

// lastBench is the log openBench opened last, for its Stats.
var lastBench *filelog.Log

func openBench(mode filelog.SyncMode) func(b *testing.B) flume.Log {
	return func(b *testing.B) flume.Log {
		l, err := filelog.Open(b.TempDir(), &filelog.Options{Sync: mode})
		if err != nil {
			b.Fatal(err)
		}
		lastBench = l
		return l
	}
}

// reportSyncs reports the group-commit figures of the last benchmark log.
func reportSyncs(b *testing.B) {
	if st := lastBench.Stats(); st.Syncs > 0 {
		b.ReportMetric(float64(st.Entries)/float64(st.Syncs), "entries/fsync")
		b.ReportMetric(float64(st.SyncTime.Microseconds())/float64(st.Syncs), "µs/fsync")
	}
}

func BenchmarkAppend(b *testing.B) {
	for _, size := range []int{100, 1024} {
		for _, mode := range modes {
			for _, w := range []int{1, 64} {
				b.Run(fmt.Sprintf("size=%d/sync=%s/writers=%d", size, mode, w), func(b *testing.B) {
					flumetest.BenchAppend(b, openBench(mode), size, w, 1)
					reportSyncs(b)
				})
			}
			b.Run(fmt.Sprintf("size=%d/sync=%s/batch=1000", size, mode), func(b *testing.B) {
				flumetest.BenchAppend(b, openBench(mode), size, 1, 1000)
			})
		}
	}
}

func BenchmarkGet(b *testing.B) {
	for _, size := range []int{100, 1024} {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) { flumetest.BenchGet(b, openBench(filelog.SyncNever), size) })
	}
}

func BenchmarkIter(b *testing.B) {
	for _, size := range []int{100, 1024} {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) { flumetest.BenchIter(b, openBench(filelog.SyncNever), size) })
	}
}

// fullActive is the worst case for open: one active segment just under
// 64 MiB (420,000 frames of 156 B), all of which recovery scans.
const fullActive = 420_000

func benchSizes() []int64 {
	if os.Getenv("FLUME_BENCH_10M") != "" {
		return []int64{fullActive, 1_000_000, 10_000_000}
	}
	return []int64{fullActive, 1_000_000}
}

// BenchmarkOpen measures Open+Close of a log of n entries of 100 B:
// "clean" after a clean Close (the active segment has a checkpoint index),
// "crash" without it (recovery scans the whole active segment; read-only
// opens so the checkpoint is not rewritten).
func BenchmarkOpen(b *testing.B) {
	for _, n := range benchSizes() {
		for _, kind := range []string{"clean", "crash"} {
			b.Run(fmt.Sprintf("entries=%d/%s", n, kind), func(b *testing.B) {
				d := fixture(b, n)
				opts := &filelog.Options{}
				if kind == "crash" {
					opts.ReadOnly = true
					names, _ := os.ReadDir(d)
					var last string
					for _, e := range names {
						if filepath.Ext(e.Name()) == ".seg" {
							last = e.Name()
						}
					}
					os.Remove(filepath.Join(d, strings.TrimSuffix(last, ".seg")+".idx"))
				}
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					l, err := filelog.Open(d, opts)
					if err != nil {
						b.Fatal(err)
					}
					if l.Since() != n-1 {
						b.Fatalf("since %d", l.Since())
					}
					l.Close()
				}
				b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/open")
			})
		}
	}
}

// BenchmarkIterAll streams a whole log of n entries and reports the peak
// heap in use while doing so (sampled every 5 ms).
func BenchmarkIterAll(b *testing.B) {
	for _, n := range benchSizes() {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			d := fixture(b, n)
			l, err := filelog.Open(d, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			runtime.GC()
			var peak atomic.Uint64
			stop := make(chan struct{})
			done := make(chan struct{})
			go func() {
				defer close(done)
				var ms runtime.MemStats
				t := time.NewTicker(5 * time.Millisecond)
				defer t.Stop()
				for {
					runtime.ReadMemStats(&ms)
					if ms.HeapInuse > peak.Load() {
						peak.Store(ms.HeapInuse)
					}
					select {
					case <-stop:
						return
					case <-t.C:
					}
				}
			}()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				it := l.Iter(0)
				k := int64(0)
				for it.Next() {
					k++
				}
				if it.Err() != nil || k != n {
					b.Fatalf("iterated %d, err %v", k, it.Err())
				}
				it.Close()
			}
			b.StopTimer()
			close(stop)
			<-done
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
			b.ReportMetric(float64(peak.Load())/(1<<20), "peak-heap-MiB")
		})
	}
}
