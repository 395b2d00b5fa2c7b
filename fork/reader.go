package fork

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"sort"
	"strings"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/internal/crc32c"
	"github.com/flume-go/flume/vfs"
)

// State says what a file in a forked/ directory is.
type State int

const (
	// Complete: header, every frame (CRC and chain) and the trailer check
	// out. Only complete files count as cut entries.
	Complete State = iota
	// Temp: a file still under its temporary name: a cut being written
	// right now, or one a crash interrupted before it was sealed. No entry
	// of such a file was cut from the log (the cut happens only after the
	// file is sealed), so readers skip it; Reconcile removes it.
	Temp
	// Incomplete: a file under its final name that ends early (no trailer,
	// a cut frame). Sealed files are complete, so this is damage.
	Incomplete
	// Corrupt: a file under its final name that fails a check.
	Corrupt
	// Unsupported: a file of a format version this code does not read.
	Unsupported
)

var stateNames = [...]string{"complete", "temp", "incomplete", "corrupt", "unsupported"}

// String returns the state's name as "flume forked list" prints it.
func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("state(%d)", int(s))
}

// Info describes one file of a forked/ directory.
type Info struct {
	Name    string // file name within the directory
	Path    string // the directory joined with Name
	State   State
	Header  Header // zero if the header could not be decoded
	Entries int64  // entries in the file (for a damaged file: those verified before the damage)
	Bytes   int64  // bytes of those entries' frames
	Size    int64  // file size
	Err     error  // a *FileError saying what and where when State is Incomplete, Corrupt or Unsupported; else nil
}

