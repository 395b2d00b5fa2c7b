package vfs_test

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/flume-go/flume/vfs"
	"github.com/flume-go/flume/vfs/errorfs"
)

// readOrAbsent returns name's content, or ok false if it does not exist.
func readOrAbsent(t *testing.T, fsys vfs.FS, name string) (b []byte, ok bool) {
	t.Helper()
	b, err := vfs.ReadFile(fsys, name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return b, true
}

func TestWriteFileAtomicOS(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "state")
	// A temp file left by a crash, longer than what is written next: it
	// must be truncated, not overwritten in place.
	if err := os.WriteFile(name+".tmp", bytes.Repeat([]byte("x"), 100), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, data := range []string{"first", "2nd", ""} {
		if err := vfs.WriteFileAtomic(vfs.Default, name, []byte(data)); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(name)
		if err != nil || string(b) != data {
			t.Fatalf("content %q, %v; want %q", b, err, data)
		}
		ents, err := os.ReadDir(dir)
		if err != nil || len(ents) != 1 || ents[0].Name() != "state" {
			t.Fatalf("directory holds %v, %v; want only state", ents, err)
		}
	}
	if err := vfs.WriteFileAtomic(vfs.Default, filepath.Join(dir, "missing", "f"), nil); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("write into a missing directory: %v, want ErrNotExist", err)
	}
}

// writeDurable writes name with data and syncs it and its directory,
// without WriteFileAtomic (the function under test).
func writeDurable(t *testing.T, m vfs.FS, name string, data []byte) {
	t.Helper()
	f, err := m.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := vfs.SyncDir(m, filepath.Dir(name)); err != nil {
		t.Fatal(err)
	}
}

// crashPoint is a crash clone taken at one point of a WriteFileAtomic run.
type crashPoint struct {
	desc string
	fs   *vfs.MemFS
}

// crashClones returns what m would hold after a crash now, under several
// crash configurations: only synced state, and (seeded) random parts of
// what was not synced.
func crashClones(m *vfs.MemFS, at string) []crashPoint {
	out := []crashPoint{{at + " synced only", m.CrashClone(vfs.CrashConfig{})}}
	for _, pct := range []int{50, 100} {
		for seed := uint64(0); seed < 4; seed++ {
			out = append(out, crashPoint{fmt.Sprintf("%s unsynced=%d%% seed=%d", at, pct, seed),
				m.CrashClone(vfs.CrashConfig{UnsyncedDataPercent: pct, Rand: rand.New(rand.NewPCG(seed, uint64(pct)))})})
		}
	}
	return out
}

// TestWriteFileAtomicCrash crashes before every operation of a
// WriteFileAtomic and after it returns: the file holds its old content or
// the new one (or is absent if there was none), never anything else.
func TestWriteFileAtomicCrash(t *testing.T) {
	const name = "/d/f"
	newData := []byte("new content, longer than the old")
	for _, tc := range []struct {
		desc      string
		old       []byte // nil: the file does not exist
		staleTemp bool   // a durable temp file from an earlier crash exists
	}{
		{"replace", []byte("old content"), false},
		{"create", nil, false},
		{"replace over a stale temp", []byte("old content"), true},
		{"replace with longer old", bytes.Repeat([]byte("o"), 100), false},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			m := vfs.NewMem()
			if err := m.MkdirAll("/d", 0o755); err != nil {
				t.Fatal(err)
			}
			if tc.old != nil {
				writeDurable(t, m, name, tc.old)
			}
			if tc.staleTemp {
				writeDurable(t, m, name+".tmp", []byte("garbage garbage garbage garbage garbage garbage"))
			}
			var points []crashPoint // WriteFileAtomic runs on this goroutine
			fsys := errorfs.Wrap(m, errorfs.InjectorFunc(func(op errorfs.Op) error {
				points = append(points, crashClones(m, fmt.Sprintf("before op %d (%s %s)", op.Index, op.Kind, op.Path))...)
				return nil
			}))
			if err := vfs.WriteFileAtomic(fsys, name, newData); err != nil {
				t.Fatal(err)
			}
			if fsys.Ops() < 6 {
				t.Fatalf("%d operations; want at least create, write, sync, rename, opendir, sync", fsys.Ops())
			}
			after := crashClones(m, "after return")
			points = append(points, after...)
			sawOld := false
			for _, p := range points {
				got, ok := readOrAbsent(t, p.fs, name)
				switch {
				case ok && bytes.Equal(got, newData):
				case tc.old == nil && !ok, tc.old != nil && ok && bytes.Equal(got, tc.old):
					sawOld = true
				default:
					t.Fatalf("crash %s: file holds %q (exists %v); want %q or %q", p.desc, got, ok, tc.old, newData)
				}
			}
			for _, p := range after {
				if got, _ := readOrAbsent(t, p.fs, name); !bytes.Equal(got, newData) {
					t.Fatalf("crash %s: %q; a returned write must be durable", p.desc, got)
				}
			}
			if !sawOld {
				t.Fatal("no crash point kept the old state: the test does not crash early enough")
			}
			if names, _ := m.List("/d"); !slices.Equal(names, []string{"f"}) {
				t.Fatalf("directory holds %v after the write; want [f]", names)
			}
		})
	}
}

