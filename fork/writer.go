package fork

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"time"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/internal/crc32c"
	"github.com/flume-go/flume/vfs"
)

// Writer writes one fork file: Create writes the header under a temporary
// name, Write takes the cut's frames (the stream TruncateAfter produces),
// and the Write that completes the frame of Header.Since seals the file
// before it returns. A Writer is not safe for concurrent use.
//
// Sealing is: write the trailer, fsync the file, close it, rename it to its
// final name, fsync the directory. Because that happens inside the last
// Write, and TruncateAfter cuts only after every Write succeeded, the file
// is complete and durable before anything is cut, with no hook needed
// between TruncateAfter's copy and its cut.
type Writer struct {
	fsys  vfs.FS
	dir   string
	name  string // final file name
	h     Header
	f     vfs.File // nil once closed
	off   int64    // next write offset
	start int64    // offset of the first frame

	c       chain
	pending []byte // a frame not yet complete
	crc     uint32 // CRC32C of the frame bytes so far
	frames  int64

	state writerState
	err   error // sticky: the first failure
}

var _ io.Writer = (*Writer)(nil)

type writerState int

const (
	writing   writerState = iota
	renamed               // the final name exists; the directory sync may not have happened
	committed             // complete and durable under the final name
	aborted
)

// Create starts a fork file in dir for the cut h describes and returns a
// Writer to hand to flume.TruncatableLog.TruncateAfter (see the package
// documentation for the order of calls). It creates dir if needed and
// fsyncs dir's parent, so that dir itself survives a crash. The file is
// named so that lexical order is creation order (see the package
// documentation) and has the temporary suffix until it is sealed.
//
// h.Time zero means now. h must describe a non-empty cut (else
// ErrEmptyCut) and respect MaxReason and MaxEpochs. Create allows one
// Writer per directory at a time: the node that owns the log is the only
// writer of its forked/ directory.
func Create(fsys vfs.FS, dir string, h Header) (*Writer, error) {
	if err := h.validate(); err != nil {
		return nil, err
	}
	if h.Time.IsZero() {
		h.Time = time.Now()
	}
	h.Time = time.Unix(0, h.Time.UnixNano()).UTC() // what a reader decodes
	if len(h.Epochs) == 0 {
		h.Epochs = nil
	} else {
		h.Epochs = append([]flume.EpochRecord(nil), h.Epochs...)
	}
	if err := fsys.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("fork: create %s: %w", dir, err)
	}
	if err := vfs.SyncDir(fsys, filepath.Dir(dir)); err != nil {
		return nil, fmt.Errorf("fork: sync the parent of %s: %w", dir, err)
	}
	names, err := fsys.List(dir)
	if err != nil {
		return nil, fmt.Errorf("fork: list %s: %w", dir, err)
	}
	var n uint64
	for _, name := range names {
		if k, ok := fileNumber(name); ok && k > n {
			n = k
		}
	}
	w := &Writer{fsys: fsys, dir: dir, name: fileName(n+1, h.Time), h: h, c: newChain(&h)}
	w.f, err = fsys.Create(w.tempPath())
	if err != nil {
		return nil, fmt.Errorf("fork: create %s: %w", w.tempPath(), err)
	}
	hdr := appendHeader(nil, &h)
	if _, err := w.f.WriteAt(hdr, 0); err != nil {
		w.f.Close()
		fsys.Remove(w.tempPath()) // best effort; a leftover temp file is never taken for a cut
		return nil, fmt.Errorf("fork: write header of %s: %w", w.tempPath(), err)
	}
	w.off = int64(len(hdr))
	w.start = w.off
	return w, nil
}

func (w *Writer) tempPath() string { return filepath.Join(w.dir, w.name+TempSuffix) }

// Path is where the file lives once committed.
func (w *Writer) Path() string { return filepath.Join(w.dir, w.name) }

// Header returns the header as written (Time normalized to what a reader
// decodes).
func (w *Writer) Header() Header { return w.h }

