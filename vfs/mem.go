package vfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// MemFS is an in-memory FS that is crashable: for every file it keeps the
// content as last synced next to the current content, and for every
// directory the entries as of its last sync. CrashClone returns the state a
// power loss would leave. The zero value is not usable; call NewMem.
//
// Simplifications: MkdirAll is durable at once (directories themselves never
// vanish); file creation, rename and removal are durable once the directory
// is synced (OpenDir(dir).Sync()).
type MemFS struct {
	mu    sync.Mutex // guards every node and locks
	root  *memNode
	locks map[string]bool
}

var _ FS = (*MemFS)(nil)

type memNode struct {
	dir bool

	// files
	data      []byte // current content
	synced    []byte // content as of the last Sync
	dirty     bool   // data differs from synced
	dirtyFrom int    // first offset where data may differ from synced
	modTime   time.Time

	// directories
	children       map[string]*memNode
	syncedChildren map[string]*memNode
}

func newDir() *memNode {
	return &memNode{dir: true, children: map[string]*memNode{}, syncedChildren: map[string]*memNode{}}
}

// NewMem returns an empty in-memory filesystem.
func NewMem() *MemFS {
	return &MemFS{root: newDir(), locks: map[string]bool{}}
}

func splitPath(name string) []string {
	p := path.Clean("/" + filepath.ToSlash(name))
	if p == "/" {
		return nil
	}
	return strings.Split(p[1:], "/")
}

// walk returns the directory holding name's last element and that element.
func (m *MemFS) walk(name string) (*memNode, string, error) {
	parts := splitPath(name)
	if len(parts) == 0 {
		return nil, "", &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid}
	}
	d := m.root
	for _, p := range parts[:len(parts)-1] {
		c, ok := d.children[p]
		if !ok || !c.dir {
			return nil, "", &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
		}
		d = c
	}
	return d, parts[len(parts)-1], nil
}

func (m *MemFS) lookup(name string) (*memNode, error) {
	if len(splitPath(name)) == 0 {
		return m.root, nil
	}
	d, base, err := m.walk(name)
	if err != nil {
		return nil, err
	}
	n, ok := d.children[base]
	if !ok {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	return n, nil
}

func (m *MemFS) openFile(name string, create, trunc, write bool) (File, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, base, err := m.walk(name)
	if err != nil {
		return nil, err
	}
	n, ok := d.children[base]
	switch {
	case ok && n.dir:
		return nil, &fs.PathError{Op: "open", Path: name, Err: errors.New("is a directory")}
	case !ok && !create:
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	case !ok:
		n = &memNode{modTime: time.Now()}
		d.children[base] = n
	case trunc:
		n.truncate(0)
	}
	return &memFile{fs: m, n: n, name: name, write: write}, nil
}

// Create implements FS.
func (m *MemFS) Create(name string) (File, error) { return m.openFile(name, true, true, true) }

// OpenReadWrite implements FS.
func (m *MemFS) OpenReadWrite(name string) (File, error) {
	return m.openFile(name, true, false, true)
}

// Open implements FS.
func (m *MemFS) Open(name string) (File, error) { return m.openFile(name, false, false, false) }

// OpenDir implements FS.
func (m *MemFS) OpenDir(name string) (File, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.lookup(name)
	if err != nil {
		return nil, err
	}
	if !n.dir {
		return nil, &fs.PathError{Op: "opendir", Path: name, Err: errors.New("not a directory")}
	}
	return &memFile{fs: m, n: n, name: name}, nil
}

// Remove implements FS.
func (m *MemFS) Remove(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, base, err := m.walk(name)
	if err != nil {
		return err
	}
	n, ok := d.children[base]
	if !ok {
		return &fs.PathError{Op: "remove", Path: name, Err: fs.ErrNotExist}
	}
	if n.dir && len(n.children) > 0 {
		return &fs.PathError{Op: "remove", Path: name, Err: errors.New("directory not empty")}
	}
	delete(d.children, base)
	return nil
}

// Rename implements FS.
func (m *MemFS) Rename(oldname, newname string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	od, ob, err := m.walk(oldname)
	if err != nil {
		return err
	}
	n, ok := od.children[ob]
	if !ok {
		return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: fs.ErrNotExist}
	}
	nd, nb, err := m.walk(newname)
	if err != nil {
		return err
	}
	delete(od.children, ob)
	nd.children[nb] = n
	return nil
}

