package repl

import "context"

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
// the count so far and ctx.Err(); after Close, ErrServerClosed. Many
// writers waiting on one ack are woken together (group commit).
func (p *Primary) WaitAcked(ctx context.Context, seq int64, k int) (int, error) {
	p.mu.Lock()
	n := p.countLocked(seq)
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
	if n >= k {
		return n, nil
	}
	return n, err
}
