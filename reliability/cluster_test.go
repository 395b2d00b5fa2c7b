package reliability

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	randv2 "math/rand/v2"
	"net"
	"os"
	"runtime/pprof"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/filelog"
	"github.com/flume-go/flume/internal/checker"
	"github.com/flume-go/flume/internal/netproxy"
	"github.com/flume-go/flume/internal/testutil"
	"github.com/flume-go/flume/memlog"
	"github.com/flume-go/flume/repl"
	"github.com/flume-go/flume/vfs"
)

// logKind opens the log a cluster member runs on.
type logKind struct {
	name string
	open func(t testing.TB, dir string) flume.Log
}

// logKinds are the logs the in-process suites run on; filelog adds itself
// in filelog_kind_test.go.
var logKinds = []logKind{
	{"memlog", func(testing.TB, string) flume.Log { return memlog.New() }},
}

// clusterConfig shapes an in-process cluster.
type clusterConfig struct {
	kind      logKind
	followers int
	seed      int64
	// syncTimeout bounds a synchronous append's wait for acks.
	syncTimeout time.Duration
	secret      []byte
	// memfs runs every node on filelog over its own crashable vfs.MemFS
	// (kind is then ignored), so that powerLoss* can drop unsynced writes.
	memfs bool
	// followerSync and primarySync are the fsync policies with memfs
	// (default always).
	followerSync, primarySync filelog.SyncMode
	// maxPerClient bounds one client's appends per runAppenders (default
	// maxAppendsPerClient).
	maxPerClient int
	// clients with these indexes append with k=2 instead of k=1/0.
	k2Clients map[int]bool
}

// member is one follower: its DB, its replication Follower and the proxy
// it reaches the primary through.
type member struct {
	name  string
	db    *flume.DB
	f     *repl.Follower
	proxy *netproxy.Proxy
}

// cluster is a primary and followers in this process, each follower
// connected through its own fault proxy. Everything is stopped at cleanup.
type cluster struct {
	t    testing.TB
	cfg  clusterConfig
	db   *flume.DB
	prim *repl.Primary
	addr string // the primary's replication listener
	fs   []*member

	hist checker.History
	mu   sync.Mutex
	cuts []checker.Cut
	// unexpected collects append errors that are neither success nor
	// *flume.NotReplicatedError.
	unexpected []error
	acked      atomic.Int64
	ackedByK   [3]atomic.Int64 // successful appends by required acks (k=0, 1, 2)
	serveDone  chan error
	dir        string
	memfs      map[string]*vfs.MemFS // by node name, with cfg.memfs
}

// replOpts are fast-reacting replication options: heartbeats every 25ms, a
// peer silent for 300ms is dead, reconnects within 5–100ms.
func replOpts(secret []byte) *repl.Options {
	return &repl.Options{Secret: secret, Heartbeat: 25 * time.Millisecond, DeadAfter: 300 * time.Millisecond,
		MinBackoff: 5 * time.Millisecond, MaxBackoff: 100 * time.Millisecond}
}

