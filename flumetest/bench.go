package flumetest

import (
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/flume-go/flume"
)

// BenchAppend measures appends of size-byte entries from writers concurrent
// goroutines, batch entries per Append call. One b.N unit is one entry;
// it reports entries/s (and MB/s through SetBytes).
func BenchAppend(b *testing.B, open func(b *testing.B) flume.Log, size, writers, batch int) {
	l := open(b)
	defer l.Close()
	batch = max(batch, 1)
	writers = max(writers, 1)
	data := make([][]byte, batch)
	for i := range data {
		data[i] = make([]byte, size)
		for j := range data[i] {
			data[i][j] = byte(i + j)
		}
	}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	var wg sync.WaitGroup
	var mu sync.Mutex
	left := b.N
	take := func() int {
		mu.Lock()
		defer mu.Unlock()
		n := min(left, batch)
		left -= n
		return n
	}
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n := take()
				if n == 0 {
					return
				}
				if _, err := l.Append(data[:n]...); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	reportRates(b, cpu0)
}

// reportRates reports entries/s and the CPU time (user+system, all
// threads) per entry: on a shared machine the latter says what a core
// costs, whatever the wall clock did.
func reportRates(b *testing.B, cpu0 int64) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "entries/s")
	if cpu1 := cpuTime(); cpu0 >= 0 && cpu1 >= 0 {
		b.ReportMetric(float64(cpu1-cpu0)/float64(b.N), "cpu-ns/entry")
	}
}

// Fill appends n entries of size bytes in batches of 1000.
func Fill(tb testing.TB, l flume.Log, n int64, size int) {
	tb.Helper()
	batch := make([][]byte, 0, 1000)
	buf := make([]byte, size)
	for i := int64(0); i < n; i++ {
		batch = append(batch, buf)
		if len(batch) == cap(batch) || i == n-1 {
			if _, err := l.Append(batch...); err != nil {
				tb.Fatal(err)
			}
			batch = batch[:0]
		}
	}
}

// BenchIter measures a full sequential read of a log of b.N entries of size
// bytes (filled before the timer starts).
func BenchIter(b *testing.B, open func(b *testing.B) flume.Log, size int) {
	l := open(b)
	defer l.Close()
	Fill(b, l, int64(b.N), size)
	if err := l.Sync(); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	it := l.Iter(0)
	n := 0
	for it.Next() {
		n += len(it.Entry().Data)
	}
	if err := it.Err(); err != nil {
		b.Fatal(err)
	}
	it.Close()
	b.StopTimer()
	if n != b.N*size {
		b.Fatalf("read %d bytes, want %d", n, b.N*size)
	}
	reportRates(b, cpu0)
}

// BenchGet measures random Get on a log of 100,000 entries of size bytes.
func BenchGet(b *testing.B, open func(b *testing.B) flume.Log, size int) {
	l := open(b)
	defer l.Close()
	const n = 100_000
	Fill(b, l, n, size)
	r := rand.New(rand.NewPCG(1, 1))
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := l.Get(r.Int64N(n)); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "entries/s")
}
