package repl

import (
	"fmt"
	"sync"

	"github.com/flume-go/flume"
)

// sinkLog is a flume.Log that keeps only its head: it verifies and counts
// appended entries and drops their data. Benchmarks and memory tests use it
// as a follower so that the follower's storage does not hide the
// replication path's own memory and speed.
type sinkLog struct {
	mu    sync.Mutex
	id    flume.LogID
	since int64
	hash  flume.Hash
	bytes int64
}

var _ flume.Log = (*sinkLog)(nil)

func newSinkLog() *sinkLog {
	id := flume.NewLogID()
	return &sinkLog{id: id, since: -1, hash: flume.GenesisHash(id)}
}

func (l *sinkLog) ID() flume.LogID { l.mu.Lock(); defer l.mu.Unlock(); return l.id }
func (l *sinkLog) SetID(id flume.LogID) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.since >= 0 {
		return flume.ErrNotEmpty
	}
	l.id, l.hash = id, flume.GenesisHash(id)
	return nil
}
func (l *sinkLog) Epoch() uint64         { return 0 }
func (l *sinkLog) SetEpoch(uint64) error { return nil }
func (l *sinkLog) Append(...[]byte) (int64, error) {
	return 0, fmt.Errorf("sinklog: only replicated appends")
}
func (l *sinkLog) AppendEntries(es []flume.Entry) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	since, h := l.since, l.hash
	var n int64
	for _, e := range es {
		if err := flume.CheckNext(since, h, e); err != nil {
			return err
		}
		since, h = e.Seq, e.Hash
		n += int64(len(e.Data))
	}
	l.since, l.hash, l.bytes = since, h, l.bytes+n
	return nil
}
func (l *sinkLog) Get(seq int64) ([]byte, error) { return nil, flume.ErrNotFound }
func (l *sinkLog) Entry(seq int64) (flume.Entry, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if seq == l.since && seq >= 0 {
		return flume.Entry{Seq: seq, Hash: l.hash}, nil
	}
	return flume.Entry{}, flume.ErrNotFound
}
func (l *sinkLog) Since() int64 { l.mu.Lock(); defer l.mu.Unlock(); return l.since }
func (l *sinkLog) Head() (int64, flume.Hash) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.since, l.hash
}
func (l *sinkLog) Iter(from int64) flume.Iterator { return emptyIter{} }
func (l *sinkLog) Sync() error                    { return nil }
func (l *sinkLog) Close() error                   { return nil }

type emptyIter struct{}

func (emptyIter) Next() bool         { return false }
func (emptyIter) Entry() flume.Entry { return flume.Entry{} }
func (emptyIter) Err() error         { return nil }
func (emptyIter) Close() error       { return nil }
