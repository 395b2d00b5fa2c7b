package main

import (
	"strings"
	"testing"
)

func TestBench(t *testing.T) {
	code, out, stderr := runCmd(t, "", "bench", "--entries", "2000", "--sync-ops", "20")
	if code != 0 {
		t.Fatalf("exit %d: %s\n%s", code, stderr, out)
	}
	for _, want := range []string{"ENTRIES/S", "MB/S", "P50", "P99", "PEAK MEM", "disk: write 156 B + fsync", "append 100B", "catch-up 1KiB", "sync k=1"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "MiB\n"); n != 7 {
		t.Errorf("%d rows, want 7:\n%s", n, out)
	}
}
