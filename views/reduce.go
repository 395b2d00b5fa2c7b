package views

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sync"
	"time"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/internal/crc32c"
	"github.com/flume-go/flume/vfs"
)

// ReduceFunc folds one entry into the state and returns the new state. It is
// called in seq order from one goroutine. e.Data is valid only during the
// call. It may update a map or slice state in place, but then readers must
// use Reduce.Read, not Get (see Get). On error it must leave state as it
// was: the view stops at the entry before e and the DB reports the error.
type ReduceFunc[S any] func(state S, e flume.Entry) (S, error)

// StateCodec encodes a reduce view's state for its file.
type StateCodec[S any] interface {
	Marshal(state S) ([]byte, error)
	Unmarshal(data []byte) (S, error)
}

// JSONCodec is the default StateCodec: encoding/json.
type JSONCodec[S any] struct{}

// Marshal implements StateCodec.
func (JSONCodec[S]) Marshal(s S) ([]byte, error) { return json.Marshal(s) }

// Unmarshal implements StateCodec.
func (JSONCodec[S]) Unmarshal(b []byte) (S, error) {
	var s S
	err := json.Unmarshal(b, &s)
	return s, err
}

// ReduceOptions tune a reduce view; nil means defaults.
type ReduceOptions[S any] struct {
	// Codec encodes the state for the file. Default JSONCodec.
	Codec StateCodec[S]
	// SaveInterval is the least time between two saves of the state while
	// the view is being fed. Default 1s: a save rewrites the whole state
	// and costs a few fsyncs, so saving per batch would make a large state's
	// build quadratic; what was not saved is simply re-applied from the log
	// after a crash. Negative saves after every Apply batch. The state is
	// always saved on Close and by Save.
	SaveInterval time.Duration
	// FS is the filesystem the state file is read from and written to.
	// Default vfs.Default (the operating system's); tests pass a vfs.MemFS
	// to simulate crashes or an errorfs.FS to inject failures.
	FS vfs.FS
}

// Reduce is a view that folds every entry of the log into one state value
// of type S (flumedb's flumeview-reduce). Its state and since are saved
// together in one file, atomically (vfs.WriteFileAtomic: written to
// path+".tmp", fsynced, renamed over the old one, directory fsynced), with
// a CRC and the version string, so that after a crash the file holds a
// state the view really had with its own since. Create it with NewReduce
// and attach it with DB.Use.
type Reduce[S any] struct {
	fs            vfs.FS
	path, version string
	initial       func() S
	fn            ReduceFunc[S]
	codec         StateCodec[S]
	saveInterval  time.Duration

	// foldMu guards state: Apply holds it while the ReduceFunc runs (which
	// may update the state in place), Read and save hold it for reading.
	// Nothing else waits on it, so a slow or stuck ReduceFunc delays only
	// reads of the state, and those give up when their context ends.
	foldMu sync.RWMutex
	state  S

	mu     sync.RWMutex // guards the fields below; held only briefly
	since  int64
	hash   flume.Hash // chain hash of entry since
	host   flume.ViewHost
	closed bool

	// saveMu serialises saves; it guards saved and lastSave. A failed save
	// leaves saved as it was, so the next Save (and Close) tries again.
	saveMu   sync.Mutex
	saved    int64 // since of the state in the file (-2: unknown, save on Close)
	lastSave time.Time
	logger   *slog.Logger
}

var _ flume.ChainView = (*Reduce[int])(nil)

// NewReduce returns a reduce view persisted at path ("" keeps the state in
// memory only: it is rebuilt from the log each time it is used). version
// names the reducer's logic and the state's format: when it differs from
// the version in the file, the view is rebuilt from the start of the log.
// initial returns the empty state (nil: the zero value of S); it is called
// again on every rebuild, so it must return a fresh value.
func NewReduce[S any](path, version string, initial func() S, fn ReduceFunc[S], opts *ReduceOptions[S]) *Reduce[S] {
	if initial == nil {
		initial = func() S { var s S; return s }
	}
	r := &Reduce[S]{fs: vfs.Default, path: path, version: version, initial: initial, fn: fn, codec: JSONCodec[S]{},
		saveInterval: time.Second, since: -1, saved: -1, logger: slog.New(slog.DiscardHandler)}
	if opts != nil {
		if opts.FS != nil {
			r.fs = opts.FS
		}
		if opts.Codec != nil {
			r.codec = opts.Codec
		}
		if opts.SaveInterval != 0 {
			r.saveInterval = opts.SaveInterval
		}
	}
	r.state = initial()
	return r
}

