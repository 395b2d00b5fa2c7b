package repl

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/filelog"
	"github.com/flume-go/flume/fork"
	"github.com/flume-go/flume/internal/testutil"
	"github.com/flume-go/flume/vfs"
	"github.com/flume-go/flume/vfs/errorfs"
)

// syncGate blocks the fsyncs of a log's segment files while it is shut, so
// that a test can hold a primary between writing a batch and making it
// durable: the window parallel fsyncs send in.
type syncGate struct {
	shut    atomic.Bool
	waiting atomic.Int32
	open    chan error // each value releases one blocked fsync with that error
}

func newSyncGate() *syncGate { return &syncGate{open: make(chan error, 16)} }

// release opens the gate and fails every fsync it holds with err.
func (g *syncGate) release(err error) {
	g.shut.Store(false)
	for range cap(g.open) {
		select {
		case g.open <- err:
		default:
		}
	}
}

func (g *syncGate) inject(op errorfs.Op) error {
	if op.Kind != errorfs.OpSync || !strings.HasSuffix(op.Path, ".seg") || !g.shut.Load() {
		return nil
	}
	g.waiting.Add(1)
	defer g.waiting.Add(-1)
	return <-g.open
}

// gatedPrimary opens a filelog (SyncAlways) DB over an errorfs on mem whose
// segment fsyncs g can hold.
func gatedPrimary(t *testing.T, mem *vfs.MemFS, g *syncGate, opts *flume.Options) *flume.DB {
	t.Helper()
	db := memFileDB(t, errorfs.Wrap(mem, errorfs.InjectorFunc(g.inject)), "/p", opts)
	// Registered after db.Close, so it runs before it: a test that fails
	// with an fsync held must not leave Close waiting for it.
	t.Cleanup(func() { g.release(errors.New("test ended")) })
	return db
}

