package main

import (
	"strings"
	"testing"

	"github.com/flume-go/flume/server"
)

func TestGet(t *testing.T) {
	_, url := memServer(t, server.Config{})
	runCmd(t, "", "append", "--server", url, `{"foo": "bar"}`)
	code, out, stderr := runCmd(t, "", "get", "--server", url, "0")
	if code != 0 || out != "{\"foo\":\"bar\"}\n" {
		t.Errorf("get 0: code %d out %q stderr %q", code, out, stderr)
	}
	code, _, stderr = runCmd(t, "", "get", "--server", url, "7")
	if code != exitError || !strings.Contains(stderr, "404") {
		t.Errorf("get 7: code %d stderr %q, want 404", code, stderr)
	}
}
