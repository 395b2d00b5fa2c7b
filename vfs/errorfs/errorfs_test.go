package errorfs_test

import (
	"errors"
	"syscall"
	"testing"

	"github.com/flume-go/flume/vfs"
	"github.com/flume-go/flume/vfs/errorfs"
)

func TestOnIndex(t *testing.T) {
	fs := errorfs.Wrap(vfs.NewMem(), errorfs.OnIndex(1))
	f, err := fs.Create("/a") // op 0
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("x"), 0); !errors.Is(err, errorfs.ErrInjected) || !errors.Is(err, syscall.EIO) {
		t.Fatalf("op 1: %v, want injected EIO", err)
	}
	if _, err := f.WriteAt([]byte("x"), 0); err != nil {
		t.Fatalf("op 2: %v", err)
	}
	if fs.Ops() != 3 || fs.Injected() != 1 {
		t.Fatalf("ops %d injected %d", fs.Ops(), fs.Injected())
	}
}

func TestDiskFull(t *testing.T) {
	mem := vfs.NewMem()
	fs := errorfs.Wrap(mem, nil)
	f, _ := fs.Create("/a")
	f.WriteAt([]byte("0123"), 0)
	fs.SetDiskFull(true)
	n, err := f.WriteAt([]byte("4567"), 4)
	if !errors.Is(err, syscall.ENOSPC) || n != 2 {
		t.Fatalf("full write: %d, %v; want a partial write and ENOSPC", n, err)
	}
	if _, err := f.WriteAt([]byte("ab"), 0); err != nil {
		t.Fatalf("overwrite on a full disk: %v", err)
	}
	fs.SetDiskFull(false)
	if _, err := f.WriteAt([]byte("4567"), 4); err != nil {
		t.Fatal(err)
	}
	b, _ := vfs.ReadFile(mem, "/a")
	if string(b) != "ab234567" {
		t.Fatalf("content %q", b)
	}
}