// TestWriteFileAtomicErrors fails each operation of a WriteFileAtomic in
// turn: the error is the injected one, the file holds its old content (new
// only once the rename is done), a crash then leaves the old content, no
// temp file is left behind, and a retry succeeds.
func TestWriteFileAtomicErrors(t *testing.T) {
	const name = "/d/f"
	oldData, newData := []byte("old"), []byte("new content")
	for i := int64(0); ; i++ {
		if i > 50 {
			t.Fatal("WriteFileAtomic never succeeded")
		}
		m := vfs.NewMem()
		m.MkdirAll("/d", 0o755)
		writeDurable(t, m, name, oldData)
		var failed *errorfs.Op
		var renamed bool
		fsys := errorfs.Wrap(m, errorfs.InjectorFunc(func(op errorfs.Op) error {
			if op.Index == i {
				failed = &op
				return errorfs.ErrInjected
			}
			if op.Kind == errorfs.OpRename {
				renamed = true
			}
			return nil
		}))
		err := vfs.WriteFileAtomic(fsys, name, newData)
		if failed == nil {
			if err != nil {
				t.Fatalf("no injected error, yet: %v", err)
			}
			if i < 6 {
				t.Fatalf("succeeded with only %d operations", i)
			}
			break
		}
		if !errorfs.IsInjected(err) {
			t.Fatalf("failing op %d (%s %s): err %v; want the injected error", i, failed.Kind, failed.Path, err)
		}
		want := oldData
		if renamed {
			want = newData // only the directory sync failed
		}
		if got, _ := readOrAbsent(t, m, name); !bytes.Equal(got, want) {
			t.Fatalf("failing op %d (%s %s): file holds %q, want %q", i, failed.Kind, failed.Path, got, want)
		}
		if got, _ := readOrAbsent(t, m.CrashClone(vfs.CrashConfig{}), name); !bytes.Equal(got, oldData) {
			t.Fatalf("failing op %d (%s %s), then crash: file holds %q, want %q", i, failed.Kind, failed.Path, got, oldData)
		}
		if names, _ := m.List("/d"); !slices.Equal(names, []string{"f"}) {
			t.Fatalf("failing op %d (%s %s): directory holds %v, want [f]", i, failed.Kind, failed.Path, names)
		}
		fsys.SetInjector(nil)
		if err := vfs.WriteFileAtomic(fsys, name, newData); err != nil {
			t.Fatalf("retry after failing op %d: %v", i, err)
		}
		if got, _ := readOrAbsent(t, m.CrashClone(vfs.CrashConfig{}), name); !bytes.Equal(got, newData) {
			t.Fatalf("retry after failing op %d, then crash: %q", i, got)
		}
	}
}
