package vfs_test

import (
	"errors"
	"io/fs"
	"math/rand/v2"
	"testing"

	"github.com/flume-go/flume/vfs"
)

func write(t *testing.T, f vfs.File, s string, off int64) {
	t.Helper()
	if _, err := f.WriteAt([]byte(s), off); err != nil {
		t.Fatal(err)
	}
}

func content(t *testing.T, m vfs.FS, name string) string {
	t.Helper()
	b, err := vfs.ReadFile(m, name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestMemCrashDropsUnsynced(t *testing.T) {
	m := vfs.NewMem()
	m.MkdirAll("/d", 0o755)
	f, _ := m.Create("/d/a")
	write(t, f, "synced", 0)
	f.Sync()
	vfs.SyncDir(m, "/d")
	write(t, f, "+lost", 6)
	g, _ := m.Create("/d/b") // entry never synced
	write(t, g, "x", 0)
	g.Sync()

	c := m.CrashClone(vfs.CrashConfig{})
	if got := content(t, c, "/d/a"); got != "synced" {
		t.Fatalf("after crash: %q, want %q", got, "synced")
	}
	if _, err := c.Stat("/d/b"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("unsynced dir entry survived: %v", err)
	}
	// The original is untouched.
	if got := content(t, m, "/d/a"); got != "synced+lost" {
		t.Fatalf("original: %q", got)
	}
	// Truncation that was not synced is undone by a crash.
	f.Truncate(2)
	if got := content(t, m.CrashClone(vfs.CrashConfig{}), "/d/a"); got != "synced" {
		t.Fatalf("unsynced truncate survived: %q", got)
	}
	f.Sync()
	if got := content(t, m.CrashClone(vfs.CrashConfig{}), "/d/a"); got != "sy" {
		t.Fatalf("synced truncate: %q", got)
	}
}

func TestMemCrashKeepsPrefixOfUnsynced(t *testing.T) {
	m := vfs.NewMem()
	f, _ := m.Create("/a")
	write(t, f, "base", 0)
	f.Sync()
	vfs.SyncDir(m, "/")
	write(t, f, "0123456789", 4)
	seen := map[int]bool{}
	for i := 0; i < 200; i++ {
		c := m.CrashClone(vfs.CrashConfig{UnsyncedDataPercent: 100, Rand: rand.New(rand.NewPCG(uint64(i), 0))})
		got := content(t, c, "/a")
		if len(got) < 4 || got != "base0123456789"[:len(got)] {
			t.Fatalf("clone %q is not a prefix", got)
		}
		seen[len(got)] = true
	}
	if len(seen) < 5 {
		t.Fatalf("prefix lengths seen: %v", seen)
	}
}

func TestMemRenameAndLock(t *testing.T) {
	m := vfs.NewMem()
	if err := vfs.WriteFileAtomic(m, "/meta", []byte("v1")); err != nil {
		t.Fatal(err)
	}
	c := m.CrashClone(vfs.CrashConfig{})
	if got := content(t, c, "/meta"); got != "v1" {
		t.Fatalf("atomic write after crash: %q", got)
	}
	names, _ := m.List("/")
	if len(names) != 1 || names[0] != "meta" {
		t.Fatalf("List = %v", names)
	}
	l, err := m.Lock("/LOCK")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Lock("/LOCK"); !errors.Is(err, vfs.ErrLocked) {
		t.Fatalf("second lock: %v", err)
	}
	l.Close()
	l2, err := m.Lock("/LOCK")
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	l2.Close()
}

func TestOSLock(t *testing.T) {
	p := t.TempDir() + "/LOCK"
	l, err := vfs.Default.Lock(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := vfs.Default.Lock(p); !errors.Is(err, vfs.ErrLocked) {
		t.Fatalf("second flock in the same process: %v", err)
	}
	l.Close()
	l, err = vfs.Default.Lock(p)
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
}
