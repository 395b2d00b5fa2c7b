package main

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/flume-go/flume/server"
)

type serveRun struct {
	url, repl string
	cancel    context.CancelFunc
	done      chan error
	logs      *syncBuffer
}

// startServeInProc runs "serve" in this process with the given flags.
func startServeInProc(t *testing.T, f serveFlags) *serveRun {
	t.Helper()
	if f.httpAddr == "" {
		f.httpAddr = "127.0.0.1:0"
	}
	if f.replAddr == "" {
		f.replAddr = "127.0.0.1:0"
	}
	f.replSet = true // every node listens, a follower too (it can be promoted)
	if f.fsync == "" {
		f.fsync = "always"
	}
	if f.logFormat == "" {
		f.logFormat, f.logLevel = "text", "info"
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &serveRun{cancel: cancel, done: make(chan error, 1), logs: &syncBuffer{}}
	ready := make(chan struct{})
	go func() {
		r.done <- runServe(ctx, f, r.logs, func(s *server.Server, h, rp string) {
			r.url, r.repl = "http://"+h, rp
			close(ready)
		})
	}()
	select {
	case <-ready:
	case err := <-r.done:
		cancel()
		t.Fatalf("serve failed to start: %v\n%s", err, r.logs.String())
	}
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop is SIGINT: cancel and wait for a clean return.
func (r *serveRun) stop(t *testing.T) error {
	t.Helper()
	if r.cancel == nil {
		return nil
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop")
		return nil
	}
}

func TestServeGracefulAndDurable(t *testing.T) {
	dir := t.TempDir()
	r := startServeInProc(t, serveFlags{data: dir})
	if code, body := httpDo(t, "POST", r.url+"/log", "", "", `{"durable":true}`); code != 200 {
		t.Fatalf("POST: %d %s", code, body)
	}
	if err := r.stop(t); err != nil {
		t.Fatalf("graceful stop: %v\n%s", err, r.logs.String())
	}
	if !strings.Contains(r.logs.String(), "shutdown complete") {
		t.Errorf("no shutdown log:\n%s", r.logs.String())
	}
	// Reopen the same data directory: the entry is there.
	r2 := startServeInProc(t, serveFlags{data: dir})
	if code, body := httpDo(t, "GET", r2.url+"/log/0", "", "", ""); code != 200 || body != `{"durable":true}` {
		t.Errorf("after restart GET /log/0: %d %q", code, body)
	}
	// A second server on the same directory is refused (the log is locked).
	var errb bytes.Buffer
	code := execute(context.Background(), []string{"serve", "--data", dir, "--http", "127.0.0.1:0", "--repl", "127.0.0.1:0"},
		strings.NewReader(""), &bytes.Buffer{}, &errb)
	if code != exitError || strings.Count(errb.String(), "\n") != 1 {
		t.Errorf("second serve on a locked dir: exit %d, stderr %q", code, errb.String())
	}
}

// TestServeFollower runs a primary and a follower through runServe and
// checks the follower logs its catch-up and serves reads.
func TestServeFollower(t *testing.T) {
	p := startServeInProc(t, serveFlags{data: t.TempDir(), fsync: "never"})
	var batch strings.Builder
	for range 1000 {
		batch.WriteString("{\"x\":1}\n")
	}
	if code, body := httpDo(t, "POST", p.url+"/log", "", server.NDJSONType, batch.String()); code != 200 {
		t.Fatalf("POST: %d %s", code, body)
	}
	f := startServeInProc(t, serveFlags{data: t.TempDir(), follow: p.repl, logFormat: "json", logLevel: "debug"})
	waitFor(t, "follower at 999", 20*time.Second, func() (bool, string) {
		resp, err := http.Get(f.url + "/log/999")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == 200, resp.Status
	})
	if code, _ := httpDo(t, "POST", f.url+"/log", "", "", `{}`); code != 421 {
		t.Errorf("POST to follower: %d, want 421", code)
	}
}

// TestFollowCommand: "flume follow ADDR --data DIR" runs a follower.
func TestFollowCommand(t *testing.T) {
	p := startServeInProc(t, serveFlags{data: t.TempDir(), fsync: "never"})
	if code, _ := httpDo(t, "POST", p.url+"/log", "", "", `{"via":"follow"}`); code != 200 {
		t.Fatal("POST failed")
	}
	ctx, cancel := context.WithCancel(context.Background())
	logs := &syncBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- execute(ctx, []string{"follow", p.repl, "--data", t.TempDir(), "--http", "127.0.0.1:0", "--log-format", "json"},
			strings.NewReader(""), &bytes.Buffer{}, logs)
	}()
	waitFor(t, "follower caught up", 20*time.Second, func() (bool, string) {
		return strings.Contains(logs.String(), `"role":"follower"`) && strings.Contains(logs.String(), "connected to primary"), logs.String()
	})
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("follow exit %d:\n%s", code, logs.String())
	}
}
