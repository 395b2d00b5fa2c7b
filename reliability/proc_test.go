package reliability

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/flume-go/flume/filelog"
	"github.com/flume-go/flume/internal/checker"
	"github.com/flume-go/flume/internal/netproxy"
	"github.com/flume-go/flume/internal/testutil"
	"github.com/flume-go/flume/server"
)

// The process harness runs real `flume serve` processes on loopback: a
// primary and followers, each with its own data directory and log file,
// driven over the HTTP API, killed with SIGKILL and restarted on the same
// ports.

var flumeBin struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// flumeBinary builds ./cmd/flume once per test process.
func flumeBinary(t testing.TB) string {
	t.Helper()
	flumeBin.once.Do(func() {
		flumeBin.dir, flumeBin.err = os.MkdirTemp("", "flume-reliability-bin-")
		if flumeBin.err != nil {
			return
		}
		flumeBin.path = filepath.Join(flumeBin.dir, "flume")
		cmd := exec.Command("go", "build", "-o", flumeBin.path, "github.com/flume-go/flume/cmd/flume")
		cmd.Dir = ".."
		out, err := cmd.CombinedOutput()
		if err != nil {
			flumeBin.err = fmt.Errorf("go build ./cmd/flume: %v\n%s", err, out)
		}
	})
	if flumeBin.err != nil {
		t.Fatal(flumeBin.err)
	}
	return flumeBin.path
}

// removeBinary deletes the built binary (TestMain calls it).
func removeBinary() {
	if flumeBin.dir != "" {
		os.RemoveAll(flumeBin.dir)
	}
}

// freePort returns a loopback address that was free a moment ago.
func freePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// node is one `flume serve` process (across restarts).
type node struct {
	name     string
	data     string
	logPath  string
	httpAddr string
	replAddr string
	follow   string // the primary's replication address, "" for the primary
	extra    []string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when the current process has been reaped
	starts int
}

type procCluster struct {
	t         testing.TB
	bin       string
	dir       string
	secret    string
	secretArg string
	fsync     string
	k         int // --sync-replicas on the primary
	primary   *node
	followers []*node
	proxies   []*netproxy.Proxy // per follower, when procConfig.proxied
	client    *http.Client

	hist   checker.History
	mu     sync.Mutex
	cuts   []checker.Cut
	acked  atomic.Int64
	kills  atomic.Int64
	weird  []string // responses the harness did not expect
	values atomic.Int64
}

type procConfig struct {
	followers   int
	k           int
	syncTimeout time.Duration
	fsync       string
	// proxied puts a netproxy between each follower and the primary.
	proxied bool
	seed    int64
}

func newProcCluster(t testing.TB, cfg procConfig) *procCluster {
	t.Helper()
	if cfg.fsync == "" {
		cfg.fsync = "always"
	}
	if cfg.syncTimeout == 0 {
		cfg.syncTimeout = time.Second
	}
	pc := &procCluster{t: t, bin: flumeBinary(t), dir: t.TempDir(), fsync: cfg.fsync, k: cfg.k, secret: "reliability-secret"}
	pc.secretArg = filepath.Join(pc.dir, "secret")
	if err := os.WriteFile(pc.secretArg, []byte(pc.secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pc.client = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16, DisableCompression: true}}
	t.Cleanup(pc.stopAll)
	common := []string{"--fsync", cfg.fsync, "--secret-file", pc.secretArg, "--log-level", "warn"}
	pc.primary = &node{name: "primary", data: filepath.Join(pc.dir, "primary"), logPath: filepath.Join(pc.dir, "primary.log"),
		extra: append([]string{"--sync-replicas", strconv.Itoa(cfg.k), "--sync-timeout", cfg.syncTimeout.String()}, common...)}
	// The primary first: the followers (and proxies) need its final
	// replication address.
	pc.startFresh(pc.primary)
	for i := 0; i < cfg.followers; i++ {
		name := fmt.Sprintf("f%d", i+1)
		f := &node{name: name, follow: pc.primary.replAddr, extra: common,
			data: filepath.Join(pc.dir, name), logPath: filepath.Join(pc.dir, name+".log")}
		if cfg.proxied {
			px, err := netproxy.New(pc.primary.replAddr, &netproxy.Options{Seed: cfg.seed + int64(i), ChunkSize: 4 << 10})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { px.Close() })
			pc.proxies = append(pc.proxies, px)
			f.follow = px.Addr()
		}
		pc.followers = append(pc.followers, f)
		pc.startFresh(f)
	}
	return pc
}

