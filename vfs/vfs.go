// Package vfs is the filesystem seam that filelog writes through: a small
// subset of pebble's vfs.FS. Default is the operating system's filesystem;
// NewMem returns an in-memory filesystem that remembers which bytes and
// directory entries were synced, so tests can simulate power loss with
// CrashClone; package errorfs wraps any FS to inject errors.
//
// Files are read and written at explicit offsets (ReadAt/WriteAt), which is
// all an append-only log needs and keeps implementations free of a shared
// file position.
package vfs

import (
	"errors"
	"io"
	"os"
	"path/filepath"
)

// ErrLocked is returned by FS.Lock when another holder (this process or
// another) already holds the lock.
var ErrLocked = errors.New("vfs: file is locked")

// File is an open file. Implementations are safe for concurrent ReadAt and
// WriteAt at disjoint offsets.
type File interface {
	io.ReaderAt
	io.WriterAt
	io.Closer
	// Sync makes the file's content (and, for a directory opened with
	// OpenDir, its entries) durable.
	Sync() error
	// Truncate changes the size of the file.
	Truncate(size int64) error
	// Stat returns the file's metadata; Size is what callers use.
	Stat() (os.FileInfo, error)
}

// FS is a filesystem. Names are slash- or OS-separated paths as accepted by
// path/filepath.
type FS interface {
	// Create creates or truncates name and opens it for reading and writing.
	Create(name string) (File, error)
	// OpenReadWrite opens an existing file, or creates it, for reading and
	// writing without truncating it.
	OpenReadWrite(name string) (File, error)
	// Open opens an existing file read-only.
	Open(name string) (File, error)
	// OpenDir opens a directory so that it can be synced.
	OpenDir(name string) (File, error)
	// Remove removes a file or an empty directory.
	Remove(name string) error
	// Rename renames oldname to newname, replacing newname.
	Rename(oldname, newname string) error
	// MkdirAll creates dir and any missing parents.
	MkdirAll(dir string, perm os.FileMode) error
	// List returns the names (not paths) of the entries of dir, sorted.
	List(dir string) ([]string, error)
	// Stat describes name.
	Stat(name string) (os.FileInfo, error)
	// Lock takes an exclusive advisory lock on name (creating it) and
	// returns a Closer that releases it. A held lock makes Lock return an
	// error wrapping ErrLocked, also within one process.
	Lock(name string) (io.Closer, error)
}

// Default is the operating system's filesystem.
var Default FS = osFS{}

type osFS struct{}

func (osFS) Create(name string) (File, error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	return f, nil
}

func (osFS) OpenReadWrite(name string) (File, error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	return f, nil
}

func (osFS) Open(name string) (File, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	return f, nil
}

func (osFS) OpenDir(name string) (File, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	return f, nil
}

func (osFS) Remove(name string) error             { return os.Remove(name) }
func (osFS) Rename(oldname, newname string) error { return os.Rename(oldname, newname) }
func (osFS) MkdirAll(dir string, perm os.FileMode) error {
	return os.MkdirAll(dir, perm)
}
func (osFS) Stat(name string) (os.FileInfo, error) { return os.Stat(name) }

func (osFS) List(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(ents))
	for i, e := range ents {
		names[i] = e.Name()
	}
	return names, nil
}

func (osFS) Lock(name string) (io.Closer, error) { return lockFile(name) }

// WriteFileAtomic replaces name with data durably and atomically, the
// standard crash-safe replace: it writes data to name+".tmp" (created or
// truncated), syncs and closes it, renames it over name and syncs name's
// directory.
//
// Guarantees, for a name whose previous content (if any) was itself durable:
//   - After a crash at any point, name holds either its previous content
//     or data, never a mix, a prefix or an empty file; if name did not
//     exist, it is either still absent or holds data.
//   - When WriteFileAtomic returns nil, data is durable under name.
//   - When it returns an error, name holds its previous content, or data if
//     the rename succeeded and only the directory sync after it failed
//     (then the replace is visible but may not survive a crash). The temp
//     file of a failure before the rename is removed (best effort; a crash
//     may still leave one behind, and the next call overwrites it).
//
// name+".tmp" belongs to WriteFileAtomic: callers must not use that name
// for anything else, nor replace the same name from two goroutines at once.
// The file is created with FS.Create's permissions (0644 on the OS).
func WriteFileAtomic(fs FS, name string, data []byte) (err error) {
	tmp := name + ".tmp"
	f, err := fs.Create(tmp)
	if err != nil {
		return err
	}
	renamed := false
	defer func() {
		if err != nil && !renamed {
			fs.Remove(tmp) // best effort: the error being returned matters more
		}
	}()
	if _, err := f.WriteAt(data, 0); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := fs.Rename(tmp, name); err != nil {
		return err
	}
	renamed = true
	return SyncDir(fs, filepath.Dir(name))
}

// SyncDir fsyncs directory dir so that entries created, renamed or removed
// in it are durable.
func SyncDir(fs FS, dir string) error {
	d, err := fs.OpenDir(dir)
	if err != nil {
		return err
	}
	if err := d.Sync(); err != nil {
		d.Close()
		return err
	}
	return d.Close()
}

// ReadFile reads the whole of name. A missing name gives an error for which
// errors.Is(err, fs.ErrNotExist) holds.
func ReadFile(fs FS, name string) ([]byte, error) {
	f, err := fs.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	b := make([]byte, st.Size())
	n, err := f.ReadAt(b, 0)
	if err == io.EOF && n == len(b) {
		err = nil
	}
	return b[:n], err
}
