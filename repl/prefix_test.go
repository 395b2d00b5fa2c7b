package repl

// Invariants 1, 2 and 3 of architecture.md §6: order and identity, prefix,
// no gaps and no duplicates, through follower restarts.

import (
	"context"
	"fmt"
	mrand "math/rand/v2"
	"testing"
	"time"

	"github.com/flume-go/flume"
)

// Invariants 1, 2, 3: three followers, one restarted repeatedly while the
// primary appends; every follower is a prefix of the primary at every check
// and all are equal at the end (since, chain hash, every entry).
func TestInvariantThreeFollowersOneRestarted(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			seed := mrand.Uint64()
			t.Logf("seed %d", seed)
			rng := mrand.New(mrand.NewPCG(seed, 1))
			pdb := newMemDB(t)
			h := newHarness(t, tr, pdb, fastOpts())
			fdbs := []*flume.DB{newMemDB(t), newMemDB(t), newMemDB(t)}
			var stops []stopper
			for _, f := range fdbs[1:] {
				stops = append(stops, h.mustFollow(f))
			}
			const total = 30000
			done := make(chan struct{})
			go func() {
				defer close(done)
				wrng := mrand.New(mrand.NewPCG(seed, 2))
				for n := 0; n < total; {
					k := min(1+wrng.IntN(50), total-n)
					vals := make([][]byte, k)
					for i := range vals {
						vals[i] = []byte(fmt.Sprintf("e%d-%d", n+i, wrng.IntN(1000)))
					}
					if _, _, err := pdb.AppendBatch(context.Background(), vals); err != nil {
						t.Error(err)
						return
					}
					n += k
					if wrng.IntN(20) == 0 {
						time.Sleep(200 * time.Microsecond)
					}
				}
			}()
			restarts := 0
		loop:
			for {
				s := h.mustFollow(fdbs[0])
				time.Sleep(time.Duration(rng.IntN(5000)) * time.Microsecond)
				for _, f := range fdbs {
					isPrefix(t, pdb, f)
				}
				s.Close()
				restarts++
				select {
				case <-done:
					if restarts >= 10 {
						break loop
					}
				default:
				}
			}
			stops = append(stops, h.mustFollow(fdbs[0]))
			for _, f := range fdbs {
				waitSince(t, f, total-1)
			}
			for _, s := range stops {
				s.Close()
			}
			for _, f := range fdbs {
				sameLog(t, pdb, f)
			}
			t.Logf("%d restarts of follower 0 while appending %d entries", restarts, total)
		})
	}
}
