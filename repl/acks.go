package repl

import (
	"context"
	"sort"
)

type ackWaiter struct {
	seq int64
	k   int
	ch  chan struct{}
}

// notifyLocked wakes the WaitAcked callers that now have enough acks.
func (p *Primary) notifyLocked() {
	for w := range p.mu.waiters {
		if p.countLocked(w.seq) >= w.k {
			close(w.ch)
			delete(p.mu.waiters, w)
		}
	}
}

// countLocked counts connected followers whose durable ack is >= seq. Only
// connected followers count, so that one node reconnecting under a new ID
// is never counted twice.
func (p *Primary) countLocked(seq int64) int {
	n := 0
	for _, fs := range p.mu.followers {
		if fs.session != nil && fs.acked >= seq {
			n++
		}
	}
	return n
}

// WaitAcked blocks until at least k connected followers have acknowledged
// seq as durable, and returns how many have. When ctx ends first it returns
// the count so far and ctx.Err(); after Close, ErrServerClosed; once the
// Primary is deposed (a newer epoch exists), the *flume.DeposedError at
// once, for waits in progress too: a deposed primary acknowledges nothing.
// Many writers waiting on one ack are woken together (group commit).
func (p *Primary) WaitAcked(ctx context.Context, seq int64, k int) (int, error) {
	deposed := p.deposed.Load() // the Primary's own copy: no DB lock on a sync append's path
	p.mu.Lock()
	n := p.countLocked(seq)
	if deposed != nil {
		p.mu.Unlock()
		return n, deposed
	}
	if k <= 0 || n >= k {
		p.mu.Unlock()
		return n, nil
	}
	if p.mu.closed {
		p.mu.Unlock()
		return n, ErrServerClosed
	}
	w := &ackWaiter{seq: seq, k: k, ch: make(chan struct{})}
	p.mu.waiters[w] = struct{}{}
	p.mu.Unlock()
	var err error
	select {
	case <-w.ch:
	case <-ctx.Done():
		err = ctx.Err()
	case <-p.ctx.Done():
		err = ErrServerClosed
	}
	p.mu.Lock()
	delete(p.mu.waiters, w)
	n = p.countLocked(seq)
	p.mu.Unlock()
	if d := p.deposed.Load(); d != nil {
		return n, d
	}
	if n >= k {
		return n, nil
	}
	return n, err
}

// depose marks the DB deposed by a newer epoch (flume.DB.Depose) and fails
// every waiting synchronous append with the *flume.DeposedError.
func (p *Primary) depose(epoch uint64, primary string) {
	if d := p.db.Deposed(); d == nil {
		p.log.Warn("repl: deposed: a newer primary exists; acknowledging no more appends", "epoch", epoch, "primary", primary)
	}
	p.db.Depose(epoch, primary)
	p.deposed.Store(p.db.Deposed())
	p.mu.Lock()
	defer p.mu.Unlock()
	for w := range p.mu.waiters {
		close(w.ch)
		delete(p.mu.waiters, w)
	}
}

// committed is the committed watermark: the highest seq that the DB's
// required number of synchronous followers (flume.Options.SyncReplicas)
// have acknowledged as durable and the primary has published (with
// parallel fsyncs a follower may ack what the primary has not yet made
// durable, and no writer has been answered for it), -1 if none is required
// or acked. Sent in heartbeats, it is what a rejoin may never cut.
func (p *Primary) committed() int64 {
	k := p.db.Options().SyncReplicas
	if k <= 0 {
		return -1
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var acked []int64
	for _, fs := range p.mu.followers {
		if fs.session != nil {
			acked = append(acked, fs.acked)
		}
	}
	if len(acked) < k {
		return -1
	}
	sort.Slice(acked, func(i, j int) bool { return acked[i] > acked[j] })
	return min(acked[k-1], p.db.Since())
}
