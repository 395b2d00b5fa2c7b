package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/fork"
	"github.com/flume-go/flume/frame"
	"github.com/flume-go/flume/internal/testpki"
	"github.com/flume-go/flume/server"
	"github.com/flume-go/flume/vfs"
)

// forkFixture makes a data directory whose forked/ holds one file per cut,
// written by fork's Writer as a rejoin would: cuts[i] are the payloads of
// the i-th cut, taken from a log of its own. It returns the directory and
// the file paths.
func forkFixture(t *testing.T, cuts ...[]string) (string, []string) {
	t.Helper()
	data := t.TempDir()
	var paths []string
	for k, payloads := range cuts {
		id := flume.LogID{byte(k + 1)}
		prev := flume.GenesisHash(id)
		const kept = 3 // entries before the cut point
		var stream []byte
		var h fork.Header
		for i := range int64(kept + len(payloads)) {
			data := fmt.Appendf(nil, `{"kept":%d}`, i)
			if i >= kept {
				data = []byte(payloads[i-kept])
			}
			epoch := uint64(k + 1)
			hash := flume.ChainHash(prev, i, epoch, data)
			if i == kept-1 {
				h.AfterHash = hash
			}
			if i >= kept {
				stream = frame.Append(stream, flume.Entry{Seq: i, Epoch: epoch, Hash: hash, Data: data})
			}
			prev = hash
		}
		h.LogID, h.After, h.Since, h.SinceHash = id, kept-1, int64(kept+len(payloads)-1), prev
		h.Primary = fork.Position{LogID: id, Epoch: uint64(k + 2), Since: kept + 1, Hash: flume.Hash{0xab}}
		h.Reason = fmt.Sprintf("rejoin %d: diverged", k+1)
		h.Time = time.Date(2026, 12, 2, 17, k, 0, 0, time.UTC)
		w, err := fork.Create(vfs.Default, fork.Dir(data), h)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(stream); err != nil {
			t.Fatal(err)
		}
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, w.Path())
	}
	return data, paths
}

var (
	cut1 = []string{`{"order":1}`, "{\n  \"order\": 2\n}", "\x00\x01binary"}
	cut2 = []string{`"two"`, `[1,2,3]`}
)

const cutLines = `{"seq":3,"epoch":1,"value":{"order":1}}
{"seq":4,"epoch":1,"value":{"order":2}}
{"seq":5,"epoch":1,"data":"AAFiaW5hcnk="}
{"seq":3,"epoch":2,"value":"two"}
{"seq":4,"epoch":2,"value":[1,2,3]}
`

