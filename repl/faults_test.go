package repl

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/internal/netproxy"
)

// Network faults between primary and follower (cuts mid-frame, partitions,
// delays, corruption in both directions, resets) while writers append with
// k=1: every append either succeeds and is then on the follower, or fails
// with *flume.NotReplicatedError; the follower is always a prefix of the
// primary; after healing both logs are identical.
func TestNetworkFaults(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 3))
	pdb := openSync(t, 1, 300*time.Millisecond)
	_, addr := servePrimary(t, pdb, fastOpts())
	px, err := netproxy.New(addr, &netproxy.Options{Seed: int64(seed), ChunkSize: 4 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	fdb := newMemDB(t)
	f, err := NewFollower(fdb, px.Addr(), fastOpts())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	var ok, notRepl int
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				seq, err := pdb.Append(context.Background(), []byte(fmt.Sprintf("w%d-%d", w, i)))
				var nre *flume.NotReplicatedError
				switch {
				case err == nil:
					if got := fdb.Log().Since(); got < seq {
						t.Errorf("append %d acknowledged as replicated, follower at %d", seq, got)
					}
					mu.Lock()
					ok++
					mu.Unlock()
				case errors.As(err, &nre):
					mu.Lock()
					notRepl++
					mu.Unlock()
				default:
					t.Errorf("append: %v", err)
					return
				}
			}
		}()
	}
	faults := []func(){
		func() { px.CutAfter(int64(1 + rng.IntN(20000))) },
		func() { px.Blackhole() },
		func() { px.Delay(time.Duration(rng.IntN(3))*time.Millisecond, time.Millisecond) },
		func() { px.ResetConns() },
		func() {
			dir := netproxy.Downstream
			if rng.IntN(2) == 0 {
				dir = netproxy.Upstream
			}
			px.ModifyDir(dir, func(b []byte) []byte { // runs on the proxy's goroutines: global rand
				if len(b) > 0 && rand.IntN(4) == 0 {
					b[rand.IntN(len(b))] ^= byte(1 << rand.IntN(8))
				}
				return b
			})
		},
		func() { px.Throttle(int64(20_000 + rng.IntN(200_000))) },
	}
	for round := 0; round < 12; round++ {
		i := rng.IntN(len(faults))
		faults[i]()
		time.Sleep(time.Duration(50+rng.IntN(300)) * time.Millisecond)
		isPrefix(t, pdb, fdb)
		px.Heal()
		time.Sleep(time.Duration(rng.IntN(100)) * time.Millisecond)
	}
	cancel()
	wg.Wait()
	px.Heal()
	waitSince(t, fdb, pdb.Since())
	sameLog(t, pdb, fdb)
	st := px.Stats()
	t.Logf("appends: %d replicated, %d not replicated in time; proxy: %d conns, %d cuts, %d resets, %d modified chunks; follower reconnects %d",
		ok, notRepl, st.Accepted, st.Cuts, st.Resets, st.Modifications, f.Stats().Reconnects)
	if ok == 0 {
		t.Fatal("no append succeeded")
	}
}