func newCluster(t testing.TB, cfg clusterConfig) *cluster {
	t.Helper()
	if cfg.syncTimeout == 0 {
		cfg.syncTimeout = 400 * time.Millisecond
	}
	c := &cluster{t: t, cfg: cfg, serveDone: make(chan error, 1), dir: t.TempDir(), memfs: make(map[string]*vfs.MemFS)}
	c.startPrimary("127.0.0.1:0")
	t.Cleanup(c.close)

	for i := 0; i < cfg.followers; i++ {
		name := fmt.Sprintf("f%d", i+1)
		px, err := netproxy.New(c.addr, &netproxy.Options{Seed: cfg.seed + int64(i), ChunkSize: 4 << 10})
		if err != nil {
			t.Fatal(err)
		}
		m := &member{name: name, proxy: px}
		c.startFollower(m)
		c.fs = append(c.fs, m)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, m := range c.fs {
		if err := m.f.Ready(ctx); err != nil {
			t.Fatalf("%s: not ready: %v (status %+v)", m.name, err, m.f.Status())
		}
	}
	return c
}

// openLog opens node name's log: on its MemFS with cfg.memfs, else with
// cfg.kind in the cluster's directory.
func (c *cluster) openLog(name string) flume.Log {
	c.t.Helper()
	if !c.cfg.memfs {
		return c.cfg.kind.open(c.t, c.dir+"/"+name)
	}
	fs := c.memfs[name]
	if fs == nil {
		fs = vfs.NewMem()
		c.memfs[name] = fs
	}
	mode := c.cfg.primarySync
	if name != "primary" {
		mode = c.cfg.followerSync
	}
	l, err := filelog.Open("/data", &filelog.Options{FS: fs, Sync: mode})
	if err != nil {
		c.t.Fatalf("open %s: %v", name, err)
	}
	return l
}

// startPrimary opens the primary's DB and serves replication on addr.
func (c *cluster) startPrimary(addr string) {
	c.t.Helper()
	db, err := flume.Open(c.openLog("primary"), &flume.Options{SyncTimeout: c.cfg.syncTimeout})
	if err != nil {
		c.t.Fatal(err)
	}
	c.db = db
	o := replOpts(c.cfg.secret)
	o.NodeID = "primary"
	c.prim, err = repl.NewPrimary(db, o)
	if err != nil {
		c.t.Fatal(err)
	}
	var ln net.Listener
	// Rebinding the same port after a restart may race the old
	// listener's teardown for a moment.
	if !testutil.Poll(5*time.Second, func() bool { ln, err = net.Listen("tcp", addr); return err == nil }) {
		c.t.Fatalf("listen %s: %v", addr, err)
	}
	c.addr = ln.Addr().String()
	go func() { c.serveDone <- c.prim.Serve(ln) }()
}

// stopPrimary closes the primary's replication and DB.
func (c *cluster) stopPrimary() {
	c.prim.Close()
	if err := <-c.serveDone; !errors.Is(err, repl.ErrServerClosed) {
		c.t.Errorf("primary Serve returned %v, want ErrServerClosed", err)
	}
	c.db.Close()
}

// startFollower opens m's DB and starts replicating through its proxy.
func (c *cluster) startFollower(m *member) {
	c.t.Helper()
	fdb, err := flume.Open(c.openLog(m.name), nil)
	if err != nil {
		c.t.Fatal(err)
	}
	fo := replOpts(c.cfg.secret)
	fo.NodeID, fo.Dial = m.name, m.proxy.Dial
	f, err := repl.NewFollower(fdb, m.proxy.Addr(), fo)
	if err != nil {
		c.t.Fatal(err)
	}
	m.db, m.f = fdb, f
}

// powerLossClone simulates a power loss of node name: it returns the
// instant just before the crash and replaces the node's MemFS by what
// survives (synced data, plus a random part of unsynced writes with
// probability keepPct). The running node still writes to the old MemFS
// until it is stopped; the caller stops and restarts it.
func (c *cluster) powerLossClone(name string, keepPct int, rnd *rand.Rand) time.Time {
	at := time.Now()
	c.memfs[name] = c.memfs[name].CrashClone(vfs.CrashConfig{UnsyncedDataPercent: keepPct,
		Rand: randv2.New(randv2.NewPCG(uint64(rnd.Int63()), 0))})
	return at
}

// forgetAfter turns every acknowledgement given at or after at into
// Unknown: a crash at `at` may have lost it (it may have come from writes
// made after the crash instant, by a node that was still running).
func (c *cluster) forgetAfter(at time.Time) {
	c.hist.Rewrite(func(op *checker.Op) {
		if !op.End.Before(at) && (op.Outcome == checker.OK || op.Outcome == checker.NotReplicated) {
			op.Outcome = checker.Unknown
		}
	})
}

// close stops followers, proxies, the primary and the DBs, in that order.
func (c *cluster) close() {
	for _, m := range c.fs {
		m.f.Close()
		m.proxy.Close()
		m.db.Close()
	}
	c.prim.Close()
	if err := <-c.serveDone; !errors.Is(err, repl.ErrServerClosed) {
		c.t.Errorf("primary Serve returned %v, want ErrServerClosed", err)
	}
	c.db.Close()
}

// appendOnce appends n unique values with k required acks and records the
// outcome in the history; for a successful sync append it also records a
// cut of the followers' log positions taken right after the return.
func (c *cluster) appendOnce(client, n, k int, prefix string) {
	vals := make([][]byte, n)
	for i := range vals {
		vals[i] = []byte(fmt.Sprintf("%s-%d", prefix, i))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	first, _, err := c.db.AppendWith(ctx, flume.AppendOptions{SyncReplicas: k}, vals...)
	end := time.Now()
	var nre *flume.NotReplicatedError
	outcome := checker.OK
	switch {
	case err == nil:
		c.acked.Add(int64(n))
		c.ackedByK[min(k, 2)].Add(int64(n))
	case errors.As(err, &nre):
		outcome = checker.NotReplicated
		if nre.First != first {
			c.addUnexpected(fmt.Errorf("NotReplicatedError.First %d but AppendWith returned first %d", nre.First, first))
		}
		if nre.Acked >= nre.Required {
			c.addUnexpected(fmt.Errorf("NotReplicatedError with %d of %d acks: %v", nre.Acked, nre.Required, err))
		}
	default:
		c.addUnexpected(fmt.Errorf("client %d: append: %w", client, err))
		outcome = checker.Unknown
	}
	if outcome == checker.OK && k > 0 {
		cut := checker.Cut{At: time.Now(), Since: make(map[string]int64, len(c.fs))}
		for _, m := range c.fs {
			cut.Since[m.name] = m.db.Log().Since()
		}
		c.mu.Lock()
		c.cuts = append(c.cuts, cut)
		c.mu.Unlock()
	}
	batch := ""
	if n > 1 {
		batch = prefix
	}
	for i, v := range vals {
		c.hist.Record(checker.Op{Client: client, Value: string(v), Outcome: outcome, Seq: first + int64(i),
			SyncReplicas: k, Durable: true, Batch: batch, Start: start, End: end})
	}
}

func (c *cluster) addUnexpected(err error) {
	c.mu.Lock()
	c.unexpected = append(c.unexpected, err)
	c.mu.Unlock()
}

// maxAppendsPerClient bounds one client's appends in a round, so that the
// history and the check stay small on a shared machine.
const maxAppendsPerClient = 20000

// runAppenders runs clients until ctx ends (or maxAppendsPerClient): half of
// them synchronous with k=1 (when there are followers), every fifth append
// a batch of 3.
func (c *cluster) runAppenders(ctx context.Context, clients int, round string) *sync.WaitGroup {
	var wg sync.WaitGroup
	limit := c.cfg.maxPerClient
	if limit <= 0 {
		limit = maxAppendsPerClient
	}
	for cl := 0; cl < clients; cl++ {
		k := 0
		if cl%2 == 1 && len(c.fs) > 0 {
			k = 1
		}
		if c.cfg.k2Clients[cl] {
			k = 2
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil && i < limit; i++ {
				n := 1
				if i%5 == 4 {
					n = 3
				}
				c.appendOnce(cl, n, k, fmt.Sprintf("%s-c%d-%d", round, cl, i))
			}
		}()
	}
	return &wg
}

// healAll clears every fault.
func (c *cluster) healAll() {
	for _, m := range c.fs {
		m.proxy.Heal()
	}
}

// waitCaughtUp waits until every follower holds the primary's since.
func (c *cluster) waitCaughtUp(d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	want := c.db.Since()
	for _, m := range c.fs {
		if err := m.db.WaitSince(ctx, want); err != nil {
			return fmt.Errorf("%s did not catch up to %d (at %d): %w; status %+v; primary's view %+v; goroutines in %s",
				m.name, want, m.db.Since(), err, m.f.Status(), c.prim.Followers(), dumpGoroutines())
		}
	}
	return nil
}

// dumpGoroutines writes every goroutine's stack to a file that outlives the
// test and returns its path, for post-mortems of stuck replication.
func dumpGoroutines() string {
	f, err := os.CreateTemp("", "flume-reliability-goroutines-*.txt")
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	pprof.Lookup("goroutine").WriteTo(f, 2)
	return f.Name()
}

// check runs the checker over the history, the logs and the cuts.
func (c *cluster) check(o checker.Options) *checker.Report {
	c.t.Helper()
	p, err := checker.FromLog("primary", c.db.Log())
	if err != nil {
		c.t.Fatal(err)
	}
	var fs []checker.Replica
	for _, m := range c.fs {
		r, err := checker.FromLog(m.name, m.db.Log())
		if err != nil {
			c.t.Fatal(err)
		}
		fs = append(fs, r)
	}
	c.mu.Lock()
	cuts := append([]checker.Cut(nil), c.cuts...)
	c.mu.Unlock()
	sort.Slice(cuts, func(i, j int) bool { return cuts[i].At.Before(cuts[j].At) })
	return checker.Check(c.hist.Ops(), p, fs, cuts, o)
}

// faultKinds are the network faults the injector picks from.
var faultKinds = []string{"delay", "throttle", "cut", "blackhole", "blackhole-acks", "pause", "reset", "corrupt", "duplicate"}

// injectFaults applies random faults to the followers' proxies until ctx
// ends; see injectProxyFaults.
func (c *cluster) injectFaults(ctx context.Context, rnd *rand.Rand) map[string]int {
	ps := make([]*netproxy.Proxy, len(c.fs))
	for i, m := range c.fs {
		ps[i] = m.proxy
	}
	return injectProxyFaults(ctx, rnd, ps)
}

// injectProxyFaults applies random faults (seeded by rnd) to proxies until
// ctx ends: each fault hits one proxy or, one time in three, all of them,
// and lasts 30–300ms, then they are healed. It returns the faults applied
// by kind.
func injectProxyFaults(ctx context.Context, rnd *rand.Rand, proxies []*netproxy.Proxy) map[string]int {
	counts := make(map[string]int)
	for ctx.Err() == nil {
		targets := []*netproxy.Proxy{proxies[rnd.Intn(len(proxies))]}
		if rnd.Intn(3) == 0 {
			targets = proxies
		}
		kind := faultKinds[rnd.Intn(len(faultKinds))]
		hold := time.Duration(30+rnd.Intn(270)) * time.Millisecond
		cutN := int64(1 + rnd.Intn(20000))
		bps := int64(20<<10 + rnd.Intn(500<<10))
		delay := time.Duration(rnd.Intn(80)) * time.Millisecond
		jitter := time.Duration(rnd.Intn(20)) * time.Millisecond
		flipAt := rnd.Intn(4096)
		for _, p := range targets {
			switch kind {
			case "delay":
				p.Delay(delay, jitter)
			case "throttle":
				p.Throttle(bps)
			case "cut":
				p.CutAfter(cutN)
			case "blackhole":
				p.Blackhole()
			case "blackhole-acks":
				p.BlackholeDir(netproxy.Upstream)
			case "pause":
				p.Pause()
			case "reset":
				p.ResetConns()
			case "corrupt":
				// Flip one byte of the primary → follower stream: the
				// follower must detect it (frame CRC, message framing) and
				// never store it.
				var once atomic.Bool
				p.ModifyDir(netproxy.Downstream, func(b []byte) []byte {
					if len(b) == 0 || once.Swap(true) {
						return b
					}
					out := append([]byte(nil), b...)
					out[flipAt%len(out)] ^= 0x5a
					return out
				})
			case "duplicate":
				// Deliver one chunk of the primary → follower stream
				// twice: the follower must not append anything twice.
				var once atomic.Bool
				p.ModifyDir(netproxy.Downstream, func(b []byte) []byte {
					if len(b) == 0 || once.Swap(true) {
						return b
					}
					return append(append([]byte(nil), b...), b...)
				})
			}
			counts[kind]++
		}
		t := time.NewTimer(hold)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
		for _, p := range targets {
			p.Heal()
			if kind == "blackhole" || kind == "blackhole-acks" {
				// The blackhole dropped bytes from the middle of a TCP
				// stream, which no real network does (TCP retransmits or
				// the connection dies). Model the partition's end as the
				// death of the connections it starved.
				p.ResetConns()
			}
		}
	}
	return counts
}
