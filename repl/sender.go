package repl

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/flume-go/flume/frame"
)

// sendSession is one connection to a follower: it streams entries and reads acks.
type sendSession struct {
	p      *Primary
	w      *wire
	fs     *followerState
	ctx    context.Context
	cancel context.CancelFunc
	ackCh  chan struct{} // signalled when the window opens

	mu struct {
		sync.Mutex
		err       error     // first error, from the reader
		recs      []sentRec // batches sent and not yet durable, in order
		sentSeq   int64     // last seq sent
		sentBytes int64     // cumulative frame bytes sent this session
		sentCount int64     // entries sent this session
		recvBytes int64     // cumulative frame bytes up to the received ack
		durBytes  int64     // cumulative frame bytes up to the durable ack
		received  int64     // last received ack
		durable   int64     // last durable ack
	}
}

type sentRec struct {
	last int64 // last seq of the batch
	cum  int64 // cumulative frame bytes through it
}

// fail ends the session with err (the first error wins).
func (s *sendSession) fail(err error) {
	s.mu.Lock()
	if s.mu.err == nil {
		s.mu.err = err
	}
	s.mu.Unlock()
	s.cancel()
	s.w.stopReads()
}

// readLoop reads acks and heartbeats from the follower.
func (s *sendSession) readLoop() {
	var buf []byte
	for {
		t, body, err := s.w.read(buf)
		buf = body
		if err != nil {
			if s.ctx.Err() == nil {
				s.fail(err)
			}
			return
		}
		now := time.Now()
		switch t {
		case MsgAck:
			m, err := decodeAck(body)
			if err == nil {
				err = s.onAck(m, now)
			}
			if err != nil {
				s.fail(err)
				return
			}
		case MsgHeartbeat:
			if _, err := decodeHeartbeat(body); err != nil {
				s.fail(err)
				return
			}
			s.p.mu.Lock()
			s.fs.lastSeen = now
			s.p.mu.Unlock()
		case MsgError:
			m, err := decodeError(body)
			if err == nil {
				err = peerError(m)
			}
			s.fail(err)
			return
		default:
			s.fail(protoErr("unexpected %s message from a follower", t))
			return
		}
	}
}

func (s *sendSession) onAck(m ack, now time.Time) error {
	s.mu.Lock()
	if m.Received > s.mu.sentSeq {
		sent := s.mu.sentSeq
		s.mu.Unlock()
		return &ProtocolError{Code: CodeBadPosition, Reason: fmt.Sprintf("Ack message: received %d but only %d was sent", m.Received, sent)}
	}
	if m.Durable < s.mu.durable || m.Received < s.mu.received {
		d, r := s.mu.durable, s.mu.received
		s.mu.Unlock()
		return &ProtocolError{Code: CodeBadPosition, Reason: fmt.Sprintf("Ack message: went backwards (durable %d→%d, received %d→%d)", d, m.Durable, r, m.Received)}
	}
	s.mu.received, s.mu.durable = m.Received, m.Durable
	i := 0
	for ; i < len(s.mu.recs) && s.mu.recs[i].last <= m.Durable; i++ {
		s.mu.durBytes = s.mu.recs[i].cum
	}
	s.mu.recs = s.mu.recs[i:]
	if len(s.mu.recs) == 0 {
		s.mu.recs = s.mu.recs[:0:0]
	}
	for _, r := range s.mu.recs {
		if r.last > m.Received {
			break
		}
		s.mu.recvBytes = r.cum
	}
	if s.mu.recvBytes < s.mu.durBytes {
		s.mu.recvBytes = s.mu.durBytes
	}
	s.mu.Unlock()
	select {
	case s.ackCh <- struct{}{}:
	default:
	}

	p := s.p
	p.mu.Lock()
	defer p.mu.Unlock()
	fs := s.fs
	fs.lastSeen = now
	fs.received = m.Received
	if m.Durable > fs.acked {
		fs.acked = m.Durable
		if dt := now.Sub(fs.rateT0); dt >= time.Second {
			fs.rate = float64(fs.acked-fs.rateSeq0) / dt.Seconds()
			fs.rateT0, fs.rateSeq0 = now, fs.acked
		}
		p.notifyLocked()
	}
	return nil
}

// windowOpen reports whether more may be sent.
func (s *sendSession) windowOpen() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.sentBytes-s.mu.recvBytes < int64(s.p.opts.MaxInFlight) && len(s.mu.recs) < 1<<16
}

