package flume

import (
	"fmt"
	"io"
)

// TruncateAfter cuts the follower DB's log after seq, verified against the
// chain hash: the log's h(seq) must be want (else an error wrapping
// ErrDiverged, and nothing changes). The entries cut are written to fork
// first, frames as stored (see TruncatableLog); nothing is cut if that
// fails. It is the rejoin of a node whose log holds entries its new primary
// lacks, and it is only allowed on a follower (ErrNotFollower otherwise):
// a DB that takes appends never cuts its own acknowledged entries.
//
// Around the cut, appends are held off and every view's feed is paused;
// the published since drops to seq; views that had applied entries past the
// cut are Reset and rebuilt from the log; cursors and live streams that had
// read past the cut end with ErrTruncated (the entries they handed out are
// no longer the log's history), the others go on. Entries appended after
// the cut get seqs from seq+1.
func (db *DB) TruncateAfter(seq int64, want Hash, fork io.Writer) (TruncateReport, error) {
	tl, ok := db.log.(TruncatableLog)
	if !ok {
		return TruncateReport{}, fmt.Errorf("flume: truncate: the log cannot be truncated")
	}
	if err := db.lockAsFollower(); err != nil {
		return TruncateReport{}, err
	}
	defer db.appendMu.Unlock()

	runners := db.pauseViews()
	rep, err := tl.TruncateAfter(seq, want, fork)
	// Compared with the log rather than trusted from rep: a cut that failed
	// after its point of no return has still shortened the log.
	after := tl.Since()
	db.mu.Lock()
	db.mu.logSince = after
	if db.mu.holding {
		// The hold came from the primary the cut entries came from: the
		// new primary's entries past the cut show once it publishes them.
		db.mu.hold = min(db.mu.hold, after)
	}
	db.mu.Unlock()
	if after < db.Since() {
		db.mu.Lock()
		db.mu.since = after
		db.truncations.Add(1)
		if db.mu.chTaken {
			close(db.mu.changed) // wake readers so that they notice the cut
			db.mu.changed = make(chan struct{})
			db.mu.chTaken = false
		}
		db.mu.Unlock()
	}
	if rerr := db.resumeViews(runners); rerr != nil && err == nil {
		err = rerr
	}
	if err != nil {
		return rep, fmt.Errorf("flume: truncate after seq %d: %w", seq, err)
	}
	if rep.Entries > 0 {
		db.opts.Logger.Warn("log truncated", "after", rep.After, "cut_from", rep.From, "cut_to", rep.To, "entries", rep.Entries)
	}
	return rep, nil
}

// pauseViews stops every view's feed between batches and waits until each
// has stopped. appendMu is held, so nothing is published meanwhile.
func (db *DB) pauseViews() []*viewRunner {
	db.mu.Lock()
	var runners []*viewRunner
	for _, r := range db.mu.views {
		if r.started && r.err == nil && r.stop != nil {
			close(r.stop)
			runners = append(runners, r)
		}
	}
	db.mu.Unlock()
	for _, r := range runners {
		<-r.stopped
	}
	return runners
}

// resumeViews restarts the feeds pauseViews stopped, first resetting views
// that are now ahead of the log (or on another history). A view whose reset
// fails stops with that error, as a failed Apply would.
func (db *DB) resumeViews(runners []*viewRunner) error {
	var first error
	for _, r := range runners {
		if err := db.checkViewHistory(r.name, r.v); err != nil {
			r.fail(err)
			if first == nil {
				first = err
			}
			continue
		}
		db.mu.Lock()
		if db.mu.closed {
			db.mu.Unlock()
			continue
		}
		r.done = r.v.Since()
		r.stop, r.stopped = make(chan struct{}), make(chan struct{})
		stop, stopped := r.stop, r.stopped
		db.wg.Add(1)
		db.mu.Unlock()
		go r.run(stop, stopped)
	}
	return first
}
