package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/flume-go/flume/server"
)

func TestTail(t *testing.T) {
	_, url := memServer(t, server.Config{})
	runCmd(t, "", "append", "--server", url, `{"a":0}`, `{"a":1}`, `{"a":2}`, `{"a":3}`)
	cases := []struct {
		args []string
		want []string
	}{
		{nil, []string{`{"seq":0,"value":{"a":0}}`, `{"seq":1,"value":{"a":1}}`, `{"seq":2,"value":{"a":2}}`, `{"seq":3,"value":{"a":3}}`}},
		{[]string{"--gt", "1"}, []string{`{"seq":2,"value":{"a":2}}`, `{"seq":3,"value":{"a":3}}`}},
		{[]string{"--gt", "0", "--limit", "1"}, []string{`{"seq":1,"value":{"a":1}}`}},
		{[]string{"--reverse", "--limit", "2"}, []string{`{"seq":3,"value":{"a":3}}`, `{"seq":2,"value":{"a":2}}`}},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, out, stderr := runCmd(t, "", append([]string{"tail", "--server", url}, tc.args...)...)
			if code != 0 {
				t.Fatalf("code %d stderr %q", code, stderr)
			}
			if got := strings.Fields(out); fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// TestTailLive: tail --live prints entries appended after it started, and
// exits 0 when its context ends (as on SIGINT).
func TestTailLive(t *testing.T) {
	_, url := memServer(t, server.Config{})
	runCmd(t, "", "append", "--server", url, `{"old":1}`)
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan int, 1)
	go func() {
		var errb bytes.Buffer
		done <- execute(ctx, []string{"tail", "--server", url, "--live", "--gt", "0"}, strings.NewReader(""), pw, &errb)
		pw.Close()
	}()
	sc := bufio.NewScanner(pr)
	for i := 1; i <= 3; i++ {
		runCmd(t, "", "append", "--server", url, fmt.Sprintf(`{"new":%d}`, i))
		if !sc.Scan() {
			t.Fatalf("tail ended early")
		}
		if want := fmt.Sprintf(`{"seq":%d,"value":{"new":%d}}`, i, i); sc.Text() != want {
			t.Fatalf("got %q, want %q", sc.Text(), want)
		}
	}
	cancel()
	go io.Copy(io.Discard, pr)
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("tail --live exit %d after cancel, want 0", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("tail --live did not stop")
	}
}
