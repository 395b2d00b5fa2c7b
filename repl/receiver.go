package repl

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flume-go/flume"
)

// rxBatch is a received Entries message waiting to be appended.
type rxBatch struct {
	body    []byte
	entries []flume.Entry
}

var rxPool = sync.Pool{New: func() any { return new(rxBatch) }}

func (b *rxBatch) release() {
	if cap(b.body) > 1<<20 {
		b.body = nil
	}
	clear(b.entries)
	b.entries = b.entries[:0]
	rxPool.Put(b)
}

// recvSession is one streaming connection of a Follower.
type recvSession struct {
	f        *Follower
	w        *wire
	ctx      context.Context
	cancel   context.CancelFunc
	appendCh chan *rxBatch

	durable  atomic.Int64
	received atomic.Int64
	// Logs that do not fsync on append (filelog interval/never): the
	// appender records what it wrote in written and pokes syncCh; syncLoop
	// fsyncs and only then advances durable, so a durable ack always means
	// fsynced on this follower (architecture.md §5, §6.5).
	syncOnAppend bool
	written      atomic.Int64
	syncCh       chan struct{}
	mu           sync.Mutex
	firstErr     error

	wmu          sync.Mutex // serialises writes: acks (appender) and heartbeats (writer)
	lastD, lastR int64      // last acked positions
	lastSend     time.Time

	// epochs is the primary's epoch history from its Hello; nextEpoch is
	// the first record not yet adopted (appender only). Every replica
	// adopts each record right before the record's first entry.
	epochs    []flume.EpochRecord
	nextEpoch int
	// committed is the primary's committed watermark from its heartbeats;
	// the writer persists it lazily as the log's committed hint (capped at
	// what this node holds durably, so the hint never says it lost data).
	committed     atomic.Int64
	hintPersisted int64
	hintAt        time.Time
}

// appendAdopting appends entries received from the primary, adopting
// (flume.DB.AdoptEpoch) each of the primary's epoch records that begins
// among them right before its first entry.
func (s *recvSession) appendAdopting(entries []flume.Entry) error {
	db := s.f.db
	for len(entries) > 0 {
		first, last := entries[0].Seq, entries[len(entries)-1].Seq
		for s.nextEpoch < len(s.epochs) && s.epochs[s.nextEpoch].Start < first {
			s.nextEpoch++ // begun before what this node received: held or legacy
		}
		if s.nextEpoch == len(s.epochs) || s.epochs[s.nextEpoch].Start > last {
			return db.AppendReplicated(entries)
		}
		r := s.epochs[s.nextEpoch]
		k := int(r.Start - first)
		if k > 0 {
			if err := db.AppendReplicated(entries[:k]); err != nil {
				return err
			}
		}
		if err := db.AdoptEpoch(r); err != nil && !errors.Is(err, flume.ErrNoEpochs) {
			return fmt.Errorf("repl: adopting the primary's %s: %w", r, err)
		}
		s.nextEpoch++
		entries = entries[k:]
	}
	return nil
}

// persistHint stores the primary's committed watermark as the log's
// committed hint, at most once a second (it costs an fsync).
func (s *recvSession) persistHint(now time.Time) error {
	el, ok := s.f.db.Log().(flume.EpochLog)
	if !ok {
		return nil
	}
	c := min(s.committed.Load(), s.durable.Load())
	if c <= s.hintPersisted || now.Sub(s.hintAt) < time.Second {
		return nil
	}
	if err := el.SetCommittedHint(c); err != nil {
		return fmt.Errorf("repl: persisting the committed hint %d: %w", c, err)
	}
	s.hintPersisted, s.hintAt = c, now
	return nil
}

func (s *recvSession) fail(err error) {
	s.mu.Lock()
	if s.firstErr == nil {
		s.firstErr = err
	}
	s.mu.Unlock()
	s.cancel()
}

func (s *recvSession) err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.firstErr
}

// readLoop reads Entries and heartbeats, verifies framing, CRC and seqs,
// and hands batches to the appender.
func (s *recvSession) readLoop(next int64) {
	f := s.f
	defer close(s.appendCh)
	for {
		b := rxPool.Get().(*rxBatch)
		t, body, err := s.w.read(b.body)
		b.body = body
		if err != nil {
			b.release()
			if s.ctx.Err() == nil {
				s.fail(err)
			}
			return
		}
		switch t {
		case MsgEntries:
			m, err := decodeBatch(body)
			if err == nil && m.First != next {
				err = &ProtocolError{Code: CodeBadPosition, Reason: fmt.Sprintf("Entries message starts at seq %d, expected %d", m.First, next)}
			}
			if err == nil {
				b.entries, err = decodeFrames(b.entries, m)
			}
			if err != nil {
				b.release()
				s.fail(err)
				return
			}
			next = m.First + int64(m.Count)
			f.stats.entriesReceived.Add(int64(m.Count))
			f.stats.bytesReceived.Add(int64(len(m.Frames)))
			f.mu.Lock()
			f.notePrimarySinceLocked(max(f.mu.primarySince, m.PrimarySince), time.Now())
			f.mu.Unlock()
			// Expose no more than the primary has published: entries sent
			// before its fsync are held until it announces them.
			f.db.HoldAbove(m.PrimarySince)
			// Received progress rides on the next durable ack or
			// heartbeat; one ack per append keeps the primary's window
			// moving without doubling the ack traffic.
			s.received.Store(next - 1)
			select {
			case s.appendCh <- b:
			case <-s.ctx.Done():
				b.release()
				return
			}
		case MsgHeartbeat:
			m, err := decodeHeartbeat(body)
			b.release()
			if err != nil {
				s.fail(err)
				return
			}
			if m.Through != next-1 {
				// The stream is in order, so everything sent before this
				// heartbeat has arrived: a gap means bytes were lost
				// between the two processes (a middlebox, not TCP).
				// Reconnecting resumes exactly from what is held.
				s.fail(&ProtocolError{Code: CodeBadPosition, Reason: fmt.Sprintf(
					"the primary has sent entries through seq %d but this connection delivered through %d: a message was lost in transit", m.Through, next-1)})
				return
			}
			f.mu.Lock()
			f.notePrimarySinceLocked(max(f.mu.primarySince, m.Since), time.Now())
			f.mu.Unlock()
			f.db.HoldAbove(m.Since)
			if m.Committed > s.committed.Load() {
				s.committed.Store(m.Committed)
			}
		case MsgError:
			m, err := decodeError(body)
			b.release()
			if err == nil {
				err = peerError(m)
			}
			s.fail(err)
			return
		default:
			b.release()
			s.fail(protoErr("unexpected %s message from the primary", t))
			return
		}
	}
}