// startFresh starts a new node on ports that were free a moment ago; if
// another process took one in between (the process exits with "address
// already in use"), it picks new ones and tries again.
func (pc *procCluster) startFresh(n *node) {
	pc.t.Helper()
	for attempt := 0; ; attempt++ {
		n.httpAddr = freePort(pc.t)
		if n.follow == "" {
			n.replAddr = freePort(pc.t)
		}
		pc.start(n)
		healthy := testutil.Poll(20*time.Second, func() bool { return !n.running() || pc.healthy(n) })
		if healthy && n.running() {
			return
		}
		if attempt < 3 && strings.Contains(n.logTail(), "address already in use") {
			continue
		}
		pc.t.Fatalf("%s did not become healthy (running=%v); log:\n%s", n.name, n.running(), n.logTail())
	}
}

// healthy reports whether n answers GET /healthz with 200.
func (pc *procCluster) healthy(n *node) bool {
	resp, err := pc.client.Get("http://" + n.httpAddr + "/healthz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == 200
}

// start launches n's process (same data dir and ports as before).
func (pc *procCluster) start(n *node) {
	pc.t.Helper()
	args := []string{"serve", "--data", n.data, "--http", n.httpAddr, "--node-id", n.name}
	if n.follow != "" {
		args = append(args, "--follow", n.follow)
	} else {
		args = append(args, "--repl", n.replAddr)
	}
	args = append(args, n.extra...)
	lf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		pc.t.Fatal(err)
	}
	fmt.Fprintf(lf, "=== start %d: flume %s\n", n.starts+1, strings.Join(args, " "))
	cmd := exec.Command(pc.bin, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the test
	if err := cmd.Start(); err != nil {
		lf.Close()
		pc.t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); lf.Close(); close(exited) }()
	n.mu.Lock()
	n.cmd, n.exited = cmd, exited
	n.starts++
	n.mu.Unlock()
}

// logDir is where `flume serve` keeps the log inside its data directory.
func (n *node) logDir() string { return filepath.Join(n.data, "log") }

func (n *node) running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return false
	}
	select {
	case <-n.exited:
		return false
	default:
		return true
	}
}

// fds counts the open file descriptors of n's current process (-1 if it
// is not running).
func (n *node) fds() int {
	n.mu.Lock()
	cmd := n.cmd
	n.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return -1
	}
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", cmd.Process.Pid))
	if err != nil {
		return -1
	}
	return len(ents)
}

// fdList describes n's open descriptors, for failure messages.
func (n *node) fdList() string {
	n.mu.Lock()
	cmd := n.cmd
	n.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return ""
	}
	dir := fmt.Sprintf("/proc/%d/fd", cmd.Process.Pid)
	ents, _ := os.ReadDir(dir)
	var b strings.Builder
	for _, e := range ents {
		target, _ := os.Readlink(filepath.Join(dir, e.Name()))
		fmt.Fprintf(&b, "%s -> %s\n", e.Name(), target)
	}
	return b.String()
}

