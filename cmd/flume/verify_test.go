package main

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flume-go/flume/server"
)

func TestVerify(t *testing.T) {
	data := t.TempDir()
	l, err := server.OpenLog(filepath.Join(data, "log"), "never")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if _, err := l.Append([]byte(fmt.Sprintf(`{"i":%d,"pad":"%s"}`, i, strings.Repeat("x", 100)))); err != nil {
			t.Fatal(err)
		}
	}
	_, hash := l.Head()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	code, out, stderr := runCmd(t, "", "verify", "--data", data)
	if code != 0 {
		t.Fatalf("verify clean log: exit %d %s\n%s", code, stderr, out)
	}
	for _, want := range []string{"entries: 100", "since:   99", hash.String(), "ok"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// The file log directory itself works too.
	if code, _, stderr := runCmd(t, "", "verify", "--data", filepath.Join(data, "log")); code != 0 {
		t.Errorf("verify DIR/log: exit %d %s", code, stderr)
	}

	// Flip a byte in the middle of the largest file (a segment): corrupt.
	var biggest string
	var size int64
	filepath.WalkDir(filepath.Join(data, "log"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil && fi.Size() > size {
				biggest, size = p, fi.Size()
			}
		}
		return nil
	})
	b, err := os.ReadFile(biggest)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x55
	if err := os.WriteFile(biggest, b, 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, stderr = runCmd(t, "", "verify", "--data", data)
	if code != exitCorrupt {
		t.Fatalf("verify corrupt log: exit %d, want %d\n%s\n%s", code, exitCorrupt, stderr, out)
	}
	if !strings.Contains(out, "problem:") || !strings.Contains(stderr, "corrupt") {
		t.Errorf("corruption not reported with its position:\n%s\n%s", out, stderr)
	}

	if code, _, _ := runCmd(t, "", "verify", "--data", filepath.Join(data, "missing")); code == 0 {
		t.Errorf("verify of a missing directory succeeded")
	}
}
