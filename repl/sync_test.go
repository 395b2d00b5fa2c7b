package repl

// Invariant 5 of architecture.md §6: synchronous replication.

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flume-go/flume"
)

// Invariant 5 (sync replication, k=1): with the only follower stopped an
// append fails after the deadline with a typed error that says how many
// acked, and stays in the log; once the follower returns, appends succeed.
func TestSyncK1FollowerStopped(t *testing.T) {
	fl := newMemDB(t)
	pdb := openSync(t, 1, 200*time.Millisecond)
	_, addr := servePrimary(t, pdb, fastOpts())
	start := func() *Follower {
		f, err := NewFollower(fl, addr, fastOpts())
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Ready(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		return f
	}
	f := start()
	ctx := context.Background()
	if seq, err := pdb.Append(ctx, []byte("one")); err != nil || seq != 0 {
		t.Fatalf("sync append with a follower: %d, %v", seq, err)
	}
	if fl.Since() < 0 {
		t.Fatal("sync append returned before the follower had it")
	}
	f.Close()
	t0 := time.Now()
	seq, err := pdb.Append(ctx, []byte("two"))
	var nre *flume.NotReplicatedError
	if !errors.As(err, &nre) || !errors.Is(err, flume.ErrNotReplicated) {
		t.Fatalf("got %v, want *flume.NotReplicatedError", err)
	}
	if nre.Acked != 0 || nre.Required != 1 || seq != 1 || nre.Last != 1 {
		t.Fatalf("error says %d of %d acked for seq %d (returned %d)", nre.Acked, nre.Required, nre.Last, seq)
	}
	if d := time.Since(t0); d < 150*time.Millisecond || d > 2*time.Second {
		t.Fatalf("failed after %v, want about the 200ms deadline", d)
	}
	if pdb.Since() != 1 {
		t.Fatal("the unreplicated entry is not in the primary's log")
	}
	f = start()
	defer f.Close()
	if _, err := pdb.Append(ctx, []byte("three")); err != nil {
		t.Fatalf("sync append after the follower returned: %v", err)
	}
	waitSince(t, fl, 2)
	sameLog(t, pdb, fl)
}

func openSync(t testing.TB, k int, timeout time.Duration) *flume.DB {
	db, err := flume.Open(newMemLog(), &flume.Options{SyncReplicas: k, SyncTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// Sync appends from many writers share acks (group commit) and each gets
// its own seq; k=2 with two followers needs both.
func TestSyncManyWritersK2(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			pdb := openSync(t, 2, 5*time.Second)
			h := newHarness(t, tr, pdb, fastOpts())
			f1, f2 := newMemDB(t), newMemDB(t)
			s1, s2 := h.mustFollow(f1), h.mustFollow(f2)
			defer s1.Close()
			defer s2.Close()
			var wg sync.WaitGroup
			var fails atomic.Int64
			for w := 0; w < 64; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < 50; i++ {
						seq, err := pdb.Append(context.Background(), []byte("v"))
						if err != nil {
							fails.Add(1)
							t.Error(err)
							return
						}
						if f1.Since() < seq || f2.Since() < seq {
							t.Errorf("seq %d acknowledged before both followers had it", seq)
						}
					}
				}()
			}
			wg.Wait()
			if fails.Load() > 0 {
				t.Fatal("sync appends failed")
			}
			sameLog(t, pdb, f1)
			sameLog(t, pdb, f2)
		})
	}
}
