package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/internal/netproxy"
	"github.com/flume-go/flume/internal/testutil"
	"github.com/flume-go/flume/memlog"
	"github.com/flume-go/flume/repl"
)

// status reads n's GET /status.
func (n *testNode) status(t *testing.T) Status {
	t.Helper()
	r := do(t, "GET", n.url+"/status", "", "")
	wantCode(t, r, 200)
	var st Status
	if err := json.Unmarshal([]byte(r.body), &st); err != nil {
		t.Fatalf("GET /status: %v in %s", err, r.body)
	}
	return st
}

// waitSince waits until n's DB holds seq.
func (n *testNode) waitSince(t *testing.T, seq int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.DB().WaitSince(ctx, seq); err != nil {
		t.Fatalf("%s waiting for seq %d (since %d): %v", n.NodeID(), seq, n.DB().Since(), err)
	}
}

func (n *testNode) metric(t *testing.T, line string) bool {
	t.Helper()
	m := do(t, "GET", n.url+"/metrics", "", "").body
	for _, l := range strings.Split(m, "\n") {
		if l == line {
			return true
		}
	}
	return false
}

func wantMetric(t *testing.T, n *testNode, line string) {
	t.Helper()
	if !n.metric(t, line) {
		t.Errorf("%s metrics lack %q", n.NodeID(), line)
	}
}

func appendN(t *testing.T, n *testNode, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		wantCode(t, do(t, "POST", n.url+"/log", "", fmt.Sprintf(`{"n":%d}`, i)), 200)
	}
}

func decode[T any](t *testing.T, r resp) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(r.body), &v); err != nil {
		t.Fatalf("%v in %s", err, r.body)
	}
	return v
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestPromoteOnPrimary: 409, counted, nothing changes.
func TestPromoteOnPrimary(t *testing.T) {
	p := startNode(t, Config{NodeID: "p"})
	appendN(t, p, 0, 2)
	r := do(t, "POST", p.url+"/promote", "", `{}`)
	wantCode(t, r, 409)
	if e := decode[roleErrorBody](t, r); !strings.Contains(e.Error, "already the primary") {
		t.Errorf("error %q does not say the node is the primary", e.Error)
	}
	st := p.status(t)
	if st.Role != "primary" || st.Epoch != 0 || st.Since != 1 || st.EpochRecords != 0 {
		t.Errorf("after a refused promote: %+v", st)
	}
	wantMetric(t, p, `flume_role_changes_total{op="promote",outcome="is_primary"} 1`)
}

// TestPromote: a follower becomes the primary of epoch 1 from its since+1,
// takes appends, shows the epoch history in /status and /metrics, and
// serves replication on the listener it kept as a follower: a node that
// was pointed at it before the promotion (and refused until then) catches
// up without a restart.
func TestPromote(t *testing.T) {
	p := startNode(t, Config{NodeID: "p"})
	f := startNode(t, Config{NodeID: "f", Follow: p.replAddr})
	appendN(t, p, 0, 3)
	f.waitSince(t, 2)
	g := startNode(t, Config{NodeID: "g", Follow: f.replAddr})

	r := do(t, "POST", f.url+"/promote", "", "")
	wantCode(t, r, 200)
	res := decode[PromoteResult](t, r)
	if res.Epoch != 1 || res.Start != 3 || len(res.Promotion) != 32 || res.ReplAddr != f.replAddr || res.Warning != "" {
		t.Errorf("promote: got %+v, want epoch 1 from seq 3 with replication at %s", res, f.replAddr)
	}
	r = do(t, "POST", f.url+"/log", "", `{"n":3}`)
	wantCode(t, r, 200)
	if strings.TrimSpace(r.body) != `{"seq":3}` {
		t.Errorf("append on the promoted node: %s", r.body)
	}
	st := f.status(t)
	if st.Role != "primary" || st.Epoch != 1 || st.FencedEpoch == nil || *st.FencedEpoch != 1 || st.EpochRecords != 1 ||
		len(st.Epochs) != 1 || st.Epochs[0].Epoch != 1 || st.Epochs[0].Start != 3 || st.Epochs[0].Promotion != res.Promotion || st.Primary != nil {
		t.Errorf("status after promote: %+v", st)
	}
	wantMetric(t, f, `flume_role_changes_total{op="promote",outcome="ok"} 1`)
	wantMetric(t, f, `flume_epoch 1`)
	wantMetric(t, f, `flume_fenced_epoch 1`)
	wantMetric(t, f, `flume_epoch_records 1`)
	wantMetric(t, f, `flume_role{role="primary"} 1`)

	// g was refused while f followed; now it replicates from f, entries of
	// the new epoch included.
	g.waitSince(t, 3)
	e, err := g.DB().Log().Entry(3)
	if err != nil || e.Epoch != 1 {
		t.Errorf("g's entry 3: epoch %d, %v; want epoch 1", e.Epoch, err)
	}
	if gs := g.status(t); gs.Hash != f.status(t).Hash {
		t.Errorf("g's hash %s, f's %s", gs.Hash, f.status(t).Hash)
	}
	// A promoted node with a follower has every field of the golden
	// primary's /status.
	testutil.Eventually(t, "f to list g", 10*time.Second, func() bool { return len(f.status(t).Followers) == 1 })
	checkLiveStatusKeys(t, do(t, "GET", f.url+"/status", "", "").body, "primary.json")
	// A second promote is refused: f is the primary now.
	wantCode(t, do(t, "POST", f.url+"/promote", "", ""), 409)
	// The old primary was not told: it still believes it is the primary
	// (fencing it is protocol v3's job), with its own epoch 0.
	if ps := p.status(t); ps.Role != "primary" || ps.Epoch != 0 {
		t.Errorf("old primary: %+v", ps)
	}
}