// appendLoop appends received batches, merging those queued into one
// AppendReplicated call (one fsync for many batches).
func (s *recvSession) appendLoop() {
	f := s.f
	var merged []flume.Entry
	var held []*rxBatch
	for {
		// Batches already verified are appended even when the reader
		// has failed since: the channel is closed after the last one.
		b, ok := <-s.appendCh
		if !ok {
			return
		}
		held = append(held[:0], b)
		merged = append(merged[:0], b.entries...)
	drain:
		for len(merged) < 64<<10 {
			select {
			case b, ok := <-s.appendCh:
				if !ok {
					break drain
				}
				held = append(held, b)
				merged = append(merged, b.entries...)
			default:
				break drain
			}
		}
		err := s.appendAdopting(merged)
		last := merged[len(merged)-1].Seq
		if err != nil && len(held) > 1 {
			// Keep the good prefix: retry batch by batch.
			last = -2
			for _, b := range held {
				if b.entries[0].Seq <= f.db.Log().Since() {
					last = b.entries[len(b.entries)-1].Seq
					continue // appended before the failure
				}
				if err = s.appendAdopting(b.entries); err != nil {
					break
				}
				last = b.entries[len(b.entries)-1].Seq
			}
			if last > -2 {
				s.appended(last)
			}
		}
		clear(merged)
		for _, b := range held {
			b.release()
		}
		clear(held)
		if err != nil {
			if errors.Is(err, flume.ErrDiverged) || errors.Is(err, flume.ErrOutOfOrder) {
				err = &ProtocolError{Code: CodeCorrupt, Reason: "received entries do not continue this log", Err: err}
			}
			s.fail(err)
			return
		}
		if err := s.appended(last); err != nil {
			s.fail(err)
			return
		}
		f.mu.Lock()
		caughtUp := last >= f.mu.primarySince && f.mu.state == StateCatchingUp
		f.mu.Unlock()
		if caughtUp {
			f.setState(StateStreaming, true, nil)
		}
	}
}

// appended records that entries up to last are in the log. Under a log
// that syncs on append they are durable now; otherwise syncLoop makes them
// durable before they are acknowledged as such.
func (s *recvSession) appended(last int64) error {
	if s.syncOnAppend {
		s.durable.Store(last)
		return s.sendProgress(false)
	}
	s.written.Store(last)
	select {
	case s.syncCh <- struct{}{}:
	default: // a sync is already due; it will cover last
	}
	return s.sendProgress(false) // received progress moves the window now
}

// syncLoop fsyncs the log after appends (coalescing: one fsync covers every
// append made before it started) and then acknowledges them as durable. It
// runs only for logs that do not sync on append, and ends with the session.
func (s *recvSession) syncLoop() {
	for {
		select {
		case <-s.syncCh:
		case <-s.ctx.Done():
			return
		}
		w := s.written.Load()
		if err := s.f.db.Log().Sync(); err != nil {
			s.fail(fmt.Errorf("repl: fsync before acknowledging seq %d: %w", w, err))
			return
		}
		if w > s.durable.Load() {
			s.durable.Store(w)
			if err := s.sendProgress(false); err != nil {
				s.fail(err)
				return
			}
		}
	}
}

// sendProgress sends an Ack if durable or received moved since the last
// one, else (on a heartbeat tick, when quiet) a Heartbeat. The appender
// calls it right after each append, so an ack costs no goroutine handoff.
func (s *recvSession) sendProgress(tick bool) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	d, r := s.durable.Load(), s.received.Load()
	now := time.Now()
	switch {
	case d != s.lastD || r != s.lastR:
		s.w.out = appendAck(s.w.out, ack{Durable: d, Received: max(r, d)})
		s.lastD, s.lastR = d, r
	case tick && now.Sub(s.lastSend) >= s.f.opts.Heartbeat/2:
		s.w.out = appendHeartbeat(s.w.out, heartbeat{Since: d, UnixNano: now.UnixNano(), Through: max(r, d), Committed: -1})
	default:
		return nil
	}
	s.lastSend = now
	return s.w.flush()
}

// writeLoop sends heartbeats (and any ack not yet sent) until the session
// ends.
func (s *recvSession) writeLoop() error {
	hb := time.NewTicker(s.f.opts.Heartbeat)
	defer hb.Stop()
	for {
		select {
		case now := <-hb.C:
			if err := s.sendProgress(true); err != nil {
				return err
			}
			if err := s.persistHint(now); err != nil {
				return err
			}
		case <-s.ctx.Done():
			return nil
		}
	}
}
