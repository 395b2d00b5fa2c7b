package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/flume-go/flume/repl"
	"github.com/flume-go/flume/server"
)

func TestStatus(t *testing.T) {
	_, url := memServer(t, server.Config{NodeID: "p1", SyncReplicas: 0})
	runCmd(t, "", "append", "--server", url, `{}`, `{}`)
	code, out, stderr := runCmd(t, "", "status", "--server", url)
	if code != 0 {
		t.Fatalf("code %d stderr %q", code, stderr)
	}
	for _, want := range []string{"role", "primary", "node", "p1", "since", "2", "hash", "no followers"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = runCmd(t, "", "status", "--server", url, "--json")
	var st server.Status
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || st.Since != 1 || st.NodeID != "p1" {
		t.Errorf("status --json: code %d %q", code, out)
	}
}

func TestPrintStatusFollowers(t *testing.T) {
	var b strings.Builder
	printStatus(&b, server.Status{Role: "primary", NodeID: "p", Since: 10, Followers: []repl.FollowerStatus{
		{NodeID: "f1", Addr: "127.0.0.1:5000", Connected: true, AckedSeq: 10},
		{NodeID: "f2", Addr: "127.0.0.1:5001", AckedSeq: 4, LagEntries: 6, LagBytes: 600, LagSeconds: 1.5},
	}})
	out := b.String()
	for _, want := range []string{"FOLLOWER", "LAG ENTRIES", "f1", "f2", "600", "1.500"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	b.Reset()
	printStatus(&b, server.Status{Role: "follower", Primary: &server.UpstreamStatus{UpstreamStatus: repl.UpstreamStatus{
		Primary: "h:1", State: "streaming", Connected: true, PrimarySince: 9, Since: 9}}})
	if !strings.Contains(b.String(), "h:1") || !strings.Contains(b.String(), "0 entries") {
		t.Errorf("follower status:\n%s", b.String())
	}
}
