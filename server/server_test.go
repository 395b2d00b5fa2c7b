package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/flume-go/flume/internal/testutil"
	"github.com/flume-go/flume/memlog"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testNode is a Server over a memlog serving on loopback listeners.
type testNode struct {
	*Server
	url      string // http://127.0.0.1:port
	replAddr string
	served   chan error
}

func fastConfig(cfg Config) Config {
	if cfg.Log == nil && cfg.DataDir == "" {
		cfg.Log = memlog.New()
	}
	cfg.Heartbeat, cfg.DeadAfter = 20*time.Millisecond, 500*time.Millisecond
	cfg.MinBackoff, cfg.MaxBackoff = 5*time.Millisecond, 50*time.Millisecond
	return cfg
}

func startNode(t *testing.T, cfg Config) *testNode {
	t.Helper()
	s, err := New(fastConfig(cfg))
	if err != nil {
		t.Fatal(err)
	}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n := &testNode{Server: s, url: "http://" + hl.Addr().String(), replAddr: rl.Addr().String(), served: make(chan error, 1)}
	go func() { n.served <- s.Serve(hl, rl) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-n.served; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return n
}

type resp struct {
	code int
	body string
	hdr  http.Header
}

func do(t *testing.T, method, url, ctype, body string, hdr ...string) resp {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return resp{r.StatusCode, string(b), r.Header}
}

func wantCode(t *testing.T, r resp, code int) {
	t.Helper()
	if r.code != code {
		t.Fatalf("got status %d (%s), want %d", r.code, strings.TrimSpace(r.body), code)
	}
}

func TestPostAndGet(t *testing.T) {
	n := startNode(t, Config{})
	for i, v := range []string{`{"foo":"bar"}`, `{"baz": "bla"}`, ` {"clam":"gnar"} `} {
		r := do(t, "POST", n.url+"/log", "application/json", v)
		wantCode(t, r, 200)
		if want := fmt.Sprintf(`{"seq":%d}`, i); strings.TrimSpace(r.body) != want {
			t.Errorf("POST %s: got %s, want %s", v, r.body, want)
		}
	}
	r := do(t, "GET", n.url+"/log/1", "", "")
	wantCode(t, r, 200)
	if r.body != `{"baz":"bla"}` {
		t.Errorf("GET /log/1: got %q, want compacted value", r.body)
	}
	if ct := r.hdr.Get("Content-Type"); ct != "application/json" {
		t.Errorf("content type %q", ct)
	}
	wantCode(t, do(t, "GET", n.url+"/log/3", "", ""), 404)
	wantCode(t, do(t, "GET", n.url+"/log/-1", "", ""), 400)
	wantCode(t, do(t, "GET", n.url+"/log/abc", "", ""), 400)
	wantCode(t, do(t, "GET", n.url+"/log/99999999999999999999999", "", ""), 400)
	wantCode(t, do(t, "DELETE", n.url+"/log/1", "", ""), 405)
	wantCode(t, do(t, "GET", n.url+"/nope", "", ""), 404)
}

func TestPostErrors(t *testing.T) {
	n := startNode(t, Config{MaxBodyBytes: 1024})
	cases := []struct {
		name, ctype, body string
		code, line        int
	}{
		{"invalid", "application/json", `{"foo":`, 400, 1},
		{"two values", "application/json", `{} {}`, 400, 1},
		{"empty", "application/json", ``, 400, 1},
		{"not json", "", `hello`, 400, 1},
		{"ndjson bad line 3", NDJSONType, "{\"a\":1}\n{\"b\":2}\n{oops}\n", 400, 3},
		{"ndjson empty", NDJSONType, "\n\n", 400, 0},
		{"too large", "application/json", `"` + strings.Repeat("x", 2000) + `"`, 413, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, "POST", n.url+"/log", tc.ctype, tc.body)
			wantCode(t, r, tc.code)
			var e errorBody
			if err := json.Unmarshal([]byte(r.body), &e); err != nil || e.Error == "" {
				t.Fatalf("error body %q is not {\"error\":...}: %v", r.body, err)
			}
			if e.Line != tc.line {
				t.Errorf("line: got %d, want %d (%s)", e.Line, tc.line, e.Error)
			}
		})
	}
	if s := n.DB().Since(); s != -1 {
		t.Errorf("failed posts appended entries: since %d", s)
	}
}

