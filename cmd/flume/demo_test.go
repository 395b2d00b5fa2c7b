package main

import (
	"strings"
	"testing"
)

func TestDemo(t *testing.T) {
	for _, args := range [][]string{{"demo"}, {"demo", "--sync"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			code, out, stderr := runCmd(t, "", args...)
			if code != 0 {
				t.Fatalf("exit %d: %s\n%s", code, stderr, out)
			}
			for _, want := range []string{
				`db2:  {seq: 0, value: {"foo":"bar"}}`,
				`db2:  {seq: 1, value: {"baz":"bla"}}`,
				`db2:  {seq: 2, value: {"clam":"gnar"}}`,
				`db1:  {seq: 3, value: {"livetest":"test"}}`,
				`db2:  {seq: 3, value: {"livetest":"test"}}`,
				"identical",
			} {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
		})
	}
}

func TestDemoN(t *testing.T) {
	code, out, stderr := runCmd(t, "", "demo", "--n", "300", "--fsync", "never")
	if code != 0 {
		t.Fatalf("exit %d: %s\n%s", code, stderr, out)
	}
	for _, want := range []string{"appended 300 entries", "entries/s", "replication lag", "p99", "since 299", "identical"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
