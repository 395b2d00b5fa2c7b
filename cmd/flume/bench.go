package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/repl"
	"github.com/flume-go/flume/server"
	"github.com/spf13/cobra"
)

type benchFlags struct {
	entries int
	syncOps int
	size    int
	dir     string
}

func newBenchCmd() *cobra.Command {
	var f benchFlags
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Benchmark appends, catch-up replication and sync latency on loopback",
		Long: `Run benchmarks with temporary data on this machine and print a table:
appends (one writer without fsync, 64 writers with fsync always), a follower
catching up from empty over loopback TCP (100 B and 1 KiB entries), and
synchronous replication (k=1, fsync always on both sides) with 1 and 64
writers. PEAK MEM is the Go runtime's peak memory in use during the row.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if f.entries < 1 || f.syncOps < 1 || f.size < 1 {
				return usageErrorf("bench: --entries, --sync-ops and --size must be >= 1")
			}
			return runBench(cmd.Context(), f, cmd.OutOrStdout())
		},
	}
	cmd.Flags().IntVar(&f.entries, "entries", 200_000, "entries for the throughput rows")
	cmd.Flags().IntVar(&f.syncOps, "sync-ops", 2_000, "appends for the sync-latency rows")
	cmd.Flags().IntVar(&f.size, "size", 100, "entry size in bytes (the 1 KiB catch-up row uses 1024)")
	cmd.Flags().StringVar(&f.dir, "dir", "", "directory for temporary data (default: the system temp dir)")
	return cmd
}

type benchRow struct {
	name    string
	entries int
	bytes   int64
	elapsed time.Duration
	lat     []time.Duration // per-operation latency, if measured
	peakMem uint64
}

func runBench(ctx context.Context, f benchFlags, out io.Writer) error {
	dir, err := os.MkdirTemp(f.dir, "flume-bench-")
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	defer os.RemoveAll(dir)
	n := 0
	sub := func() string { n++; return filepath.Join(dir, fmt.Sprint(n)) }

	fmt.Fprintf(out, "flume bench: %d CPUs, %s, data in %s\n\n", runtime.NumCPU(), runtime.Version(), dir)
	const rowFmt = "%-42s %9s %11s %8s %9s %9s %10s\n"
	fmt.Fprintf(out, rowFmt, "BENCHMARK", "ENTRIES", "ENTRIES/S", "MB/S", "P50", "P99", "PEAK MEM")
	print := func(r benchRow) {
		p50, p99 := "-", "-"
		if len(r.lat) > 0 {
			slices.Sort(r.lat)
			p50, p99 = fmtDur(pct(r.lat, 50)), fmtDur(pct(r.lat, 99))
		}
		secs := r.elapsed.Seconds()
		fmt.Fprintf(out, rowFmt, r.name, fmt.Sprint(r.entries), fmt.Sprintf("%.0f", float64(r.entries)/secs),
			fmt.Sprintf("%.1f", float64(r.bytes)/secs/1e6), p50, p99, fmt.Sprintf("%.1f MiB", float64(r.peakMem)/(1<<20)))
	}
	size := f.size
	steps := []func() (benchRow, error){
		// The disk's own cost, for reading the rows that fsync: a sync
		// append with k=1 pays about two of these in series.
		func() (benchRow, error) {
			return benchFsync(ctx, sub(), "disk: write 156 B + fsync (no flume)", min(500, f.syncOps))
		},
		func() (benchRow, error) {
			return benchAppend(ctx, sub(), fmt.Sprintf("append %dB, 1 writer, fsync never", size), "never", 1, f.entries, size)
		},
		func() (benchRow, error) {
			return benchAppend(ctx, sub(), fmt.Sprintf("append %dB, 64 writers, fsync always", size), "always", 64, max(1, f.entries/4), size)
		},
		func() (benchRow, error) {
			return benchCatchUp(ctx, sub(), fmt.Sprintf("catch-up %dB, loopback TCP", size), f.entries, size)
		},
		func() (benchRow, error) {
			return benchCatchUp(ctx, sub(), "catch-up 1KiB, loopback TCP", max(1, f.entries/4), 1024)
		},
		func() (benchRow, error) {
			return benchSync(ctx, sub(), fmt.Sprintf("sync k=1 %dB, 1 writer, fsync always", size), 1, f.syncOps, size)
		},
		func() (benchRow, error) {
			return benchSync(ctx, sub(), fmt.Sprintf("sync k=1 %dB, 64 writers, fsync always", size), 64, f.syncOps*10, size)
		},
	}
	for _, step := range steps {
		if err := ctx.Err(); err != nil {
			return err
		}
		runtime.GC()
		peak := startPeakMem()
		r, err := step()
		r.peakMem = peak()
		if err != nil {
			return fmt.Errorf("bench: %s: %w", r.name, err)
		}
		print(r)
	}
	return nil
}

func fmtDur(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%.0fµs", float64(d)/1e3)
	case d < time.Second:
		return fmt.Sprintf("%.2fms", float64(d)/1e6)
	default:
		return d.Round(time.Millisecond).String()
	}
}

// startPeakMem samples the Go runtime's memory in use (mapped minus
// released) every 5ms until the returned func is called; it returns the
// peak seen.
func startPeakMem() func() uint64 {
	samples := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	read := func() uint64 {
		metrics.Read(samples)
		return samples[0].Value.Uint64() - samples[1].Value.Uint64()
	}
	var peak atomic.Uint64
	peak.Store(read())
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			if v := read(); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	})
	return func() uint64 {
		close(done)
		wg.Wait()
		if v := read(); v > peak.Load() {
			peak.Store(v)
		}
		return peak.Load()
	}
}

func openBenchDB(dir, fsync string, k int) (*flume.DB, error) {
	l, err := server.OpenLog(dir, fsync)
	if err != nil {
		return nil, err
	}
	db, err := flume.Open(l, &flume.Options{SyncReplicas: k, SyncTimeout: 10 * time.Second})
	if err != nil {
		l.Close()
		return nil, err
	}
	return db, nil
}

func payload(size int) []byte {
	b := make([]byte, size)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return b
}

// appendLoop runs writers concurrent writers appending total entries and
// returns per-append latencies.
func appendLoop(ctx context.Context, db *flume.DB, writers, total, size int) ([]time.Duration, time.Duration, error) {
	v := payload(size)
	lat := make([]time.Duration, total)
	var next atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for range writers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(total) {
					return
				}
				t0 := time.Now()
				if _, err := db.Append(ctx, v); err != nil {
					errOnce.Do(func() { firstErr = err })
					next.Store(int64(total))
					return
				}
				lat[i] = time.Since(t0)
			}
		})
	}
	wg.Wait()
	return lat, time.Since(start), firstErr
}

func benchAppend(ctx context.Context, dir, name, fsync string, writers, total, size int) (benchRow, error) {
	r := benchRow{name: name, entries: total, bytes: int64(total) * int64(size)}
	db, err := openBenchDB(dir, fsync, 0)
	if err != nil {
		return r, err
	}
	defer db.Close()
	r.lat, r.elapsed, err = appendLoop(ctx, db, writers, total, size)
	return r, err
}

// benchPair is a primary and a follower DB replicating over loopback TCP.
type benchPair struct {
	pdb, fdb *flume.DB
	primary  *repl.Primary
	follower *repl.Follower
	served   chan error
	ln       net.Listener
}

func startBenchPrimary(dir, fsync string, k int) (*benchPair, error) {
	bp := &benchPair{served: make(chan error, 1)}
	var err error
	if bp.pdb, err = openBenchDB(filepath.Join(dir, "primary"), fsync, k); err != nil {
		return nil, err
	}
	if bp.primary, err = repl.NewPrimary(bp.pdb, &repl.Options{NodeID: "bench-primary"}); err != nil {
		bp.pdb.Close()
		return nil, err
	}
	if bp.ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		bp.primary.Close()
		bp.pdb.Close()
		return nil, err
	}
	go func() { bp.served <- bp.primary.Serve(bp.ln) }()
	return bp, nil
}

func (bp *benchPair) startFollower(dir, fsync string) error {
	var err error
	if bp.fdb, err = openBenchDB(filepath.Join(dir, "follower"), fsync, 0); err != nil {
		return err
	}
	bp.follower, err = repl.NewFollower(bp.fdb, bp.ln.Addr().String(), &repl.Options{NodeID: "bench-follower",
		MinBackoff: 5 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	return err
}

func (bp *benchPair) close() error {
	var errs []error
	if bp.follower != nil {
		errs = append(errs, bp.follower.Close())
	}
	errs = append(errs, bp.primary.Close())
	if err := <-bp.served; !errors.Is(err, repl.ErrServerClosed) {
		errs = append(errs, err)
	}
	if bp.fdb != nil {
		errs = append(errs, bp.fdb.Close())
	}
	errs = append(errs, bp.pdb.Close())
	return errors.Join(errs...)
}

func benchCatchUp(ctx context.Context, dir, name string, total, size int) (benchRow, error) {
	r := benchRow{name: name, entries: total, bytes: int64(total) * int64(size)}
	bp, err := startBenchPrimary(dir, "never", 0)
	if err != nil {
		return r, err
	}
	defer bp.close()
	v := payload(size)
	batch := make([][]byte, 0, 1000)
	for done := 0; done < total; {
		batch = batch[:0]
		for len(batch) < cap(batch) && done < total {
			batch = append(batch, v)
			done++
		}
		if _, _, err := bp.pdb.AppendBatch(ctx, batch); err != nil {
			return r, err
		}
	}
	if err := bp.pdb.Log().Sync(); err != nil {
		return r, err
	}
	last := bp.pdb.Since()
	start := time.Now()
	if err := bp.startFollower(dir, "never"); err != nil {
		return r, err
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	if err := bp.fdb.WaitSince(wctx, last); err != nil {
		return r, fmt.Errorf("follower at %d of %d: %w", bp.fdb.Since(), last, err)
	}
	r.elapsed = time.Since(start)
	return r, nil
}

func benchSync(ctx context.Context, dir, name string, writers, total, size int) (benchRow, error) {
	r := benchRow{name: name, entries: total, bytes: int64(total) * int64(size)}
	bp, err := startBenchPrimary(dir, "always", 1)
	if err != nil {
		return r, err
	}
	defer bp.close()
	if err := bp.startFollower(dir, "always"); err != nil {
		return r, err
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := bp.follower.Ready(rctx); err != nil {
		return r, fmt.Errorf("follower not ready: %w", err)
	}
	r.lat, r.elapsed, err = appendLoop(ctx, bp.pdb, writers, total, size)
	return r, err
}

// benchFsync measures the raw cost of appending a 156-byte frame's worth of
// bytes to a file and fsyncing it, ops times.
func benchFsync(ctx context.Context, dir, name string, ops int) (benchRow, error) {
	r := benchRow{name: name, entries: ops, bytes: int64(ops) * 156}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return r, err
	}
	f, err := os.Create(filepath.Join(dir, "fsync-probe"))
	if err != nil {
		return r, err
	}
	defer f.Close()
	buf := make([]byte, 156)
	start := time.Now()
	for i := 0; i < ops && ctx.Err() == nil; i++ {
		t0 := time.Now()
		if _, err := f.Write(buf); err != nil {
			return r, err
		}
		if err := f.Sync(); err != nil {
			return r, err
		}
		r.lat = append(r.lat, time.Since(t0))
	}
	r.elapsed = time.Since(start)
	r.entries = len(r.lat)
	return r, ctx.Err()
}
