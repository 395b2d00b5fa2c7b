// The failover side of the log: epoch history, fencing state and cuts.

package memlog

import (
	"fmt"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/internal/epochs"
)

// failover is the log's epoch history and fencing state, guarded by Log.mu
// like everything else.
type failover struct {
	epochs []flume.EpochRecord // oldest first; no record starts past since+1
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