// MkdirAll implements FS. New directories are durable at once.
func (m *MemFS) MkdirAll(dir string, perm os.FileMode) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	d := m.root
	for _, p := range splitPath(dir) {
		c, ok := d.children[p]
		if !ok {
			c = newDir()
			d.children[p] = c
			d.syncedChildren[p] = c
		} else if !c.dir {
			return &fs.PathError{Op: "mkdir", Path: dir, Err: errors.New("not a directory")}
		}
		d = c
	}
	return nil
}

// List implements FS.
func (m *MemFS) List(dir string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.lookup(dir)
	if err != nil {
		return nil, err
	}
	if !n.dir {
		return nil, &fs.PathError{Op: "readdir", Path: dir, Err: errors.New("not a directory")}
	}
	names := make([]string, 0, len(n.children))
	for k := range n.children {
		names = append(names, k)
	}
	sort.Strings(names)
	return names, nil
}

// Stat implements FS.
func (m *MemFS) Stat(name string) (os.FileInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.lookup(name)
	if err != nil {
		return nil, err
	}
	return n.info(path.Base(filepath.ToSlash(name))), nil
}

type memLock struct {
	m    *MemFS
	name string
	once sync.Once
}

func (l *memLock) Close() error {
	l.once.Do(func() {
		l.m.mu.Lock()
		delete(l.m.locks, l.name)
		l.m.mu.Unlock()
	})
	return nil
}

// Lock implements FS. Locks live in the MemFS value, not in the files.
func (m *MemFS) Lock(name string) (io.Closer, error) {
	f, err := m.OpenReadWrite(name)
	if err != nil {
		return nil, err
	}
	f.Close()
	key := path.Clean("/" + filepath.ToSlash(name))
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.locks[key] {
		return nil, fmt.Errorf("vfs: lock %s: %w", name, ErrLocked)
	}
	m.locks[key] = true
	return &memLock{m: m, name: key}, nil
}

// CrashConfig says what a simulated power loss keeps beyond synced state.
type CrashConfig struct {
	// UnsyncedDataPercent is the probability (0..100) that a file with
	// unsynced writes keeps a random prefix of them, and that a directory
	// with unsynced entry changes keeps them. 0 keeps only synced state.
	UnsyncedDataPercent int
	// Rand drives the choices; nil uses a fixed seed.
	Rand *rand.Rand
}

// CrashClone returns a new MemFS holding what would survive a power loss
// now: every file's synced content (plus, per cfg, part of what was written
// after) under the directory entries as of each directory's last sync. Locks
// are not carried over. m is unchanged and stays usable.
func (m *MemFS) CrashClone(cfg CrashConfig) *MemFS {
	m.mu.Lock()
	defer m.mu.Unlock()
	rng := cfg.Rand
	if rng == nil {
		rng = rand.New(rand.NewPCG(1, 2))
	}
	keep := func() bool { return cfg.UnsyncedDataPercent > 0 && rng.IntN(100) < cfg.UnsyncedDataPercent }
	var clone func(n *memNode) *memNode
	clone = func(n *memNode) *memNode {
		if n.dir {
			c := newDir()
			src := n.syncedChildren
			if keep() {
				src = n.children
			}
			for k, v := range src {
				cv := clone(v)
				c.children[k] = cv
				c.syncedChildren[k] = cv
			}
			return c
		}
		c := &memNode{modTime: n.modTime}
		content := append([]byte(nil), n.synced...)
		if n.dirty && keep() {
			k := n.dirtyFrom + rng.IntN(len(n.data)-n.dirtyFrom+1)
			cur := append([]byte(nil), n.data[:k]...)
			if len(content) > k {
				cur = append(cur, content[k:]...)
			}
			content = cur
		}
		c.data = content
		c.synced = append([]byte(nil), content...)
		return c
	}
	return &MemFS{root: clone(m.root), locks: map[string]bool{}}
}

