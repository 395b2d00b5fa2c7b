package main

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/flume-go/flume/memlog"
	"github.com/flume-go/flume/server"
)

// replNode is an in-process server over a memlog with an HTTP and a
// replication listener.
type replNode struct {
	*server.Server
	url, repl string
}

func startReplNode(t *testing.T, cfg server.Config) *replNode {
	t.Helper()
	cfg.Log = memlog.New()
	cfg.Heartbeat, cfg.DeadAfter = 20*time.Millisecond, 500*time.Millisecond
	cfg.MinBackoff, cfg.MaxBackoff = 5*time.Millisecond, 50*time.Millisecond
	s, err := server.New(cfg)
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
	done := make(chan error, 1)
	go func() { done <- s.Serve(hl, rl) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; !errors.Is(err, server.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return &replNode{Server: s, url: "http://" + hl.Addr().String(), repl: rl.Addr().String()}
}

func (n *replNode) waitSince(t *testing.T, seq int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.DB().WaitSince(ctx, seq); err != nil {
		t.Fatalf("%s waiting for seq %d: %v", n.NodeID(), seq, err)
	}
}

// TestPromoteRepointCommands: a manual failover through the commands:
// promote a follower (its peers checked), repoint the other follower to
// it, append through the old follower (the 421 is followed once to the new
// primary, said on stderr), and see the new epoch in status.
func TestPromoteRepointCommands(t *testing.T) {
	p := startReplNode(t, server.Config{NodeID: "p"})
	f1 := startReplNode(t, server.Config{NodeID: "f1", Follow: p.repl})
	f2 := startReplNode(t, server.Config{NodeID: "f2", Follow: p.repl})
	if code, _, stderr := runCmd(t, "", "append", "--server", p.url, `{"a":1}`, `{"a":2}`); code != 0 {
		t.Fatalf("append: %s", stderr)
	}
	f1.waitSince(t, 1)
	f2.waitSince(t, 1)

	// Refusals first: a primary cannot be promoted; an unreachable
	// address is not followed.
	code, _, stderr := runCmd(t, "", "promote", "--server", p.url)
	if code != exitError || !strings.Contains(stderr, "409") || !strings.Contains(stderr, "already the primary") {
		t.Errorf("promote a primary: exit %d, stderr %q", code, stderr)
	}
	code, _, stderr = runCmd(t, "", "repoint", closedAddr(t), "--server", f2.url)
	if code != exitError || !strings.Contains(stderr, "502") || !strings.Contains(stderr, "unreachable") {
		t.Errorf("repoint to nowhere: exit %d, stderr %q", code, stderr)
	}

	// The old primary still answers: refused unless forced.
	code, _, stderr = runCmd(t, "", "promote", "--server", f1.url, "--peers", f2.url+","+p.url)
	if code != exitError || !strings.Contains(stderr, "live primary") {
		t.Errorf("promote next to a live primary: exit %d, stderr %q", code, stderr)
	}
	code, out, stderr := runCmd(t, "", "promote", "--server", f1.url, "--peers", f2.url+","+p.url, "--force")
	if code != 0 {
		t.Fatalf("promote: exit %d, stderr %q", code, stderr)
	}
	for _, want := range []string{"promoted: " + f1.url + " is the primary of epoch 1 from seq 2", "peer " + f2.url + ": ok (node f2, follower, since 1, epoch 0)",
		"peer " + p.url + ": live-primary", "flume repoint " + f1.repl + " --primary-http " + f1.url} {
		if !strings.Contains(out, want) {
			t.Errorf("promote output lacks %q:\n%s", want, out)
		}
	}
	code, out, stderr = runCmd(t, "", "repoint", f1.repl, "--server", f2.url, "--primary-http", f1.url)
	if code != 0 || !strings.Contains(out, "following "+f1.repl) {
		t.Fatalf("repoint: exit %d, out %q, stderr %q", code, out, stderr)
	}
	code, out, stderr = runCmd(t, "", "append", "--server", f2.url, `{"a":3}`)
	if code != 0 || strings.TrimSpace(out) != `{"seq":2}` || !strings.Contains(stderr, "is a follower; retrying at its primary "+f1.url) {
		t.Fatalf("append through f2: exit %d, out %q, stderr %q", code, out, stderr)
	}
	f2.waitSince(t, 2)
	code, out, _ = runCmd(t, "", "status", "--server", f1.url)
	if code != 0 || !strings.Contains(out, "fenced epoch") || !strings.Contains(out, "epoch history: 1 record(s)") ||
		!strings.Contains(out, "EPOCH  START") {
		t.Errorf("status of the new primary:\n%s", out)
	}
	code, out, _ = runCmd(t, "", "status", "--server", f2.url)
	if code != 0 || !strings.Contains(out, "primary http") || !strings.Contains(out, f1.url) {
		t.Errorf("status of f2:\n%s", out)
	}
}

// TestClientFollows421Once: a follower naming another follower as its
// primary does not send the client around in circles.
func TestClientFollows421Once(t *testing.T) {
	_, b := memServer(t, server.Config{Follow: "127.0.0.1:1", PrimaryHTTP: "http://127.0.0.1:9", MinBackoff: time.Second, MaxBackoff: time.Second})
	_, a := memServer(t, server.Config{Follow: "127.0.0.1:1", PrimaryHTTP: b, MinBackoff: time.Second, MaxBackoff: time.Second})
	code, _, stderr := runCmd(t, "", "append", "--server", a, `{}`)
	if code != exitError || strings.Count(stderr, "retrying at") != 1 || !strings.Contains(stderr, "421") {
		t.Errorf("append: exit %d, stderr %q; want one retry, then the 421", code, stderr)
	}
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
