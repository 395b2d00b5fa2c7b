package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flume-go/flume/memlog"
	"github.com/flume-go/flume/server"
)

// runCmd runs the flume command in-process.
func runCmd(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	code = execute(ctx, args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

// memServer starts a server over a memlog on loopback and returns its URL.
func memServer(t *testing.T, cfg server.Config) (*server.Server, string) {
	t.Helper()
	if cfg.Log == nil && cfg.DataDir == "" {
		cfg.Log = memlog.New()
	}
	s, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(hl, nil) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; !errors.Is(err, server.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return s, "http://" + hl.Addr().String()
}

func TestUsageErrors(t *testing.T) {
	cases := []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"get"}, exitUsage, "get takes 1 argument"},
		{[]string{"get", "x"}, exitUsage, "non-negative integer"},
		{[]string{"tail", "--limit", "x"}, exitUsage, "invalid argument"},
		{[]string{"serve"}, exitUsage, "--data DIR is required"},
		{[]string{"serve", "--data", "d", "--fsync", "sometimes"}, exitUsage, "--fsync"},
		{[]string{"verify"}, exitUsage, "--data DIR is required"},
		{[]string{"nope"}, exitError, "unknown command"},
		{[]string{"get", "1", "--server", "http://127.0.0.1:1"}, exitError, "connection refused"},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, _, stderr := runCmd(t, "", tc.args...)
			if code != tc.code {
				t.Errorf("exit code %d, want %d (stderr %q)", code, tc.code, stderr)
			}
			if !strings.HasPrefix(stderr, "flume: ") || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, tc.msg) {
				t.Errorf("stderr %q: want one line \"flume: ...%s...\"", stderr, tc.msg)
			}
		})
	}
}

func TestEnvFlags(t *testing.T) {
	_, url := memServer(t, server.Config{})
	old := lookupEnv
	t.Cleanup(func() { lookupEnv = old })
	lookupEnv = func(k string) (string, bool) {
		if k == "FLUME_SERVER" {
			return url, true
		}
		return "", false
	}
	if code, out, stderr := runCmd(t, "", "append", `{"env":true}`); code != 0 || !strings.Contains(out, `"seq":0`) {
		t.Fatalf("append via FLUME_SERVER: code %d out %q err %q", code, out, stderr)
	}
	// A flag given on the command line wins over the environment.
	if code, _, stderr := runCmd(t, "", "get", "0", "--server", "http://127.0.0.1:1"); code == 0 {
		t.Fatalf("--server did not override FLUME_SERVER: %q", stderr)
	}
}

func writeSecret(t *testing.T, s string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(s+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

var _ = io.Discard