func (n *memNode) markDirty(from int) {
	if !n.dirty || from < n.dirtyFrom {
		n.dirtyFrom = from
	}
	n.dirty = true
}

func (n *memNode) truncate(size int) {
	if size < len(n.data) {
		n.markDirty(size)
		n.data = n.data[:size]
	} else if size > len(n.data) {
		n.markDirty(len(n.data))
		n.data = append(n.data, make([]byte, size-len(n.data))...)
	}
	n.modTime = time.Now()
}

func (n *memNode) info(name string) os.FileInfo {
	return &memInfo{name: name, size: int64(len(n.data)), dir: n.dir, mod: n.modTime}
}

type memInfo struct {
	name string
	size int64
	dir  bool
	mod  time.Time
}

func (i *memInfo) Name() string { return i.name }
func (i *memInfo) Size() int64  { return i.size }
func (i *memInfo) Mode() os.FileMode {
	if i.dir {
		return os.ModeDir | 0o755
	}
	return 0o644
}
func (i *memInfo) ModTime() time.Time { return i.mod }
func (i *memInfo) IsDir() bool        { return i.dir }
func (i *memInfo) Sys() any           { return nil }

type memFile struct {
	fs     *MemFS
	n      *memNode
	name   string
	write  bool
	closed bool // guarded by fs.mu
}

var errClosed = errors.New("vfs: file already closed")

func (f *memFile) ReadAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return 0, errClosed
	}
	if f.n.dir {
		return 0, &fs.PathError{Op: "read", Path: f.name, Err: errors.New("is a directory")}
	}
	if off < 0 {
		return 0, &fs.PathError{Op: "read", Path: f.name, Err: fs.ErrInvalid}
	}
	if off >= int64(len(f.n.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.n.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *memFile) WriteAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return 0, errClosed
	}
	if !f.write || f.n.dir {
		return 0, &fs.PathError{Op: "write", Path: f.name, Err: fs.ErrPermission}
	}
	if off < 0 {
		return 0, &fs.PathError{Op: "write", Path: f.name, Err: fs.ErrInvalid}
	}
	n := f.n
	end := int(off) + len(p)
	if int(off) > len(n.data) {
		n.truncate(int(off))
	}
	n.markDirty(int(off))
	if end > len(n.data) {
		if end > cap(n.data) {
			nd := make([]byte, len(n.data), max(end, 2*cap(n.data)))
			copy(nd, n.data)
			n.data = nd
		}
		n.data = n.data[:end]
	}
	copy(n.data[off:], p)
	n.modTime = time.Now()
	return len(p), nil
}

func (f *memFile) Sync() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return errClosed
	}
	n := f.n
	if n.dir {
		n.syncedChildren = make(map[string]*memNode, len(n.children))
		for k, v := range n.children {
			n.syncedChildren[k] = v
		}
		return nil
	}
	if n.dirty {
		from := min(n.dirtyFrom, len(n.synced), len(n.data))
		n.synced = append(n.synced[:from], n.data[from:]...)
		n.dirty = false
	}
	return nil
}

func (f *memFile) Truncate(size int64) error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return errClosed
	}
	if !f.write || f.n.dir {
		return &fs.PathError{Op: "truncate", Path: f.name, Err: fs.ErrPermission}
	}
	f.n.truncate(int(size))
	return nil
}

func (f *memFile) Stat() (os.FileInfo, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return nil, errClosed
	}
	return f.n.info(path.Base(filepath.ToSlash(f.name))), nil
}

func (f *memFile) Close() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return errClosed
	}
	f.closed = true
	return nil
}
