package filelog_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/filelog"
	"github.com/flume-go/flume/flumetest"
	"github.com/flume-go/flume/vfs"
	"github.com/flume-go/flume/vfs/errorfs"
)

// TestCrashAlwaysLosesNothingAcked runs concurrent writers (SyncAlways, and
// in every third round each SyncInterval and SyncNever)
// on a crashable MemFS, takes power-loss clones at random moments and checks
// that every append acknowledged before the clone is in the recovered log.
func TestCrashAlwaysLosesNothingAcked(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("FLUME_SEED"); s != "" {
		fmt.Sscan(s, &seed)
	}
	t.Logf("seed %d (set FLUME_SEED to replay)", seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	rounds := 20
	if testing.Short() {
		rounds = 5
	}
	if s := os.Getenv("FLUME_CRASH_ROUNDS"); s != "" { // long runs: FLUME_CRASH_ROUNDS=5000
		fmt.Sscan(s, &rounds)
	}
	for round := 0; round < rounds; round++ {
		// Every third round runs SyncNever or SyncInterval: they may lose
		// acknowledged appends, but what survives must be a consistent
		// prefix holding exactly what was acknowledged at each seq.
		mode := modes[round%3]
		fs := vfs.NewMem()
		l, err := filelog.Open(dir, &filelog.Options{FS: fs, SegmentSize: 8 << 10, Sync: mode, SyncInterval: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		const writers = 8
		var acked sync.Map // seq -> payload
		var stop atomic.Bool
		var wg sync.WaitGroup
		for w := 0; w < writers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; !stop.Load(); i++ {
					d := fmt.Appendf(nil, "w%d-%d-%s", w, i, strings.Repeat("x", (w*31+i)%150))
					s, err := l.Append(d)
					if err != nil {
						t.Errorf("Append: %v", err)
						return
					}
					acked.Store(s, d)
				}
			}()
		}
		time.Sleep(time.Duration(rng.IntN(20)+1) * time.Millisecond)
		// Everything acked now was fsynced before the clone below.
		before := map[int64][]byte{}
		acked.Range(func(k, v any) bool { before[k.(int64)] = v.([]byte); return true })
		crash := fs.CrashClone(vfs.CrashConfig{UnsyncedDataPercent: rng.IntN(101), Rand: rand.New(rand.NewPCG(seed, uint64(round)))})
		stop.Store(true)
		wg.Wait()
		l.Close()

		r, err := filelog.Open(dir, &filelog.Options{FS: crash, SegmentSize: 8 << 10})
		if err != nil {
			t.Fatalf("seed %d round %d: reopen after crash: %v", seed, round, err)
		}
		flumetest.CheckLog(t, r, nil)
		for s, d := range before {
			if mode != filelog.SyncAlways && s > r.Since() {
				continue // lost with the unsynced tail: allowed by the policy
			}
			got, err := r.Get(s)
			if err != nil || string(got) != string(d) {
				t.Fatalf("seed %d round %d (%s): acknowledged seq %d lost: %q, %v (since %d)", seed, round, mode, s, got, err, r.Since())
			}
		}
		r.Close()
	}
}

// workload opens a log on fs, appends in batches (crossing segments),
// closes, reopens (recovery reads), sets the epoch, appends and reads more.
// It returns the last acknowledged seq.
func workload(fs vfs.FS, mode filelog.SyncMode) (acked int64, err error) {
	acked = -1
	for round := 0; round < 2; round++ {
		l, err := filelog.Open(dir, &filelog.Options{FS: fs, SegmentSize: 1024, Sync: mode})
		if err != nil {
			return acked, err
		}
		if round == 1 {
			if err := l.SetEpoch(1); err != nil {
				l.Close()
				return acked, err
			}
		}
		for b := int64(0); b < 3; b++ {
			var batch [][]byte
			for i := int64(0); i < 5; i++ {
				batch = append(batch, payload(l.Since()+1+i))
			}
			s, err := l.Append(batch...)
			if err != nil {
				l.Close()
				return acked, err
			}
			acked = s
		}
		if _, err := l.Get(0); err != nil {
			l.Close()
			return acked, err
		}
		if err := l.Close(); err != nil {
			return acked, err
		}
	}
	return acked, nil
}

// TestErrorAtEveryOp injects an error at operation i for every i until a run
// succeeds. Every failure must be the injected error, and a clean reopen
// must succeed with a consistent log holding every acknowledged entry.
func TestErrorAtEveryOp(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) { testErrorAtEveryOp(t, mode) })
	}
}