// logTail returns the end of n's log file, for failure messages.
func (n *node) logTail() string {
	b, _ := os.ReadFile(n.logPath)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

// waitHealthy polls /healthz until it answers 200 (the process may take a
// moment to bind; a process that exits is a failure).
func (pc *procCluster) waitHealthy(n *node) {
	pc.t.Helper()
	ok := testutil.Poll(20*time.Second, func() bool { return !n.running() || pc.healthy(n) })
	if !ok || !n.running() {
		pc.t.Fatalf("%s did not become healthy (running=%v); log:\n%s", n.name, n.running(), n.logTail())
	}
}

// kill9 sends SIGKILL to n and waits until it has been reaped.
func (pc *procCluster) kill9(n *node) {
	n.mu.Lock()
	cmd, exited := n.cmd, n.exited
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-exited
	pc.kills.Add(1)
}

// stop sends SIGTERM (graceful) and waits; SIGKILL after 10s.
func (pc *procCluster) stop(n *node) {
	n.mu.Lock()
	cmd, exited := n.cmd, n.exited
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		pc.t.Errorf("%s ignored SIGTERM for 10s; killing it. log:\n%s", n.name, n.logTail())
		cmd.Process.Signal(syscall.SIGKILL)
		<-exited
	}
}

// stopAll stops every process (followers first) and waits for them.
func (pc *procCluster) stopAll() {
	for _, n := range pc.followers {
		pc.stop(n)
	}
	if pc.primary != nil {
		pc.stop(pc.primary)
	}
	pc.client.CloseIdleConnections()
}

// request sends an authenticated request.
func (pc *procCluster) request(ctx context.Context, method, url string, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+pc.secret)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return pc.client.Do(req)
}

// postOnce appends one unique JSON value to the primary and records what
// the client was told.
func (pc *procCluster) postOnce(client int, value string) {
	v, _ := json.Marshal(value)
	start := time.Now()
	resp, err := pc.request(context.Background(), "POST", "http://"+pc.primary.httpAddr+"/log", v)
	op := checker.Op{Client: client, Value: string(v), Outcome: checker.Unknown, Seq: -1,
		SyncReplicas: pc.k, Durable: pc.fsync == "always", Start: start}
	if err != nil {
		// Refused before anything was sent: definitely not appended.
		// Anything else (reset, EOF, timeout) may have been appended.
		if errors.Is(err, syscall.ECONNREFUSED) {
			op.Outcome = checker.Failed
		}
		op.End = time.Now()
		pc.hist.Record(op)
		// The primary is down: pace the retries (this is client behaviour,
		// not synchronisation).
		time.Sleep(5 * time.Millisecond)
		return
	}
	body, rerr := io.ReadAll(resp.Body)
	resp.Body.Close()
	op.End = time.Now()
	var res struct {
		Seq      *int64 `json:"seq"`
		Last     *int64 `json:"last"`
		Acked    *int   `json:"acked"`
		Required int    `json:"required"`
		Error    string `json:"error"`
	}
	jerr := json.Unmarshal(body, &res)
	switch {
	case rerr != nil:
		// Cut off mid-response: unknown.
	case resp.StatusCode == 200 && jerr == nil && res.Seq != nil:
		op.Outcome, op.Seq = checker.OK, *res.Seq
		pc.acked.Add(1)
	case resp.StatusCode == 503 && jerr == nil && res.Last != nil && res.Acked != nil:
		op.Outcome, op.Seq = checker.NotReplicated, *res.Last
		if *res.Acked >= res.Required {
			pc.weird1(fmt.Sprintf("503 not-replicated with %d of %d acks: %s", *res.Acked, res.Required, body))
		}
	case resp.StatusCode == 503:
		// Shutting down or cancelled: the append may have happened.
	default:
		pc.weird1(fmt.Sprintf("POST /log %s: %d %s", v, resp.StatusCode, body))
	}
	pc.hist.Record(op)
}

func (pc *procCluster) weird1(s string) {
	pc.mu.Lock()
	pc.weird = append(pc.weird, s)
	pc.mu.Unlock()
}

