package flume

import (
	"encoding/hex"
	"fmt"
	"io"
)

// PromotionID names one promotion. It is random, so two promotions that
// chose the same epoch number independently (two operators, a partition)
// are still told apart: their histories differ from the epoch's start on.
type PromotionID [16]byte

// String returns the ID in hex.
func (p PromotionID) String() string { return hex.EncodeToString(p[:]) }

// EpochRecord marks where an epoch begins in a log's history. A log keeps
// one record per promotion (its epoch history), made durable before the
// first entry of the epoch, and the same on every replica: a follower
// adopts its primary's records as it replicates across their starts.
//
// Prev pins the history before the epoch: two logs whose records agree on
// (Epoch, Start, Prev, Promotion) hold the same entries below Start, as
// surely as the chain hash itself says so.
type EpochRecord struct {
	Epoch     uint64      // strictly greater than the previous record's
	Start     int64       // first seq written in this epoch: Since()+1 at promotion
	Prev      Hash        // chain hash h(Start-1); GenesisHash(ID) when Start is 0
	Promotion PromotionID // random; names this promotion
	When      int64       // unix nanoseconds of the promotion (informative)
	Promoter  uint32      // first 4 bytes of SHA-256 of the promoter's node ID (informative)
}

// Same reports whether r and o record the same promotion: equal epoch,
// start, previous hash and promotion ID (When and Promoter are informative
// and not compared).
func (r EpochRecord) Same(o EpochRecord) bool {
	return r.Epoch == o.Epoch && r.Start == o.Start && r.Prev == o.Prev && r.Promotion == o.Promotion
}

// String describes the record for logs and errors.
func (r EpochRecord) String() string {
	return fmt.Sprintf("epoch %d from seq %d (after %s, promotion %s)", r.Epoch, r.Start, r.Prev.Short(), hex.EncodeToString(r.Promotion[:4]))
}

// EpochLog is a Log that keeps an epoch history and the fencing state of
// the node that owns it. Promotion, fencing and rejoin (repl) need it;
// memlog and filelog implement it.
type EpochLog interface {
	Log
	// Epochs returns the epoch history, oldest first. No record starts
	// past Since()+1: recovery drops records whose epoch never got its
	// first entry durable and would otherwise start beyond the log's end.
	Epochs() []EpochRecord
	// BeginEpoch durably appends r to the history, before returning, and
	// makes r.Epoch the epoch of entries appended from then on. r.Start
	// must be Since()+1, r.Prev the chain hash at Since(), and r.Epoch
	// greater than the last record's epoch and not below Epoch(); anything
	// else is refused with an error and changes nothing.
	BeginEpoch(r EpochRecord) error
	// DropEmptyEpochs removes the history's records after the first keep.
	// They must all start past Since(): epochs that never got an entry (a
	// promotion that wrote nothing before the node went to follow another
	// primary, whose history does not have them). Entries appended next
	// get the epoch of the newest kept record (0 if none). A crash leaves
	// the old history or the new one. Records that cover entries are never
	// dropped this way (an error; use TruncateAfter, which keeps a copy).
	DropEmptyEpochs(keep int) error
	// FencedEpoch is the highest epoch the node has promised to honour: it
	// accepts entries from, and acknowledges to, no primary of a lower
	// epoch. 0 until the first Fence.
	FencedEpoch() uint64
	// Fence durably raises the fenced epoch to e before returning; a lower
	// or equal e changes nothing.
	Fence(e uint64) error
	// CommittedHint is a lower bound of the replication group's committed
	// watermark (the highest seq acknowledged by the required number of
	// synchronous followers) as last persisted; -1 if unknown. A cut below
	// it would lose an acknowledged write.
	CommittedHint() int64
	// SetCommittedHint durably raises the hint to seq (lower values change
	// nothing). Callers persist it lazily (it costs an fsync).
	SetCommittedHint(seq int64) error
}

// TruncateReport says what a TruncateAfter cut.
type TruncateReport struct {
	After   int64 // the seq the log now ends at
	From    int64 // first seq cut (After+1)
	To      int64 // last seq cut (the old Since); To < From when nothing was cut
	Entries int64 // entries cut
	Bytes   int64 // frame bytes written to the fork
}

// TruncatableLog is a Log whose tail can be cut at a verified point: the
// rejoin of a node that holds entries its new primary lacks.
type TruncatableLog interface {
	Log
	// TruncateAfter removes the entries after seq. It first checks that the
	// log's chain hash at seq is want (else an error wrapping ErrDiverged,
	// and nothing changes), then writes the entries to be cut, frames as
	// stored, to fork (if writing fails nothing is cut), then cuts. A crash
	// at any point leaves either the whole log or exactly [0, seq]; epoch
	// records starting past seq+1 go with the entries. seq may be -1 (cut
	// everything) and at most Since() (nothing to cut).
	TruncateAfter(seq int64, want Hash, fork io.Writer) (TruncateReport, error)
}
