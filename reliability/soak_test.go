//go:build soak

package reliability

import (
	"flag"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/flume-go/flume/filelog"
)

var soakDuration = flag.Duration("soak.duration", 5*time.Minute, "how long TestSoak runs rounds")

// soakTotals is the summary TestSoak prints.
type soakTotals struct {
	rounds, netRounds, procRounds int
	powerRounds                   int
	crashes, restarts             int
	faults                        map[string]int
	acked                         int64
	verified                      int
	violations                    int
	failedSeeds                   []string
}

func (s *soakTotals) String() string {
	nf := 0
	kinds := make([]string, 0, len(s.faults))
	for k, v := range s.faults {
		nf += v
		kinds = append(kinds, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(kinds)
	return fmt.Sprintf("rounds %d (network %d, process %d, power-loss %d), crashes injected %d, graceful restarts %d, faults injected %d (%s), appends acknowledged %d, entries verified %d, violations found %d",
		s.rounds, s.netRounds, s.procRounds, s.powerRounds, s.crashes, s.restarts, nf, strings.Join(kinds, " "), s.acked, s.verified, s.violations)
}

// TestSoak runs rounds until -soak.duration has passed, in turn: an
// in-process network-fault round on each log kind, a process round (kill -9
// of random nodes plus network faults between followers and the primary),
// and an in-process power-loss round (crashable filesystems). Each round has its own seed (printed); a failing round is
// reported with the command that replays it, and the soak goes on.
//
//	go test -tags soak ./reliability -run Soak -timeout 0 -soak.duration=20m -v
func TestSoak(t *testing.T) {
	base := testSeed(t)
	deadline := time.Now().Add(*soakDuration)
	tot := &soakTotals{faults: make(map[string]int)}
	start := time.Now()
	defer func() {
		t.Logf("SOAK SUMMARY after %v (base seed %d): %v", time.Since(start).Round(time.Second), base, tot)
		if len(tot.failedSeeds) > 0 {
			t.Logf("failing rounds: %s", strings.Join(tot.failedSeeds, "; "))
		}
	}()
	for r := 0; time.Now().Before(deadline); r++ {
		seed := base + int64(r)
		kinds := len(logKinds)
		var name, extra string
		var ok bool
		if r%(kinds+2) == kinds+1 {
			name = fmt.Sprintf("round%d-powerloss", r)
			ok = t.Run(name, func(t *testing.T) {
				res := runPowerLossRound(t, seed, powerLossCrashes, filelog.SyncAlways)
				tot.powerRounds++
				tot.crashes += res.crashes
				for k, v := range res.faults {
					tot.faults[k] += v
				}
				tot.acked += res.acked
				tot.verified += res.verified
				tot.violations += len(res.violations) + len(res.unexpected)
				for _, v := range res.violations {
					t.Errorf("violation: %v", v)
				}
				for _, err := range res.unexpected {
					t.Errorf("unexpected append error: %v", err)
				}
			})
		} else if r%(kinds+2) < kinds {
			kind := logKinds[r%(kinds+2)]
			name = fmt.Sprintf("round%d-net-%s", r, kind.name)
			ok = t.Run(name, func(t *testing.T) {
				res := runNetRound(t, kind, seed, netRoundDuration)
				tot.netRounds++
				for k, v := range res.faults {
					tot.faults[k] += v
				}
				tot.acked += res.acked
				tot.verified += res.verified
				tot.violations += len(res.violations) + len(res.unexpected)
				for _, v := range res.violations {
					t.Errorf("violation: %v", v)
				}
				for _, err := range res.unexpected {
					t.Errorf("unexpected append error: %v", err)
				}
				t.Logf("seed %d: %v", seed, res)
			})
		} else {
			name = fmt.Sprintf("round%d-process", r)
			ok = t.Run(name, func(t *testing.T) {
				// kill -9 keeps the page cache, so every fsync policy must
				// keep acknowledged appends across it.
				fsync := []string{"always", "always", "interval", "never"}[(r/(kinds+2))%4]
				extra = " -fsync=" + fsync
				res := runProcRound(t, seed, procRoundCrashes, true, fsync)
				tot.procRounds++
				tot.crashes += res.kills
				tot.restarts += res.restarts
				for k, v := range res.faults {
					tot.faults[k] += v
				}
				tot.acked += res.acked
				tot.verified += res.verified
				tot.violations += len(res.violations) + len(res.weird)
				for _, v := range res.violations {
					t.Errorf("violation: %v", v)
				}
				for _, w := range res.weird {
					t.Errorf("unexpected response: %s", w)
				}
			})
		}
		tot.rounds++
		if !ok {
			replay := "TestProcessCrash"
			if strings.HasSuffix(name, "-powerloss") {
				replay = "TestPowerLoss"
			}
			if strings.Contains(name, "-net-") {
				replay = "TestNetFaults/" + name[strings.LastIndex(name, "-")+1:]
			}
			tot.failedSeeds = append(tot.failedSeeds, fmt.Sprintf("%s: go test ./reliability -run '%s' -seed=%d%s -v", name, replay, seed, extra))
		}
		if r%10 == 9 {
			t.Logf("progress: %v", tot)
		}
	}
}