// Open implements flume.View: it loads the saved state. A missing file is an
// empty view; a file of another version, or one that fails its CRC or does
// not decode, is discarded (with a warning) and the view rebuilt: the state
// is derived data and the log can always rebuild it.
func (r *Reduce[S]) Open(host flume.ViewHost) error {
	if r.fn == nil {
		return errors.New("views: reduce: nil ReduceFunc")
	}
	r.foldMu.Lock()
	defer r.foldMu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.host != nil {
		return errors.New("views: reduce: view is already open")
	}
	r.host = host
	r.logger = host.Logger()
	r.lastSave = time.Now()
	if r.path == "" {
		return nil
	}
	b, err := vfs.ReadFile(r.fs, r.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("views: reduce: %w", err)
	}
	f, err := decodeReduceFile(b)
	if err != nil {
		r.logger.Warn("views: reduce: discarding unreadable state file; rebuilding", "path", r.path, "err", err)
		r.saved = -2
		return nil
	}
	if f.version != r.version {
		r.logger.Info("views: reduce: version changed; rebuilding", "path", r.path, "old", f.version, "new", r.version)
		r.saved = -2
		return nil
	}
	st, err := r.codec.Unmarshal(f.state)
	if err != nil {
		r.logger.Warn("views: reduce: discarding state that does not decode; rebuilding", "path", r.path, "err", err)
		r.saved = -2
		return nil
	}
	r.state, r.since, r.hash, r.saved = st, f.since, f.hash, f.since
	return nil
}

// Since implements flume.View.
func (r *Reduce[S]) Since() int64 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.since
}

// SinceHash implements flume.ChainView.
func (r *Reduce[S]) SinceHash() flume.Hash {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.hash
}

// Apply implements flume.View: it folds the batch under the write lock, then
// saves the state if SaveInterval has passed. A failed save does not fail
// Apply: it is logged, retried after the next batch, and returned by Save
// and Close until a save succeeds.
func (r *Reduce[S]) Apply(entries []flume.Entry) error {
	r.foldMu.Lock()
	st, n := r.state, 0
	var err error
	for _, e := range entries {
		var ns S
		if ns, err = r.fn(st, e); err != nil {
			break
		}
		st = ns
		n++
	}
	if n > 0 {
		r.state = st
		r.mu.Lock()
		r.since, r.hash = entries[n-1].Seq, entries[n-1].Hash
		r.mu.Unlock()
	}
	r.foldMu.Unlock()
	if err != nil {
		return fmt.Errorf("views: reduce: entry %d: %w", entries[n].Seq, err)
	}
	if r.path != "" && (r.saveInterval < 0 || time.Since(r.lastSave) >= r.saveInterval) {
		if err := r.save(); err != nil {
			// Keep serving from memory; the next batch retries and Close
			// reports the error. The log still holds everything.
			r.logger.Warn("views: reduce: save failed; will retry", "path", r.path, "err", err)
		}
	}
	return nil
}

// Reset implements flume.View: the state becomes initial() and Since -1.
// The file is rewritten at the next save; until then it still holds an
// older state that Open would detect again (ahead, other history or version).
func (r *Reduce[S]) Reset() error {
	// Lock order: saveMu, foldMu, mu, as in save.
	r.saveMu.Lock()
	defer r.saveMu.Unlock()
	r.foldMu.Lock()
	defer r.foldMu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.state, r.since, r.hash, r.saved = r.initial(), -1, flume.Hash{}, -2
	return nil
}

// Get waits until the view has applied every entry published when Get was
// called (read-your-writes), or ctx ends, then returns the state. The value
// is shared with the view: if S holds maps, slices or pointers that the
// ReduceFunc updates in place, read it through Read instead, or make the
// ReduceFunc copy on write.
func (r *Reduce[S]) Get(ctx context.Context) (S, error) {
	var out S
	err := r.Read(ctx, func(s S) error { out = s; return nil })
	return out, err
}

// Read is Get that calls fn with the state while holding the view's read
// lock, so fn may read a state that the ReduceFunc updates in place. fn must
// not keep references into the state or call back into the view.
func (r *Reduce[S]) Read(ctx context.Context, fn func(state S) error) error {
	r.mu.RLock()
	host, closed := r.host, r.closed
	r.mu.RUnlock()
	if closed {
		return fmt.Errorf("views: reduce: %w", flume.ErrClosed)
	}
	if host == nil {
		return errors.New("views: reduce: view is not attached to a DB (call DB.Use)")
	}
	if err := host.Sync(ctx); err != nil {
		return fmt.Errorf("views: reduce: %w", err)
	}
	// The view has caught up, but a fold of later entries may hold the
	// state: wait for it no longer than ctx allows.
	if err := rlockCtx(ctx, &r.foldMu); err != nil {
		return fmt.Errorf("views: reduce: %w", err)
	}
	defer r.foldMu.RUnlock()
	r.mu.RLock()
	closed = r.closed
	r.mu.RUnlock()
	if closed {
		return fmt.Errorf("views: reduce: %w", flume.ErrClosed)
	}
	return fn(r.state)
}