// memFileDB opens a filelog (SyncAlways) DB in dir on fsys, closed when
// the test ends.
func memFileDB(t *testing.T, fsys vfs.FS, dir string, opts *flume.Options) *flume.DB {
	t.Helper()
	l, err := filelog.Open(dir, &filelog.Options{FS: fsys, Sync: filelog.SyncAlways})
	if err != nil {
		t.Fatal(err)
	}
	db, err := flume.Open(l, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// ackedBy waits until the primary's only follower has acknowledged seq as
// durable.
func ackedBy(t *testing.T, p *Primary, seq int64) {
	t.Helper()
	testutil.Eventually(t, fmt.Sprintf("the follower acknowledges seq %d", seq), 10*time.Second, func() bool {
		fs := p.Followers()
		return len(fs) == 1 && fs[0].AckedSeq >= seq
	})
}

// TestParallelFsyncHold: with the primary's fsync held, a synchronous append
// is already on the follower, durable and acknowledged, but neither the
// follower's readers nor the writer see it; once the primary's fsync ends
// the writer is answered and the follower exposes the entry.
func TestParallelFsyncHold(t *testing.T) {
	ctx := context.Background()
	g := newSyncGate()
	pdb := gatedPrimary(t, vfs.NewMem(), g, &flume.Options{SyncReplicas: 1, SyncTimeout: 10 * time.Second})
	fdb := memFileDB(t, vfs.NewMem(), "/f", nil)
	link, err := Replicate(pdb, fdb, fastOpts())
	if err != nil {
		t.Fatal(err)
	}
	defer link.Close()
	appendN(t, pdb, 3, "before")
	waitSince(t, fdb, 2)

	g.shut.Store(true)
	done := make(chan error, 1)
	go func() {
		_, err := pdb.Append(ctx, []byte(`"held"`))
		done <- err
	}()
	ackedBy(t, link.Primary(), 3)
	if fdb.Log().Since() != 3 {
		t.Fatalf("follower's log ends at %d, want the held entry 3", fdb.Log().Since())
	}
	if fdb.Since() != 2 || fdb.Held() != 1 {
		t.Fatalf("follower exposes since %d (held %d) while the primary has not made seq 3 durable; want since 2, 1 held", fdb.Since(), fdb.Held())
	}
	if _, err := fdb.Get(ctx, 3); !errors.Is(err, flume.ErrNotFound) {
		t.Fatalf("follower Get(3) while held = %v, want ErrNotFound", err)
	}
	if pdb.Since() != 2 {
		t.Fatalf("primary published %d before its fsync", pdb.Since())
	}
	select {
	case err := <-done:
		t.Fatalf("sync append answered (%v) before the primary's fsync", err)
	default:
	}
	if st := link.Primary().Stats(); st.EarlySent == 0 {
		t.Fatalf("no batch was sent before the primary's fsync: %+v", st)
	}

	g.shut.Store(false)
	g.open <- nil
	if err := <-done; err != nil {
		t.Fatalf("sync append after the fsync: %v", err)
	}
	waitSince(t, fdb, 3)
	if fdb.Held() != 0 {
		t.Fatalf("follower still holds %d entries", fdb.Held())
	}
	appendN(t, pdb, 50, "after")
	waitSince(t, fdb, 53)
	sameLog(t, pdb, fdb)
}

// TestParallelFsyncPowerLoss: the primary sends a batch, the follower holds
// it, and the primary loses power before its fsync (the writer is never
// answered). The primary restarts in a new epoch and writes new entries at
// the same seqs; the follower rejoins by a verified cut of exactly the lost
// batch, which no reader of the follower ever saw, and the logs end equal.
func TestParallelFsyncPowerLoss(t *testing.T) {
	ctx := context.Background()
	mem := vfs.NewMem()
	g := newSyncGate()
	pdb := gatedPrimary(t, mem, g, &flume.Options{SyncReplicas: 1, SyncTimeout: 10 * time.Second})
	ffs := vfs.NewMem()
	fdb := memFileDB(t, ffs, "/f", nil)
	opts := fastOpts()
	opts.ForkDir, opts.FS = "/f/forked", ffs
	link, err := Replicate(pdb, fdb, opts)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, pdb, 5, "a")
	waitSince(t, fdb, 4)
	// A reader of the follower, live from the start: it must never see the
	// lost entries, and so must not end with ErrTruncated at the cut.
	st := fdb.Stream(ctx, flume.StreamOptions{Live: true})
	defer st.Close()

	g.shut.Store(true)
	done := make(chan error, 1)
	go func() {
		_, _, err := pdb.AppendBatch(ctx, [][]byte{[]byte(`"lost-5"`), []byte(`"lost-6"`)})
		done <- err
	}()
	ackedBy(t, link.Primary(), 6)
	crashed := mem.CrashClone(vfs.CrashConfig{}) // power loss: only fsynced bytes survive
	link.Close()
	g.open <- errors.New("power lost") // the blocked fsync never completes
	if err := <-done; err == nil {
		t.Fatal("the append whose fsync failed was acknowledged")
	}
	pdb.Close()
	if fdb.Since() != 4 || fdb.Log().Since() != 6 {
		t.Fatalf("follower since %d, log %d; want 4 exposed and 5-6 held", fdb.Since(), fdb.Log().Since())
	}

	// The primary restarts from what survived and begins a new epoch.
	p2 := memFileDB(t, crashed, "/p", nil)
	if p2.Since() != 4 {
		t.Fatalf("restarted primary since %d, want 4", p2.Since())
	}
	prim, err := NewPrimary(p2, fastOpts())
	if err != nil {
		t.Fatal(err)
	}
	defer prim.Close()
	eps := p2.Log().(flume.EpochLog).Epochs()
	if len(eps) != 1 || eps[0].Start != 5 {
		t.Fatalf("restarted primary's epochs %v, want one beginning at seq 5", eps)
	}
	// New entries at the lost seqs before the follower is back.
	appendN(t, p2, 3, "b") // k=0 on this DB: it has no followers yet

	// The follower rejoins: 5-6 are cut into forked/, 5-7 replicated.
	l2, err := Replicate(p2, fdb, opts) // through prim, p2's replicator
	if err != nil {
		t.Fatalf("rejoin after the primary's power loss: %v", err)
	}
	defer l2.Close()
	waitSince(t, fdb, 7)
	sameLog(t, p2, fdb)
	if s := l2.Follower().Stats(); s.Cuts != 1 || s.EntriesReceived != 3 {
		t.Fatalf("rejoin: %d cuts, %d entries received; want 1 cut and the 3 new entries", s.Cuts, s.EntriesReceived)
	}
	cut := forkedEntries(t, ffs, opts.ForkDir)
	if fmt.Sprint(cut) != `[5:"lost-5" 6:"lost-6"]` {
		t.Fatalf("forked entries %v, want exactly the lost batch", cut)
	}
	var seen []string
	for len(seen) < 8 {
		if !st.Next() {
			if err := st.Err(); err != nil {
				t.Fatalf("the follower's live reader failed after %v: %v", seen, err)
			}
			t.Fatal("live stream ended")
		}
		seen = append(seen, string(st.Entry().Data))
	}
	for _, v := range seen {
		if strings.Contains(v, "lost") {
			t.Fatalf("a reader of the follower saw an entry the primary lost: %v", seen)
		}
	}
}

// TestIntervalPrimaryPowerLoss: a SyncInterval primary publishes (and
// replicates) entries before its periodic fsync, and a power failure takes
// them from it while its follower holds them. Its restart begins a new
// epoch at what survived, so the follower's rejoin cuts exactly those
// entries, when they were never committed; when the follower's committed
// hint says they were, the rejoin is refused and nothing is cut.
func TestIntervalPrimaryPowerLoss(t *testing.T) {
	for _, committed := range []bool{false, true} {
		t.Run(fmt.Sprintf("committed=%v", committed), func(t *testing.T) {
			mem, ffs := vfs.NewMem(), vfs.NewMem()
			pl, err := filelog.Open("/p", &filelog.Options{FS: mem, Sync: filelog.SyncInterval, SyncInterval: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			pdb, err := flume.Open(pl, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer pdb.Close()
			fdb := memFileDB(t, ffs, "/f", nil)
			appendN(t, pdb, 5, "a")
			opts := fastOpts()
			opts.ForkDir, opts.FS = "/f/forked", ffs
			link, err := Replicate(pdb, fdb, opts) // begins epoch 1 at seq 5: 0-4 are durable
			if err != nil {
				t.Fatal(err)
			}
			appendN(t, pdb, 3, "unsynced") // seqs 5-7, never fsynced on the primary
			waitSince(t, fdb, 7)
			link.Close()
			crashed := mem.CrashClone(vfs.CrashConfig{})
			pdb.Close()
			if committed {
				// As if synchronous followers had acknowledged 5-7 and the
				// primary's heartbeat had said so.
				if err := fdb.Log().(flume.EpochLog).SetCommittedHint(7); err != nil {
					t.Fatal(err)
				}
			}

			p2 := memFileDB(t, crashed, "/p", nil)
			if p2.Since() != 4 {
				t.Fatalf("restarted primary since %d, want 4", p2.Since())
			}
			fhead, fhash := fdb.Log().Head()
			l2, err := Replicate(p2, fdb, opts)
			if committed {
				var re *RefusedError
				if !errors.As(err, &re) || re.Reason != CodeWouldLoseCommitted {
					t.Fatalf("rejoin over committed entries: %v, want a refusal (%s)", err, CodeWouldLoseCommitted)
				}
				if s, h := fdb.Log().Head(); s != fhead || h != fhash {
					t.Fatalf("a refused rejoin changed the follower: since %d, want %d", s, fhead)
				}
				return
			}
			if err != nil {
				t.Fatalf("rejoin after the interval primary's power loss: %v", err)
			}
			defer l2.Close()
			if eps := p2.Log().(flume.EpochLog).Epochs(); len(eps) != 2 || eps[1].Epoch != 2 || eps[1].Start != 5 {
				t.Fatalf("restarted primary's epochs %v, want epoch 1 and this run's epoch 2, both from seq 5", eps)
			}
			appendN(t, p2, 2, "b")
			waitSince(t, fdb, 6)
			sameLog(t, p2, fdb)
			cut := forkedEntries(t, ffs, opts.ForkDir)
			if fmt.Sprint(cut) != "[5:unsynced-0 6:unsynced-1 7:unsynced-2]" {
				t.Fatalf("forked entries %v, want exactly the entries the primary lost", cut)
			}
		})
	}
}

// forkedEntries lists the entries in a fork directory as "seq:value".
func forkedEntries(t *testing.T, fsys vfs.FS, dir string) []string {
	t.Helper()
	var cut []string
	if err := fork.Entries(fsys, dir, func(_ fork.Info, e flume.Entry) error {
		cut = append(cut, fmt.Sprintf("%d:%s", e.Seq, e.Data))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return cut
}