// runClients posts from n clients until ctx ends.
func (pc *procCluster) runClients(ctx context.Context, n int, round string) *sync.WaitGroup {
	var wg sync.WaitGroup
	for c := 0; c < n; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				pc.postOnce(c, fmt.Sprintf("%s-c%d-%d", round, c, i))
				pc.values.Add(1)
			}
		}()
	}
	return &wg
}

// tailer follows GET /log?live=true on one node across its restarts,
// resuming after the last seq it saw, and records what it was streamed.
type tailer struct {
	node    *node
	mu      sync.Mutex
	got     map[int64]string // seq → value as streamed
	last    int64
	resumes int
	errs    []string // gaps, duplicates, bad lines
}

// runTailer tails n until ctx ends.
func (pc *procCluster) runTailer(ctx context.Context, n *node) (*tailer, *sync.WaitGroup) {
	tl := &tailer{node: n, got: make(map[int64]string), last: -1}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			tl.once(ctx, pc)
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond): // retry pacing while the node is down
			}
		}
	}()
	return tl, &wg
}

func (tl *tailer) once(ctx context.Context, pc *procCluster) {
	tl.mu.Lock()
	from := tl.last
	tl.resumes++
	tl.mu.Unlock()
	req, err := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("http://%s/log?gt=%d&live=true", tl.node.httpAddr, from), nil)
	if err != nil {
		return
	}
	req.Header.Set("Authorization", "Bearer "+pc.secret)
	// No client timeout: a live stream stays open; ctx ends it.
	resp, err := (&http.Client{Transport: pc.client.Transport}).Do(req)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var line struct {
			Seq   int64           `json:"seq"`
			Value json.RawMessage `json:"value"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			tl.mu.Lock()
			tl.errs = append(tl.errs, fmt.Sprintf("%s: bad live line %q: %v", tl.node.name, sc.Bytes(), err))
			tl.mu.Unlock()
			return
		}
		tl.mu.Lock()
		if line.Seq != tl.last+1 {
			tl.errs = append(tl.errs, fmt.Sprintf("%s: live stream (resumed after %d) yielded seq %d after %d", tl.node.name, from, line.Seq, tl.last))
		}
		tl.last = line.Seq
		tl.got[line.Seq] = string(line.Value)
		tl.mu.Unlock()
	}
}

// check compares what was streamed with the primary's final log.
func (tl *tailer) check(p checker.Replica) []checker.Violation {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	var vs []checker.Violation
	for _, e := range tl.errs {
		vs = append(vs, checker.Violation{Kind: "live-stream", Detail: e})
	}
	for seq, v := range tl.got {
		if seq >= int64(len(p.Entries)) || p.Entries[seq].Value != v {
			want := "nothing"
			if seq < int64(len(p.Entries)) {
				want = p.Entries[seq].Value
			}
			vs = append(vs, checker.Violation{Kind: "live-stream", Detail: fmt.Sprintf("%s streamed %q at seq %d, the primary holds %s", tl.node.name, v, seq, want)})
			if len(vs) > 10 {
				break
			}
		}
	}
	return vs
}

// status is GET /status of a node.
func (pc *procCluster) status(n *node) (server.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var st server.Status
	resp, err := pc.request(ctx, "GET", "http://"+n.httpAddr+"/status", nil)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return st, fmt.Errorf("GET /status: %d %s", resp.StatusCode, b)
	}
	err = json.NewDecoder(resp.Body).Decode(&st)
	return st, err
}

// waitCaughtUp polls /status until every follower has the primary's since
// and chain hash.
func (pc *procCluster) waitCaughtUp(d time.Duration) error {
	var last string
	ok := testutil.Poll(d, func() bool {
		ps, err := pc.status(pc.primary)
		if err != nil {
			last = err.Error()
			return false
		}
		for _, f := range pc.followers {
			fst, err := pc.status(f)
			if err != nil {
				last = f.name + ": " + err.Error()
				return false
			}
			if fst.Since != ps.Since || fst.Hash != ps.Hash || fst.LogID != ps.LogID {
				last = fmt.Sprintf("%s at since %d hash %.16s (log %s), primary at %d hash %.16s (log %s); upstream %+v",
					f.name, fst.Since, fst.Hash, fst.LogID, ps.Since, ps.Hash, ps.LogID, fst.Primary)
				return false
			}
		}
		return true
	})
	if !ok {
		return fmt.Errorf("followers did not catch up in %v: %s", d, last)
	}
	return nil
}

// primarySince is the primary's since per /status (-2 on error).
func (pc *procCluster) primarySince() int64 {
	st, err := pc.status(pc.primary)
	if err != nil {
		return -2
	}
	return st.Since
}

// readHTTP reads a node's whole log through GET /log (NDJSON), with the
// head from /status taken before (entries past it are ignored).
func (pc *procCluster) readHTTP(n *node) (checker.Replica, error) {
	st, err := pc.status(n)
	if err != nil {
		return checker.Replica{}, err
	}
	rep := checker.Replica{Name: n.name + "(http)", LogID: st.LogID, Since: st.Since, Head: st.Hash}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := pc.request(ctx, "GET", fmt.Sprintf("http://%s/log?gte=0&lte=%d", n.httpAddr, st.Since), nil)
	if err != nil {
		return rep, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return rep, fmt.Errorf("GET /log: %d %s", resp.StatusCode, b)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var line struct {
			Seq   int64           `json:"seq"`
			Value json.RawMessage `json:"value"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return rep, fmt.Errorf("GET /log line %q: %w", sc.Bytes(), err)
		}
		rep.Entries = append(rep.Entries, checker.Entry{Seq: line.Seq, Value: string(line.Value)})
	}
	return rep, sc.Err()
}