func testErrorAtEveryOp(t *testing.T, mode filelog.SyncMode) {
	for i := int64(0); ; i++ {
		mem := vfs.NewMem()
		efs := errorfs.Wrap(mem, errorfs.OnIndex(i))
		acked, err := workload(efs, mode)
		if efs.Injected() == 0 {
			if err != nil {
				t.Fatalf("op %d: run without injection failed: %v", i, err)
			}
			t.Logf("workload succeeded after %d injection points (%d ops)", i, efs.Ops())
			break
		}
		if err == nil {
			// The injected error hit an operation whose failure is
			// tolerated (e.g. removing a temp file); still check the log.
		} else if !errors.Is(err, errorfs.ErrInjected) {
			t.Fatalf("op %d: error is not the injected one: %v", i, err)
		}
		l, rerr := filelog.Open(dir, &filelog.Options{FS: mem, SegmentSize: 1024})
		if rerr != nil {
			t.Fatalf("op %d (%v): clean reopen: %v", i, err, rerr)
		}
		flumetest.CheckLog(t, l, payload)
		if l.Since() < acked {
			t.Fatalf("op %d: acknowledged %d but log ends at %d", i, acked, l.Since())
		}
		// And the reopened log takes appends.
		if _, err := l.Append(payload(l.Since() + 1)); err != nil {
			t.Fatalf("op %d: append after reopen: %v", i, err)
		}
		l.Close()
		if i > 2000 {
			t.Fatal("workload never succeeded")
		}
	}
}

// TestDiskFullRecovers fills the disk, checks that appends fail cleanly and
// succeed again when space returns, with no partial frame left behind.
func TestDiskFullRecovers(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			mem := vfs.NewMem()
			efs := errorfs.Wrap(mem, nil)
			l, err := filelog.Open(dir, &filelog.Options{FS: efs, Sync: mode, SegmentSize: 2048})
			if err != nil {
				t.Fatal(err)
			}
			for i := int64(0); i < 10; i++ {
				if _, err := l.Append(payload(i)); err != nil {
					t.Fatal(err)
				}
			}
			efs.SetDiskFull(true)
			for k := 0; k < 5; k++ {
				_, err := l.Append(payload(10), payload(11))
				if !errors.Is(err, syscall.ENOSPC) {
					t.Fatalf("append on a full disk: %v, want ENOSPC", err)
				}
				if s := l.Since(); s != 9 {
					t.Fatalf("Since = %d after failed append", s)
				}
			}
			flumetest.CheckLog(t, l, payload)
			efs.SetDiskFull(false)
			for i := int64(10); i < 100; i++ {
				if s, err := l.Append(payload(i)); err != nil || s != i {
					t.Fatalf("append after space returned = %d, %v", s, err)
				}
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			l, err = filelog.Open(dir, &filelog.Options{FS: mem})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			if rep := l.OpenReport(); rep.TruncatedBytes != 0 || l.Since() != 99 {
				t.Fatalf("reopen: since %d, report %+v", l.Since(), rep)
			}
			flumetest.CheckLog(t, l, payload)
		})
	}
}

