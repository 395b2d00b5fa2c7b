package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/flume-go/flume/internal/testutil"
	"github.com/flume-go/flume/server"
)

// End-to-end tests: they build the flume binary and run real processes on
// loopback ports. Each process is started with port 0 and its addresses are
// read from its JSON log ("serving HTTP" / "serving replication").

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

func flumeBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "flume-e2e-bin-")
		if err != nil {
			buildErr = err
			return
		}
		buildPath = filepath.Join(dir, "flume")
		out, err := exec.Command("go", "build", "-o", buildPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildPath != "" {
		os.RemoveAll(filepath.Dir(buildPath))
	}
	os.Exit(code)
}

// syncBuffer is a bytes.Buffer safe for one writer and many readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// proc is a running "flume serve".
type proc struct {
	t        *testing.T
	name     string
	cmd      *exec.Cmd
	logs     *syncBuffer
	exited   chan struct{}
	exitErr  error
	url      string // HTTP API
	replAddr string // primary only
}

func startServe(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	bin := flumeBinary(t)
	args = append([]string{"serve", "--http", "127.0.0.1:0", "--repl", "127.0.0.1:0", "--log-format", "json", "--node-id", name}, args...)
	p := &proc{t: t, name: name, logs: &syncBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), "FLUME_FSYNC=never") // fast on a shared box; flags still win
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addrs := make(chan [2]string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		var httpAddr, replAddr string
		sent := false
		for sc.Scan() {
			line := sc.Text()
			p.logs.Write([]byte(line + "\n"))
			var rec struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil {
				switch rec.Msg {
				case "serving HTTP":
					httpAddr = rec.Addr
				case "serving replication":
					replAddr = rec.Addr
				}
			}
			follower := strings.Contains(strings.Join(args, " "), "--follow")
			if !sent && httpAddr != "" && (replAddr != "" || follower) {
				addrs <- [2]string{httpAddr, replAddr}
				sent = true
			}
		}
		p.exitErr = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() { p.kill() })
	select {
	case a := <-addrs:
		p.url, p.replAddr = "http://"+a[0], a[1]
	case <-p.exited:
		t.Fatalf("%s exited before serving: %v\n%s", name, p.exitErr, p.logs.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("%s did not start serving:\n%s", name, p.logs.String())
	}
	return p
}

