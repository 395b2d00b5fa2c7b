package repl

// Invariant 7 of architecture.md §6: bounded memory while streaming to a
// slow follower.

import (
	"bytes"
	"context"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/frame"
)

// slowConn delays every read, making a follower that drains its connection
// at a few MB/s.
type slowConn struct {
	net.Conn
	delay time.Duration
	max   int
}

func (c *slowConn) Read(b []byte) (int, error) {
	time.Sleep(c.delay)
	if len(b) > c.max {
		b = b[:c.max]
	}
	return c.Conn.Read(b)
}

// Invariant 7: a slow follower does not grow the primary's memory. The
// primary reads from its log and keeps at most MaxInFlight bytes in flight;
// the heap stays flat while a 48 MiB log trickles out.
func TestInvariantSlowFollowerBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("streams 48 MiB")
	}
	pdb := newMemDB(t)
	const n, size = 48 << 10, 1 << 10
	val := bytes.Repeat([]byte{'x'}, size)
	batch := make([][]byte, 1024)
	for i := range batch {
		batch[i] = val
	}
	for i := 0; i < n; i += len(batch) {
		if _, _, err := pdb.AppendBatch(context.Background(), batch); err != nil {
			t.Fatal(err)
		}
	}
	opts := fastOpts()
	opts.MaxInFlight = 1 << 20
	prim, addr := servePrimary(t, pdb, opts)
	fdb, err := flume.Open(newSinkLog(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer fdb.Close()
	fopts := fastOpts()
	fopts.DeadAfter = 5 * time.Second
	fopts.Dial = func(ctx context.Context) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		return &slowConn{Conn: c, delay: 200 * time.Microsecond, max: 8 << 10}, nil
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	f, err := NewFollower(fdb, addr, fopts)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var peakHeap uint64
	var peakInFlight int64
	for i := 0; fdb.Since() < n-1; i++ {
		time.Sleep(20 * time.Millisecond)
		if i%10 != 0 {
			continue
		}
		runtime.GC() // measure live memory, not garbage awaiting collection
		runtime.ReadMemStats(&ms)
		peakHeap = max(peakHeap, ms.HeapAlloc)
		prim.mu.Lock()
		for _, fs := range prim.mu.followers {
			if s := fs.session; s != nil {
				s.mu.Lock()
				peakInFlight = max(peakInFlight, s.mu.sentBytes-s.mu.recvBytes)
				s.mu.Unlock()
			}
		}
		prim.mu.Unlock()
	}
	growth := int64(peakHeap) - int64(base)
	t.Logf("streamed %d MiB to a slow follower: peak live heap growth %.1f MiB, peak in flight %.2f MiB", n*size>>20, float64(growth)/(1<<20), float64(peakInFlight)/(1<<20))
	if limit := int64(opts.MaxInFlight + opts.MaxBatchBytes + 4*frame.Size(size)); peakInFlight > limit {
		t.Fatalf("in flight %d bytes exceeds the window bound %d", peakInFlight, limit)
	}
	if growth > 16<<20 {
		t.Fatalf("heap grew by %d MiB while streaming %d MiB", growth>>20, n*size>>20)
	}
}
