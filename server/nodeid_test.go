package server

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/flume-go/flume/vfs"
	"github.com/flume-go/flume/vfs/errorfs"
)

// TestNodeIDSurvivesRestart: a server without a configured NodeID draws
// one on first start, stores it in DataDir/node-id, and a restart on the
// same directory keeps it without rewriting the file.
func TestNodeIDSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	start := func() string {
		t.Helper()
		s, err := New(Config{DataDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		id := s.NodeID()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		return id
	}
	id := start()
	if id == "" {
		t.Fatal("empty node ID")
	}
	p := filepath.Join(dir, "node-id")
	st1, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(p); err != nil || string(b) != id+"\n" {
		t.Fatalf("node-id holds %q, %v; want %q", b, err, id+"\n")
	}
	if got := start(); got != id {
		t.Fatalf("node ID after restart %q, want %q", got, id)
	}
	if st2, err := os.Stat(p); err != nil || !os.SameFile(st1, st2) {
		t.Fatalf("restart replaced node-id (%v)", err)
	}
	if _, err := os.Stat(p + ".tmp"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("temp file left behind: %v", err)
	}
}

// TestLoadNodeIDCrash crashes before every filesystem operation of the
// first loadNodeID and after it: the file is absent or holds the whole ID,
// and once loadNodeID has returned the ID survives the crash. A reopen
// returns the same ID and writes nothing.
func TestLoadNodeIDCrash(t *testing.T) {
	m := vfs.NewMem()
	var clones []*vfs.MemFS
	fsys := errorfs.Wrap(m, errorfs.InjectorFunc(func(errorfs.Op) error {
		clones = append(clones, m.CrashClone(vfs.CrashConfig{}), m.CrashClone(vfs.CrashConfig{UnsyncedDataPercent: 100}))
		return nil
	}))
	id, err := loadNodeID(fsys, "/data")
	if err != nil {
		t.Fatal(err)
	}
	fsys.SetInjector(nil)
	after := m.CrashClone(vfs.CrashConfig{})
	for i, c := range append(clones, after) {
		b, err := vfs.ReadFile(c, "/data/node-id")
		if errors.Is(err, fs.ErrNotExist) && c != after {
			continue
		}
		if err != nil || string(b) != id+"\n" {
			t.Fatalf("crash %d of %d: node-id holds %q, %v; want %q", i, len(clones)+1, b, err, id+"\n")
		}
		if got, err := loadNodeID(c, "/data"); err != nil || got != id {
			t.Fatalf("crash %d: reopen gives %q, %v; want %q", i, got, err, id)
		}
	}
	// A reopen on the live filesystem reads the ID and writes nothing.
	var writes []errorfs.Op
	fsys.SetInjector(errorfs.InjectorFunc(func(op errorfs.Op) error {
		if op.Kind.IsWrite() && op.Kind != errorfs.OpMkdirAll {
			writes = append(writes, op)
		}
		return nil
	}))
	if got, err := loadNodeID(fsys, "/data"); err != nil || got != id {
		t.Fatalf("reopen gives %q, %v; want %q", got, err, id)
	}
	if len(writes) > 0 {
		t.Fatalf("reopen wrote: %v", writes)
	}
	if names, _ := m.List("/data"); !slices.Equal(names, []string{"node-id"}) {
		t.Fatalf("data directory holds %v, want [node-id]", names)
	}
}

// TestLoadNodeIDErrors: a failure of any filesystem operation is returned
// and leaves no partial node-id behind; the next start creates it.
func TestLoadNodeIDErrors(t *testing.T) {
	for i := int64(0); ; i++ {
		if i > 50 {
			t.Fatal("loadNodeID never succeeded")
		}
		m := vfs.NewMem()
		fsys := errorfs.Wrap(m, errorfs.OnIndex(i))
		id, err := loadNodeID(fsys, "/data")
		if fsys.Injected() == 0 {
			if err != nil || id == "" {
				t.Fatalf("nothing injected: %q, %v", id, err)
			}
			break
		}
		if !errorfs.IsInjected(err) {
			t.Fatalf("failing op %d: %q, %v; want the injected error", i, id, err)
		}
		c := m.CrashClone(vfs.CrashConfig{})
		if _, err := vfs.ReadFile(c, "/data/node-id"); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("failing op %d, crash: node-id exists (%v)", i, err)
		}
		id, err = loadNodeID(c, "/data")
		if err != nil {
			t.Fatal(err)
		}
		if got, err := loadNodeID(c.CrashClone(vfs.CrashConfig{}), "/data"); err != nil || got != id {
			t.Fatalf("failing op %d, retry, crash: %q, %v; want %q", i, got, err, id)
		}
	}
}
