package main

import (
	"strings"
	"testing"

	"github.com/flume-go/flume/server"
)

func TestAppend(t *testing.T) {
	s, url := memServer(t, server.Config{})
	cases := []struct {
		name  string
		stdin string
		args  []string
		code  int
		out   string
	}{
		{"one", "", []string{`{"foo":"bar"}`}, 0, `{"seq":0}`},
		{"batch args", "", []string{`{"baz":"bla"}`, `{"clam":"gnar"}`}, 0, `{"first":1,"last":2}`},
		{"stdin ndjson", "{\"a\":1}\n\n{\"b\":2}\n{\"c\":3}", nil, 0, `{"first":3,"last":5}`},
		{"invalid", "", []string{`{"foo":`}, exitError, ""},
		{"invalid arg in batch", "", []string{`{}`, `nope`}, exitUsage, ""},
		{"bad stdin line", "{}\n{bad\n", nil, exitError, ""},
		{"empty stdin", "", nil, exitUsage, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out, stderr := runCmd(t, tc.stdin, append([]string{"append", "--server", url}, tc.args...)...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d (stderr %q)", code, tc.code, stderr)
			}
			if strings.TrimSpace(out) != tc.out {
				t.Errorf("stdout %q, want %q", out, tc.out)
			}
		})
	}
	if got := s.DB().Since(); got != 5 {
		t.Errorf("since %d, want 5", got)
	}
	_, _, stderr := runCmd(t, "{}\n{bad\n", "append", "--server", url)
	if !strings.Contains(stderr, "line 2") {
		t.Errorf("bad NDJSON error %q does not name line 2", stderr)
	}
}

func TestAppendAuth(t *testing.T) {
	_, url := memServer(t, server.Config{Secret: []byte("tok")})
	if code, _, stderr := runCmd(t, "", "append", "--server", url, `{}`); code != exitError || !strings.Contains(stderr, "401") {
		t.Errorf("no token: code %d stderr %q, want 401", code, stderr)
	}
	if code, _, stderr := runCmd(t, "", "append", "--server", url, "--secret-file", writeSecret(t, "bad"), `{}`); code != exitError || !strings.Contains(stderr, "401") {
		t.Errorf("wrong token: code %d stderr %q, want 401", code, stderr)
	}
	if code, out, stderr := runCmd(t, "", "append", "--server", url, "--secret-file", writeSecret(t, "tok"), `{}`); code != 0 {
		t.Errorf("right token: code %d out %q stderr %q", code, out, stderr)
	}
}

func TestAppendFollower421(t *testing.T) {
	_, url := memServer(t, server.Config{Follow: "127.0.0.1:1", MinBackoff: 100e6, MaxBackoff: 100e6})
	code, _, stderr := runCmd(t, "", "append", "--server", url, `{}`)
	if code != exitError || !strings.Contains(stderr, "421") || !strings.Contains(stderr, "127.0.0.1:1") {
		t.Errorf("append to follower: code %d stderr %q, want 421 naming the primary", code, stderr)
	}
}