// kill sends SIGKILL and waits.
func (p *proc) kill() {
	select {
	case <-p.exited:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// stop sends SIGTERM and checks a clean exit 0.
func (p *proc) stop() {
	p.t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(20 * time.Second):
		p.t.Fatalf("%s did not exit after SIGTERM:\n%s", p.name, p.logs.String())
	}
	if p.exitErr != nil {
		p.t.Errorf("%s exited with %v after SIGTERM:\n%s", p.name, p.exitErr, p.logs.String())
	}
}

func httpDo(t *testing.T, method, url, token, ctype, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func status(t *testing.T, p *proc, token string) server.Status {
	t.Helper()
	code, body := httpDo(t, "GET", p.url+"/status", token, "", "")
	if code != 200 {
		t.Fatalf("%s /status: %d %s", p.name, code, body)
	}
	var st server.Status
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("%s /status: %v", p.name, err)
	}
	return st
}

// waitFor polls cond until it holds or d passes; on failure it reports
// cond's last detail.
func waitFor(t *testing.T, what string, d time.Duration, cond func() (bool, string)) {
	t.Helper()
	var detail string
	if !testutil.Poll(d, func() (ok bool) { ok, detail = cond(); return ok }) {
		t.Fatalf("timed out after %v waiting for %s: %s", d, what, detail)
	}
}

// TestE2EPrimaryTwoFollowers: a primary and two followers as processes.
// Writes through POST /log, reads through GET /log on a follower, lag in
// /status reaching zero, a follower SIGKILLed and restarted catches up, a
// wrong bearer token gets 401, SIGTERM exits 0, and verify checks the
// primary's data directory offline.
func TestE2EPrimaryTwoFollowers(t *testing.T) {
	const token = "e2e-secret"
	secret := writeSecret(t, token)
	pdir, f1dir, f2dir := t.TempDir(), t.TempDir(), t.TempDir()
	p := startServe(t, "p", "--data", pdir, "--secret-file", secret, "--fsync", "always")
	f1 := startServe(t, "f1", "--data", f1dir, "--follow", p.replAddr, "--secret-file", secret)
	f2 := startServe(t, "f2", "--data", f2dir, "--follow", p.replAddr, "--secret-file", secret)

	// Writes: single values and one NDJSON batch.
	for i := range 20 {
		code, body := httpDo(t, "POST", p.url+"/log", token, "application/json", fmt.Sprintf(`{"i":%d}`, i))
		if code != 200 || body != fmt.Sprintf("{\"seq\":%d}\n", i) {
			t.Fatalf("POST %d: %d %s", i, code, body)
		}
	}
	var batch strings.Builder
	for i := 20; i < 100; i++ {
		fmt.Fprintf(&batch, "{\"i\":%d}\n", i)
	}
	if code, body := httpDo(t, "POST", p.url+"/log", token, server.NDJSONType, batch.String()); code != 200 || !strings.Contains(body, `"last":99`) {
		t.Fatalf("POST batch: %d %s", code, body)
	}
	// A wrong token gets 401; a follower refuses writes with 421.
	if code, _ := httpDo(t, "POST", p.url+"/log", "wrong", "", `{}`); code != 401 {
		t.Errorf("wrong token: %d, want 401", code)
	}
	if code, _ := httpDo(t, "GET", f1.url+"/status", "", "", ""); code != 401 {
		t.Errorf("no token on follower: %d, want 401", code)
	}
	if code, body := httpDo(t, "POST", f1.url+"/log", token, "", `{}`); code != 421 || !strings.Contains(body, p.replAddr) {
		t.Errorf("POST to follower: %d %s, want 421 naming %s", code, body, p.replAddr)
	}

	caughtUp := func(followers ...string) func() (bool, string) {
		return func() (bool, string) {
			st := status(t, p, token)
			n := 0
			for _, f := range st.Followers {
				for _, want := range followers {
					if f.NodeID == want && f.Connected && f.AckedSeq == st.Since && f.LagEntries == 0 {
						n++
					}
				}
			}
			return n == len(followers), fmt.Sprintf("%+v", st)
		}
	}
	waitFor(t, "both followers at lag 0", 20*time.Second, caughtUp("f1", "f2"))

	// Reads on a follower.
	code, body := httpDo(t, "GET", f2.url+"/log?gt=97", token, "", "")
	if code != 200 || body != "{\"seq\":98,\"value\":{\"i\":98}}\n{\"seq\":99,\"value\":{\"i\":99}}\n" {
		t.Errorf("GET /log?gt=97 on follower: %d %q", code, body)
	}
	if code, body := httpDo(t, "GET", f1.url+"/log/42", token, "", ""); code != 200 || body != `{"i":42}` {
		t.Errorf("GET /log/42 on follower: %d %q", code, body)
	}
	fst := status(t, f1, token)
	if fst.Role != "follower" || fst.Primary == nil || fst.Primary.LagEntries != 0 || fst.Since != 99 {
		t.Errorf("follower status %+v primary %+v", fst, fst.Primary)
	}

	// SIGKILL f2, write more, restart it on the same data: it catches up.
	f2.kill()
	for i := 100; i < 150; i++ {
		if code, body := httpDo(t, "POST", p.url+"/log", token, "", fmt.Sprintf(`{"i":%d}`, i)); code != 200 {
			t.Fatalf("POST %d: %d %s", i, code, body)
		}
	}
	f2 = startServe(t, "f2", "--data", f2dir, "--follow", p.replAddr, "--secret-file", secret)
	waitFor(t, "restarted follower caught up", 20*time.Second, caughtUp("f1", "f2"))
	pst, f2st := status(t, p, token), status(t, f2, token)
	if pst.Since != 149 || f2st.Since != 149 || pst.Hash != f2st.Hash || pst.LogID != f2st.LogID {
		t.Errorf("after restart: primary since %d hash %s, f2 since %d hash %s", pst.Since, pst.Hash, f2st.Since, f2st.Hash)
	}

	// Client commands through the binary.
	out, err := exec.Command(flumeBinary(t), "status", "--server", p.url, "--secret-file", secret).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "f1") || !strings.Contains(string(out), "LAG ENTRIES") {
		t.Errorf("flume status: %v\n%s", err, out)
	}

	// Graceful stop, then an offline verify of the primary's data.
	f1.stop()
	f2.stop()
	p.stop()
	out, err = exec.Command(flumeBinary(t), "verify", "--data", pdir).CombinedOutput()
	if err != nil || !strings.Contains(string(out), pst.Hash) || !strings.Contains(string(out), "entries: 150") {
		t.Errorf("flume verify: %v\n%s", err, out)
	}
}