// readOffline opens a stopped node's data directory read-only with the file
// log (nothing on disk changes; a torn tail is left for the node's own
// recovery) and reads every entry with its chain hash.
func readOffline(name, dir string) (checker.Replica, error) {
	l, err := filelog.Open(dir, &filelog.Options{ReadOnly: true})
	if err != nil {
		return checker.Replica{}, fmt.Errorf("open %s: %w", dir, err)
	}
	defer l.Close()
	return checker.FromLog(name, l)
}

// checkLive compares every node's HTTP view (GET /log, /status) against
// the history.
func (pc *procCluster) checkLive() *checker.Report {
	pc.t.Helper()
	p, err := pc.readHTTP(pc.primary)
	if err != nil {
		pc.t.Fatal(err)
	}
	var fs []checker.Replica
	for _, f := range pc.followers {
		r, err := pc.readHTTP(f)
		if err != nil {
			pc.t.Fatal(err)
		}
		fs = append(fs, r)
	}
	return checker.Check(pc.hist.Ops(), p, fs, pc.sortedCuts(), checker.Options{RequireCaughtUp: true})
}

// checkOffline stops every node and checks their data directories.
func (pc *procCluster) checkOffline() *checker.Report {
	pc.t.Helper()
	pc.stopAll()
	p, err := readOffline("primary", pc.primary.logDir())
	if err != nil {
		pc.t.Fatal(err)
	}
	var fs []checker.Replica
	for _, f := range pc.followers {
		r, err := readOffline(f.name, f.logDir())
		if err != nil {
			pc.t.Fatal(err)
		}
		fs = append(fs, r)
	}
	return checker.Check(pc.hist.Ops(), p, fs, pc.sortedCuts(), checker.Options{RequireCaughtUp: true})
}

func (pc *procCluster) sortedCuts() []checker.Cut {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	return append([]checker.Cut(nil), pc.cuts...)
}

