// Package errorfs wraps a vfs.FS and injects errors: at the i-th operation,
// on operations matching a predicate, or a "disk full" mode (ENOSPC on
// writes) that can be turned off again. Modeled on pebble's vfs/errorfs.
package errorfs

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"syscall"

	"github.com/flume-go/flume/vfs"
)

// ErrInjected is the error injected by OnIndex and OnPredicate unless
// another is given. errors.Is(ErrInjected, syscall.EIO) is true.
var ErrInjected = fmt.Errorf("errorfs: injected error: %w", syscall.EIO)

// ErrNoSpace is returned by writes while the disk is full.
// errors.Is(ErrNoSpace, syscall.ENOSPC) is true.
var ErrNoSpace = fmt.Errorf("errorfs: injected disk full: %w", syscall.ENOSPC)

// OpKind names a filesystem operation.
type OpKind int

// The operations errorfs counts and can fail. Close is never failed.
const (
	OpCreate OpKind = iota
	OpOpen
	OpOpenDir
	OpRemove
	OpRename
	OpMkdirAll
	OpList
	OpStat
	OpLock
	OpRead
	OpWrite
	OpSync
	OpTruncate
	OpFileStat
)

var opNames = [...]string{"create", "open", "opendir", "remove", "rename", "mkdirall", "list", "stat", "lock", "read", "write", "sync", "truncate", "fstat"}

func (k OpKind) String() string {
	if int(k) < len(opNames) {
		return opNames[k]
	}
	return fmt.Sprintf("op(%d)", int(k))
}

// IsWrite reports whether the operation changes the filesystem.
func (k OpKind) IsWrite() bool {
	switch k {
	case OpCreate, OpRemove, OpRename, OpMkdirAll, OpWrite, OpSync, OpTruncate, OpLock:
		return true
	}
	return false
}

// Op is one operation about to run.
type Op struct {
	Kind   OpKind
	Path   string
	Offset int64 // for reads and writes
	Index  int64 // 0-based count of operations through this FS
}

// Injector decides whether an operation fails.
type Injector interface {
	// MaybeError returns the error to inject into op, or nil.
	MaybeError(op Op) error
}

// InjectorFunc adapts a function to Injector.
type InjectorFunc func(Op) error

// MaybeError implements Injector.
func (f InjectorFunc) MaybeError(op Op) error { return f(op) }

// OnIndex fails the operation with the given index (0-based) with
// ErrInjected.
func OnIndex(i int64) Injector {
	return InjectorFunc(func(op Op) error {
		if op.Index == i {
			return ErrInjected
		}
		return nil
	})
}

// OnPredicate fails every operation for which pred is true with err
// (ErrInjected if nil).
func OnPredicate(pred func(Op) bool, err error) Injector {
	if err == nil {
		err = ErrInjected
	}
	return InjectorFunc(func(op Op) error {
		if pred(op) {
			return err
		}
		return nil
	})
}

// FS is a vfs.FS that injects errors into the operations of another.
type FS struct {
	inner    vfs.FS
	inj      atomic.Pointer[Injector]
	ops      atomic.Int64
	injected atomic.Int64
	full     atomic.Bool
}

var _ vfs.FS = (*FS)(nil)

// Wrap returns an FS over inner that consults inj (may be nil) before every
// operation.
func Wrap(inner vfs.FS, inj Injector) *FS {
	f := &FS{inner: inner}
	f.SetInjector(inj)
	return f
}

// SetInjector replaces the injector; nil injects nothing.
func (f *FS) SetInjector(inj Injector) {
	if inj == nil {
		f.inj.Store(nil)
		return
	}
	f.inj.Store(&inj)
}

// SetDiskFull turns disk-full mode on or off. While on, a write that
// extends a file writes only part of its bytes (as a real full disk may)
// and returns ErrNoSpace; truncation, syncs and reads still work.
func (f *FS) SetDiskFull(full bool) { f.full.Store(full) }

// Ops returns how many operations ran through f so far.
func (f *FS) Ops() int64 { return f.ops.Load() }

// Injected returns how many errors f injected so far.
func (f *FS) Injected() int64 { return f.injected.Load() }

func (f *FS) check(kind OpKind, path string, off int64) error {
	op := Op{Kind: kind, Path: path, Offset: off, Index: f.ops.Add(1) - 1}
	if p := f.inj.Load(); p != nil {
		if err := (*p).MaybeError(op); err != nil {
			f.injected.Add(1)
			return &os.PathError{Op: kind.String(), Path: path, Err: err}
		}
	}
	return nil
}

