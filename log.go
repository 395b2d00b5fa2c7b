package flume

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
)

// LogID is the random 128-bit identity of a log's history. It is made when a
// primary's log is created; a follower adopts its primary's ID while empty.
// Two logs with different IDs never exchange entries.
type LogID [16]byte

// NewLogID returns a fresh random LogID.
func NewLogID() LogID {
	var id LogID
	if _, err := rand.Read(id[:]); err != nil {
		panic("flume: crypto/rand failed: " + err.Error()) // crypto/rand never fails on Linux
	}
	return id
}

// String returns the ID in hex.
func (id LogID) String() string { return hex.EncodeToString(id[:]) }

// IsZero reports whether id is the zero ID (not yet assigned).
func (id LogID) IsZero() bool { return id == LogID{} }

// ParseLogID parses the hex form produced by String.
func ParseLogID(s string) (LogID, error) {
	var id LogID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(id) {
		return id, fmt.Errorf("flume: bad log ID %q", s)
	}
	copy(id[:], b)
	return id, nil
}

// Entry is one stored entry with everything that identifies it in the
// history: its seq, the epoch it was written in and the chain hash after it.
type Entry struct {
	Seq   int64
	Epoch uint64
	Hash  Hash   // chain hash h(Seq); see ChainHash
	Data  []byte // the payload; owned by the caller unless documented otherwise
}

// MaxEntrySize bounds one entry's payload. Logs refuse larger appends, and
// a stored or received frame claiming more is treated as corrupt rather
// than allocated (package frame).
const MaxEntrySize = 64 << 20

// Log is an append-only sequence of entries numbered densely from 0. It owns
// seqs, durability and integrity. Implementations: memlog.Log, filelog.Log.
// All methods are safe for concurrent use. After Close every method returns
// ErrClosed (Close itself returns nil when called again).
//
// Writes normally go through a DB, which publishes them to streams and views;
// writing to a Log that a DB has opened bypasses that and is not supported.
type Log interface {
	// ID is the log's identity; its chain starts at GenesisHash(ID()).
	ID() LogID
	// SetID replaces the identity of an empty log (a follower adopting its
	// primary's history) and persists it. ErrNotEmpty if entries exist.
	SetID(id LogID) error
	// Epoch is the epoch recorded in entries appended from now on.
	Epoch() uint64
	// SetEpoch persists a new epoch; it must not be lower than Epoch().
	SetEpoch(epoch uint64) error

	// Append stores data as new entries with the next seqs, the current epoch
	// and their chain hashes, as one atomic batch, and returns the seq of the
	// last one. It returns once the batch is durable per the log's sync
	// policy. The log does not retain data.
	Append(data ...[]byte) (last int64, err error)
	// AppendEntries stores entries that already carry seq, epoch and hash
	// (replication). entries[0].Seq must be Since()+1 and the seqs dense
	// (else ErrOutOfOrder) and every hash must extend the chain (else
	// ErrDiverged). The batch is all-or-nothing; it returns once durable per
	// the sync policy.
	AppendEntries(entries []Entry) error

	// Get returns a copy of the payload of entry seq, or ErrNotFound.
	Get(seq int64) ([]byte, error)
	// Entry returns entry seq with its epoch and hash (Data is a copy).
	Entry(seq int64) (Entry, error)
	// Since is the seq of the last entry, -1 when the log is empty.
	Since() int64
	// Head returns Since() and the chain hash at it, read atomically.
	// For an empty log the hash is GenesisHash(ID()).
	Head() (since int64, hash Hash)
	// Iter returns an iterator over entries from seq from (>= 0) to the end
	// of the log; entries appended while iterating may or may not be seen.
	Iter(from int64) Iterator

	// Sync makes every appended entry durable, whatever the policy.
	Sync() error
	// Close flushes and releases the log.
	Close() error
}

// Iterator walks a log in seq order. It works like bufio.Scanner: call Next
// until it returns false, then Err. The Entry and its Data are valid only
// until the next call to Next; copy what must outlive it.
type Iterator interface {
	Next() bool
	Entry() Entry
	Err() error
	Close() error
}

// AppendSyncer is an optional interface of a Log. SyncsOnAppend reports
// whether Append and AppendEntries return only once their entries are
// durable (filelog with SyncAlways; memlog, which has nothing more durable
// than memory). Replication asks it so that a follower whose log does not
// sync on append calls Sync before it acknowledges entries as durable. A Log
// that does not implement it is treated as not syncing on append.
type AppendSyncer interface {
	SyncsOnAppend() bool
}

// SyncsOnAppend reports whether l returns from appends only once durable
// (see AppendSyncer).
func SyncsOnAppend(l Log) bool {
	s, ok := l.(AppendSyncer)
	return ok && s.SyncsOnAppend()
}

// WriteObserver is an optional interface of a Log that syncs on append
// (AppendSyncer): it reports each batch of appended entries once the batch
// is written and before its fsync, so that replication can send the entries
// to followers while the primary's own fsync runs (parallel fsyncs for
// synchronous appends). filelog implements it under SyncAlways.
type WriteObserver interface {
	Log
	// ObserveWrites installs fn (nil removes it). The log calls fn once per
	// written batch, in seq order, after the batch's bytes are written and
	// before they are fsynced and published, with the batch's first and
	// last seq and its frames exactly as stored (frame package format),
	// valid only during the call. A batch whose fsync then fails is never
	// published, and the log takes no more writes until it is reopened, so
	// a seq is never reported twice with different content. fn runs with
	// the log's writer lock held: it must be quick, must not block and must
	// not call into the log.
	ObserveWrites(fn func(first, last int64, frames []byte))
}

// EarlyReplicator is an optional interface of a Replicator: it takes the
// batches a WriteObserver log reports before they are durable, to send
// them to followers in parallel with the local fsync. The followers hold
// such entries without exposing them until the primary has published them
// (see DB.HoldAbove). The DB connects the two in ClaimReplicator.
type EarlyReplicator interface {
	Replicator
	// Written is the WriteObserver callback (same contract).
	Written(first, last int64, frames []byte)
}