// crashFollower kills f with SIGKILL, reads its data directory while it is
// down (what it acknowledged must be there: a Cut for the sync check), and
// restarts it after pause.
func (pc *procCluster) crashFollower(f *node, pause time.Duration) {
	pc.t.Helper()
	at := time.Now()
	pc.kill9(f)
	r, err := readOffline(f.name, f.logDir())
	if err != nil {
		pc.t.Fatalf("reading %s after kill -9: %v", f.name, err)
	}
	pc.mu.Lock()
	pc.cuts = append(pc.cuts, checker.Cut{At: at, Since: map[string]int64{f.name: r.Since}, Total: len(pc.followers)})
	pc.mu.Unlock()
	time.Sleep(pause) // downtime is the fault being injected, not synchronisation
	pc.start(f)
	pc.waitHealthy(f)
}

// restartGraceful stops n with SIGTERM, expects exit status 0, and starts
// it again.
func (pc *procCluster) restartGraceful(n *node) {
	pc.t.Helper()
	pc.stop(n)
	n.mu.Lock()
	code := n.cmd.ProcessState.ExitCode()
	n.mu.Unlock()
	if code != 0 {
		pc.weird1(fmt.Sprintf("%s exited with status %d after SIGTERM; log:\n%s", n.name, code, n.logTail()))
	}
	pc.start(n)
	pc.waitHealthy(n)
}

// crashPrimary kills the primary with SIGKILL and restarts it after pause.
func (pc *procCluster) crashPrimary(pause time.Duration) {
	pc.t.Helper()
	pc.kill9(pc.primary)
	time.Sleep(pause) // downtime is the fault being injected
	pc.start(pc.primary)
	pc.waitHealthy(pc.primary)
}

// procRoundResult summarises one process-crash round.
type procRoundResult struct {
	kills      int
	restarts   int // graceful (SIGTERM) restarts
	faults     map[string]int
	acked      int64
	verified   int
	violations []checker.Violation
	weird      []string
}