// sendLoop streams entries from `from` on, then live, with heartbeats. It
// reads the log through a flume.Cursor, never past the since it puts in the
// batch header, and stops reading while the flow-control window is shut.
// With parallel fsyncs (early.go) it also sends the written, unpublished
// batch once it has sent everything published, and announces the
// primary's since with a heartbeat as soon as it covers entries sent that
// way, so that the followers expose them without waiting for a batch.
func (s *sendSession) sendLoop(from int64) error {
	p, w := s.p, s.w
	c := p.db.Cursor(from)
	defer func() { c.Close() }()
	hb := time.NewTicker(p.opts.Heartbeat)
	defer hb.Stop()
	lastSend := time.Now()
	maxBytes, maxEntries := p.opts.MaxBatchBytes, p.opts.MaxBatchEntries
	sent := from - 1      // last seq sent
	announced := from - 1 // highest primary since the follower was told
	record := func(last int64, count, frameBytes int) error {
		s.mu.Lock()
		s.mu.sentSeq = last
		s.mu.sentBytes += int64(frameBytes)
		s.mu.sentCount += int64(count)
		s.mu.recs = append(s.mu.recs, sentRec{last: last, cum: s.mu.sentBytes})
		s.mu.Unlock()
		p.stats.entriesSent.Add(int64(count))
		p.stats.bytesSent.Add(int64(frameBytes))
		if err := w.flush(); err != nil {
			return err
		}
		lastSend = time.Now()
		return nil
	}
	heartbeat := func(since int64, now time.Time) error {
		w.out = appendHeartbeat(w.out, heartbeat{Since: since, UnixNano: now.UnixNano(), Through: sent, Committed: p.committed()})
		if err := w.flush(); err != nil {
			return err
		}
		lastSend, announced = now, max(announced, since)
		return nil
	}
	for {
		earlyCh := p.earlyChanged() // before reading the state it signals
		since, changed := p.db.Changed()
		if c.NextSeq() <= sent && sent <= since {
			// Sent early, published since: read on after them.
			c.Close()
			c = p.db.Cursor(sent + 1)
		}
		for c.NextSeq() <= since && c.NextSeq() > sent && s.windowOpen() {
			buf, start := appendBatchHeader(w.out, since, c.NextSeq())
			count, frameBytes := 0, 0
			for count < maxEntries && len(buf)-start < maxBytes && c.NextSeq() <= since && c.Next() {
				n := len(buf)
				buf = frame.Append(buf, c.Entry())
				frameBytes += len(buf) - n
				count++
			}
			if count == 0 {
				// A published seq either yields an entry or sets Err.
				w.out = buf[:start]
				return fmt.Errorf("repl: reading the log: %w", c.Err())
			}
			w.out = finishBatch(buf, start, uint32(count))
			sent, announced = c.NextSeq()-1, max(announced, since)
			if err := record(sent, count, frameBytes); err != nil {
				return err
			}
		}
		if sent >= since && s.windowOpen() {
			buf, last, frameBytes := p.appendEarly(w.out, sent+1, since)
			if last > sent {
				w.out = buf
				count := int(last - sent)
				sent, announced = last, max(announced, since)
				p.stats.earlySent.Add(1)
				if err := record(last, count, frameBytes); err != nil {
					return err
				}
			}
		}
		if announced < min(since, sent) {
			// The follower holds entries sent early that are published now.
			if err := heartbeat(since, time.Now()); err != nil {
				return err
			}
		}
		if cap(w.out) > 4*maxBytes {
			w.out = nil // drop a buffer grown by one huge entry
		}
		select {
		case <-changed:
			// Let the other writers of this wake-up (a group commit
			// returns many at once) publish too, so that concurrent
			// appends leave in one batch: yield while since still moves.
			last := since
			for i := 0; i < 8; i++ {
				runtime.Gosched()
				s, _ := p.db.Changed()
				if s == last {
					break
				}
				last = s
			}
		case <-earlyCh:
		case <-s.ackCh:
		case now := <-hb.C:
			if now.Sub(lastSend) >= p.opts.Heartbeat/2 {
				if err := heartbeat(since, now); err != nil {
					return err
				}
			}
		case <-s.ctx.Done():
			return nil
		}
	}
}
