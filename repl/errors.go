package repl

import (
	"errors"
	"fmt"

	"github.com/flume-go/flume"
)

// Errors. Compare with errors.Is / errors.As.
var (
	// ErrServerClosed is returned by Serve and ServeConn after Close, and
	// by WaitAcked once the Primary is closed.
	ErrServerClosed = errors.New("repl: server closed")
	// ErrClosed is returned by a Follower's methods after Close. It wraps
	// flume.ErrClosed, so errors.Is(err, flume.ErrClosed) holds too.
	ErrClosed = fmt.Errorf("repl: follower closed: %w", flume.ErrClosed)
	// ErrAuth marks a failed authentication: the peer does not know the
	// shared secret, or only one side has one, or TLS client
	// authentication failed.
	ErrAuth = errors.New("repl: authentication failed")
	// ErrVersion marks a peer that speaks another protocol version.
	ErrVersion = errors.New("repl: protocol version mismatch")
	// ErrWouldLoseCommitted marks a refused rejoin: the cut it needs would
	// remove entries at or below a committed watermark (they may have been
	// acknowledged), or rest on a node that lost data. Nothing is cut.
	ErrWouldLoseCommitted = errors.New("repl: the cut would lose committed entries")
	// ErrHasUpstream is returned when a DB that already has a replication
	// upstream is given a second one (NewFollower or Replicate). It is
	// flume.ErrHasUpstream.
	ErrHasUpstream = flume.ErrHasUpstream
	// ErrHasPrimary is returned by NewPrimary for a DB that already has a
	// Primary. It is flume.ErrHasPrimary.
	ErrHasPrimary = flume.ErrHasPrimary
)

// Code is a stable numeric error code sent in Error messages. Codes are
// append-only: a code's meaning never changes and codes are never reused.
type Code uint16

// Error codes. See docs/protocol.md.
const (
	CodeUnknown     Code = 0  // unspecified failure
	CodeProtocol    Code = 1  // malformed or unexpected message
	CodeVersion     Code = 2  // protocol versions differ
	CodeAuth        Code = 3  // authentication failed
	CodeLogID       Code = 4  // the two logs have different IDs (unrelated histories)
	CodeDiverged    Code = 5  // same log ID, different chain hash at the follower's since
	CodeAhead       Code = 6  // the follower's log is longer than the primary's
	CodeRole        Code = 7  // roles do not pair (two primaries, two followers)
	CodeBadPosition Code = 8  // a seq that is not a valid position here
	CodeCorrupt     Code = 9  // an entry failed its CRC or chain check
	CodeShutdown    Code = 10 // the sender is closing
	CodeInternal    Code = 11 // the sender failed locally (e.g. reading its log)
	CodeDead        Code = 12 // the sender heard nothing from the receiver for longer than DeadAfter
	// CodeStaleEpoch: the primary's epoch is older than one the follower
	// has seen or promised to honour: the primary has been deposed.
	CodeStaleEpoch Code = 13
	// CodeWouldLoseCommitted: following would cut entries that may have
	// been acknowledged (at or below a committed watermark), or the cut
	// would rest on a node that lost data (unclean).
	CodeWouldLoseCommitted Code = 14
)

var codeNames = [...]string{
	CodeUnknown:            "unknown",
	CodeProtocol:           "protocol error",
	CodeVersion:            "version mismatch",
	CodeAuth:               "authentication failed",
	CodeLogID:              "different log IDs",
	CodeDiverged:           "histories diverged",
	CodeAhead:              "follower ahead of primary",
	CodeRole:               "roles do not pair",
	CodeBadPosition:        "bad position",
	CodeCorrupt:            "corrupt entry",
	CodeShutdown:           "shutting down",
	CodeInternal:           "internal error",
	CodeDead:               "peer dead",
	CodeStaleEpoch:         "stale epoch",
	CodeWouldLoseCommitted: "would lose committed entries",
}

// String returns the code's name.
func (c Code) String() string {
	if int(c) < len(codeNames) {
		return codeNames[c]
	}
	return fmt.Sprintf("code %d", uint16(c))
}