// runProcRound runs a primary and two followers (k=1, fsync always) with
// four HTTP clients, kills a random node with SIGKILL `crashes` times at
// random moments, restarts it, then waits for catch-up and checks the live
// HTTP view and the stopped data directories. With netFaults the followers
// reach the primary through fault proxies and random network faults run
// all along.
func runProcRound(t testing.TB, seed int64, crashes int, netFaults bool, fsync string) procRoundResult {
	t.Helper()
	rnd := rand.New(rand.NewSource(seed))
	pc := newProcCluster(t, procConfig{followers: 2, k: 1, proxied: netFaults, seed: seed, fsync: fsync})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wg := pc.runClients(ctx, 4, fmt.Sprintf("p%d", seed))
	// Live tails of the primary and of one follower, across their crashes.
	tctx, tcancel := context.WithCancel(context.Background())
	defer tcancel()
	tp, twp := pc.runTailer(tctx, pc.primary)
	tf, twf := pc.runTailer(tctx, pc.followers[rnd.Intn(len(pc.followers))])
	var res procRoundResult
	fctx, fcancel := context.WithCancel(context.Background())
	defer fcancel()
	fdone := make(chan map[string]int, 1)
	if netFaults {
		frnd := rand.New(rand.NewSource(rnd.Int63()))
		go func() { fdone <- injectProxyFaults(fctx, frnd, pc.proxies) }()
	} else {
		fdone <- nil
	}
	for i := 0; i < crashes; i++ {
		// A random moment: wait until some more appends were acknowledged
		// (an event), then a random extra delay.
		target := pc.acked.Load() + int64(20+rnd.Intn(200))
		if !testutil.Poll(10*time.Second, func() bool { return pc.acked.Load() >= target }) {
			t.Logf("not reached within 10s: pc.acked.Load() >= target; going on")
		}
		time.Sleep(time.Duration(rnd.Intn(200)) * time.Millisecond) // random crash moment
		pause := time.Duration(rnd.Intn(300)) * time.Millisecond
		switch victim := rnd.Intn(4); victim {
		case 0:
			pc.crashPrimary(pause)
		case 1, 2:
			pc.crashFollower(pc.followers[victim-1], pause)
		case 3:
			// A graceful restart (SIGTERM) of a random node: it must
			// drain and exit 0.
			n := pc.primary
			if j := rnd.Intn(3); j > 0 {
				n = pc.followers[j-1]
			}
			pc.restartGraceful(n)
			res.restarts++
		}
	}
	fcancel()
	res.faults = <-fdone
	for _, p := range pc.proxies {
		p.Heal()
	}
	// Let the restarted cluster take appends again before stopping.
	target := pc.acked.Load() + 50
	if !testutil.Poll(10*time.Second, func() bool { return pc.acked.Load() >= target }) {
		t.Logf("not reached within 10s: pc.acked.Load() >= target; going on")
	}
	cancel()
	wg.Wait()
	res.kills = int(pc.kills.Load())
	if err := pc.waitCaughtUp(20 * time.Second); err != nil {
		res.violations = append(res.violations, checker.Violation{Kind: "caught-up", Detail: err.Error()})
		for _, f := range pc.followers {
			t.Logf("%s log:\n%s", f.name, f.logTail())
		}
	} else {
		live := pc.checkLive()
		res.violations = append(res.violations, live.Violations...)
		res.verified += live.EntriesVerified
		// The live tails have seen everything: wait for them to reach
		// the end, then compare.
		end := pc.primarySince()
		for _, tl := range []*tailer{tp, tf} {
			if !testutil.Poll(10*time.Second, func() bool { tl.mu.Lock(); defer tl.mu.Unlock(); return tl.last >= end }) {
				res.violations = append(res.violations, checker.Violation{Kind: "live-stream",
					Detail: fmt.Sprintf("live tail of %s stopped at %d, the log ends at %d", tl.node.name, tl.last, end)})
			}
		}
	}
	tcancel()
	twp.Wait()
	twf.Wait()
	off := pc.checkOffline()
	res.violations = append(res.violations, off.Violations...)
	res.verified += off.EntriesVerified
	if p, err := readOffline("primary", pc.primary.logDir()); err == nil {
		for _, tl := range []*tailer{tp, tf} {
			res.violations = append(res.violations, tl.check(p)...)
			res.verified += len(tl.got)
		}
	}
	res.acked = pc.acked.Load()
	pc.mu.Lock()
	res.weird = append(res.weird, pc.weird...)
	pc.mu.Unlock()
	nf := 0
	for _, v := range res.faults {
		nf += v
	}
	t.Logf("round %d (fsync %s): kills %d, graceful restarts %d, network faults %d, appends sent %d, acknowledged %d, not-replicated %d, unknown %d, refused %d, entries verified %d, violations %d",
		seed, fsync, res.kills, res.restarts, nf, pc.hist.Len(), res.acked, pc.hist.Count(checker.NotReplicated), pc.hist.Count(checker.Unknown),
		pc.hist.Count(checker.Failed), res.verified, len(res.violations))
	return res
}

var fsyncFlag = flag.String("fsync", "always", "fsync policy of the nodes in TestProcessCrash (always, interval, never)")

// procRoundCrashes is the number of kill -9s in a process round
// (TestProcessCrash and each process round of the soak, so that a soak seed
// replays through TestProcessCrash).
const procRoundCrashes = 4

// TestProcessCrash: real processes, SIGKILL of the primary or a follower at
// random moments, restart, with network faults between the followers and
// the primary; acknowledged appends survive with their seqs,
// followers are prefixes and catch up, no duplicates or gaps, and a k=1
// append acknowledged before a follower crash is in that follower's data
// directory whenever it was the only one that could have acked it.
func TestProcessCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real processes; skipped under -short")
	}
	seed := testSeed(t)
	res := runProcRound(t, seed, procRoundCrashes, true, *fsyncFlag)
	for _, v := range res.violations {
		t.Errorf("violation: %v", v)
	}
	for _, w := range res.weird {
		t.Errorf("unexpected response: %s", w)
	}
	if res.acked == 0 {
		t.Error("no append was acknowledged")
	}
}
