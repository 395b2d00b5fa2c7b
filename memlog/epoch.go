// The failover side of the log: epoch history, fencing state and cuts.

package memlog

import (
	"fmt"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/internal/epochs"
)

var _ flume.EpochLog = (*Log)(nil)

// failover is the log's epoch history and fencing state, guarded by Log.mu
// like everything else.
type failover struct {
	epochs []flume.EpochRecord // oldest first; no record starts past since+1
	fenced uint64              // FencedEpoch
	hint   int64               // CommittedHint; New sets -1
}

// Epochs implements flume.EpochLog: a copy of the history, oldest first.
func (l *Log) Epochs() []flume.EpochRecord {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return append([]flume.EpochRecord(nil), l.fo.epochs...)
}

// BeginEpoch implements flume.EpochLog: it appends r to the history and
// makes r.Epoch the log's epoch, under the rules of flume.EpochLog
// (r.Start == Since()+1, r.Prev == the head hash, r.Epoch above the last
// record's and not below Epoch()).
func (l *Log) BeginEpoch(r flume.EpochRecord) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return flume.ErrClosed
	}
	since, head := l.headLocked()
	if err := epochs.CheckBegin(l.fo.epochs, l.epoch, since, head, r); err != nil {
		return fmt.Errorf("memlog: begin epoch: %w", err)
	}
	l.fo.epochs = append(l.fo.epochs, r)
	l.epoch = r.Epoch
	return nil
}

// FencedEpoch implements flume.EpochLog.
func (l *Log) FencedEpoch() uint64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.fo.fenced
}

// Fence implements flume.EpochLog; a lower or equal e changes nothing.
func (l *Log) Fence(e uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return flume.ErrClosed
	}
	l.fo.fenced = max(l.fo.fenced, e)
	return nil
}

// CommittedHint implements flume.EpochLog: -1 until SetCommittedHint.
func (l *Log) CommittedHint() int64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.fo.hint
}

// SetCommittedHint implements flume.EpochLog; lower values change nothing.
func (l *Log) SetCommittedHint(seq int64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return flume.ErrClosed
	}
	l.fo.hint = max(l.fo.hint, seq)
	return nil
}
