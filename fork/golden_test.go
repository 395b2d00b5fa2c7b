package fork_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/flume-go/flume/fork"
	"github.com/flume-go/flume/vfs"
)

// The golden file freezes format version 1: a deterministic cut (fixed log
// ID, time, epoch records, entries of several sizes with a batch) is
// written and compared byte for byte with testdata/v1.fork, and the fixture
// must read back. A format change fails here loudly. Regenerate
// deliberately with
//
//	FLUME_UPDATE_GOLDEN=1 go test ./fork -run TestGolden
const golden = "testdata/v1.fork"

func TestGolden(t *testing.T) {
	_, path, b, _ := sample(t)
	if filepath.Base(path) != "00000001-1796230800123456789.fork" {
		t.Errorf("file name %s", filepath.Base(path))
	}
	if os.Getenv("FLUME_UPDATE_GOLDEN") != "" {
		if err := os.WriteFile(golden, b, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("rewrote %s", golden)
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (generate with FLUME_UPDATE_GOLDEN=1)", err)
	}
	if !bytes.Equal(b, want) {
		t.Fatalf("the writer's output differs from %s (%d bytes, want %d): the format changed", golden, len(b), len(want))
	}
	// The fixture reads back as the cut it records.
	fsys := vfs.NewMem()
	fsys.MkdirAll(dir, 0o755)
	writeFile(t, fsys, filepath.Join(dir, "00000001-1.fork"), want)
	got, _, err := collect(t, fsys)
	if err != nil {
		t.Fatal(err)
	}
	sameEntries(t, got, chainLog(testID, 9)[3:])
	infos, _ := fork.List(fsys, dir)
	if h := infos[0].Header; h.Reason != "diverged" || !h.Time.Equal(testTime) || len(h.Epochs) != 2 || h.Primary != testPrimary {
		t.Errorf("fixture header %+v", h)
	}
}
