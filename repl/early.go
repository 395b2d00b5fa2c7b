package repl

import (
	"errors"
	"fmt"
	"sync"

	"github.com/flume-go/flume"
)

// Parallel fsyncs. A primary whose log syncs on append (filelog SyncAlways)
// is told of each batch once it is written and before its fsync
// (flume.WriteObserver → Primary.Written). The Primary keeps a copy of that
// one batch (the log writes and fsyncs batches one at a time, so there is at
// most one written and unpublished batch), and each sendSession that has
// sent everything published sends it at once, with the primary's published
// since in the batch header. The follower appends and fsyncs it while the
// primary fsyncs too, and acknowledges it; it exposes it only once the
// primary's since reaches it (flume.DB.HoldAbove), which the primary
// announces with the next batch or, when there is none, a heartbeat sent as
// soon as it publishes. A synchronous append then waits for the slower of
// the two fsyncs instead of their sum.
//
// Why a follower may hold what the primary then loses. A primary that loses
// power loses the batches it had not fsynced; it never answered their
// writers, and no reader saw them anywhere. Its next start begins a new
// epoch (startEpoch), so the rejoin of a follower that holds them finds the
// histories parting exactly where the new run begins, checks the chain hash
// there and cuts them into forked/ (cutPoint). They are above the
// follower's committed hint: the committed watermark counts only what the
// primary has published (Primary.committed).

// earlyState is the written, not yet published batch. Its mutex is a leaf:
// Written takes it under the log's writer lock, senders under nothing.
type earlyState struct {
	sync.Mutex
	on          bool  // parallel fsyncs are in use (set once by newPrimary)
	first, last int64 // the batch's seqs; first > last when there is none
	frames      []byte
	// ch is closed and replaced when a batch arrives, if someone took it.
	ch      chan struct{}
	chTaken bool
}

var _ flume.EarlyReplicator = (*Primary)(nil)

// Written implements flume.EarlyReplicator: it keeps a copy of the batch the
// log has just written and wakes the senders. A batch too big for one
// Entries message is not kept: the senders read it from the log once it is
// published, as they do without parallel fsyncs.
func (p *Primary) Written(first, last int64, frames []byte) {
	e := &p.early
	e.Lock()
	defer e.Unlock()
	if !e.on {
		return
	}
	if len(frames) > p.opts.MaxBatchBytes || last-first+1 > int64(p.opts.MaxBatchEntries) {
		e.first, e.last = 0, -1
		return
	}
	e.first, e.last = first, last
	e.frames = append(e.frames[:0], frames...) // at most MaxBatchBytes, reused
	if e.chTaken {
		close(e.ch)
		e.ch, e.chTaken = make(chan struct{}), false
	}
	p.stats.earlyBatches.Add(1)
}

// earlyChanged returns a channel closed when the next batch is written (nil
// when parallel fsyncs are off: a nil channel never fires in a select).
func (p *Primary) earlyChanged() <-chan struct{} {
	e := &p.early
	e.Lock()
	defer e.Unlock()
	if !e.on {
		return nil
	}
	e.chTaken = true
	return e.ch
}

// appendEarly appends to dst an Entries message with the written batch
// when it begins at next, with primarySince in its header, and reports the
// batch's last seq and frame bytes (last < next when there is none). The
// log's first batch is never sent early.
func (p *Primary) appendEarly(dst []byte, next, primarySince int64) ([]byte, int64, int) {
	e := &p.early
	e.Lock()
	defer e.Unlock()
	// Nothing goes early before the log's first entry is durable: a
	// primary that lost its whole log could not be cut against (no entry
	// would be provably common, and a rejoin never cuts a whole log).
	if !e.on || e.first != next || e.last < e.first || e.first <= primarySince || primarySince < 0 {
		return dst, next - 1, 0
	}
	buf, start := appendBatchHeader(dst, primarySince, e.first)
	buf = append(buf, e.frames...)
	return finishBatch(buf, start, uint32(e.last-e.first+1)), e.last, len(e.frames)
}

// startEpoch begins a new epoch when a Primary starts over a non-empty log
// that survives restarts and may lose an unsynced tail in a power failure
// (a flume.WriteObserver log: filelog, whatever its sync policy), unless
// this process began the current epoch (a promotion just now: nothing of
// it can have been lost). As Kafka's leader epoch on every election, it
// marks where this run's history begins: entries a follower received from
// an earlier run that the primary then lost (sent before its fsync, or
// under SyncInterval/SyncNever before the interval's fsync) lie in the
// older epoch, and a rejoin cuts them there, verified by the chain hash,
// unless the follower's committed hint covers them (then it is refused).
// Without it such a follower would be ahead of the primary in the
// primary's own epoch, which cutPoint refuses (rule 7), and once the
// primary wrote new entries at those seqs, diverged within one epoch.
//
// Then it turns parallel fsyncs on when the options and the log allow them
// (a log that syncs on append). A DB that follows, or knows itself deposed,
// does neither.
func (p *Primary) startEpoch() error {
	db := p.db
	l := db.Log()
	_, observes := l.(flume.WriteObserver)
	if _, epochs := l.(flume.EpochLog); !observes || !epochs {
		return nil
	}
	if follower, _ := db.Role(); follower || db.Deposed() != nil {
		return nil
	}
	if l.Since() >= 0 && !db.OwnEpoch() {
		r, err := db.NewEpoch(p.opts.NodeID)
		var de *flume.DeposedError
		switch {
		case errors.Is(err, flume.ErrHasUpstream) || errors.As(err, &de):
			return nil // it became a follower or was deposed meanwhile
		case err != nil:
			return fmt.Errorf("repl: beginning this run's epoch: %w", err)
		}
		p.log.Info("repl: began a new epoch for this run of the primary", "epoch", r.Epoch, "start", r.Start)
	}
	if p.opts.SendAfterSync || !flume.SyncsOnAppend(l) {
		return nil
	}
	p.early.Lock()
	p.early.on, p.early.first, p.early.last, p.early.ch = true, 0, -1, make(chan struct{})
	p.early.Unlock()
	return nil
}
