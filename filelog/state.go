// Fencing state: the state file, Fence and SetCommittedHint.

package filelog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/internal/crc32c"
	"github.com/flume-go/flume/vfs"
)

// The state file (see the package doc for its layout).
const (
	stateName  = "state"
	stateMagic = "FLUMESTA"
	stateSize  = 36
)

// nodeState is the fencing state of the node that owns the log.
type nodeState struct {
	fenced uint64 // highest epoch promised (flume.EpochLog.FencedEpoch)
	hint   int64  // committed watermark hint, -1 if unknown
}

// noState is the state of a log without a state file.
var noState = nodeState{fenced: 0, hint: -1}

// stateMu serializes the writes of the state file (Fence,
// SetCommittedHint) and guards what they last wrote. It is separate from
// Log.w so that a lazily persisted hint never waits for, or holds up, a
// group commit. It takes no other lock (LOCKS.md); Close takes it to set
// closed, which waits for a write in flight.
type stateMu struct {
	sync.Mutex
	closed bool // set by Close: later writes return flume.ErrClosed
	// cur is the state last written, or being written: never lower than
	// what is on disk, even when a write failed (which sets dirty, so
	// that the next call writes again rather than finding nothing to do).
	cur   nodeState
	dirty bool
	// fenced and hint mirror cur for lock-free reads.
	fenced atomic.Uint64
	hint   atomic.Int64
}

func (s *stateMu) set(n nodeState) {
	s.cur = n
	s.fenced.Store(n.fenced)
	s.hint.Store(n.hint)
}

func encodeState(n nodeState) []byte {
	b := make([]byte, stateSize)
	copy(b, stateMagic)
	binary.LittleEndian.PutUint32(b[8:], formatV1)
	binary.LittleEndian.PutUint64(b[16:], n.fenced)
	binary.LittleEndian.PutUint64(b[24:], uint64(n.hint))
	binary.LittleEndian.PutUint32(b[32:], crc32c.Checksum(b[:32]))
	return b
}

func decodeState(b []byte) (nodeState, error) {
	if len(b) != stateSize || string(b[:8]) != stateMagic {
		return nodeState{}, errors.New("not a flume state file")
	}
	if crc32c.Checksum(b[:32]) != binary.LittleEndian.Uint32(b[32:]) {
		return nodeState{}, errors.New("state file checksum mismatch")
	}
	if v := binary.LittleEndian.Uint32(b[8:]); v != formatV1 {
		return nodeState{}, fmt.Errorf("unsupported state file version %d", v)
	}
	n := nodeState{fenced: binary.LittleEndian.Uint64(b[16:]), hint: int64(binary.LittleEndian.Uint64(b[24:]))}
	if n.hint < -1 {
		return nodeState{}, fmt.Errorf("committed hint %d is below -1", n.hint)
	}
	return n, nil
}

// loadState reads the state file at Open. A log without one (every log
// until its first Fence or SetCommittedHint) has fenced epoch 0 and hint
// -1; a damaged one fails the open.
func (l *Log) loadState() error {
	p := filepath.Join(l.dir, stateName)
	b, err := vfs.ReadFile(l.fs, p)
	if errors.Is(err, fs.ErrNotExist) {
		l.st.set(noState)
		return nil
	}
	if err != nil {
		return fmt.Errorf("filelog: read %s: %w", p, err)
	}
	n, err := decodeState(b)
	if err != nil {
		return &flume.CorruptionError{Path: p, Offset: 0, Seq: -1, Reason: err.Error()}
	}
	l.st.set(n)
	return nil
}

// FencedEpoch implements flume.EpochLog.
func (l *Log) FencedEpoch() uint64 { return l.st.fenced.Load() }

// CommittedHint implements flume.EpochLog.
func (l *Log) CommittedHint() int64 { return l.st.hint.Load() }

// Fence implements flume.EpochLog: the state file is replaced atomically
// (temp file, fsync, rename, directory fsync) before it returns. After a
// failed write FencedEpoch already reports e (it never reports less than
// may be on disk) and the next Fence or SetCommittedHint writes again.
func (l *Log) Fence(e uint64) error {
	return l.raiseState(func(n *nodeState) { n.fenced = max(n.fenced, e) })
}

// SetCommittedHint implements flume.EpochLog, durably like Fence.
func (l *Log) SetCommittedHint(seq int64) error {
	return l.raiseState(func(n *nodeState) { n.hint = max(n.hint, seq) })
}

// raiseState applies raise to the fencing state and, if that changed it
// (or the last write failed), persists it before returning.
func (l *Log) raiseState(raise func(*nodeState)) error {
	l.st.Lock()
	defer l.st.Unlock()
	switch {
	case l.st.closed:
		return flume.ErrClosed
	case l.opts.ReadOnly:
		return ErrReadOnly
	}
	n := l.st.cur
	raise(&n)
	if n == l.st.cur && !l.st.dirty {
		return nil
	}
	l.st.set(n)
	p := filepath.Join(l.dir, stateName)
	if err := vfs.WriteFileAtomic(l.fs, p, encodeState(n)); err != nil {
		l.st.dirty = true
		return fmt.Errorf("filelog: write %s: %w", p, err)
	}
	l.st.dirty = false
	return nil
}

var _ flume.EpochLog = (*Log)(nil)