// rlockCtx read-locks mu, or gives up when ctx ends first. A lock acquired
// after giving up is released at once by the goroutine that waited for it.
func rlockCtx(ctx context.Context, mu *sync.RWMutex) error {
	if mu.TryRLock() {
		return nil
	}
	got := make(chan struct{})
	go func() { // ends as soon as the lock is free
		mu.RLock()
		close(got)
	}()
	select {
	case <-got:
		return nil
	case <-ctx.Done():
		go func() { <-got; mu.RUnlock() }()
		return ctx.Err()
	}
}

// Save writes the state and its since to the file now, if they changed
// since the last save. It is safe to call concurrently with the feed. When
// it returns an error the view keeps serving from memory, and the file
// still holds the state of the last successful save (or, if only the final
// directory sync failed, the new one, which a crash may undo): either way a
// state the view had, with its since.
func (r *Reduce[S]) Save() error {
	if r.path == "" {
		return nil
	}
	return r.save()
}

func (r *Reduce[S]) save() error {
	r.saveMu.Lock()
	defer r.saveMu.Unlock()
	r.foldMu.RLock()
	r.mu.RLock()
	since, hash := r.since, r.hash
	r.mu.RUnlock()
	if since == r.saved {
		r.foldMu.RUnlock()
		return nil
	}
	// Encode under the fold lock: Apply, the only writer, waits, and the
	// state is consistent with since.
	st, err := r.codec.Marshal(r.state)
	r.foldMu.RUnlock()
	if err != nil {
		return fmt.Errorf("views: reduce: encode state at %d: %w", since, err)
	}
	b := appendReduceFile(nil, reduceFile{version: r.version, since: since, hash: hash, state: st})
	if err := vfs.WriteFileAtomic(r.fs, r.path, b); err != nil {
		return fmt.Errorf("views: reduce: save: %w", err)
	}
	r.saved, r.lastSave = since, time.Now()
	return nil
}

// Close implements flume.View: it saves the state if it changed and makes
// later reads return ErrClosed.
func (r *Reduce[S]) Close() error {
	err := r.Save()
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	return err
}

// The reduce state file:
//
//	offset  size  field
//	0       8     magic "flumeRV1"
//	8       4     CRC32C (Castagnoli) of bytes [12, end)
//	12      8     since (int64, little endian)
//	20      32    chain hash of entry since
//	52      4     version length V (uint32)
//	56      V     version
//	56+V    8     state length N (uint64)
//	64+V    N     state, encoded by the StateCodec
const reduceMagic = "flumeRV1"

type reduceFile struct {
	version string
	since   int64
	hash    flume.Hash
	state   []byte
}

func appendReduceFile(dst []byte, f reduceFile) []byte {
	n := len(dst)
	dst = append(dst, reduceMagic...)
	dst = binary.LittleEndian.AppendUint32(dst, 0)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(f.since))
	dst = append(dst, f.hash[:]...)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(f.version)))
	dst = append(dst, f.version...)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(len(f.state)))
	dst = append(dst, f.state...)
	binary.LittleEndian.PutUint32(dst[n+8:], crc32c.Checksum(dst[n+12:]))
	return dst
}

// decodeReduceFile decodes a state file. The state aliases b. Any damage is
// an error; it never panics (FuzzDecodeReduceFile).
func decodeReduceFile(b []byte) (reduceFile, error) {
	var f reduceFile
	if len(b) < 64 || string(b[:8]) != reduceMagic {
		return f, errors.New("views: reduce: not a state file (bad magic or too short)")
	}
	if got, want := binary.LittleEndian.Uint32(b[8:]), crc32c.Checksum(b[12:]); got != want {
		return f, fmt.Errorf("views: reduce: state file checksum mismatch: stored %08x, computed %08x", got, want)
	}
	f.since = int64(binary.LittleEndian.Uint64(b[12:]))
	copy(f.hash[:], b[20:52])
	v := uint64(binary.LittleEndian.Uint32(b[52:]))
	if v > uint64(len(b)-64) {
		return f, fmt.Errorf("views: reduce: version length %d exceeds the file", v)
	}
	f.version = string(b[56 : 56+v])
	rest := b[56+v:]
	n := binary.LittleEndian.Uint64(rest)
	if n != uint64(len(rest)-8) {
		return f, fmt.Errorf("views: reduce: state length %d, file holds %d", n, len(rest)-8)
	}
	f.state = rest[8:]
	if f.since < -1 {
		return f, fmt.Errorf("views: reduce: bad since %d", f.since)
	}
	return f, nil
}
