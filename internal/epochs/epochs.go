// Package epochs holds the rules of an epoch history (flume.EpochRecord)
// that every log enforces the same way: which record may begin an epoch,
// which order a stored history must have, and which records a cut keeps.
// memlog and filelog call it so that the two cannot drift apart; the errors
// carry no package prefix, callers add theirs.
package epochs

import (
	"errors"
	"fmt"

	"github.com/flume-go/flume"
)

// CheckBegin reports why r cannot begin an epoch on a log whose history is
// hist, whose current epoch (Log.Epoch) is epoch and whose head is (since,
// head); nil if it can. A wrong start wraps flume.ErrOutOfOrder, a wrong
// previous hash flume.ErrDiverged.
func CheckBegin(hist []flume.EpochRecord, epoch uint64, since int64, head flume.Hash, r flume.EpochRecord) error {
	if r.Start != since+1 {
		return fmt.Errorf("epoch %d starts at seq %d but the log ends at %d (must start at %d): %w",
			r.Epoch, r.Start, since, since+1, flume.ErrOutOfOrder)
	}
	if r.Prev != head {
		return fmt.Errorf("epoch %d records previous hash %s but the log's hash at %d is %s: %w",
			r.Epoch, r.Prev.Short(), since, head.Short(), flume.ErrDiverged)
	}
	if n := len(hist); n > 0 && r.Epoch <= hist[n-1].Epoch {
		return fmt.Errorf("epoch %d is not greater than the last recorded epoch %d", r.Epoch, hist[n-1].Epoch)
	}
	if r.Epoch < epoch {
		return fmt.Errorf("epoch %d is lower than the current epoch %d", r.Epoch, epoch)
	}
	return nil
}

// ErrOrder is wrapped by CheckOrder's errors.
var ErrOrder = errors.New("epoch records out of order")

// CheckOrder checks the order of a stored history: every start is >= 0,
// epochs strictly increase and starts never decrease. It returns the index
// of the first record that breaks the order and why, or -1 and nil.
func CheckOrder(hist []flume.EpochRecord) (int, error) {
	for i, r := range hist {
		if r.Start < 0 {
			return i, fmt.Errorf("%w: record %d starts at negative seq %d", ErrOrder, i, r.Start)
		}
		if i == 0 {
			continue
		}
		p := hist[i-1]
		if r.Epoch <= p.Epoch {
			return i, fmt.Errorf("%w: record %d has epoch %d, not greater than record %d's epoch %d", ErrOrder, i, r.Epoch, i-1, p.Epoch)
		}
		if r.Start < p.Start {
			return i, fmt.Errorf("%w: record %d starts at seq %d, before record %d's start %d", ErrOrder, i, r.Start, i-1, p.Start)
		}
	}
	return -1, nil
}

// Kept returns how many records of hist (in order, see CheckOrder) start at
// or before since+1: the prefix a log that ends at since keeps. The rest
// start past the log's end; their epochs never got an entry (a cut removed
// it, or it was never durable).
func Kept(hist []flume.EpochRecord, since int64) int {
	n := len(hist)
	for n > 0 && hist[n-1].Start > since+1 {
		n--
	}
	return n
}
