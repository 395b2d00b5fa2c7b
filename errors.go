package flume

import (
	"errors"
	"fmt"
)

// Errors returned by logs and the DB. Compare with errors.Is; the typed errors
// below unwrap to the matching sentinel.
var (
	// ErrClosed is returned by any method called after Close.
	ErrClosed = errors.New("flume: closed")
	// ErrNotFound is returned by Get for a seq that is not in the log
	// (negative, or greater than Since()).
	ErrNotFound = errors.New("flume: not found")
	// ErrCorrupt marks stored or received data that failed a checksum, chain
	// or framing check. The concrete error is usually a *CorruptionError.
	ErrCorrupt = errors.New("flume: corrupt")
	// ErrOutOfOrder is returned when replicated entries do not continue the
	// log exactly: the first entry's seq is not Since()+1 (a gap or a
	// duplicate). Nothing is appended.
	ErrOutOfOrder = errors.New("flume: entry out of order")
	// ErrDiverged is returned when replicated entries do not extend this
	// log's chain hash: the two logs hold different histories. Nothing is
	// appended.
	ErrDiverged = errors.New("flume: histories diverged")
	// ErrNotPrimary is returned by DB.Append on a follower. The concrete
	// error is a *NotPrimaryError naming the primary.
	ErrNotPrimary = errors.New("flume: not the primary")
	// ErrNotReplicated is returned by a synchronous append when fewer
	// followers than required acknowledged the entry before the deadline.
	// The entry stays in the primary's log. The concrete error is a
	// *NotReplicatedError.
	ErrNotReplicated = errors.New("flume: not replicated")
	// ErrLocked is returned when a log directory is already opened by
	// another process (or another Log in this process).
	ErrLocked = errors.New("flume: log is locked by another opener")
	// ErrNotEmpty is returned by SetID on a log that already holds entries.
	ErrNotEmpty = errors.New("flume: log is not empty")
	// ErrHasUpstream is returned by DB.ClaimUpstream while another claim
	// holds: a DB replicates from at most one upstream at a time.
	ErrHasUpstream = errors.New("flume: DB already replicates from an upstream")
	// ErrTruncated is returned by a Cursor or Stream that had read entries
	// past the point where the log was then cut (DB.TruncateAfter): what
	// it handed out is no longer the log's history.
	ErrTruncated = errors.New("flume: log truncated below what was read")
	// ErrFenced marks a primary of an epoch older than one a node has
	// promised to honour: the node refuses it (a newer primary exists).
	ErrFenced = errors.New("flume: fenced: a newer epoch exists")
	// ErrDeposed is returned by appends on a primary that learned of a
	// newer epoch: it acknowledges nothing from then on. The concrete
	// error is a *DeposedError.
	ErrDeposed = errors.New("flume: deposed: a newer primary exists")
	// ErrHasPrimary is returned by DB.ClaimReplicator while another
	// replicator is installed: a DB has at most one primary side.
	ErrHasPrimary = errors.New("flume: DB already has a replication primary")
)

// CorruptionError says where corrupt data was found. It unwraps to ErrCorrupt.
type CorruptionError struct {
	Path   string // file (segment) or stream the data came from; may be empty
	Offset int64  // byte offset of the bad frame within Path, -1 if unknown
	Seq    int64  // seq of the bad entry, -1 if unknown
	Reason string
}

func (e *CorruptionError) Error() string {
	return fmt.Sprintf("flume: corrupt entry (seq %d) in %s at offset %d: %s", e.Seq, e.Path, e.Offset, e.Reason)
}

// Unwrap makes errors.Is(err, ErrCorrupt) true.
func (e *CorruptionError) Unwrap() error { return ErrCorrupt }

// NotPrimaryError is returned by DB.Append on a follower. It unwraps to
// ErrNotPrimary.
type NotPrimaryError struct {
	Primary string // address of the primary this DB follows, if known
}

func (e *NotPrimaryError) Error() string {
	if e.Primary == "" {
		return "flume: read-only follower: appends go to the primary"
	}
	return fmt.Sprintf("flume: read-only follower: appends go to the primary at %s", e.Primary)
}

// Unwrap makes errors.Is(err, ErrNotPrimary) true.
func (e *NotPrimaryError) Unwrap() error { return ErrNotPrimary }

// NotReplicatedError reports a synchronous append that reached fewer
// followers than required before its deadline. The entries [First, Last]
// are durable in the primary's log; their replication outcome is unknown
// ("not replicated yet"). It unwraps to ErrNotReplicated.
type NotReplicatedError struct {
	First, Last int64 // seqs of the append
	Acked       int   // followers that acknowledged Last
	Required    int   // followers required
	Cause       error // why waiting stopped (context deadline, closed, ...)
}

func (e *NotReplicatedError) Error() string {
	return fmt.Sprintf("flume: seq %d is durable on the primary but acknowledged by %d of %d required followers: %v",
		e.Last, e.Acked, e.Required, e.Cause)
}

// Unwrap makes errors.Is(err, ErrNotReplicated) true.
func (e *NotReplicatedError) Unwrap() []error {
	if e.Cause == nil {
		return []error{ErrNotReplicated}
	}
	return []error{ErrNotReplicated, e.Cause}
}

// DeposedError is returned by appends on a primary that learned of a newer
// epoch (a follower refused it as stale, or it was told to follow). It
// unwraps to ErrDeposed and ErrFenced.
type DeposedError struct {
	Epoch   uint64 // the newer epoch, if known
	Primary string // the newer primary's address, if known
}

func (e *DeposedError) Error() string {
	msg := "flume: deposed: a newer primary exists"
	if e.Epoch > 0 {
		msg += fmt.Sprintf(" (epoch %d)", e.Epoch)
	}
	if e.Primary != "" {
		msg += " at " + e.Primary
	}
	return msg + "; this node acknowledges no appends"
}

// Unwrap makes errors.Is(err, ErrDeposed) and errors.Is(err, ErrFenced) true.
func (e *DeposedError) Unwrap() []error { return []error{ErrDeposed, ErrFenced} }