// Write appends frames to the file, exactly as given. p may hold any part
// of the stream: frames may span calls. Every frame is checked as it
// completes (CRC, seq After+1, After+2, ..., chain hash from AfterHash, and
// SinceHash at Since); anything else fails with ErrStream. The call that
// completes the frame of Since seals the file (trailer, fsync, rename,
// directory fsync) before returning nil, so a nil return of that call means
// the file is complete and durable. Bytes after that frame fail with
// ErrStream; the sealed file then describes a cut that is not happening,
// and the caller must Abort (Truncate does).
//
// Errors are sticky: after one, every call returns it.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	switch w.state {
	case aborted:
		return 0, ErrClosed
	case renamed, committed:
		if len(p) == 0 {
			return 0, nil
		}
		return 0, w.fail(fmt.Errorf("%w: %d bytes after the last frame of the cut (seq %d)", ErrStream, len(p), w.h.Since))
	}
	if _, err := w.f.WriteAt(p, w.off); err != nil {
		return 0, w.fail(fmt.Errorf("fork: write %s: %w", w.tempPath(), err))
	}
	w.off += int64(len(p))
	w.crc = crc32c.Update(w.crc, p)
	data := p
	if len(w.pending) > 0 {
		w.pending = append(w.pending, p...)
		data = w.pending
	}
	for len(data) >= frameHeaderSize {
		off := w.off - int64(len(data)) // file offset of this frame
		l, ok := framePayloadLen(data)
		if !ok {
			return 0, w.fail(fmt.Errorf("%w: frame at offset %d claims a %d-byte payload", ErrStream, off, l))
		}
		if len(data) < frameHeaderSize+l {
			break
		}
		if w.c.done() {
			return 0, w.fail(fmt.Errorf("%w: bytes at offset %d after the last frame of the cut (seq %d)", ErrStream, off, w.h.Since))
		}
		e, msg := decodeFrame(data[:frameHeaderSize+l])
		if msg != "" {
			return 0, w.fail(fmt.Errorf("%w: frame at offset %d: %s", ErrStream, off, msg))
		}
		if msg := w.c.check(e); msg != "" {
			return 0, w.fail(fmt.Errorf("%w: frame at offset %d: %s", ErrStream, off, msg))
		}
		w.frames++
		data = data[frameHeaderSize+l:]
	}
	w.pending = append(w.pending[:0], data...)
	if w.c.done() {
		if len(w.pending) > 0 {
			return 0, w.fail(fmt.Errorf("%w: %d bytes after the last frame of the cut (seq %d)", ErrStream, len(w.pending), w.h.Since))
		}
		if err := w.seal(); err != nil {
			return 0, w.fail(err)
		}
	}
	return len(p), nil
}

// seal makes the complete file durable under its final name.
func (w *Writer) seal() error {
	t := appendTrailer(nil, trailer{frames: w.frames, bytes: w.off - w.start, crc: w.crc})
	if _, err := w.f.WriteAt(t, w.off); err != nil {
		return fmt.Errorf("fork: write trailer of %s: %w", w.tempPath(), err)
	}
	w.off += int64(len(t))
	if err := w.f.Sync(); err != nil {
		return fmt.Errorf("fork: sync %s: %w", w.tempPath(), err)
	}
	f := w.f
	w.f = nil
	if err := f.Close(); err != nil {
		return fmt.Errorf("fork: close %s: %w", w.tempPath(), err)
	}
	if err := w.fsys.Rename(w.tempPath(), w.Path()); err != nil {
		return fmt.Errorf("fork: rename %s: %w", w.tempPath(), err)
	}
	w.state = renamed
	if err := vfs.SyncDir(w.fsys, w.dir); err != nil {
		return fmt.Errorf("fork: sync %s: %w", w.dir, err)
	}
	w.state = committed
	w.pending = nil
	return nil
}

func (w *Writer) fail(err error) error {
	w.err = err
	return err
}

// Commit returns nil once the file is complete and durable under Path: the
// cut's last frame was written and sealing succeeded (in that Write). It
// does no I/O of its own; it is where the caller learns the outcome. Before
// the last frame it returns ErrUnfinished (nothing is committed; call
// Abort); after a failed Write, that Write's error.
func (w *Writer) Commit() error {
	switch {
	case w.err != nil:
		return w.err
	case w.state == aborted:
		return ErrClosed
	case w.state == committed:
		return nil
	}
	return fmt.Errorf("%w: %d of %d entries written to %s (next seq %d, cut ends at %d)",
		ErrUnfinished, w.frames, w.h.Entries(), w.tempPath(), w.c.next, w.h.Since)
}

// Abort removes the file, whatever state it is in: the temporary file of
// an unfinished cut, or the sealed file of a cut that did not take effect
// (TruncateAfter failed after the last Write). A removed sealed file is
// removed durably (directory fsync). Only abort a sealed file while the log
// still holds its entries, or they are lost (Truncate checks that).
// Calling Abort again returns nil.
func (w *Writer) Abort() error {
	if w.state == aborted {
		return nil
	}
	if w.f != nil {
		w.f.Close()
		w.f = nil
	}
	name := w.tempPath()
	if w.state == renamed || w.state == committed {
		name = w.Path()
	}
	w.state = aborted
	if err := w.fsys.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("fork: remove %s: %w", name, err)
	}
	if name == w.Path() {
		if err := vfs.SyncDir(w.fsys, w.dir); err != nil {
			return fmt.Errorf("fork: sync %s: %w", w.dir, err)
		}
	}
	return nil
}

// Info describes the committed file (State Complete), as List would.
// Before Commit succeeds it describes the file being written (State Temp).
func (w *Writer) Info() Info {
	i := Info{Name: w.name, Path: w.Path(), State: Complete, Header: w.h, Entries: w.frames, Bytes: w.off - w.start, Size: w.off}
	if w.state == renamed || w.state == committed {
		i.Bytes -= trailerSize
	}
	if w.state != committed {
		i.Name, i.Path, i.State = w.name+TempSuffix, w.tempPath(), Temp
	}
	return i
}