// TestE2EWrongReplicationSecret: a follower whose secret differs is refused,
// copies nothing, and the refusal shows in both nodes' status and metrics.
func TestE2EWrongReplicationSecret(t *testing.T) {
	p := startServe(t, "p", "--data", t.TempDir(), "--secret-file", writeSecret(t, "right"))
	if code, _ := httpDo(t, "POST", p.url+"/log", "right", "", `{"x":1}`); code != 200 {
		t.Fatalf("POST: %d", code)
	}
	f := startServe(t, "f", "--data", t.TempDir(), "--follow", p.replAddr, "--secret-file", writeSecret(t, "wrong"))
	waitFor(t, "auth failure counted on the primary", 20*time.Second, func() (bool, string) {
		_, m := httpDo(t, "GET", p.url+"/metrics", "right", "", "")
		for _, l := range strings.Split(m, "\n") {
			if strings.HasPrefix(l, "flume_repl_auth_failures_total ") && l != "flume_repl_auth_failures_total 0" {
				return true, l
			}
		}
		return false, "no auth failure in metrics"
	})
	st := status(t, f, "wrong")
	if st.Since != -1 || st.Primary == nil || st.Primary.Connected || st.Primary.LastError == "" {
		t.Errorf("follower with the wrong secret: since %d, upstream %+v", st.Since, st.Primary)
	}
	if !strings.Contains(p.logs.String(), "auth") {
		t.Errorf("primary did not log the failed authentication:\n%s", p.logs.String())
	}
	f.stop()
	p.stop()
}

// TestE2ESyncReplication: with --sync-replicas 1, an append succeeds while
// the follower runs, gets 503 with the ack count once it is killed (the
// entry stays on the primary), and succeeds again after it restarts and
// catches up, including the entry that was not replicated in time.
func TestE2ESyncReplication(t *testing.T) {
	p := startServe(t, "p", "--data", t.TempDir(), "--sync-replicas", "1", "--sync-timeout", "300ms", "--fsync", "always")
	fdir := t.TempDir()
	f := startServe(t, "f", "--data", fdir, "--follow", p.replAddr, "--fsync", "always")
	post := func(v string) (int, string) { return httpDo(t, "POST", p.url+"/log", "", "", v) }
	waitFor(t, "a sync append to succeed", 20*time.Second, func() (bool, string) {
		code, body := post(`{"warmup":true}`)
		return code == 200, body
	})
	f.kill()
	code, body := post(`{"unreplicated":true}`)
	var e struct {
		Acked    *int  `json:"acked"`
		Required int   `json:"required"`
		Last     int64 `json:"last"`
	}
	json.Unmarshal([]byte(body), &e)
	if code != 503 || e.Acked == nil || *e.Acked != 0 || e.Required != 1 {
		t.Fatalf("sync append without follower: %d %s, want 503 with acked 0 of 1", code, body)
	}
	if c, b := httpDo(t, "GET", p.url+fmt.Sprintf("/log/%d", e.Last), "", "", ""); c != 200 || b != `{"unreplicated":true}` {
		t.Errorf("the unreplicated entry is not in the primary's log: %d %s", c, b)
	}
	f = startServe(t, "f", "--data", fdir, "--follow", p.replAddr, "--fsync", "always")
	waitFor(t, "sync appends to succeed again", 20*time.Second, func() (bool, string) {
		code, body := post(`{"after":true}`)
		return code == 200, body
	})
	if c, b := httpDo(t, "GET", f.url+fmt.Sprintf("/log/%d", e.Last), "", "", ""); c != 200 || b != `{"unreplicated":true}` {
		t.Errorf("restarted follower lacks the entry acknowledged late: %d %s", c, b)
	}
	f.stop()
	p.stop()
}