// Scan reads the fork file at path, checks all of it (header CRC, every
// frame's CRC, seqs After+1..Since in order, the chain hash from AfterHash
// to SinceHash, the trailer's count, length and CRC, nothing after it) and
// calls fn, if not nil, with each entry in seq order. The Entry and its
// Data are valid only during the call. If fn returns an error Scan stops
// and returns it. A check that fails gives a *FileError naming the file
// and the offset; fn may have seen the entries before that point (List and
// Entries check a whole file before calling fn). Scan only reads.
func Scan(fsys vfs.FS, path string, fn func(flume.Entry) error) (Info, error) {
	info := Info{Name: filepath.Base(path), Path: path}
	f, err := fsys.Open(path)
	if err != nil {
		return info, fmt.Errorf("fork: open %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return info, fmt.Errorf("fork: stat %s: %w", path, err)
	}
	info.Size = st.Size()
	err = decode(f, info.Size, path, &info, fn)
	var fe *FileError
	switch {
	case errors.As(err, &fe):
		info.Err = fe
		switch fe.Kind {
		case ErrIncomplete:
			info.State = Incomplete
		case ErrVersion:
			info.State = Unsupported
		default:
			info.State = Corrupt
		}
	case err == nil:
		info.State = Complete
	}
	return info, err
}

// decode reads a whole fork file of size bytes from r into info, calling
// fn per entry. Problems with the bytes are *FileError; I/O errors and
// fn's errors are returned as they are.
func decode(r io.ReaderAt, size int64, path string, info *Info, fn func(flume.Entry) error) error {
	br := bufio.NewReaderSize(io.NewSectionReader(r, 0, size), 64<<10)
	var off int64
	read := func(b []byte) error {
		n, err := io.ReadFull(br, b)
		off += int64(n)
		if err != nil {
			return fmt.Errorf("fork: read %s at offset %d: %w", path, off, err)
		}
		return nil
	}
	bad := func(at, seq int64, kind error, format string, a ...any) error {
		return &FileError{Path: path, Offset: at, Seq: seq, Reason: fmt.Sprintf(format, a...), Kind: kind}
	}

	// Header.
	if size < prefixSize {
		p := make([]byte, size)
		if err := read(p); err != nil {
			return err
		}
		if !strings.HasPrefix(fileMagic, string(p[:min(len(p), len(fileMagic))])) {
			return bad(0, -1, flume.ErrCorrupt, "bad magic %q: not a fork file", p[:min(len(p), len(fileMagic))])
		}
		return bad(0, -1, ErrIncomplete, "the file is %d bytes, shorter than a header", size)
	}
	prefix := make([]byte, prefixSize)
	if err := read(prefix); err != nil {
		return err
	}
	n, herr := decodePrefix(prefix)
	if herr != nil {
		return bad(herr.offset, -1, herr.kind, "%s", herr.reason)
	}
	if size-off < int64(n) {
		return bad(0, -1, ErrIncomplete, "the header is %d bytes, the file ends %d bytes into it", prefixSize+n, size)
	}
	body := make([]byte, n)
	if err := read(body); err != nil {
		return err
	}
	h, herr := decodeBody(prefix, body)
	if herr != nil {
		return bad(herr.offset, -1, herr.kind, "%s", herr.reason)
	}
	info.Header = h

	// Frames.
	start := off
	c := newChain(&h)
	var crc uint32
	buf := make([]byte, frameHeaderSize, 4096)
	for !c.done() {
		at, seq := off, c.next
		if size-off < frameHeaderSize {
			return bad(at, seq, ErrIncomplete, "the file ends after %d of the cut's %d entries (%d bytes left)", info.Entries, h.Entries(), size-off)
		}
		buf = buf[:frameHeaderSize]
		if err := read(buf); err != nil {
			return err
		}
		l, ok := framePayloadLen(buf)
		if !ok {
			return bad(at, seq, flume.ErrCorrupt, "frame claims a %d-byte payload", l)
		}
		if size-off < int64(l) {
			return bad(at, seq, ErrIncomplete, "frame claims a %d-byte payload, the file has %d bytes left", l, size-off)
		}
		if cap(buf) < frameHeaderSize+l {
			buf = append(buf, make([]byte, l)...)
		}
		buf = buf[:frameHeaderSize+l]
		if err := read(buf[frameHeaderSize:]); err != nil {
			return err
		}
		e, msg := decodeFrame(buf)
		if msg != "" {
			return bad(at, seq, flume.ErrCorrupt, "%s", msg)
		}
		if msg := c.check(e); msg != "" {
			return bad(at, seq, flume.ErrCorrupt, "%s", msg)
		}
		crc = crc32c.Update(crc, buf)
		info.Entries++
		info.Bytes += int64(len(buf))
		if fn != nil {
			if err := fn(e); err != nil {
				return err
			}
		}
	}

	// Trailer.
	at := off
	if size-off < trailerSize {
		return bad(at, -1, ErrIncomplete, "no trailer: the file ends %d bytes after the last frame", size-off)
	}
	tb := make([]byte, trailerSize)
	if err := read(tb); err != nil {
		return err
	}
	t, msg := decodeTrailer(tb)
	if msg != "" {
		return bad(at, -1, flume.ErrCorrupt, "%s", msg)
	}
	if t.frames != info.Entries || t.bytes != off-trailerSize-start || t.crc != crc {
		return bad(at, -1, flume.ErrCorrupt, "trailer says %d entries in %d bytes with CRC %08x, the file has %d in %d with CRC %08x",
			t.frames, t.bytes, t.crc, info.Entries, off-trailerSize-start, crc)
	}
	if off < size {
		return bad(off, -1, flume.ErrCorrupt, "%d bytes after the trailer", size-off)
	}
	return nil
}

// List describes every fork file in dir, oldest first (by name, which is
// creation order). Each file under its final name is checked whole, as
// Scan does: a damaged one is listed with State Incomplete, Corrupt or
// Unsupported and Err saying what and where; List itself does not fail for
// it. Temporary files are listed as Temp (with their header if it can be
// read). Names that are not fork files are ignored. A missing dir is an
// empty list (nothing was ever cut). List only reads, and is safe while the
// node runs: a file sealed during the call may or may not be listed.
func List(fsys vfs.FS, dir string) ([]Info, error) {
	names, err := fsys.List(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("fork: list %s: %w", dir, err)
	}
	sort.Strings(names)
	var infos []Info
	for _, name := range names {
		path := filepath.Join(dir, name)
		temp := strings.HasSuffix(name, Suffix+TempSuffix)
		if !temp && !strings.HasSuffix(name, Suffix) {
			continue
		}
		info, err := Scan(fsys, path, nil)
		var fe *FileError
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue // sealed (renamed) or withdrawn since the listing
		case temp:
			info.State, info.Err = Temp, nil
		case err != nil && !errors.As(err, &fe):
			return nil, err
		}
		infos = append(infos, info)
	}
	return infos, nil
}

// Entries calls fn with every entry ever cut, as recorded in dir's complete
// files: oldest file first, each file's entries in seq order. It checks
// every file first (as List does) and returns the first damaged file's
// *FileError before calling fn at all, so fn sees either every entry or
// none. Temporary files are skipped: their entries were never cut (List
// reports them). The Entry and its Data are valid only during the call; if
// fn returns an error Entries stops and returns it. Entries only reads and
// is safe while the node runs.
func Entries(fsys vfs.FS, dir string, fn func(Info, flume.Entry) error) error {
	infos, err := List(fsys, dir)
	if err != nil {
		return err
	}
	for _, info := range infos {
		if info.Err != nil {
			return info.Err
		}
	}
	for _, info := range infos {
		if info.State != Complete {
			continue
		}
		_, err := Scan(fsys, info.Path, func(e flume.Entry) error { return fn(info, e) })
		if errors.Is(err, fs.ErrNotExist) {
			continue // withdrawn since List (Reconcile): its entries are in the log
		}
		if err != nil {
			return err
		}
	}
	return nil
}
