package fork

import (
	"errors"
	"fmt"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/frame"
)

// The frame codec is the log's (frame.Decode and friends); this file
// is the only one in the package that names it.

const frameHeaderSize = frame.HeaderSize

// framePayloadLen returns the payload length of the frame whose header
// starts b (at least 4 bytes), and whether it is within the codec's bound.
func framePayloadLen(b []byte) (int, bool) {
	l := frame.PayloadLen(b)
	return int(l), l <= flume.MaxEntrySize
}

// decodeFrame decodes the whole frame b (CRC checked). Data aliases b. A
// bad frame gives the reason why, without the codec's prefix.
func decodeFrame(b []byte) (flume.Entry, string) {
	e, n, err := frame.Decode(b)
	var fe *frame.Error
	switch {
	case errors.As(err, &fe):
		return e, fe.Reason
	case err != nil:
		return e, err.Error()
	case n != len(b):
		return e, fmt.Sprintf("frame is %d bytes, expected %d", n, len(b))
	}
	return e, ""
}

// chain tracks the expected seq and chain hash through the frames of a
// cut, the check both the Writer and the reader apply to every frame.
type chain struct {
	next int64      // seq the next frame must carry
	prev flume.Hash // chain hash at next-1
	last int64      // seq of the last frame of the cut
	end  flume.Hash // chain hash the last frame must carry
}

func newChain(h *Header) chain {
	return chain{next: h.After + 1, prev: h.AfterHash, last: h.Since, end: h.SinceHash}
}

// done reports whether every frame of the cut has been checked.
func (c *chain) done() bool { return c.next > c.last }

// check verifies that e is the next entry of the cut and advances.
func (c *chain) check(e flume.Entry) string {
	if c.done() {
		return fmt.Sprintf("frame of seq %d after the last entry of the cut (%d)", e.Seq, c.last)
	}
	if e.Seq != c.next {
		return fmt.Sprintf("frame of seq %d where seq %d belongs", e.Seq, c.next)
	}
	if want := flume.ChainHash(c.prev, e.Seq, e.Epoch, e.Data); want != e.Hash {
		return fmt.Sprintf("chain hash %s does not continue the cut (computed %s)", e.Hash.Short(), want.Short())
	}
	if e.Seq == c.last && e.Hash != c.end {
		return fmt.Sprintf("last entry has chain hash %s, the header says %s", e.Hash.Short(), c.end.Short())
	}
	c.prev = e.Hash
	c.next++
	return ""
}