// TestFsyncFailureIsSticky: after a failed fsync the log refuses writes
// until reopened; reads keep working; a reopen recovers.
func TestFsyncFailureIsSticky(t *testing.T) {
	mem := vfs.NewMem()
	var fail atomic.Bool
	efs := errorfs.Wrap(mem, errorfs.OnPredicate(func(op errorfs.Op) bool {
		return fail.Load() && op.Kind == errorfs.OpSync && strings.HasSuffix(op.Path, ".seg")
	}, nil))
	l, err := filelog.Open(dir, &filelog.Options{FS: efs})
	if err != nil {
		t.Fatal(err)
	}
	for i := int64(0); i < 5; i++ {
		l.Append(payload(i))
	}
	fail.Store(true)
	if _, err := l.Append(payload(5)); !errors.Is(err, errorfs.ErrInjected) {
		t.Fatalf("append with failing fsync: %v", err)
	}
	fail.Store(false)
	if _, err := l.Append(payload(5)); !errors.Is(err, errorfs.ErrInjected) {
		t.Fatalf("append after a failed fsync: %v, want the sticky error", err)
	}
	if d, err := l.Get(4); err != nil || string(d) != string(payload(4)) {
		t.Fatalf("Get after failed fsync: %v", err)
	}
	l.Close()
	l, err = filelog.Open(dir, &filelog.Options{FS: mem})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	flumetest.CheckLog(t, l, payload)
	if _, err := l.Append(payload(l.Since() + 1)); err != nil {
		t.Fatal(err)
	}
}

func TestLock(t *testing.T) {
	for _, k := range fsKinds {
		t.Run(k.name, func(t *testing.T) {
			fs := k.new()
			d := t.TempDir()
			l, err := filelog.Open(d, &filelog.Options{FS: fs})
			if err != nil {
				t.Fatal(err)
			}
			for _, ro := range []bool{false, true} {
				_, err = filelog.Open(d, &filelog.Options{FS: fs, ReadOnly: ro})
				if !errors.Is(err, flume.ErrLocked) || !strings.Contains(err.Error(), d) {
					t.Fatalf("second open (read-only %v): %v, want ErrLocked naming %s", ro, err, d)
				}
			}
			l.Close()
			l, err = filelog.Open(d, &filelog.Options{FS: fs})
			if err != nil {
				t.Fatalf("open after close: %v", err)
			}
			l.Close()
		})
	}
}

// TestLockOtherProcess opens a log here and in a child process.
func TestLockOtherProcess(t *testing.T) {
	if d := os.Getenv("FLUME_LOCK_CHILD"); d != "" {
		_, err := filelog.Open(d, nil)
		if errors.Is(err, flume.ErrLocked) {
			os.Exit(3)
		}
		os.Exit(0)
	}
	d := t.TempDir()
	l, err := filelog.Open(d, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockOtherProcess$")
	cmd.Env = append(os.Environ(), "FLUME_LOCK_CHILD="+d)
	err = cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("child process open: %v, want ErrLocked (exit 3)", err)
	}
}

// TestGroupCommit: one writer pays one write and one fsync per append;
// concurrent writers share them.
func TestGroupCommit(t *testing.T) {
	l, err := filelog.Open(t.TempDir(), &filelog.Options{Sync: filelog.SyncAlways})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i := int64(0); i < 50; i++ {
		l.Append(payload(i))
	}
	st := l.Stats()
	if st.Syncs != 50 || st.Writes != 50 {
		t.Fatalf("one writer, 50 appends: %+v, want 50 writes and 50 fsyncs", st)
	}
	var wg sync.WaitGroup
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				if _, err := l.Append([]byte("x")); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	st2 := l.Stats()
	syncs, entries := st2.Syncs-st.Syncs, st2.Entries-st.Entries
	t.Logf("32 writers: %d entries, %d fsyncs, %d writes", entries, syncs, st2.Writes-st.Writes)
	if entries != 640 || syncs >= entries/2 {
		t.Fatalf("32 writers: %d entries with %d fsyncs: no group commit", entries, syncs)
	}
}

// TestOpenReadsOnlyActiveSegment: sealed segments are not read on open
// (their index trailers are), so open time does not grow with the log.
func TestOpenReadsOnlyActiveSegment(t *testing.T) {
	mem, segs := buildLog(t, 2000, 40, 4096)
	efs := errorfs.Wrap(mem, errorfs.OnPredicate(func(op errorfs.Op) bool {
		return op.Kind == errorfs.OpRead && op.Path != segs[len(segs)-1] && strings.HasSuffix(op.Path, ".seg")
	}, nil))
	l, err := filelog.Open(dir, &filelog.Options{FS: efs, SegmentSize: 4096})
	if err != nil {
		t.Fatalf("open read a sealed segment: %v", err)
	}
	defer l.Close()
	if l.Since() != 1999 {
		t.Fatalf("Since = %d", l.Since())
	}
	if rep := l.OpenReport(); rep.ScannedBytes > 4096+200 {
		t.Fatalf("scanned %d bytes", rep.ScannedBytes)
	}
}

