// Package memlog is the in-memory flume.Log (flumelog-memory). It keeps every
// entry in memory and loses everything on Close; it exists for tests, caches
// and the seed's two-DBs-in-one-program example. It enforces the same rules
// as the durable log (dense seqs, chain hashes, ErrClosed after Close).
package memlog

import (
	"fmt"
	"sync"

	"github.com/flume-go/flume"
)

// Log is an in-memory flume.Log. The zero value is not usable; call New.
type Log struct {
	mu      sync.RWMutex // guards everything below
	id      flume.LogID
	epoch   uint64
	genesis flume.Hash
	entries []flume.Entry // entries[i].Seq == i; Data owned by the log
	closed  bool
	fo      failover // epoch history, fencing state, cuts (epoch.go)
}

var _ flume.Log = (*Log)(nil)

// New returns an empty log with a fresh random ID and epoch 0, an empty
// epoch history, fenced epoch 0 and committed hint -1.
func New() *Log {
	id := flume.NewLogID()
	return &Log{id: id, genesis: flume.GenesisHash(id), fo: failover{hint: -1}}
}

// ID implements flume.Log.
func (l *Log) ID() flume.LogID {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.id
}

// SetID implements flume.Log. A log with an epoch history is not empty:
// its records pin the genesis hash.
func (l *Log) SetID(id flume.LogID) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return flume.ErrClosed
	}
	if len(l.entries) > 0 && id != l.id {
		return fmt.Errorf("memlog: set ID: %w", flume.ErrNotEmpty)
	}
	if len(l.fo.epochs) > 0 && id != l.id { // their prev hashes pin the old genesis
		return fmt.Errorf("memlog: set ID: the log has an epoch history: %w", flume.ErrNotEmpty)
	}
	l.id, l.genesis = id, flume.GenesisHash(id)
	return nil
}

// Epoch implements flume.Log.
func (l *Log) Epoch() uint64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.epoch
}

// SetEpoch implements flume.Log.
func (l *Log) SetEpoch(epoch uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return flume.ErrClosed
	}
	if epoch < l.epoch {
		return fmt.Errorf("memlog: epoch %d is lower than the current epoch %d", epoch, l.epoch)
	}
	l.epoch = epoch
	return nil
}

func (l *Log) headLocked() (int64, flume.Hash) {
	if n := len(l.entries); n > 0 {
		return int64(n - 1), l.entries[n-1].Hash
	}
	return -1, l.genesis
}

// Append implements flume.Log.
func (l *Log) Append(data ...[]byte) (int64, error) {
	for _, d := range data {
		if len(d) > flume.MaxEntrySize {
			return 0, fmt.Errorf("memlog: entry of %d bytes exceeds the maximum %d", len(d), flume.MaxEntrySize)
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return 0, flume.ErrClosed
	}
	since, h := l.headLocked()
	if len(data) == 0 {
		return since, nil
	}
	for _, d := range data {
		since++
		h = flume.ChainHash(h, since, l.epoch, d)
		l.entries = append(l.entries, flume.Entry{Seq: since, Epoch: l.epoch, Hash: h, Data: append([]byte(nil), d...)})
	}
	return since, nil
}

// AppendEntries implements flume.Log.
func (l *Log) AppendEntries(entries []flume.Entry) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return flume.ErrClosed
	}
	since, h := l.headLocked()
	for _, e := range entries {
		if err := flume.CheckNext(since, h, e); err != nil {
			return err
		}
		since, h = e.Seq, e.Hash
	}
	for _, e := range entries {
		e.Data = append([]byte(nil), e.Data...)
		l.entries = append(l.entries, e)
	}
	return nil
}

// Get implements flume.Log.
func (l *Log) Get(seq int64) ([]byte, error) {
	e, err := l.Entry(seq)
	return e.Data, err
}

// Entry implements flume.Log.
func (l *Log) Entry(seq int64) (flume.Entry, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return flume.Entry{}, flume.ErrClosed
	}
	if seq < 0 || seq >= int64(len(l.entries)) {
		return flume.Entry{}, fmt.Errorf("memlog: get %d (log ends at %d): %w", seq, len(l.entries)-1, flume.ErrNotFound)
	}
	e := l.entries[seq]
	e.Data = append([]byte(nil), e.Data...)
	return e, nil
}

// Since implements flume.Log.
func (l *Log) Since() int64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return int64(len(l.entries)) - 1
}

// Head implements flume.Log.
func (l *Log) Head() (int64, flume.Hash) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.headLocked()
}

// Iter implements flume.Log. Entries handed out alias payloads the log
// never modifies (a cut drops them, it does not overwrite them), so no copy
// is made. See TruncateAfter for what an iterator sees of a cut.
func (l *Log) Iter(from int64) flume.Iterator {
	if from < 0 {
		from = 0
	}
	return &iter{l: l, next: from, cuts: l.cutCount()}
}

// Sync implements flume.Log; memory needs no sync.
func (l *Log) Sync() error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return flume.ErrClosed
	}
	return nil
}

// Close implements flume.Log. It drops every entry; later calls return nil.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed, l.entries = true, nil
	return nil
}

type iter struct {
	l    *Log
	next int64
	cuts int // cuts of the log seen (see afterCutLocked)
	cur  flume.Entry
	err  error
	done bool
}

func (it *iter) Next() bool {
	if it.done {
		return false
	}
	it.l.mu.RLock()
	closed := it.l.closed
	cutErr := it.afterCutLocked()
	var ok bool
	if !closed && cutErr == nil && it.next < int64(len(it.l.entries)) {
		it.cur, ok = it.l.entries[it.next], true
	}
	it.l.mu.RUnlock()
	if closed {
		it.err, it.done = flume.ErrClosed, true
		return false
	}
	if cutErr != nil {
		it.err, it.done = cutErr, true
		return false
	}
	if !ok {
		return false
	}
	it.next++
	return true
}

func (it *iter) Entry() flume.Entry { return it.cur }
func (it *iter) Err() error         { return it.err }
func (it *iter) Close() error       { it.done = true; return nil }

// SyncsOnAppend implements flume.AppendSyncer: memory is as durable as this
// log gets, so an entry is "durable" as soon as Append returns.
func (l *Log) SyncsOnAppend() bool { return true }