// TestPromotePeers: without force a reachable peer with a longer log, or
// with a higher epoch, refuses the promotion with 409 naming it; an
// unreachable peer and the node itself are reported and do not block;
// force promotes anyway.
func TestPromotePeers(t *testing.T) {
	p := startNode(t, Config{NodeID: "p"})
	px, err := netproxy.New(p.replAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	slow := startNode(t, Config{NodeID: "slow", Follow: px.Addr()})
	fast := startNode(t, Config{NodeID: "fast", Follow: p.replAddr})
	appendN(t, p, 0, 2)
	slow.waitSince(t, 1)
	px.Blackhole()
	appendN(t, p, 2, 5)
	fast.waitSince(t, 4)
	dead := "http://" + closedAddr(t)

	body := fmt.Sprintf(`{"peers":[%q,%q,%q]}`, fast.url, dead, strings.TrimPrefix(slow.url, "http://"))
	r := do(t, "POST", slow.url+"/promote", "", body)
	wantCode(t, r, 409)
	e := decode[roleErrorBody](t, r)
	if e.Peer != fast.url || !strings.Contains(e.Error, fast.url) || !strings.Contains(e.Error, "longer log") {
		t.Errorf("refusal %+v: want it to name %s and its longer log", e, fast.url)
	}
	results := map[string]string{}
	for _, pr := range e.Peers {
		results[pr.URL] = pr.Result
	}
	if results[fast.url] != PeerLongerLog || results[dead] != PeerUnreachable || results[slow.url] != PeerSelf {
		t.Errorf("peer reports %v", results)
	}
	if st := slow.status(t); st.Role != "follower" || st.EpochRecords != 0 || st.Since != 1 {
		t.Errorf("a refused promote changed the node: %+v", st)
	}
	wantMetric(t, slow, `flume_role_changes_total{op="promote",outcome="peer_ahead"} 1`)

	// Force: promoted all the same, and the answer still reports the peers.
	r = do(t, "POST", slow.url+"/promote", "", `{"force":true,"peers":[`+fmt.Sprintf("%q", fast.url)+`]}`)
	wantCode(t, r, 200)
	if res := decode[PromoteResult](t, r); res.Epoch != 1 || res.Start != 2 || len(res.Peers) != 1 || res.Peers[0].Result != PeerLongerLog {
		t.Errorf("forced promote: %+v", res)
	}

	// A higher epoch blocks too: fast, at the same since as p, against
	// slow (epoch 1) named as its peer.
	r = do(t, "POST", fast.url+"/promote", "", fmt.Sprintf(`{"peers":[%q]}`, slow.url))
	wantCode(t, r, 409)
	if e := decode[roleErrorBody](t, r); e.Peer != slow.url || !strings.Contains(e.Error, "higher epoch (1 > ours 0)") {
		t.Errorf("refusal %+v: want slow's higher epoch", e)
	}
	// Bad input: an unknown field, a URL that is not http.
	for _, b := range []string{`{"forc":true}`, `{"peers":["ftp://x"]}`, `[1]`} {
		wantCode(t, do(t, "POST", fast.url+"/promote", "", b), 400)
	}
	wantMetric(t, fast, `flume_role_changes_total{op="promote",outcome="bad_request"} 3`)
}

// plainLog hides a log's epoch history (it is only a flume.Log).
type plainLog struct{ flume.Log }

// TestPromoteNoEpochs: a log without an epoch history cannot be promoted:
// 409 naming it, and the node still follows.
func TestPromoteNoEpochs(t *testing.T) {
	p := startNode(t, Config{NodeID: "p"})
	f := startNode(t, Config{NodeID: "f", Follow: p.replAddr, Log: plainLog{memlog.New()}})
	appendN(t, p, 0, 1)
	f.waitSince(t, 0)
	r := do(t, "POST", f.url+"/promote", "", "")
	wantCode(t, r, 409)
	if e := decode[roleErrorBody](t, r); !strings.Contains(e.Error, "no epoch history") {
		t.Errorf("error %q does not name the missing epoch history", e.Error)
	}
	appendN(t, p, 1, 2)
	f.waitSince(t, 1) // still replicating
	if st := f.status(t); st.Role != "follower" || st.FencedEpoch != nil || st.Epochs != nil {
		t.Errorf("status: %+v", st)
	}
	wantMetric(t, f, `flume_role_changes_total{op="promote",outcome="no_epochs"} 1`)
}

// TestFollowBadTargets: repointing a follower to an unreachable address
// changes nothing (502); to something that is not a flume primary it
// switches and keeps retrying (502, not ready); malformed or own
// addresses are 400. Each is counted.
func TestFollowBadTargets(t *testing.T) {
	p := startNode(t, Config{NodeID: "p"})
	f := startNode(t, Config{NodeID: "f", Follow: p.replAddr, ReadyTimeout: 300 * time.Millisecond})
	appendN(t, p, 0, 1)
	f.waitSince(t, 0)

	nowhere := closedAddr(t)
	r := do(t, "POST", f.url+"/follow", "", fmt.Sprintf(`{"primary":%q}`, nowhere))
	wantCode(t, r, 502)
	if e := decode[roleErrorBody](t, r); !strings.Contains(e.Error, "unreachable") || !strings.Contains(e.Error, nowhere) || !strings.Contains(e.Error, "nothing changed") {
		t.Errorf("error %q: want unreachable, naming %s", e.Error, nowhere)
	}
	appendN(t, p, 1, 2)
	f.waitSince(t, 1) // still following p
	if st := f.status(t); st.Role != "follower" || st.Primary == nil || st.Primary.Primary != p.replAddr {
		t.Errorf("after an unreachable repoint: %+v", st.Primary)
	}

	for _, b := range []string{`{}`, `{"primary":"no-port"}`, fmt.Sprintf(`{"primary":%q}`, f.replAddr),
		`{"primary":"127.0.0.1:1","primary_http":"ftp://x"}`, `{"primry":"127.0.0.1:1"}`} {
		r := do(t, "POST", f.url+"/follow", "", b)
		wantCode(t, r, 400)
	}

	// An HTTP server is reachable but speaks no replication.
	web := httptest.NewServer(http.NotFoundHandler())
	defer web.Close()
	webAddr := strings.TrimPrefix(web.URL, "http://")
	r = do(t, "POST", f.url+"/follow", "", fmt.Sprintf(`{"primary":%q}`, webAddr))
	wantCode(t, r, 502)
	e := decode[roleErrorBody](t, r)
	if e.Primary != webAddr || !strings.Contains(e.Error, "no replication handshake") || !strings.Contains(e.Error, "retrying") {
		t.Errorf("not-flume repoint: %+v", e)
	}
	if st := f.status(t); st.Role != "follower" || st.Primary == nil || st.Primary.Primary != webAddr || st.Since != 1 {
		t.Errorf("after a not-flume repoint: since %d upstream %+v", st.Since, st.Primary)
	}
	wantMetric(t, f, `flume_role_changes_total{op="follow",outcome="unreachable"} 1`)
	wantMetric(t, f, `flume_role_changes_total{op="follow",outcome="bad_request"} 5`)
	wantMetric(t, f, `flume_role_changes_total{op="follow",outcome="not_ready"} 1`)

	// And back: repointed at p again, it resumes.
	r = do(t, "POST", f.url+"/follow", "", fmt.Sprintf(`{"primary":%q,"primary_http":%q}`, p.replAddr, p.url))
	wantCode(t, r, 200)
	if res := decode[FollowResult](t, r); res.Demoted || res.Primary != p.replAddr || res.PrimaryHTTP != p.url {
		t.Errorf("repoint back: %+v", res)
	}
	appendN(t, p, 2, 3)
	f.waitSince(t, 2)
	r = do(t, "POST", f.url+"/log", "", `{}`)
	wantCode(t, r, 421)
	if e := decode[errorBody](t, r); e.Primary != p.replAddr || e.PrimaryHTTP != p.url {
		t.Errorf("421 %+v: want primary %s and primary_http %s", e, p.replAddr, p.url)
	}
}

// TestFollowDeposesPrimary: a primary told to follow demotes itself. Its
// k=1 append that was waiting for an acknowledgement fails with 409
// "deposed" naming the new primary; appends get 421. The new primary
// lacks that entry, so the handshake refuses the old primary as ahead
// (rejoin by a verified cut is not built yet): the answer says so, and the
// node stays a follower with its log untouched.
func TestFollowDeposesPrimary(t *testing.T) {
	p := startNode(t, Config{NodeID: "p", SyncReplicas: 1, SyncTimeout: time.Minute})
	px, err := netproxy.New(p.replAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	f := startNode(t, Config{NodeID: "f", Follow: px.Addr()})
	wantCode(t, do(t, "POST", p.url+"/log", "", `{"acked":true}`), 200)
	f.waitSince(t, 0)

	px.Blackhole()
	waiting := make(chan resp, 1)
	go func() {
		req, _ := http.NewRequest("POST", p.url+"/log", strings.NewReader(`{"acked":false}`))
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			waiting <- resp{code: -1, body: err.Error()}
			return
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		waiting <- resp{code: r.StatusCode, body: string(b)}
	}()
	p.waitSince(t, 1) // in p's log, waiting for f's ack

	wantCode(t, do(t, "POST", f.url+"/promote", "", ""), 200)
	r := do(t, "POST", p.url+"/follow", "", fmt.Sprintf(`{"primary":%q,"primary_http":%q}`, f.replAddr, f.url))
	wantCode(t, r, 409)
	e := decode[roleErrorBody](t, r)
	// The old primary holds seq 1, which the new one lacks: its rejoin needs
	// a verified cut, which this server (no data directory, so no forked/
	// to keep the cut entries in) refuses, cutting nothing.
	if !e.Demoted || e.Primary != f.replAddr || e.State != string(repl.StateRefused) || !strings.Contains(e.Error, "no fork directory") {
		t.Errorf("repoint of the old primary: %+v; want demoted, its rejoin refused for want of a fork directory", e)
	}

	w := <-waiting
	if w.code != 409 {
		t.Fatalf("waiting append: %d %s, want 409 deposed", w.code, w.body)
	}
	we := decode[errorBody](t, w)
	if !strings.HasPrefix(we.Error, "deposed: now following "+f.replAddr) || we.PrimaryHTTP != f.url || we.First == nil || *we.First != 1 {
		t.Errorf("waiting append: %+v", we)
	}
	r = do(t, "POST", p.url+"/log", "", `{}`)
	wantCode(t, r, 421)
	if e := decode[errorBody](t, r); e.Primary != f.replAddr || e.PrimaryHTTP != f.url {
		t.Errorf("421 after demotion: %+v", e)
	}
	st := p.status(t)
	if st.Role != "follower" || st.Since != 1 || st.Primary == nil || st.Primary.Primary != f.replAddr || st.Primary.HTTP != f.url {
		t.Errorf("old primary after demotion: since %d role %s upstream %+v", st.Since, st.Role, st.Primary)
	}
	wantMetric(t, p, `flume_append_errors_total{reason="deposed"} 1`)
	wantMetric(t, p, `flume_role_changes_total{op="follow",outcome="refused"} 1`)
	wantMetric(t, p, `flume_role{role="follower"} 1`)
}

// TestFailoverInProcess: the manual failover end to end over loopback.
// Three nodes in sync; the follower f1 is promoted (its peers checked), f2
// and then the old primary are repointed to it; the old primary, which
// holds nothing f1 lacks, is demoted and rejoins; new appends reach all
// three, whose logs end with the same chain hash; replication counters do
// not go down across the role changes.
func TestFailoverInProcess(t *testing.T) {
	p := startNode(t, Config{NodeID: "p"})
	f1 := startNode(t, Config{NodeID: "f1", Follow: p.replAddr})
	f2 := startNode(t, Config{NodeID: "f2", Follow: p.replAddr})
	appendN(t, p, 0, 10)
	f1.waitSince(t, 9)
	f2.waitSince(t, 9)
	before := f1.ReplStats().EntriesReceived

	// The old primary still answers: promoting would make two primaries, so
	// promote refuses unless forced (this hand-over then demotes it).
	r := do(t, "POST", f1.url+"/promote", "", fmt.Sprintf(`{"peers":[%q,%q]}`, f2.url, p.url))
	wantCode(t, r, 409)
	if e := decode[errorBody](t, r); !strings.Contains(e.Error, "live primary") {
		t.Fatalf("promote with a live primary among the peers: %+v", e)
	}
	r = do(t, "POST", f1.url+"/promote", "", fmt.Sprintf(`{"force":true,"peers":[%q,%q]}`, f2.url, p.url))
	wantCode(t, r, 200)
	res := decode[PromoteResult](t, r)
	if res.Epoch != 1 || res.Start != 10 || len(res.Peers) != 2 || res.Peers[0].Result != PeerOK || res.Peers[1].Result != PeerLivePrimary {
		t.Fatalf("promote: %+v", res)
	}
	for _, n := range []*testNode{f2, p} {
		r := do(t, "POST", n.url+"/follow", "", fmt.Sprintf(`{"primary":%q,"primary_http":%q}`, f1.replAddr, f1.url))
		wantCode(t, r, 200)
		if fr := decode[FollowResult](t, r); fr.Primary != f1.replAddr || fr.Demoted != (n == p) {
			t.Errorf("%s follow: %+v", n.NodeID(), fr)
		}
	}
	appendN(t, f1, 10, 13)
	for _, n := range []*testNode{f2, p} {
		n.waitSince(t, 12)
		e, err := n.DB().Log().Entry(12)
		if err != nil || e.Epoch != 1 {
			t.Errorf("%s entry 12: epoch %d %v, want 1", n.NodeID(), e.Epoch, err)
		}
		if g := do(t, "GET", n.url+"/log/12", "", ""); g.hdr.Get("Flume-Epoch") != "1" || do(t, "GET", n.url+"/log/9", "", "").hdr.Get("Flume-Epoch") != "0" {
			t.Errorf("%s: GET /log/12 Flume-Epoch %q, want 1 (and 0 for seq 9)", n.NodeID(), g.hdr.Get("Flume-Epoch"))
		}
		if st, want := n.status(t), f1.status(t); st.Hash != want.Hash || st.Role != "follower" {
			t.Errorf("%s: role %s hash %s, want follower at %s", n.NodeID(), st.Role, st.Hash, want.Hash)
		}
		wantCode(t, do(t, "POST", n.url+"/log", "", `{}`), 421)
	}
	testutil.Eventually(t, "f1 to list both followers as connected", 10*time.Second, func() bool {
		n := 0
		for _, fs := range f1.status(t).Followers {
			if fs.Connected && fs.AckedSeq == 12 {
				n++
			}
		}
		return n == 2
	})
	if got := f1.ReplStats().EntriesReceived; got < before {
		t.Errorf("entries received went down from %d to %d across the promotion", before, got)
	}
	wantMetric(t, p, `flume_role_changes_total{op="follow",outcome="ok"} 1`)
}

// TestShutdownDuringFollow: a repoint waiting for its handshake (to a
// listener that accepts and never answers) does not hold Shutdown up: it is
// answered 503, and every goroutine ends (goleak in TestMain).
func TestShutdownDuringFollow(t *testing.T) {
	p := startNode(t, Config{NodeID: "p"})
	f := startNode(t, Config{NodeID: "f", Follow: p.replAddr, ReadyTimeout: time.Minute})
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	defer func() {
		silent.Close()
		for c := range accepted {
			c.Close()
		}
	}()
	answered := make(chan resp, 1)
	go func() {
		req, _ := http.NewRequest("POST", f.url+"/follow", strings.NewReader(fmt.Sprintf(`{"primary":%q}`, silent.Addr().String())))
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			answered <- resp{code: -1, body: err.Error()}
			return
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		answered <- resp{code: r.StatusCode, body: string(b)}
	}()
	// The probe, then the follower's own connection.
	for range 2 {
		select {
		case <-accepted:
		case <-time.After(10 * time.Second):
			t.Fatal("the repoint never dialled the silent listener")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if r := <-answered; r.code != 503 {
		t.Errorf("repoint during shutdown: %d %s, want 503", r.code, r.body)
	}
}
