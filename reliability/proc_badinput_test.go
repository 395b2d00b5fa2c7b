package reliability

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flume-go/flume/internal/testutil"
)

// metric reads one un-labelled value from a node's /metrics.
func (pc *procCluster) metric(n *node, name string) (float64, error) {
	resp, err := pc.request(context.Background(), "GET", "http://"+n.httpAddr+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(rest), 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("metric %s not in /metrics of %s", name, n.name)
}

// rawHTTP writes b to addr on a fresh connection and returns what the
// server answered before closing (or the deadline).
func rawHTTP(addr string, b []byte, d time.Duration) (string, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(d))
	c.Write(b)
	if tc, ok := c.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
	out, err := io.ReadAll(c)
	return string(out), err
}

// TestProcessBadInput: while a legitimate client keeps appending to a real
// primary (with a follower), hostile input arrives at both ports: random
// bytes and broken requests to the HTTP port, malformed API requests,
// missing and wrong bearer tokens, garbage to the replication port, and a
// follower process with the wrong secret. The server answers each with a
// 4xx (never a 5xx), keeps serving, counts the auth failures in /metrics,
// and stores nothing but the legitimate appends: the history checker holds
// on the live HTTP view and on the data directories, and the chain hash at
// the position seen before the attack is unchanged.
func TestProcessBadInput(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real processes; skipped under -short")
	}
	seed := testSeed(t)
	rnd := rand.New(rand.NewSource(seed))
	pc := newProcCluster(t, procConfig{followers: 1, k: 0})
	ctx, cancel := context.WithCancel(context.Background())
	wg := pc.runClients(ctx, 2, fmt.Sprintf("b%d", seed))
	defer func() { cancel(); wg.Wait() }()
	target := pc.acked.Load() + 20
	if !testutil.Poll(10*time.Second, func() bool { return pc.acked.Load() >= target }) {
		t.Logf("not reached within 10s: pc.acked.Load() >= target; going on")
	}
	before, err := pc.status(pc.primary)
	if err != nil {
		t.Fatal(err)
	}
	baseFDs := pc.primary.fds()
	http0 := pc.primary.httpAddr
	base := "http://" + http0

	// A slow client that never finishes its headers: closed by the
	// server's header timeout, checked at the end.
	slow, err := net.Dial("tcp", http0)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	slow.Write([]byte("POST /log HTTP/1.1\r\nHost: x\r\nAuthoriz"))
	slowStart := time.Now()

	phase := time.Now()
	logPhase := func(name string) {
		t.Logf("%s took %v", name, time.Since(phase).Round(time.Millisecond))
		phase = time.Now()
	}

	// 1. Raw bytes to the HTTP port.
	for i := 0; i < 30; i++ {
		var b []byte
		switch i % 5 {
		case 0:
			b = make([]byte, 1+rnd.Intn(16<<10))
			rnd.Read(b)
		case 1:
			b = []byte("GARBAGE / HTTP/9.9\r\n\r\n")
		case 2:
			b = []byte("POST /log HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + pc.secret + "\r\nContent-Length: 99999999999\r\n\r\n{\"a\":")
		case 3:
			b = []byte("POST /log HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + pc.secret + "\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nnot-hex\r\n")
		case 4:
			b = []byte("GET /log HTTP/1.1\r\nHost: x\r\n" + strings.Repeat("X-Flood: "+strings.Repeat("a", 1000)+"\r\n", 2000) + "\r\n")
		}
		out, err := rawHTTP(http0, b, 5*time.Second)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Errorf("raw input %d: server kept the connection open 5s after we stopped sending", i)
		}
		// 505 is the right answer to HTTP/9.9; a 500 or a 2xx never is.
		if strings.HasPrefix(out, "HTTP/1.1 500") || strings.HasPrefix(out, "HTTP/1.1 2") {
			t.Errorf("raw input %d (%.40q): answered %.60q, want a 4xx/505 or a close", i, b, out)
		}
	}

	logPhase("raw HTTP input")
	// 2. Malformed API requests, each with the status it must get.
	authFailures := 0
	cases := []struct {
		method, path, ctype, body string
		token                     string // "" = the right one, "-" = none
		want                      int
	}{
		{"POST", "/log", "application/json", `{"a":`, "", 400},
		{"POST", "/log", "application/json", ``, "", 400},
		{"POST", "/log", "application/json", `{"a":1} {"b":2}`, "", 400},
		{"POST", "/log", "application/x-ndjson", "{\"ok\":1}\n{bad\n", "", 400},
		{"POST", "/log", "application/json", "\xff\xfe", "", 400},
		{"GET", "/log/abc", "", "", "", 400},
		{"GET", "/log/-1", "", "", "", 400},
		{"GET", "/log/99999999999999", "", "", "", 404},
		{"GET", "/log?gt=abc", "", "", "", 400},
		{"GET", "/log?limit=-5", "", "", "", 400},
		{"GET", "/log?reverse=true&live=true", "", "", "", 400},
		{"DELETE", "/log", "", "", "", 405},
		{"GET", "/nope", "", "", "", 404},
		{"POST", "/log", "application/json", `{"sneaky":1}`, "-", 401},
		{"POST", "/log", "application/json", `{"sneaky":2}`, "wrong", 401},
		{"GET", "/status", "", "", "Bearer", 401},
	}
	for _, tc := range cases {
		req, _ := http.NewRequest(tc.method, base+tc.path, strings.NewReader(tc.body))
		if tc.ctype != "" {
			req.Header.Set("Content-Type", tc.ctype)
		}
		switch tc.token {
		case "":
			req.Header.Set("Authorization", "Bearer "+pc.secret)
		case "-":
		default:
			req.Header.Set("Authorization", "Bearer "+tc.token)
			authFailures++
		}
		if tc.token == "-" {
			authFailures++
		}
		resp, err := pc.client.Do(req)
		if err != nil {
			t.Errorf("%s %s: %v", tc.method, tc.path, err)
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s %s %q: got %d %s, want %d", tc.method, tc.path, tc.body, resp.StatusCode, b, tc.want)
		}
	}

	logPhase("malformed requests")
	// 3. Garbage to the replication port, all at once (silent ones are
	// dropped after the handshake bound, DeadAfter).
	var gw sync.WaitGroup
	for i := 0; i < 24; i++ {
		kind, b := garbage(rnd, i)
		gw.Add(1)
		go func() {
			defer gw.Done()
			c, err := net.Dial("tcp", pc.primary.replAddr)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			c.Write(b)
			_, err = io.Copy(io.Discard, c)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Errorf("repl garbage %s: primary kept the connection open 10s", kind)
			}
		}()
	}
	gw.Wait()
	logPhase("replication-port garbage")
	// 4. A follower process with the wrong secret is refused and counted.
	replAuth0, err := pc.metric(pc.primary, "flume_repl_auth_failures_total")
	if err != nil {
		t.Fatal(err)
	}
	wrongSecret := filepath.Join(pc.dir, "wrong-secret")
	os.WriteFile(wrongSecret, []byte("not-the-secret\n"), 0o600)
	intruder := &node{name: "intruder", follow: pc.primary.replAddr, data: filepath.Join(pc.dir, "intruder"),
		logPath: filepath.Join(pc.dir, "intruder.log"),
		extra:   []string{"--secret-file", wrongSecret, "--log-level", "warn"}}
	pc.startFresh(intruder)
	defer pc.stop(intruder)
	if !testutil.Poll(10*time.Second, func() bool {
		v, err := pc.metric(pc.primary, "flume_repl_auth_failures_total")
		return err == nil && v > replAuth0
	}) {
		t.Errorf("primary did not count the wrong-secret follower in flume_repl_auth_failures_total")
	}
	// The intruder learned nothing (its own API takes its own secret).
	ist := func() (int64, string) {
		req, _ := http.NewRequest("GET", "http://"+intruder.httpAddr+"/status", nil)
		req.Header.Set("Authorization", "Bearer not-the-secret")
		resp, err := pc.client.Do(req)
		if err != nil {
			return -2, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return parseSince(b), string(b)
	}
	if s, body := ist(); s != -1 {
		t.Errorf("wrong-secret follower has since %d, want -1 (learned nothing): %s", s, body)
	}

	logPhase("wrong-secret follower")
	// The legitimate client kept working throughout.
	target = pc.acked.Load() + 20
	if !testutil.Poll(10*time.Second, func() bool { return pc.acked.Load() >= target }) {
		t.Errorf("legitimate appends stalled after the hostile input")
	}
	cancel()
	wg.Wait()

	// Every hostile connection was closed: the primary's descriptors are
	// back to what they were with the legitimate clients connected.
	// (Our own idle keep-alive connections are closed first: they are not
	// the server's doing.)
	pc.stop(intruder)
	pc.client.CloseIdleConnections()
	if !testutil.Poll(15*time.Second, func() bool { return pc.primary.fds() <= baseFDs }) {
		t.Errorf("primary holds %d file descriptors after the attack, %d before:\n%s", pc.primary.fds(), baseFDs, pc.primary.fdList())
	}
	t.Logf("primary file descriptors: %d before the attack, %d after", baseFDs, pc.primary.fds())

	httpAuth, err := pc.metric(pc.primary, "flume_http_auth_failures_total")
	if err != nil {
		t.Error(err)
	} else if int(httpAuth) < authFailures {
		t.Errorf("flume_http_auth_failures_total = %v, want >= %d", httpAuth, authFailures)
	}

	// The slow client is cut off by the header timeout (if that already
	// happened, the answer and the close are waiting in our socket).
	slow.SetReadDeadline(later(slowStart.Add(20*time.Second), time.Now().Add(time.Second)))
	if _, err := io.ReadAll(slow); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Errorf("a client that never finished its headers was kept for 20s")
		}
	}

	for _, w := range pc.weird {
		t.Errorf("unexpected response to a legitimate append: %s", w)
	}
	if err := pc.waitCaughtUp(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	if rep := pc.checkLive(); !rep.OK() {
		t.Fatal(rep.Err())
	}
	off := pc.checkOffline()
	if !off.OK() {
		t.Fatal(off.Err())
	}
	// The history before the attack is unchanged: same chain hash there.
	p, err := readOffline("primary", pc.primary.logDir())
	if err != nil {
		t.Fatal(err)
	}
	if before.Since >= 0 && p.Entries[before.Since].Hash != before.Hash {
		t.Fatalf("chain hash at %d changed from %s to %s", before.Since, before.Hash, p.Entries[before.Since].Hash)
	}
	t.Logf("hostile input done; %d appends acknowledged, %d entries verified, %d HTTP auth failures counted",
		pc.acked.Load(), off.EntriesVerified, int(httpAuth))
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// parseSince extracts "since" from a /status body (-2 if absent).
func parseSince(b []byte) int64 {
	var st struct {
		Since *int64 `json:"since"`
	}
	if json.Unmarshal(b, &st) != nil || st.Since == nil {
		return -2
	}
	return *st.Since
}

// TestProcessSecondOpenerRefused: a second `flume serve` on a data
// directory that a running node holds exits with an error naming the lock,
// and the running node and its data are unaffected.
func TestProcessSecondOpenerRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real processes; skipped under -short")
	}
	seed := testSeed(t)
	pc := newProcCluster(t, procConfig{followers: 1, k: 0})
	ctx, cancel := context.WithCancel(context.Background())
	wg := pc.runClients(ctx, 1, fmt.Sprintf("lock%d", seed))
	defer func() { cancel(); wg.Wait() }()
	for _, n := range []*node{pc.primary, pc.followers[0]} {
		dup := &node{name: n.name + "-dup", data: n.data, follow: n.follow, logPath: filepath.Join(pc.dir, n.name+"-dup.log"),
			httpAddr: freePort(t), replAddr: freePort(t), extra: n.extra}
		pc.start(dup)
		select {
		case <-dup.exited:
		case <-time.After(10 * time.Second):
			pc.stop(dup)
			t.Fatalf("a second node on %s's data directory kept running; log:\n%s", n.name, dup.logTail())
		}
		if code := dup.cmd.ProcessState.ExitCode(); code == 0 {
			t.Errorf("second opener of %s's data exited 0", n.name)
		}
		if log := dup.logTail(); !strings.Contains(strings.ToLower(log), "lock") {
			t.Errorf("second opener of %s's data: error does not mention the lock:\n%s", n.name, log)
		}
	}
	target := pc.acked.Load() + 20
	if !testutil.Poll(10*time.Second, func() bool { return pc.acked.Load() >= target }) {
		t.Fatal("appends stalled after the second opener")
	}
	cancel()
	wg.Wait()
	if err := pc.waitCaughtUp(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if rep := pc.checkOffline(); !rep.OK() {
		t.Fatal(rep.Err())
	}
}