// RefusedError is a handshake refusal: the two logs cannot replicate into
// each other as they are, and neither was changed. Local is this node's
// position, Remote the peer's. It unwraps to flume.ErrDiverged for
// CodeLogID, CodeDiverged and CodeAhead.
type RefusedError struct {
	Reason  Code
	Local   Position
	Remote  Position
	Message string // human-readable detail, may be empty
	// FromPeer is true when the peer refused (the error arrived in an
	// Error message) rather than this side.
	FromPeer bool
}

// Error names the reason and both positions.
func (e *RefusedError) Error() string {
	who := "refused"
	if e.FromPeer {
		who = "refused by peer"
	}
	msg := fmt.Sprintf("repl: replication %s (%s): local %s, remote %s", who, e.Reason, e.Local, e.Remote)
	if e.Message != "" {
		msg += ": " + e.Message
	}
	return msg
}

// Unwrap makes errors.Is(err, flume.ErrDiverged) true where the refusal is
// about divergent histories.
func (e *RefusedError) Unwrap() error {
	switch e.Reason {
	case CodeLogID, CodeDiverged, CodeAhead:
		return flume.ErrDiverged
	case CodeStaleEpoch:
		return flume.ErrFenced
	case CodeWouldLoseCommitted:
		return ErrWouldLoseCommitted
	}
	return nil
}

// ProtocolError reports a malformed, unexpected or out-of-place message.
// The connection it happened on is closed; no stored data is changed.
type ProtocolError struct {
	Code   Code // CodeProtocol, CodeBadPosition or CodeCorrupt
	Reason string
	Err    error // underlying cause, if any
	// FromPeer is true when the peer reported the error.
	FromPeer bool
}

// Error describes the violation.
func (e *ProtocolError) Error() string {
	what := "protocol error"
	if e.FromPeer {
		what = "protocol error reported by peer"
	}
	if e.Code == CodeBadPosition {
		what += " (bad position)"
	}
	s := "repl: " + what + ": " + e.Reason
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the cause.
func (e *ProtocolError) Unwrap() error { return e.Err }

func protoErr(format string, args ...any) error {
	return &ProtocolError{Code: CodeProtocol, Reason: fmt.Sprintf(format, args...)}
}

// peerError turns an Error message received from the peer into the matching
// local error; local is this side's position.
func peerError(m errorMsg) error {
	switch m.Code {
	case CodeAuth:
		return fmt.Errorf("%w: peer says: %s", ErrAuth, m.Message)
	case CodeVersion:
		return fmt.Errorf("%w: peer says: %s", ErrVersion, m.Message)
	case CodeLogID, CodeDiverged, CodeAhead, CodeRole:
		return &RefusedError{Reason: m.Code, Local: m.Receiver, Remote: m.Sender, Message: m.Message, FromPeer: true}
	case CodeProtocol, CodeBadPosition, CodeCorrupt:
		return &ProtocolError{Code: m.Code, Reason: m.Message, FromPeer: true}
	case CodeStaleEpoch, CodeWouldLoseCommitted:
		return &RefusedError{Reason: m.Code, Local: m.Receiver, Remote: m.Sender, Message: m.Message, FromPeer: true}
	case CodeDead:
		return fmt.Errorf("repl: the peer heard nothing from this side for too long and closed the connection: %s", m.Message)
	}
	return fmt.Errorf("repl: peer closed the connection (%s): %s", m.Code, m.Message)
}

// codeOf maps a local error to the code sent to the peer.
func codeOf(err error) Code {
	var re *RefusedError
	var pe *ProtocolError
	switch {
	case errors.As(err, &re):
		return re.Reason
	case errors.As(err, &pe):
		return pe.Code
	case errors.Is(err, ErrAuth):
		return CodeAuth
	case errors.Is(err, ErrVersion):
		return CodeVersion
	case errors.Is(err, ErrServerClosed), errors.Is(err, ErrClosed):
		return CodeShutdown
	case errors.Is(err, flume.ErrCorrupt):
		return CodeCorrupt
	}
	return CodeInternal
}

// permanent reports whether retrying the same connection cannot succeed
// until an operator changes something (refusal, auth, version).
func permanent(err error) bool {
	var re *RefusedError
	return errors.As(err, &re) || errors.Is(err, ErrAuth) || errors.Is(err, ErrVersion)
}