func TestPostNDJSONBatch(t *testing.T) {
	n := startNode(t, Config{})
	wantCode(t, do(t, "POST", n.url+"/log", "", `"first"`), 200)
	r := do(t, "POST", n.url+"/log", NDJSONType+"; charset=utf-8", "{\"a\":1}\n\n{\"b\": 2}\r\n[3]")
	wantCode(t, r, 200)
	if got := strings.TrimSpace(r.body); got != `{"first":1,"last":3}` {
		t.Errorf("got %s, want first 1 last 3", got)
	}
	r = do(t, "GET", n.url+"/log/2", "", "")
	if r.body != `{"b":2}` {
		t.Errorf("GET /log/2 = %q", r.body)
	}
}

func readLines(t *testing.T, body string) []string {
	t.Helper()
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(body), "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}

func TestStreamRanges(t *testing.T) {
	n := startNode(t, Config{})
	var b strings.Builder
	for i := range 10 {
		fmt.Fprintf(&b, "{\"i\":%d}\n", i)
	}
	wantCode(t, do(t, "POST", n.url+"/log", NDJSONType, b.String()), 200)
	cases := []struct {
		query string
		want  []int
	}{
		{"", []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}},
		{"gt=6", []int{7, 8, 9}},
		{"gte=6&lt=8", []int{6, 7}},
		{"gt=2&lte=4", []int{3, 4}},
		{"reverse=true&limit=3", []int{9, 8, 7}},
		{"reverse=1&gte=8", []int{9, 8}},
		{"limit=2&gt=0", []int{1, 2}},
		{"gt=20", nil},
		{"live=false&gt=8", []int{9}},
		{"gt=9223372036854775807", nil},
		{"lt=-9223372036854775808", nil},
		{"lt=0", nil},
		{"gte=-5&lt=1", []int{0}},
		{"reverse=true&lt=-9223372036854775808", nil},
	}
	for _, tc := range cases {
		t.Run(tc.query, func(t *testing.T) {
			r := do(t, "GET", n.url+"/log?"+tc.query, "", "")
			wantCode(t, r, 200)
			if ct := r.hdr.Get("Content-Type"); ct != NDJSONType {
				t.Errorf("content type %q", ct)
			}
			var got []int
			for _, l := range readLines(t, r.body) {
				var e struct {
					Seq   int `json:"seq"`
					Value struct {
						I int `json:"i"`
					} `json:"value"`
				}
				if err := json.Unmarshal([]byte(l), &e); err != nil {
					t.Fatalf("line %q: %v", l, err)
				}
				if e.Seq != e.Value.I {
					t.Errorf("line %q: seq and value differ", l)
				}
				got = append(got, e.Seq)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
	for _, q := range []string{"gt=x", "limit=-1", "limit=a", "reverse=maybe", "reverse=true&live=true", "lte=1e3"} {
		wantCode(t, do(t, "GET", n.url+"/log?"+q, "", ""), 400)
	}
}

func TestStreamLive(t *testing.T) {
	n := startNode(t, Config{})
	wantCode(t, do(t, "POST", n.url+"/log", "", `{"old":0}`), 200)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", n.url+"/log?live=true", nil)
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	sc := bufio.NewScanner(r.Body)
	next := func() string {
		t.Helper()
		if !sc.Scan() {
			t.Fatalf("live stream ended: %v", sc.Err())
		}
		return sc.Text()
	}
	if l := next(); l != `{"seq":0,"value":{"old":0}}` {
		t.Fatalf("first line %q", l)
	}
	for i := 1; i <= 3; i++ {
		// Each entry must arrive before the next is appended: the stream
		// is flushed as entries are produced.
		wantCode(t, do(t, "POST", n.url+"/log", "", fmt.Sprintf(`{"live":%d}`, i)), 200)
		if l, want := next(), fmt.Sprintf(`{"seq":%d,"value":{"live":%d}}`, i, i); l != want {
			t.Fatalf("got %q, want %q", l, want)
		}
	}
}

func TestSyncShortOfAcks503(t *testing.T) {
	n := startNode(t, Config{SyncReplicas: 1, SyncTimeout: 100 * time.Millisecond})
	r := do(t, "POST", n.url+"/log", "", `{"x":1}`)
	wantCode(t, r, 503)
	var e struct {
		Error    string `json:"error"`
		Acked    *int   `json:"acked"`
		Required int    `json:"required"`
		Last     int64  `json:"last"`
	}
	if err := json.Unmarshal([]byte(r.body), &e); err != nil {
		t.Fatal(err)
	}
	if e.Acked == nil || *e.Acked != 0 || e.Required != 1 || e.Last != 0 {
		t.Errorf("got %s, want acked 0 of 1 for seq 0", r.body)
	}
	// The entry stays in the primary's log ("not replicated yet").
	wantCode(t, do(t, "GET", n.url+"/log/0", "", ""), 200)
}

// TestFollower runs a primary and a follower in this process over loopback
// TCP: writes to the follower get 421 naming the primary, reads work, and
// /status on both sides shows the lag reaching zero.
func TestFollower(t *testing.T) {
	p := startNode(t, Config{NodeID: "p1", DataDir: t.TempDir()}) // a file log, fsync "always"
	f := startNode(t, Config{NodeID: "f1", Follow: p.replAddr})
	for i := range 5 {
		wantCode(t, do(t, "POST", p.url+"/log", "", fmt.Sprintf(`{"n":%d}`, i)), 200)
	}
	r := do(t, "POST", f.url+"/log", "", `{"n":99}`)
	wantCode(t, r, 421)
	var e errorBody
	json.Unmarshal([]byte(r.body), &e)
	if e.Primary != p.replAddr {
		t.Errorf("421 names primary %q, want %q", e.Primary, p.replAddr)
	}
	var ps, fs Status
	if !testutil.Poll(10*time.Second, func() bool {
		ps, fs = Status{}, Status{}
		json.Unmarshal([]byte(do(t, "GET", p.url+"/status", "", "").body), &ps)
		json.Unmarshal([]byte(do(t, "GET", f.url+"/status", "", "").body), &fs)
		return len(ps.Followers) == 1 && ps.Followers[0].Connected && ps.Followers[0].LagEntries == 0 &&
			ps.Followers[0].AckedSeq == 4 && fs.Since == 4 && fs.Primary != nil && fs.Primary.LagEntries == 0
	}) {
		t.Fatalf("lag did not reach zero:\nprimary %+v\nfollower %+v", ps, fs)
	}
	if ps.Role != "primary" || fs.Role != "follower" || ps.LogID != fs.LogID || ps.Hash != fs.Hash || ps.Followers[0].NodeID != "f1" {
		t.Fatalf("status mismatch:\nprimary %+v\nfollower %+v", ps, fs)
	}
	// Every field of the golden /status is sent by a live node (a healthy
	// follower has no last_error; no promotion has happened yet, so the
	// epoch history is empty; the follower was not told its primary's HTTP
	// URL). TestPromote checks the history's fields.
	noEpochs := []string{"epochs[].epoch", "epochs[].start", "epochs[].prev", "epochs[].promotion", "epochs[].time"}
	checkLiveStatusKeys(t, do(t, "GET", p.url+"/status", "", "").body, "primary.json", noEpochs...)
	checkLiveStatusKeys(t, do(t, "GET", f.url+"/status", "", "").body, "follower.json",
		append(noEpochs, "primary.last_error", "primary.http")...)
	r = do(t, "GET", f.url+"/log/4", "", "")
	wantCode(t, r, 200)
	if r.body != `{"n":4}` {
		t.Errorf("follower GET /log/4 = %q", r.body)
	}
	m := do(t, "GET", p.url+"/metrics", "", "")
	wantCode(t, m, 200)
	for _, name := range []string{`flume_follower_lag_entries{addr=`, `flume_since 4`, `flume_appends_total 5`,
		`flume_repl_handshakes_total 1`, `flume_append_duration_seconds_bucket`, `flume_repl_auth_failures_total 0`,
		`flume_repl_handshake_refusals_total 0`, `flume_follower_lag_seconds`, `flume_follower_lag_bytes`} {
		if !strings.Contains(m.body, name) {
			t.Errorf("metrics lack %q", name)
		}
	}
	// Five appends under fsync "always", one at a time: at least five
	// fsyncs observed by the histogram, and (the hook is set when the log
	// opens, and the log is idle now) every fsync the log counted.
	var fsyncs, logFsyncs int
	for _, line := range strings.Split(m.body, "\n") {
		if v, ok := strings.CutPrefix(line, "flume_fsync_duration_seconds_count "); ok {
			fsyncs, _ = strconv.Atoi(v)
		}
		if v, ok := strings.CutPrefix(line, "flume_log_fsyncs_total "); ok {
			logFsyncs, _ = strconv.Atoi(v)
		}
	}
	if fsyncs < 5 {
		t.Errorf("flume_fsync_duration_seconds_count = %d after 5 appends under fsync always, want >= 5", fsyncs)
	}
	if fsyncs != logFsyncs {
		t.Errorf("flume_fsync_duration_seconds_count = %d, want flume_log_fsyncs_total = %d", fsyncs, logFsyncs)
	}
	fm := do(t, "GET", f.url+"/metrics", "", "").body
	for _, name := range []string{`flume_upstream_lag_entries{primary=`, `flume_upstream_lag_seconds{primary=`, `flume_upstream_lag_bytes{primary=`, `flume_repl_reconnects_total`, `flume_role{role="follower"} 1`} {
		if !strings.Contains(fm, name) {
			t.Errorf("follower metrics lack %q", name)
		}
	}
}

func TestAuth(t *testing.T) {
	n := startNode(t, Config{Secret: []byte("s3cret")})
	for _, path := range []string{"/log", "/log/0", "/status", "/metrics"} {
		wantCode(t, do(t, "GET", n.url+path, "", ""), 401)
		r := do(t, "GET", n.url+path, "", "", "Authorization", "Bearer wrong")
		wantCode(t, r, 401)
		if r.hdr.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: 401 without WWW-Authenticate", path)
		}
	}
	wantCode(t, do(t, "POST", n.url+"/log", "", `{}`, "Authorization", "Basic czNjcmV0"), 401)
	wantCode(t, do(t, "POST", n.url+"/log", "", `{}`, "Authorization", "Bearer s3cret"), 200)
	wantCode(t, do(t, "GET", n.url+"/log/0", "", "", "Authorization", "Bearer s3cret"), 200)
	wantCode(t, do(t, "GET", n.url+"/healthz", "", ""), 200)
	m := do(t, "GET", n.url+"/metrics", "", "", "Authorization", "Bearer s3cret")
	if !strings.Contains(m.body, "flume_http_auth_failures_total 9") {
		t.Errorf("auth failures not counted")
	}
}

// TestReplWrongSecret: a follower with the wrong secret is refused and
// counted on both sides, and copies nothing.
func TestReplWrongSecret(t *testing.T) {
	p := startNode(t, Config{Secret: []byte("right")})
	wantCode(t, do(t, "POST", p.url+"/log", "", `{}`, "Authorization", "Bearer right"), 200)
	f := startNode(t, Config{Secret: []byte("wrong"), Follow: p.replAddr})
	if !testutil.Poll(10*time.Second, func() bool {
		return p.replState().stats.AuthFailures > 0 && f.replState().stats.AuthFailures+f.replState().stats.Refusals > 0
	}) {
		t.Fatalf("no auth failure counted: primary %+v follower %+v", p.replState().stats, f.replState().stats)
	}
	if s := f.DB().Since(); s != -1 {
		t.Errorf("follower with wrong secret has since %d", s)
	}
	st := f.Status()
	if st.Primary == nil || st.Primary.Connected || st.Primary.LastError == "" {
		t.Errorf("follower status %+v: want disconnected with an error", st.Primary)
	}
}

func TestHealthzAndShutdown(t *testing.T) {
	n := startNode(t, Config{})
	wantCode(t, do(t, "GET", n.url+"/healthz", "", ""), 200)
	// A live stream must not hold Shutdown up.
	req, _ := http.NewRequest("GET", n.url+"/log?live=true", nil)
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := n.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if _, err := io.ReadAll(r.Body); err != nil {
		t.Logf("live stream ended with %v", err)
	}
	if err := n.Close(); err != nil {
		t.Errorf("Close after Shutdown: %v", err)
	}
}

func TestHandlerHealthzDraining(t *testing.T) {
	s, err := New(fastConfig(Config{}))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
	if rec.Code != 200 {
		t.Fatalf("healthz %d", rec.Code)
	}
	s.drain()
	rec = httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
	if rec.Code != 503 {
		t.Fatalf("healthz while draining: %d, want 503", rec.Code)
	}
}

// TestServeAfterClose: Serve returns ErrServerClosed at once.
func TestServeAfterClose(t *testing.T) {
	s, err := New(fastConfig(Config{}))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	if err := s.Serve(ln, nil); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("got %v, want ErrServerClosed", err)
	}
}

// TestShutdownFinishesInFlightAppends: an append in flight (waiting for a
// sync ack) when Shutdown starts gets its answer; Shutdown waits for it.
func TestShutdownFinishesInFlightAppends(t *testing.T) {
	n := startNode(t, Config{SyncReplicas: 1, SyncTimeout: 300 * time.Millisecond})
	got := make(chan resp, 1)
	go func() {
		req, _ := http.NewRequest("POST", n.url+"/log", strings.NewReader(`{"inflight":1}`))
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			got <- resp{code: -1, body: err.Error()}
			return
		}
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		got <- resp{code: r.StatusCode, body: string(b)}
	}()
	// Wait until the append is in the log (and so waiting for its ack).
	testutil.Eventually(t, "the append to start", 5*time.Second, func() bool { return n.DB().Since() >= 0 })
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := n.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	r := <-got
	if r.code != 503 || !strings.Contains(r.body, `"acked":0`) {
		t.Errorf("in-flight append got %d %s, want its 503 answer", r.code, r.body)
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Errorf("Shutdown returned after %v, before the in-flight append finished", d)
	}
}

// TestStreamNonJSONEntries: entries written through the library that are
// not one-line JSON still make valid NDJSON.
func TestStreamNonJSONEntries(t *testing.T) {
	n := startNode(t, Config{})
	ctx := context.Background()
	for _, v := range []string{"not json", "{\n  \"pretty\": true\n}", "\x00\xff"} {
		if _, err := n.DB().Append(ctx, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	r := do(t, "GET", n.url+"/log", "", "")
	want := "{\"seq\":0,\"data\":\"bm90IGpzb24=\"}\n{\"seq\":1,\"value\":{\"pretty\":true}}\n{\"seq\":2,\"data\":\"AP8=\"}\n"
	if r.body != want {
		t.Errorf("got %q, want %q", r.body, want)
	}
	if g := do(t, "GET", n.url+"/log/0", "", ""); g.hdr.Get("Content-Type") != "application/octet-stream" || g.body != "not json" {
		t.Errorf("GET /log/0: %q %q", g.hdr.Get("Content-Type"), g.body)
	}
}
