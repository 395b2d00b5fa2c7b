package filelog_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/filelog"
	"github.com/flume-go/flume/flumetest"
	"github.com/flume-go/flume/vfs"
)

// The golden fixture freezes the on-disk format: a deterministic log
// (fixed ID, epochs 0 and 1, entries of several sizes, three segments) is
// written and compared byte for byte with testdata/golden. A format change
// fails here loudly. Regenerate deliberately with
//
//	FLUME_UPDATE_GOLDEN=1 go test ./filelog -run TestGolden
const goldenDir = "testdata/golden"

var goldenID = flume.LogID{0xf1, 0x0e, 0x90, 0x1d, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}

func goldenPayload(i int64) []byte { return flumetest.Payload(i, int(i%5)*60) }

func writeGolden(t *testing.T) *vfs.MemFS {
	fs := vfs.NewMem()
	l, err := filelog.Open(dir, &filelog.Options{FS: fs, SegmentSize: 1024})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.SetID(goldenID); err != nil {
		t.Fatal(err)
	}
	for i := int64(0); i < 20; i++ {
		if i == 10 {
			l.SetEpoch(1)
		}
		if _, err := l.Append(goldenPayload(i)); err != nil {
			t.Fatal(err)
		}
	}
	// A batch: its first two frames carry the "batch continues" flag.
	if _, err := l.Append(goldenPayload(20), goldenPayload(21), goldenPayload(22)); err != nil {
		t.Fatal(err)
	}
	l.Close()
	return fs
}

func TestGolden(t *testing.T) {
	fs := writeGolden(t)
	names, _ := fs.List(dir)
	if os.Getenv("FLUME_UPDATE_GOLDEN") != "" {
		os.RemoveAll(goldenDir)
		os.MkdirAll(goldenDir, 0o755)
		for _, n := range names {
			if n == "LOCK" {
				continue
			}
			if err := os.WriteFile(filepath.Join(goldenDir, n), readAll(t, fs, filepath.Join(dir, n)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("rewrote %s", goldenDir)
	}
	want, err := os.ReadDir(goldenDir)
	if err != nil {
		t.Fatalf("%v (generate with FLUME_UPDATE_GOLDEN=1)", err)
	}
	var got []string
	for _, n := range names {
		if n != "LOCK" {
			got = append(got, n)
		}
	}
	var wantNames []string
	for _, e := range want {
		wantNames = append(wantNames, e.Name())
	}
	if strings.Join(got, ",") != strings.Join(wantNames, ",") {
		t.Fatalf("files: got %v, want %v", got, wantNames)
	}
	for _, n := range got {
		g := readAll(t, fs, filepath.Join(dir, n))
		w, _ := os.ReadFile(filepath.Join(goldenDir, n))
		if !bytes.Equal(g, w) {
			t.Errorf("%s differs from the golden file: the on-disk format changed (%d vs %d bytes)", n, len(g), len(w))
		}
	}

	// And the fixture itself opens and reads back (copied to a temp dir:
	// Open may write).
	d := t.TempDir()
	for _, n := range wantNames {
		b, _ := os.ReadFile(filepath.Join(goldenDir, n))
		os.WriteFile(filepath.Join(d, n), b, 0o644)
	}
	l, err := filelog.Open(d, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if l.ID() != goldenID || l.Since() != 22 || l.Epoch() != 1 {
		t.Fatalf("fixture: ID %s since %d epoch %d", l.ID(), l.Since(), l.Epoch())
	}
	flumetest.CheckLog(t, l, goldenPayload)
	const wantHead = "see testdata/golden.head"
	_, h := l.Head()
	hb, err := os.ReadFile("testdata/golden.head")
	if os.Getenv("FLUME_UPDATE_GOLDEN") != "" {
		os.WriteFile("testdata/golden.head", []byte(h.String()+"\n"), 0o644)
	} else if err != nil || strings.TrimSpace(string(hb)) != h.String() {
		t.Fatalf("fixture head %s, %s says %q", h, wantHead, hb)
	}
}