func (f *FS) wrap(name string, file vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return nil, err
	}
	return &errFile{fs: f, name: name, f: file}, nil
}

// Create implements vfs.FS.
func (f *FS) Create(name string) (vfs.File, error) {
	if err := f.check(OpCreate, name, 0); err != nil {
		return nil, err
	}
	file, err := f.inner.Create(name)
	return f.wrap(name, file, err)
}

// OpenReadWrite implements vfs.FS.
func (f *FS) OpenReadWrite(name string) (vfs.File, error) {
	if err := f.check(OpOpen, name, 0); err != nil {
		return nil, err
	}
	file, err := f.inner.OpenReadWrite(name)
	return f.wrap(name, file, err)
}

// Open implements vfs.FS.
func (f *FS) Open(name string) (vfs.File, error) {
	if err := f.check(OpOpen, name, 0); err != nil {
		return nil, err
	}
	file, err := f.inner.Open(name)
	return f.wrap(name, file, err)
}

// OpenDir implements vfs.FS.
func (f *FS) OpenDir(name string) (vfs.File, error) {
	if err := f.check(OpOpenDir, name, 0); err != nil {
		return nil, err
	}
	file, err := f.inner.OpenDir(name)
	return f.wrap(name, file, err)
}

// Remove implements vfs.FS.
func (f *FS) Remove(name string) error {
	if err := f.check(OpRemove, name, 0); err != nil {
		return err
	}
	return f.inner.Remove(name)
}

// Rename implements vfs.FS.
func (f *FS) Rename(oldname, newname string) error {
	if err := f.check(OpRename, oldname, 0); err != nil {
		return err
	}
	return f.inner.Rename(oldname, newname)
}

// MkdirAll implements vfs.FS.
func (f *FS) MkdirAll(dir string, perm os.FileMode) error {
	if err := f.check(OpMkdirAll, dir, 0); err != nil {
		return err
	}
	return f.inner.MkdirAll(dir, perm)
}

// List implements vfs.FS.
func (f *FS) List(dir string) ([]string, error) {
	if err := f.check(OpList, dir, 0); err != nil {
		return nil, err
	}
	return f.inner.List(dir)
}

// Stat implements vfs.FS.
func (f *FS) Stat(name string) (os.FileInfo, error) {
	if err := f.check(OpStat, name, 0); err != nil {
		return nil, err
	}
	return f.inner.Stat(name)
}

// Lock implements vfs.FS.
func (f *FS) Lock(name string) (io.Closer, error) {
	if err := f.check(OpLock, name, 0); err != nil {
		return nil, err
	}
	return f.inner.Lock(name)
}

type errFile struct {
	fs   *FS
	name string
	f    vfs.File
}

func (e *errFile) ReadAt(p []byte, off int64) (int, error) {
	if err := e.fs.check(OpRead, e.name, off); err != nil {
		return 0, err
	}
	return e.f.ReadAt(p, off)
}

func (e *errFile) WriteAt(p []byte, off int64) (int, error) {
	if err := e.fs.check(OpWrite, e.name, off); err != nil {
		return 0, err
	}
	if e.fs.full.Load() {
		st, err := e.f.Stat()
		if err != nil {
			return 0, err
		}
		if off+int64(len(p)) > st.Size() {
			n, err := e.f.WriteAt(p[:len(p)/2], off)
			if err != nil {
				return n, err
			}
			return n, &os.PathError{Op: "write", Path: e.name, Err: ErrNoSpace}
		}
	}
	return e.f.WriteAt(p, off)
}

func (e *errFile) Sync() error {
	if err := e.fs.check(OpSync, e.name, 0); err != nil {
		return err
	}
	return e.f.Sync()
}

func (e *errFile) Truncate(size int64) error {
	if err := e.fs.check(OpTruncate, e.name, size); err != nil {
		return err
	}
	return e.f.Truncate(size)
}

func (e *errFile) Stat() (os.FileInfo, error) {
	if err := e.fs.check(OpFileStat, e.name, 0); err != nil {
		return nil, err
	}
	return e.f.Stat()
}

func (e *errFile) Close() error { return e.f.Close() }

// IsInjected reports whether err is (or wraps) an error errorfs injected.
func IsInjected(err error) bool {
	return errors.Is(err, ErrInjected) || errors.Is(err, ErrNoSpace)
}