func TestReadOnly(t *testing.T) {
	base, segs := buildLog(t, 20, 40, 1<<20)
	b := readAll(t, base, segs[0])
	writeAll(t, base, segs[0], append(b, 1, 2, 3))
	l, err := filelog.Open(dir, &filelog.Options{FS: base, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep := l.OpenReport(); rep.TruncatedBytes != 3 {
		t.Fatalf("report %+v", rep)
	}
	if _, err := l.Append([]byte("x")); !errors.Is(err, filelog.ErrReadOnly) {
		t.Fatalf("append read-only: %v", err)
	}
	rep, err := l.Verify(t.Context(), nil)
	if err != nil || rep.Entries != 20 {
		t.Fatalf("verify: %+v %v", rep, err)
	}
	l.Close()
	if got := readAll(t, base, segs[0]); len(got) != len(b)+3 {
		t.Fatal("read-only open changed the segment")
	}
}

func TestParseSyncMode(t *testing.T) {
	for _, m := range modes {
		got, err := filelog.ParseSyncMode(m.String())
		if err != nil || got != m {
			t.Fatalf("ParseSyncMode(%q) = %v, %v", m.String(), got, err)
		}
	}
	if _, err := filelog.ParseSyncMode("sometimes"); err == nil {
		t.Fatal("bad mode accepted")
	}
}

// TestConcurrentRotation appends from many writers into tiny segments, so
// that rotations race with group commits.
func TestConcurrentRotation(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			l, err := filelog.Open(dir, &filelog.Options{FS: vfs.NewMem(), SegmentSize: 1024, Sync: mode})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			var wg sync.WaitGroup
			for w := 0; w < 16; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < 150; i++ {
						if _, err := l.Append(fmt.Appendf(nil, "w%d-%d", w, i), []byte("second")); err != nil {
							t.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			if l.Since() != 16*150*2-1 {
				t.Fatalf("Since = %d", l.Since())
			}
			flumetest.CheckLog(t, l, nil)
			if _, err := l.Verify(t.Context(), nil); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestBigBatches appends batches large enough for the pipelined path
// (never, interval) next to small ones, with concurrent readers, then
// reopens; and fills the disk in the middle of a big batch.
func TestBigBatches(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			mem := vfs.NewMem()
			efs := errorfs.Wrap(mem, nil)
			opts := &filelog.Options{FS: efs, SegmentSize: 64 << 10, Sync: mode}
			l, err := filelog.Open(dir, opts)
			if err != nil {
				t.Fatal(err)
			}
			next := int64(0)
			appendN := func(n int) error {
				batch := make([][]byte, n)
				for i := range batch {
					batch[i] = flumetest.Payload(next+int64(i), 100)
				}
				s, err := l.Append(batch...)
				if err == nil {
					if s != next+int64(n)-1 {
						t.Fatalf("batch of %d returned %d, want %d", n, s, next+int64(n)-1)
					}
					next += int64(n)
				}
				return err
			}
			want := func(i int64) []byte { return flumetest.Payload(i, 100) }
			stop := make(chan struct{})
			var rg sync.WaitGroup
			rg.Add(1)
			go func() {
				defer rg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					it := l.Iter(0)
					for it.Next() {
					}
					if it.Err() != nil {
						t.Error(it.Err())
					}
					it.Close()
				}
			}()
			for _, n := range []int{2000, 3, 1500, 1, 5000} {
				if err := appendN(n); err != nil {
					t.Fatal(err)
				}
			}
			efs.SetDiskFull(true)
			if err := appendN(3000); !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("big batch on a full disk: %v", err)
			}
			efs.SetDiskFull(false)
			if err := appendN(2500); err != nil {
				t.Fatal(err)
			}
			close(stop)
			rg.Wait()
			flumetest.CheckLog(t, l, want)
			l.Close()
			l, err = filelog.Open(dir, &filelog.Options{FS: mem, SegmentSize: 64 << 10})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			if l.Since() != next-1 || l.OpenReport().TruncatedBytes != 0 {
				t.Fatalf("reopen: since %d want %d, report %+v", l.Since(), next-1, l.OpenReport())
			}
			flumetest.CheckLog(t, l, want)
			if _, err := l.Verify(t.Context(), nil); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestSyncDoesNotStallAppends: under SyncNever (and SyncInterval), an fsync
// in progress (Sync, the interval syncer) does not hold up appends, and a
// Sync that starts while another's fsync runs still fsyncs what was
// written after that fsync began before it returns.
func TestSyncDoesNotStallAppends(t *testing.T) {
	var armed atomic.Bool
	entered, release := make(chan struct{}), make(chan struct{})
	fs := errorfs.Wrap(vfs.NewMem(), errorfs.InjectorFunc(func(op errorfs.Op) error {
		if op.Kind == errorfs.OpSync && armed.Load() && strings.HasSuffix(op.Path, ".seg") {
			entered <- struct{}{}
			<-release
		}
		return nil
	}))
	l, err := filelog.Open("/db", &filelog.Options{FS: fs, Sync: filelog.SyncNever})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := l.Append([]byte("a")); err != nil {
		t.Fatal(err)
	}
	armed.Store(true)
	sync1 := make(chan error, 1)
	go func() { sync1 <- l.Sync() }()
	<-entered // the first fsync is running (and blocked)

	appended := make(chan error, 1)
	go func() { _, err := l.Append([]byte("b")); appended <- err }()
	select {
	case err := <-appended:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Append waited for an fsync in progress")
	}

	sync2 := make(chan error, 1)
	go func() { sync2 <- l.Sync() }()
	release <- struct{}{}
	if err := <-sync1; err != nil {
		t.Fatal(err)
	}
	// "b" was written after the first fsync began: the second Sync must
	// fsync again before it returns.
	select {
	case err := <-sync2:
		t.Fatalf("second Sync returned (%v) without an fsync covering the append made during the first", err)
	case <-entered:
	}
	armed.Store(false)
	release <- struct{}{}
	if err := <-sync2; err != nil {
		t.Fatal(err)
	}
}

// TestSyncFailureIsStickyNever: under SyncNever, an fsync that fails in Sync
// (which fsyncs outside the write lock) is returned to that caller and
// makes the log refuse writes until it is reopened, like a failed fsync of
// a SyncAlways group.
func TestSyncFailureIsStickyNever(t *testing.T) {
	mem := vfs.NewMem()
	var fail atomic.Bool
	efs := errorfs.Wrap(mem, errorfs.OnPredicate(func(op errorfs.Op) bool {
		return fail.Load() && op.Kind == errorfs.OpSync && strings.HasSuffix(op.Path, ".seg")
	}, nil))
	l, err := filelog.Open(dir, &filelog.Options{FS: efs, Sync: filelog.SyncNever})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i := int64(0); i < 5; i++ {
		if _, err := l.Append(payload(i)); err != nil {
			t.Fatal(err)
		}
	}
	fail.Store(true)
	if err := l.Sync(); !errors.Is(err, errorfs.ErrInjected) {
		t.Fatalf("Sync with a failing fsync: %v", err)
	}
	fail.Store(false)
	if _, err := l.Append(payload(5)); !errors.Is(err, errorfs.ErrInjected) {
		t.Fatalf("append after a failed Sync: %v, want the sticky error", err)
	}
	if err := l.Sync(); !errors.Is(err, errorfs.ErrInjected) {
		t.Fatalf("Sync after a failed Sync: %v, want the sticky error (a retried fsync may falsely succeed)", err)
	}
	if d, err := l.Get(4); err != nil || string(d) != string(payload(4)) {
		t.Fatalf("Get after the failed fsync: %q, %v", d, err)
	}
}
