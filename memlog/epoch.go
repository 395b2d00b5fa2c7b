// The failover side of the log: epoch history, fencing state and cuts.

package memlog

import (
	"fmt"
	"io"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/frame"
	"github.com/flume-go/flume/internal/epochs"
)

var _ flume.EpochLog = (*Log)(nil)

// failover is the log's epoch history and fencing state, guarded by Log.mu
// like everything else.
type failover struct {
	epochs []flume.EpochRecord // oldest first; no record starts past since+1
	fenced uint64              // FencedEpoch
	hint   int64               // CommittedHint; New sets -1
	cuts   []int64             // the seqs of TruncateAfter's cuts, oldest first
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

var _ flume.TruncatableLog = (*Log)(nil)

// TruncateAfter implements flume.TruncatableLog. It checks that the chain
// hash at seq is want (else an error wrapping flume.ErrDiverged), writes
// the entries after seq to fork as frames (frame.Append; a write error
// cuts nothing), then removes them and the epoch records that start past
// seq+1. Epoch(), the fencing state and the committed hint are unchanged.
// fork must not call back into the log; nil discards the frames.
//
// Iterators opened before the cut see no cut entry afterwards: one whose
// next seq is at most seq+1 goes on with whatever the log holds there (the
// entries appended after the cut); one already past seq+1, which has
// yielded cut entries, stops with an error wrapping flume.ErrTruncated.
func (l *Log) TruncateAfter(seq int64, want flume.Hash, fork io.Writer) (flume.TruncateReport, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return flume.TruncateReport{}, flume.ErrClosed
	}
	since, _ := l.headLocked()
	if seq < -1 || seq > since {
		return flume.TruncateReport{}, fmt.Errorf("memlog: truncate after %d: the log ends at %d: %w", seq, since, flume.ErrNotFound)
	}
	h := l.genesis
	if seq >= 0 {
		h = l.entries[seq].Hash
	}
	if h != want {
		return flume.TruncateReport{}, fmt.Errorf("memlog: truncate after %d: the log's hash there is %s, not %s: %w",
			seq, h.Short(), want.Short(), flume.ErrDiverged)
	}
	rep := flume.TruncateReport{After: seq, From: seq + 1, To: since, Entries: since - seq}
	if fork == nil {
		fork = io.Discard
	}
	var buf []byte
	for _, e := range l.entries[seq+1:] {
		buf = frame.Append(buf[:0], e)
		if _, err := fork.Write(buf); err != nil {
			return flume.TruncateReport{}, fmt.Errorf("memlog: truncate after %d: write the fork (nothing was cut): %w", seq, err)
		}
		rep.Bytes += int64(len(buf))
	}
	if rep.Entries == 0 {
		return rep, nil
	}
	clear(l.entries[seq+1:]) // entries handed out are copies; drop the payloads
	l.entries = l.entries[:seq+1]
	l.fo.epochs = l.fo.epochs[:epochs.Kept(l.fo.epochs, seq)]
	l.fo.cuts = append(l.fo.cuts, seq)
	return rep, nil
}

func (l *Log) cutCount() int {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return len(l.fo.cuts)
}

// afterCutLocked brings the iterator up to date with cuts made since it
// last looked: an error if one of them removed an entry it may have
// yielded (its next seq is past the cut's seq+1). l.mu is held.
func (it *iter) afterCutLocked() error {
	cuts := it.l.fo.cuts
	if it.cuts == len(cuts) {
		return nil
	}
	low := cuts[it.cuts]
	for _, c := range cuts[it.cuts:] {
		low = min(low, c)
	}
	if it.next > low+1 {
		return fmt.Errorf("memlog: iterator at seq %d: the log was cut after seq %d, below it: %w", it.next, low, flume.ErrTruncated)
	}
	it.cuts = len(cuts)
	return nil
}

// DropEmptyEpochs implements flume.EpochLog.
func (l *Log) DropEmptyEpochs(keep int) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return flume.ErrClosed
	}
	if keep < 0 || keep >= len(l.fo.epochs) {
		return nil
	}
	since, _ := l.headLocked()
	if r := l.fo.epochs[keep]; r.Start <= since {
		return fmt.Errorf("memlog: drop epochs: %s covers entries (the log ends at %d)", r, since)
	}
	l.fo.epochs = l.fo.epochs[:keep:keep]
	l.epoch = 0
	if keep > 0 {
		l.epoch = l.fo.epochs[keep-1].Epoch
	}
	return nil
}
