package reliability

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/frame"
	"github.com/flume-go/flume/internal/checker"
	"github.com/flume-go/flume/internal/testutil"
)

// netRoundResult summarises one network-fault round.
type netRoundResult struct {
	faults     map[string]int
	acked      int64
	notRepl    int
	verified   int
	violations []checker.Violation
	unexpected []error
}

func (r netRoundResult) faultCount() int {
	n := 0
	for _, v := range r.faults {
		n += v
	}
	return n
}

func (r netRoundResult) String() string {
	kinds := make([]string, 0, len(r.faults))
	for k, v := range r.faults {
		kinds = append(kinds, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(kinds)
	return fmt.Sprintf("faults %d (%s), appends acknowledged %d, not-replicated %d, entries verified %d, violations %d",
		r.faultCount(), strings.Join(kinds, " "), r.acked, r.notRepl, r.verified, len(r.violations))
}

// runNetRound runs one round: a primary and two followers behind fault
// proxies, four appenders (two synchronous with k=1) for d while faults are
// injected, then heal, wait for catch-up and check.
func runNetRound(t testing.TB, kind logKind, seed int64, d time.Duration) netRoundResult {
	t.Helper()
	rnd := rand.New(rand.NewSource(seed))
	c := newCluster(t, clusterConfig{kind: kind, followers: 2, seed: seed})
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	wg := c.runAppenders(ctx, 4, fmt.Sprintf("s%d", seed))
	t0 := time.Now()
	faults := c.injectFaults(ctx, rnd)
	wg.Wait()
	t1 := time.Now()
	c.healAll()
	var res netRoundResult
	res.faults = faults
	if err := c.waitCaughtUp(15 * time.Second); err != nil {
		res.violations = append(res.violations, checker.Violation{Kind: "caught-up", Detail: err.Error()})
	}
	t2 := time.Now()
	rep := c.check(checker.Options{RequireCaughtUp: true})
	t.Logf("round %d: faults+appends %v, appenders stopped after %v, catch-up %v, check %v",
		seed, d, t1.Sub(t0).Round(time.Millisecond), t2.Sub(t1).Round(time.Millisecond), time.Since(t2).Round(time.Millisecond))
	res.violations = append(res.violations, rep.Violations...)
	res.verified = rep.EntriesVerified
	res.acked = c.acked.Load()
	res.notRepl = c.hist.Count(checker.NotReplicated)
	c.mu.Lock()
	res.unexpected = append(res.unexpected, c.unexpected...)
	c.mu.Unlock()
	return res
}

// netRoundDuration is how long faults and appends run in a network round
// (TestNetFaults and each network round of the soak, so that a soak seed
// replays through TestNetFaults).
const netRoundDuration = 4 * time.Second

// TestNetFaults: random seeded fault schedules (delay, throttle, cut
// mid-frame, blackhole both ways and acks only, pause, resets, corruption)
// against a primary and two followers with concurrent appenders; after
// healing, the followers catch up and the checker holds, and every sync
// append either succeeded while on >= 1 follower or failed with
// *flume.NotReplicatedError.
func TestNetFaults(t *testing.T) {
	seed := testSeed(t)
	d := netRoundDuration
	if testing.Short() {
		d = time.Second
	}
	for _, kind := range logKinds {
		t.Run(kind.name, func(t *testing.T) {
			res := runNetRound(t, kind, seed, d)
			t.Logf("%s: %v", kind.name, res)
			for _, err := range res.unexpected {
				t.Errorf("unexpected append error: %v", err)
			}
			for _, v := range res.violations {
				t.Errorf("violation: %v", v)
			}
			if res.acked == 0 {
				t.Errorf("no append was acknowledged in %v", d)
			}
		})
	}
}

// TestSyncPartitionFailsThenHeals: with every follower partitioned, a k=1
// append fails with *flume.NotReplicatedError (entry kept on the primary)
// within the sync timeout; after healing it succeeds and is on a follower.
func TestSyncPartitionFailsThenHeals(t *testing.T) {
	seed := testSeed(t)
	for _, kind := range logKinds {
		t.Run(kind.name, func(t *testing.T) {
			c := newCluster(t, clusterConfig{kind: kind, followers: 2, seed: seed, syncTimeout: 300 * time.Millisecond})
			c.appendOnce(0, 1, 1, "before")
			for _, dir := range []string{"both", "acks"} {
				for _, m := range c.fs {
					if dir == "both" {
						m.proxy.Blackhole()
					} else {
						m.proxy.BlackholeDir(1) // Upstream: entries flow, acks are lost
					}
				}
				start := time.Now()
				_, last, err := c.db.AppendWith(context.Background(), flume.AppendOptions{SyncReplicas: 1}, []byte("partitioned-"+dir))
				var nre *flume.NotReplicatedError
				if !errors.As(err, &nre) || !errors.Is(err, flume.ErrNotReplicated) {
					t.Fatalf("%s partition: sync append returned %v, want *flume.NotReplicatedError", dir, err)
				}
				if nre.Acked != 0 || nre.Required != 1 || nre.Last != last {
					t.Fatalf("%s partition: %+v, want 0 of 1 acked for seq %d", dir, nre, last)
				}
				if el := time.Since(start); el > 3*time.Second {
					t.Fatalf("%s partition: failing took %v, want about the 300ms sync timeout", dir, el)
				}
				if got, err := c.db.Get(context.Background(), last); err != nil || string(got) != "partitioned-"+dir {
					t.Fatalf("the not-replicated entry is not kept on the primary: %q, %v", got, err)
				}
				c.hist.Record(checker.Op{Value: "partitioned-" + dir, Outcome: checker.NotReplicated, Seq: last, SyncReplicas: 1, Durable: true, Start: start, End: time.Now()})
				c.healAll()
				// The followers come back (the partition dropped bytes
				// mid-stream, so each connection is re-established):
				// a sync append succeeds again within a few seconds.
				healed := false
				for i := 0; !healed && time.Since(start) < 10*time.Second; i++ {
					c.appendOnce(0, 1, 1, fmt.Sprintf("healed-%s-%d", dir, i))
					ops := c.hist.Ops()
					healed = ops[len(ops)-1].Outcome == checker.OK
				}
				if !healed {
					t.Fatalf("after healing, sync appends kept failing for 10s; unexpected: %v; status %+v", c.unexpected, c.fs[0].f.Status())
				}
			}
			if err := c.waitCaughtUp(10 * time.Second); err != nil {
				t.Fatal(err)
			}
			if rep := c.check(checker.Options{RequireCaughtUp: true}); !rep.OK() {
				t.Fatal(rep.Err())
			}
		})
	}
}

// TestLostMessageDetected: a connection that loses one whole Entries
// message (a middlebox dropping bytes; TCP itself never does this) while
// heartbeats keep flowing. With no further appends nothing but the
// heartbeat can tell the follower it is behind: the primary's heartbeat
// says through which seq it has sent, the follower sees the gap, drops the
// connection and resumes. (Found by the soak before blackholes were
// followed by resets; fixed in protocol version 2.)
func TestLostMessageDetected(t *testing.T) {
	seed := testSeed(t)
	c := newCluster(t, clusterConfig{kind: logKinds[0], followers: 1, seed: seed})
	m := c.fs[0]
	c.appendOnce(0, 1, 0, "before")
	if err := c.waitCaughtUp(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	m.proxy.BlackholeDir(2) // Downstream
	dropped := m.proxy.Stats().BytesDropped
	c.appendOnce(0, 1, 0, "lost")
	// The Entries message (56+ bytes of frame plus its header) is dropped.
	if !testutil.Poll(5*time.Second, func() bool { return m.proxy.Stats().BytesDropped >= dropped+frame.HeaderSize }) {
		t.Fatal("the entry was never sent")
	}
	m.proxy.Unblackhole()
	if err := c.waitCaughtUp(5 * time.Second); err != nil {
		t.Fatalf("follower never noticed the lost message: %v", err)
	}
}
