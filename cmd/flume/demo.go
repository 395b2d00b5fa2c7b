package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/server"
	"github.com/spf13/cobra"
)

// seedItems are the entries of the seed document's example.
var seedItems = []string{`{"foo":"bar"}`, `{"baz":"bla"}`, `{"clam":"gnar"}`}

type demoFlags struct {
	sync    bool
	n       int
	writers int
	size    int
	fsync   string
	keep    bool
}

func newDemoCmd() *cobra.Command {
	var f demoFlags
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Replicate a primary into a follower in this process (the seed's scenario)",
		Long: `Run a primary and a follower in this process, each with its own temporary
data directory, connected over TCP on loopback. Append the seed's items,
print each side's live stream as the entries arrive (db1 is the primary,
db2 the follower), append one more entry live, and show that both logs are
identical (since and chain hash).

--sync waits for the follower's acknowledgement on every append (k=1).
--n N appends N entries instead and prints the throughput and the
replication lag seen.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if f.n < 0 || f.writers < 1 || f.size < 0 {
				return usageErrorf("demo: --n, --size must be >= 0 and --writers >= 1")
			}
			return runDemo(cmd.Context(), f, cmd.OutOrStdout())
		},
	}
	cmd.Flags().BoolVar(&f.sync, "sync", false, "synchronous replication: each append waits for the follower (k=1)")
	cmd.Flags().IntVar(&f.n, "n", 0, "append N generated entries and report throughput and lag")
	cmd.Flags().IntVar(&f.writers, "writers", 16, "concurrent writers for --n")
	cmd.Flags().IntVar(&f.size, "size", 100, "approximate entry size in bytes for --n")
	cmd.Flags().StringVar(&f.fsync, "fsync", "always", "fsync policy of both logs: always, interval or never")
	cmd.Flags().BoolVar(&f.keep, "keep", false, "keep the temporary data directories")
	return cmd
}

type demoPair struct {
	dir      string
	primary  *server.Server
	follower *server.Server
	served   chan error
	replAddr string
}

// startPair starts a primary and a follower in dir/primary and
// dir/follower, replicating over loopback TCP.
func startPair(dir, fsync string, syncReplicas int) (*demoPair, error) {
	p := &demoPair{dir: dir, served: make(chan error, 1)}
	var err error
	p.primary, err = server.New(server.Config{DataDir: filepath.Join(dir, "primary"), NodeID: "db1", Fsync: fsync,
		SyncReplicas: syncReplicas, SyncTimeout: 5 * time.Second})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		p.primary.Close()
		return nil, err
	}
	p.replAddr = ln.Addr().String()
	go func() { p.served <- p.primary.Serve(nil, ln) }()
	p.follower, err = server.New(server.Config{DataDir: filepath.Join(dir, "follower"), NodeID: "db2", Fsync: fsync,
		Follow: p.replAddr, MinBackoff: 10 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		p.primary.Close()
		<-p.served
		return nil, err
	}
	return p, nil
}

func (p *demoPair) close() error {
	err := errors.Join(p.follower.Close(), p.primary.Close())
	if serr := <-p.served; !errors.Is(serr, server.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}

// waitFollower waits until the follower holds seq.
func (p *demoPair) waitFollower(ctx context.Context, seq int64, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	if err := p.follower.DB().WaitSince(ctx, seq); err != nil {
		return fmt.Errorf("follower did not reach seq %d (at %d): %w", seq, p.follower.DB().Since(), err)
	}
	return nil
}

// waitConnected waits until the primary sees a connected follower.
func (p *demoPair) waitConnected(ctx context.Context, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		st := p.primary.Status()
		if len(st.Followers) > 0 && st.Followers[0].Connected {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("the follower did not connect to the primary")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func runDemo(ctx context.Context, f demoFlags, out io.Writer) (err error) {
	dir, err := os.MkdirTemp("", "flume-demo-")
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	if !f.keep {
		defer os.RemoveAll(dir)
	}
	k := 0
	if f.sync {
		k = 1
	}
	p, err := startPair(dir, f.fsync, k)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer func() { err = errors.Join(err, p.close()) }()
	mode := "asynchronous"
	if f.sync {
		mode = "synchronous (k=1)"
	}
	fmt.Fprintf(out, "primary db1 and follower db2 on loopback (replication at %s), %s replication, fsync %s\n", p.replAddr, mode, f.fsync)
	fmt.Fprintf(out, "data: %s/{primary,follower}\n", dir)
	if err := p.waitConnected(ctx, 10*time.Second); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	if f.n > 0 {
		return demoN(ctx, p, f, out)
	}
	return demoSeed(ctx, p, f, out)
}

// demoSeed is the seed document's scenario.
func demoSeed(ctx context.Context, p *demoPair, f demoFlags, out io.Writer) error {
	var mu sync.Mutex
	printf := func(format string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(out, format, a...)
	}
	sctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var printed [2]atomic.Int64 // last seq each stream printed
	watch := func(i int, name string, db *flume.DB) {
		printed[i].Store(-1)
		s := db.Stream(sctx, flume.StreamOptions{Live: true})
		wg.Go(func() {
			defer s.Close()
			for s.Next() {
				e := s.Entry()
				printf("%s:  {seq: %d, value: %s}\n", name, e.Seq, e.Data)
				printed[i].Store(e.Seq)
			}
		})
	}
	watch(0, "db1", p.primary.DB())
	watch(1, "db2", p.follower.DB())
	defer func() { stop(); wg.Wait() }()

	db := p.primary.DB()
	for _, item := range seedItems {
		seq, err := db.Append(ctx, []byte(item))
		if err != nil {
			return fmt.Errorf("demo: append %s: %w", item, err)
		}
		ack := ""
		if f.sync {
			ack = " (acknowledged by db2)"
		}
		printf("append %s -> seq %d%s\n", item, seq, ack)
	}
	if err := p.waitFollower(ctx, 2, 10*time.Second); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	live := `{"livetest":"test"}`
	seq, err := db.Append(ctx, []byte(live))
	if err != nil {
		return fmt.Errorf("demo: live append: %w", err)
	}
	printf("live append %s -> seq %d\n", live, seq)
	if err := p.waitFollower(ctx, seq, 10*time.Second); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	// Let both streams print the last entry before comparing.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if printed[0].Load() >= seq && printed[1].Load() >= seq {
			break
		}
	}
	stop()
	wg.Wait()
	return compareHeads(p, out)
}

// compareHeads prints both logs' since and chain hash and fails if they
// differ.
func compareHeads(p *demoPair, out io.Writer) error {
	ps, ph := p.primary.DB().Log().Head()
	fs, fh := p.follower.DB().Log().Head()
	fmt.Fprintf(out, "db1 (primary):  log %s since %d hash %s\n", p.primary.DB().Log().ID(), ps, ph)
	fmt.Fprintf(out, "db2 (follower): log %s since %d hash %s\n", p.follower.DB().Log().ID(), fs, fh)
	if ps != fs || ph != fh || p.primary.DB().Log().ID() != p.follower.DB().Log().ID() {
		return errors.New("demo: the two logs differ")
	}
	fmt.Fprintln(out, "identical: same log ID, since and chain hash")
	return nil
}

// demoN appends f.n generated entries from f.writers writers and reports
// throughput and replication lag.
func demoN(ctx context.Context, p *demoPair, f demoFlags, out io.Writer) error {
	n := f.n
	db := p.primary.DB()
	base := db.Since() + 1
	appended := make([]atomic.Int64, n) // unix nanos when Append returned, by seq-base
	var lags []time.Duration
	var lagMu sync.Mutex
	stopWatch := p.follower.DB().Watch(func(since int64) {
		now := time.Now().UnixNano()
		lagMu.Lock()
		defer lagMu.Unlock()
		for s := base + int64(len(lags)); s <= since && s-base < int64(n); s++ {
			t := appended[s-base].Load()
			if t == 0 || t > now {
				lags = append(lags, 0) // visible on the follower before Append returned (sync mode)
			} else {
				lags = append(lags, time.Duration(now-t))
			}
		}
	})
	defer stopWatch()

	pad := make([]byte, max(0, f.size-20))
	for i := range pad {
		pad[i] = 'x'
	}
	var next atomic.Int64
	var bytes atomic.Int64
	errc := make(chan error, f.writers)
	start := time.Now()
	var wg sync.WaitGroup
	for range f.writers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				v, _ := json.Marshal(map[string]any{"n": i, "p": string(pad)})
				seq, err := db.Append(ctx, v)
				if err != nil {
					errc <- err
					return
				}
				bytes.Add(int64(len(v)))
				if d := seq - base; d >= 0 && d < int64(n) {
					appended[d].Store(time.Now().UnixNano())
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errc)
	if err := <-errc; err != nil {
		return fmt.Errorf("demo: append: %w", err)
	}
	last := db.Since()
	if err := p.waitFollower(ctx, last, 60*time.Second); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	caughtUp := time.Since(start)
	// The Watch callback runs on its own goroutine; wait for it to see last.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		lagMu.Lock()
		l := len(lags)
		lagMu.Unlock()
		if l >= n {
			break
		}
	}
	stopWatch()
	lagMu.Lock()
	ls := slices.Clone(lags)
	lagMu.Unlock()
	slices.Sort(ls)
	rate := float64(n) / elapsed.Seconds()
	fmt.Fprintf(out, "appended %d entries (%d B each, %d writers) in %v: %.0f entries/s, %.1f MB/s\n",
		n, bytes.Load()/int64(n), f.writers, elapsed.Round(time.Millisecond), rate, float64(bytes.Load())/elapsed.Seconds()/1e6)
	fmt.Fprintf(out, "follower caught up %v after the first append (%v after the last returned)\n",
		caughtUp.Round(time.Millisecond), (caughtUp - elapsed).Round(time.Microsecond))
	if len(ls) > 0 {
		fmt.Fprintf(out, "replication lag (append returned -> visible on follower): p50 %v  p99 %v  max %v  (%d samples)\n",
			pct(ls, 50), pct(ls, 99), ls[len(ls)-1], len(ls))
	}
	return compareHeads(p, out)
}

// pct returns the p-th percentile of sorted durations.
func pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p / 100)
	return sorted[i].Round(time.Microsecond)
}