func TestForkedPrintsEveryCutEntry(t *testing.T) {
	data, _ := forkFixture(t, cut1, cut2)
	code, out, stderr := runCmd(t, "", "forked", "--data", data)
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if out != cutLines {
		t.Errorf("stdout:\n%s\nwant:\n%s", out, cutLines)
	}
	// A cut being written is skipped with a note, not printed.
	if err := os.WriteFile(filepath.Join(fork.Dir(data), "00000003-1.fork.tmp"), []byte("FLUMEFRK"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, stderr = runCmd(t, "", "forked", "--data", data)
	if code != 0 || out != cutLines || !strings.Contains(stderr, "note: skipping") || !strings.Contains(stderr, "00000003-1.fork.tmp") {
		t.Errorf("with a temp file: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	// No forked/ at all: nothing printed, a note.
	code, out, stderr = runCmd(t, "", "forked", "--data", t.TempDir())
	if code != 0 || out != "" || !strings.Contains(stderr, "nothing was ever cut") {
		t.Errorf("no forked/: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
}

func TestForkedList(t *testing.T) {
	data, paths := forkFixture(t, cut1, cut2)
	code, out, stderr := runCmd(t, "", "forked", "list", "--data", data)
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "FILE") {
		t.Fatalf("table:\n%s", out)
	}
	for i, want := range [][]string{
		{filepath.Base(paths[0]), "complete", "2026-12-02T17:00:00Z", "3..5", " 3 ", "epoch 2 since 4", `"rejoin 1: diverged"`},
		{filepath.Base(paths[1]), "complete", "2026-12-02T17:01:00Z", "3..4", " 2 ", "epoch 3 since 4", `"rejoin 2: diverged"`},
	} {
		for _, w := range want {
			if !strings.Contains(lines[i+1], w) {
				t.Errorf("row %d %q lacks %q", i+1, lines[i+1], w)
			}
		}
	}
}

// TestForkedDamagedFile: a damaged file is a clear error naming it and the
// offset, with a non-zero exit, from every subcommand; nothing is printed
// or appended, and nothing stored changes.
func TestForkedDamagedFile(t *testing.T) {
	data, paths := forkFixture(t, cut1, cut2)
	b, err := os.ReadFile(paths[1])
	if err != nil {
		t.Fatal(err)
	}
	off := len(b) - 40 // inside the last frame's payload
	b[off] ^= 0x20
	if err := os.WriteFile(paths[1], b, 0o644); err != nil {
		t.Fatal(err)
	}
	s, url := memServer(t, server.Config{})
	for _, args := range [][]string{
		{"forked", "--data", data},
		{"forked", "replay", "--data", data, "--to", url},
	} {
		code, out, stderr := runCmd(t, "", args...)
		if code != exitCorrupt || out != "" {
			t.Errorf("%q: exit %d, stdout %q; want exit %d and nothing printed", args, code, out, exitCorrupt)
		}
		if !strings.Contains(stderr, paths[1]) || !strings.Contains(stderr, "corrupt") || !strings.Contains(stderr, "at offset") ||
			strings.Count(stderr, "\n") != 1 {
			t.Errorf("%q: stderr %q: want one line naming %s and the offset", args, stderr, paths[1])
		}
	}
	code, out, stderr := runCmd(t, "", "forked", "list", "--data", data)
	if code != exitCorrupt || !strings.Contains(out, "corrupt") || !strings.Contains(out, "problem: ") || !strings.Contains(stderr, paths[1]) {
		t.Errorf("list: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	if s.DB().Since() != -1 {
		t.Errorf("replay of a damaged directory appended up to seq %d", s.DB().Since())
	}
	if after, _ := os.ReadFile(paths[1]); !bytes.Equal(after, b) {
		t.Error("the damaged file changed")
	}
	if names, _ := os.ReadDir(fork.Dir(data)); len(names) != 2 {
		t.Errorf("forked/ holds %d files, want the 2 it had", len(names))
	}
}

func TestForkedReplay(t *testing.T) {
	jsonCut := []string{`{"order":1}`, "{\n  \"order\": 2\n}", `3`}
	data, _ := forkFixture(t, jsonCut, cut2)
	s, url := memServer(t, server.Config{Secret: []byte("tok")})
	if _, err := s.DB().Append(context.Background(), []byte(`"already there"`)); err != nil {
		t.Fatal(err)
	}
	// Without the token: refused, nothing appended.
	code, _, stderr := runCmd(t, "", "forked", "replay", "--data", data, "--to", url)
	if code != exitError || !strings.Contains(stderr, "401") || !strings.Contains(stderr, "0 of 5 entries appended") {
		t.Fatalf("replay without the token: exit %d, stderr %q", code, stderr)
	}
	code, out, stderr := runCmd(t, "", "forked", "replay", "--data", data, "--to", url, "--secret-file", writeSecret(t, "tok"))
	if code != 0 {
		t.Fatalf("replay: exit %d, stderr %q", code, stderr)
	}
	if strings.TrimSpace(out) != `{"appended":5,"first":1,"last":5}` {
		t.Errorf("replay printed %q", out)
	}
	want := []string{`"already there"`, `{"order":1}`, `{"order":2}`, `3`, `"two"`, `[1,2,3]`}
	if since := s.DB().Since(); since != int64(len(want)-1) {
		t.Fatalf("primary since %d, want %d", since, len(want)-1)
	}
	for seq, w := range want {
		v, err := s.DB().Get(context.Background(), int64(seq))
		if err != nil || string(v) != w {
			t.Errorf("seq %d: %q, %v; want %q", seq, v, err, w)
		}
	}
}

func TestForkedReplayRefusesNonJSON(t *testing.T) {
	data, _ := forkFixture(t, cut2, cut1) // the second cut holds a binary value
	s, url := memServer(t, server.Config{})
	code, out, stderr := runCmd(t, "", "forked", "replay", "--data", data, "--to", url)
	if code != exitError || out != "" || !strings.Contains(stderr, "entry 5") || !strings.Contains(stderr, "not JSON") {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	if s.DB().Since() != -1 {
		t.Errorf("appended up to seq %d", s.DB().Since())
	}
	// Nothing forked: nothing to append.
	code, out, _ = runCmd(t, "", "forked", "replay", "--data", t.TempDir(), "--to", url)
	if code != 0 || strings.TrimSpace(out) != `{"appended":0}` {
		t.Errorf("empty replay: exit %d, %q", code, out)
	}
}

func TestForkedUsage(t *testing.T) {
	cases := []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"forked"}, exitUsage, "--data DIR is required"},
		{[]string{"forked", "list"}, exitUsage, "--data DIR is required"},
		{[]string{"forked", "replay", "--data", "."}, exitUsage, "--to URL is required"},
		{[]string{"forked", "lst", "--data", "."}, exitUsage, "takes no arguments"},
		{[]string{"forked", "--data", "/no/such/dir"}, exitError, "not a directory"},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, _, stderr := runCmd(t, "", tc.args...)
			if code != tc.code || !strings.Contains(stderr, tc.msg) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, stderr, tc.code, tc.msg)
			}
		})
	}
}

// TestForkedReplayHTTPS: replay takes --tls-ca like the other client
// commands, against a server started by "serve" with --http-tls.
func TestForkedReplayHTTPS(t *testing.T) {
	data, _ := forkFixture(t, cut2)
	cert, key, ca := testpki.NodeFiles(t)
	p := startServeInProc(t, serveFlags{data: t.TempDir(), fsync: "never", tlsCert: cert, tlsKey: key, httpTLS: true})
	url := "https://" + strings.TrimPrefix(p.url, "http://")
	if code, _, stderr := runCmd(t, "", "forked", "replay", "--data", data, "--to", url); code == 0 || !strings.Contains(stderr, "certificate") {
		t.Fatalf("replay without --tls-ca: exit %d, %q (want a certificate error)", code, stderr)
	}
	code, out, stderr := runCmd(t, "", "forked", "replay", "--data", data, "--to", url, "--tls-ca", ca)
	if code != 0 || strings.TrimSpace(out) != `{"appended":2,"first":0,"last":1}` {
		t.Fatalf("replay over HTTPS: exit %d, %q, %q", code, out, stderr)
	}
	if code, out, _ := runCmd(t, "", "get", "--server", url, "--tls-ca", ca, "1"); code != 0 || strings.TrimSpace(out) != `[1,2,3]` {
		t.Errorf("get 1 after replay: exit %d, %q", code, out)
	}
}
