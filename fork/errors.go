package fork

import (
	"errors"
	"fmt"

	"github.com/flume-go/flume"
)

// Errors of package fork. Compare with errors.Is; *FileError unwraps to the
// matching sentinel.
var (
	// Reading a file.

	// ErrIncomplete marks a file that ends early: inside its header, inside
	// a frame or before its trailer. Files get their final name only once
	// complete and durable, so under that name this is damage (a truncated
	// copy, a filesystem that lost data), and it is also ErrCorrupt.
	ErrIncomplete = errors.New("fork: incomplete file")
	// ErrVersion marks a file written in a format version this code does
	// not read (a newer flume). It is not ErrCorrupt.
	ErrVersion = errors.New("fork: unsupported file version")

	// Writing a file.

	// ErrEmptyCut is returned by Create for a header whose cut holds no
	// entries (Since <= After): there is nothing to save, and no file is
	// made for it.
	ErrEmptyCut = errors.New("fork: nothing to cut")
	// ErrStream is returned by Writer.Write when the bytes written are not
	// the frames the header announced: a bad frame, a seq out of order, a
	// chain hash that does not continue from Header.AfterHash or end at
	// Header.SinceHash, or bytes past the frame of Header.Since. The file is
	// not committed (or, past the last frame, see Writer.Write).
	ErrStream = errors.New("fork: frames do not match the cut")
	// ErrUnfinished is returned by Writer.Commit when fewer frames than the
	// cut holds were written: the file is not complete and not committed.
	ErrUnfinished = errors.New("fork: cut not fully written")
	// ErrClosed is returned by a Writer's methods after Abort.
	ErrClosed = errors.New("fork: writer aborted")
)

// FileError says what is wrong with a fork file and where. It unwraps to
// Kind: flume.ErrCorrupt (a checksum, chain or framing check failed),
// ErrIncomplete (the file ends early; also flume.ErrCorrupt) or ErrVersion.
type FileError struct {
	Path   string // the file
	Offset int64  // byte offset of the bad part (header, frame or trailer)
	Seq    int64  // seq of the frame in question, -1 when not in a frame
	Reason string
	Kind   error // flume.ErrCorrupt, ErrIncomplete or ErrVersion
}

// Error says what is wrong, in which file, at which offset (and seq).
func (e *FileError) Error() string {
	what := "corrupt"
	switch e.Kind {
	case ErrIncomplete:
		what = "incomplete"
	case ErrVersion:
		what = "unreadable"
	}
	if e.Seq >= 0 {
		return fmt.Sprintf("fork: %s file %s at offset %d (seq %d): %s", what, e.Path, e.Offset, e.Seq, e.Reason)
	}
	return fmt.Sprintf("fork: %s file %s at offset %d: %s", what, e.Path, e.Offset, e.Reason)
}

// Unwrap makes errors.Is(err, e.Kind) true, and errors.Is(err,
// flume.ErrCorrupt) for an incomplete file.
func (e *FileError) Unwrap() []error {
	switch e.Kind {
	case nil:
		return []error{flume.ErrCorrupt}
	case ErrIncomplete:
		return []error{ErrIncomplete, flume.ErrCorrupt}
	}
	return []error{e.Kind}
}
