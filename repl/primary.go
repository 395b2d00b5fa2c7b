package repl

import (
	"context"
	"crypto/hmac"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"sort"
	"sync"
	"time"

	"github.com/flume-go/flume"
)

// Primary serves a DB's log to followers: it authenticates them, runs the
// handshake, streams entries from each follower's since+1 to the end and
// then live, and collects their acknowledgements for synchronous appends
// (it is the DB's flume.Replicator). All methods are safe for concurrent
// use.
//
// Goroutines: one per Serve call (the accept loop, on the caller's
// goroutine), one per connection (ServeConn, on the caller's goroutine, or
// started by Serve) plus its ack reader, and one lag tracker. Close stops and
// waits for all of them.
type Primary struct {
	db    *flume.DB
	opts  Options
	log   *slog.Logger
	stats stats
	lag   lagRing

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine the Primary started

	mu struct {
		sync.Mutex
		closed    bool
		listeners map[net.Listener]struct{}
		followers map[string]*followerState // by node ID
		waiters   map[*ackWaiter]struct{}
	}
	links int // Replicate links sharing this Primary (guarded by registry)
	owned bool
}

var _ flume.Replicator = (*Primary)(nil)

// followerState is what the primary keeps about one follower, across its
// connections. Guarded by Primary.mu.
type followerState struct {
	nodeID      string
	addr        string
	session     *session // current connection, nil when disconnected
	acked       int64
	received    int64
	connectedAt time.Time
	lastSeen    time.Time
	rateT0      time.Time
	rateSeq0    int64
	rate        float64
	lastDisc    time.Time
}

type ackWaiter struct {
	seq int64
	k   int
	ch  chan struct{}
}

// NewPrimary makes db the source of replication and installs the Primary as
// the DB's flume.Replicator (db.SetReplicator). A DB has at most one Primary
// (ErrHasPrimary).
func NewPrimary(db *flume.DB, opts *Options) (*Primary, error) {
	if db == nil {
		return nil, errors.New("repl: NewPrimary: nil DB")
	}
	registry.Lock()
	defer registry.Unlock()
	if _, ok := registry.primaries[db]; ok {
		return nil, ErrHasPrimary
	}
	p := newPrimary(db, opts)
	registry.primaries[db] = p
	return p, nil
}

func newPrimary(db *flume.DB, opts *Options) *Primary {
	o := opts.withDefaults(db)
	p := &Primary{db: db, opts: o, log: o.Logger.With("component", "repl.primary", "node", o.NodeID)}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.mu.listeners = make(map[net.Listener]struct{})
	p.mu.followers = make(map[string]*followerState)
	p.mu.waiters = make(map[*ackWaiter]struct{})
	p.lag.init(8192)
	since, ch := db.Changed()
	p.lag.record(since, time.Now())
	p.wg.Add(1)
	go p.trackLag(ch)
	db.SetReplicator(p)
	return p
}

// trackLag records when each new since was published, for LagSeconds. It
// exits when the Primary closes or the DB closes.
func (p *Primary) trackLag(ch <-chan struct{}) {
	defer p.wg.Done()
	for {
		select {
		case <-ch:
		case <-p.ctx.Done():
			return
		}
		var since int64
		since, ch = p.db.Changed()
		p.lag.record(since, time.Now())
		// At most one record per millisecond: lag in seconds needs no
		// finer grain, and a wake-up per append would cost the writers.
		t := time.NewTimer(time.Millisecond)
		select {
		case <-t.C:
		case <-p.ctx.Done():
			t.Stop()
			return
		}
	}
}

// Serve accepts replication connections on ln and serves each on its own
// goroutine until Close. It always returns a non-nil error; after Close it
// is ErrServerClosed. Serve closes ln when it returns.
func (p *Primary) Serve(ln net.Listener) error {
	p.mu.Lock()
	if p.mu.closed {
		p.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	p.mu.listeners[ln] = struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.mu.listeners, ln)
		p.mu.Unlock()
		ln.Close()
	}()
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if p.ctx.Err() != nil {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, errTemporary) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				select {
				case <-time.After(delay):
					continue
				case <-p.ctx.Done():
					return ErrServerClosed
				}
			}
			return fmt.Errorf("repl: accept: %w", err)
		}
		delay = 0
		if !p.goServe(c) {
			c.Close()
			return ErrServerClosed
		}
	}
}

var errTemporary = errors.New("temporary")

// goServe serves c on a goroutine owned by the Primary; false if closed.
func (p *Primary) goServe(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mu.closed {
		return false
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		if err := p.serveConn(c); err != nil && !errors.Is(err, ErrServerClosed) {
			p.log.Debug("repl: connection ended", "remote", c.RemoteAddr().String(), "err", err)
		}
	}()
	return true
}

// ServeConn serves one replication connection until it fails, the follower
// goes away or the Primary closes; it closes conn. It wraps conn in TLS when
// Options.TLS is set (unless conn already is a *tls.Conn). The error says
// why the connection ended (ErrServerClosed after Close).
func (p *Primary) ServeConn(conn net.Conn) error {
	p.mu.Lock()
	if p.mu.closed {
		p.mu.Unlock()
		conn.Close()
		return ErrServerClosed
	}
	p.wg.Add(1)
	p.mu.Unlock()
	defer p.wg.Done()
	return p.serveConn(conn)
}

// session is one connection to a follower.
type session struct {
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

func (p *Primary) serveConn(conn net.Conn) (err error) {
	defer conn.Close()
	addr := "pipe"
	if ra := conn.RemoteAddr(); ra != nil {
		addr = ra.String()
	}
	ctx, cancel := context.WithCancel(p.ctx)
	defer cancel()
	if p.opts.TLS != nil {
		if _, ok := conn.(*tls.Conn); !ok {
			tc := tls.Server(conn, p.opts.TLS)
			hctx, hcancel := context.WithTimeout(ctx, p.opts.DeadAfter)
			err := tc.HandshakeContext(hctx)
			hcancel()
			if err != nil {
				if p.ctx.Err() != nil {
					return ErrServerClosed
				}
				p.log.Warn("repl: TLS handshake failed (authentication)", "remote", addr, "err", err)
				p.stats.authFailures.Add(1)
				return fmt.Errorf("%w: TLS handshake with %s: %v", ErrAuth, addr, err)
			}
			conn = tc
		}
	}
	w := newWire(conn, p.opts.DeadAfter)
	// Close promptly when the Primary closes, even mid-handshake.
	stop := context.AfterFunc(ctx, w.stopReads)
	defer stop()

	remote, d, err := p.handshake(w, addr)
	if err != nil {
		if p.ctx.Err() != nil {
			return ErrServerClosed
		}
		return err
	}
	s := &session{p: p, w: w, ctx: ctx, cancel: cancel, ackCh: make(chan struct{}, 1)}
	s.mu.sentSeq, s.mu.received, s.mu.durable = d.From-1, d.From-1, d.From-1
	s.fs = p.attach(remote.NodeID, addr, s, d.From-1)
	defer p.detach(s)
	p.stats.handshakes.Add(1)
	p.log.Info("repl: follower connected", "follower", remote.NodeID, "remote", addr, "from", d.From)

	p.wg.Add(1)
	readerDone := make(chan struct{})
	go func() {
		defer p.wg.Done()
		defer close(readerDone)
		s.readLoop()
	}()
	err = s.sendLoop(d.From)
	cancel()
	w.stopReads()
	<-readerDone
	s.mu.Lock()
	if s.mu.err != nil {
		err = s.mu.err
	}
	s.mu.Unlock()
	if p.ctx.Err() != nil {
		w.sendError(errorMsg{Code: CodeShutdown, Message: "primary is shutting down"})
		err = ErrServerClosed
	} else if err != nil {
		var pe *ProtocolError
		if errors.As(err, &pe) && !pe.FromPeer {
			w.sendError(errorMsg{Code: pe.Code, Message: err.Error()})
		}
		p.log.Info("repl: follower disconnected", "follower", remote.NodeID, "remote", addr, "err", err)
	}
	return err
}

// handshake authenticates the follower and runs the Hello exchange.
func (p *Primary) handshake(w *wire, addr string) (Hello, Decision, error) {
	w.c.SetDeadline(time.Now().Add(p.opts.DeadAfter))
	defer w.clearDeadlines()
	ver, err := w.mr.readPreamble()
	if err != nil {
		return Hello{}, Decision{}, err
	}
	w.out = appendPreamble(w.out[:0], Version)
	if ver != Version {
		msg := fmt.Sprintf("primary speaks protocol version %d, follower %d", Version, ver)
		w.out = appendError(w.out, errorMsg{Code: CodeVersion, Message: msg})
		w.flush()
		p.log.Warn("repl: follower speaks another protocol version", "remote", addr, "version", ver)
		return Hello{}, Decision{}, fmt.Errorf("%w: %s", ErrVersion, msg)
	}

	// Authentication, before anything about the log is said.
	t, body, err := w.read(nil)
	if err != nil {
		return Hello{}, Decision{}, err
	}
	if t != MsgAuthInit {
		return Hello{}, Decision{}, p.authFail(w, addr, &ProtocolError{Code: CodeProtocol, Reason: fmt.Sprintf("expected AuthInit, got %s", t)})
	}
	init, err := decodeAuthInit(body)
	if err != nil {
		return Hello{}, Decision{}, p.authFail(w, addr, err)
	}
	hasSecret := len(p.opts.Secret) > 0
	if init.HasSecret != hasSecret {
		msg := "the primary requires a shared secret and the follower has none"
		if !hasSecret {
			msg = "the follower has a shared secret but the primary has none configured"
		}
		return Hello{}, Decision{}, p.authFail(w, addr, fmt.Errorf("%w: %s", ErrAuth, msg))
	}
	ch := authChallenge{HasSecret: hasSecret, Nonce: randomNonce()}
	if hasSecret {
		ch.Proof = authMAC(p.opts.Secret, RolePrimary, init.Nonce, ch.Nonce)
	}
	w.out = appendAuthChallenge(w.out, ch)
	if err := w.flush(); err != nil {
		return Hello{}, Decision{}, err
	}
	t, body, err = w.read(body)
	if err != nil {
		return Hello{}, Decision{}, err
	}
	if t == MsgError {
		m, derr := decodeError(body)
		if derr != nil {
			return Hello{}, Decision{}, derr
		}
		err := peerError(m)
		if errors.Is(err, ErrAuth) {
			p.log.Warn("repl: authentication failed: the follower rejected the primary's proof", "remote", addr, "err", err)
			p.stats.authFailures.Add(1)
		}
		return Hello{}, Decision{}, err
	}
	if t != MsgAuthProof {
		return Hello{}, Decision{}, p.authFail(w, addr, &ProtocolError{Code: CodeProtocol, Reason: fmt.Sprintf("expected AuthProof, got %s", t)})
	}
	proof, err := decodeAuthProof(body)
	if err != nil {
		return Hello{}, Decision{}, p.authFail(w, addr, err)
	}
	if hasSecret {
		want := authMAC(p.opts.Secret, RoleFollower, init.Nonce, ch.Nonce)
		if !hmac.Equal(proof.Proof[:], want[:]) {
			return Hello{}, Decision{}, p.authFail(w, addr, fmt.Errorf("%w: the follower's proof does not match the primary's secret", ErrAuth))
		}
	}
	w.mr.max = maxMessage

	// Hello exchange.
	t, body, err = w.read(body)
	if err != nil {
		return Hello{}, Decision{}, err
	}
	if t != MsgHello {
		err := &ProtocolError{Code: CodeProtocol, Reason: fmt.Sprintf("expected Hello, got %s", t)}
		w.sendError(errorMsg{Code: CodeProtocol, Message: err.Error()})
		return Hello{}, Decision{}, err
	}
	remote, err := decodeHello(body)
	if err != nil {
		w.sendError(errorMsg{Code: codeOf(err), Message: err.Error()})
		return Hello{}, Decision{}, err
	}
	local, err := p.localHello(remote.Since)
	if err != nil {
		w.sendError(errorMsg{Code: CodeInternal, Message: "primary cannot read its log"})
		return Hello{}, Decision{}, err
	}
	local.Version = Version // decide compares versions; the preamble already matched
	remote.Version = Version
	d, err := decide(local, remote)
	w.out = appendHello(w.out, local)
	if err != nil {
		p.stats.refusals.Add(1)
		p.log.Warn("repl: follower refused", "follower", remote.NodeID, "remote", addr, "err", err)
		w.out = appendError(w.out, errorMsg{Code: codeOf(err), Sender: local.Position(), Receiver: remote.Position(), Message: err.Error()})
		w.flush()
		return Hello{}, Decision{}, err
	}
	w.out = appendAccept(w.out, accept{From: d.From})
	if err := w.flush(); err != nil {
		return Hello{}, Decision{}, err
	}
	return remote, d, nil
}

func (p *Primary) authFail(w *wire, addr string, err error) error {
	p.log.Warn("repl: follower failed authentication", "remote", addr, "err", err)
	p.stats.authFailures.Add(1)
	msg := "authentication failed"
	if errors.Is(err, ErrAuth) {
		msg = err.Error()
	}
	w.out = appendError(w.out, errorMsg{Code: CodeAuth, Message: msg})
	w.flush()
	if !errors.Is(err, ErrAuth) {
		err = fmt.Errorf("%w: %v", ErrAuth, err)
	}
	return err
}

// localHello is the primary's Hello with the anchor hash at the follower's
// since filled in.
func (p *Primary) localHello(remoteSince int64) (Hello, error) {
	l := p.db.Log()
	since, hash := l.Head()
	h := Hello{Version: Version, Role: RolePrimary, NodeID: p.opts.NodeID, LogID: l.ID(), Epoch: l.Epoch(), Since: since, Hash: hash}
	switch {
	case remoteSince == since:
		h.Anchor = &Position{LogID: h.LogID, Since: since, Hash: hash}
	case remoteSince >= 0 && remoteSince < since:
		e, err := l.Entry(remoteSince)
		if err != nil {
			return h, fmt.Errorf("repl: reading entry %d for the handshake: %w", remoteSince, err)
		}
		h.Anchor = &Position{LogID: h.LogID, Epoch: e.Epoch, Since: remoteSince, Hash: e.Hash}
	}
	return h, nil
}

// attach registers s as the current connection of follower nodeID,
// replacing (and closing) an older connection of the same node.
func (p *Primary) attach(nodeID, addr string, s *session, since int64) *followerState {
	p.mu.Lock()
	defer p.mu.Unlock()
	fs := p.mu.followers[nodeID]
	if fs == nil {
		fs = &followerState{nodeID: nodeID}
		p.mu.followers[nodeID] = fs
		p.pruneLocked()
	}
	if old := fs.session; old != nil {
		old.fail(errors.New("repl: replaced by a newer connection from the same node"))
	}
	now := time.Now()
	fs.session, fs.addr = s, addr
	fs.acked, fs.received = since, since
	fs.connectedAt, fs.lastSeen = now, now
	fs.rateT0, fs.rateSeq0, fs.rate = now, since, 0
	p.notifyLocked()
	return fs
}

// pruneLocked forgets the oldest disconnected followers beyond 64.
func (p *Primary) pruneLocked() {
	var gone []*followerState
	for _, fs := range p.mu.followers {
		if fs.session == nil {
			gone = append(gone, fs)
		}
	}
	if len(gone) <= 64 {
		return
	}
	sort.Slice(gone, func(i, j int) bool { return gone[i].lastDisc.Before(gone[j].lastDisc) })
	for _, fs := range gone[:len(gone)-64] {
		delete(p.mu.followers, fs.nodeID)
	}
}

func (p *Primary) detach(s *session) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s.fs.session == s {
		s.fs.session = nil
		s.fs.lastDisc = time.Now()
	}
}

// fail ends the session with err (the first error wins).
func (s *session) fail(err error) {
	s.mu.Lock()
	if s.mu.err == nil {
		s.mu.err = err
	}
	s.mu.Unlock()
	s.cancel()
	s.w.stopReads()
}

// readLoop reads acks and heartbeats from the follower.
func (s *session) readLoop() {
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

func (s *session) onAck(m ack, now time.Time) error {
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

// windowOpen reports whether more may be sent.
func (s *session) windowOpen() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.sentBytes-s.mu.recvBytes < int64(s.p.opts.MaxInFlight) && len(s.mu.recs) < 1<<16
}

// sendLoop streams entries from `from` on, then live, with heartbeats.
func (s *session) sendLoop(from int64) error {
	p, w := s.p, s.w
	l := p.db.Log()
	next := from
	var it flume.Iterator
	defer func() {
		if it != nil {
			it.Close()
		}
	}()
	hb := time.NewTicker(p.opts.Heartbeat)
	defer hb.Stop()
	lastSend := time.Now()
	maxBytes, maxEntries := p.opts.MaxBatchBytes, p.opts.MaxBatchEntries
	for {
		since, changed := p.db.Changed()
		for next <= since && s.windowOpen() {
			buf, start := appendBatchHeader(w.out, since, next)
			count, frameBytes := 0, 0
			for count < maxEntries && len(buf)-start < maxBytes && next <= since {
				if it == nil {
					it = l.Iter(next)
				}
				if !it.Next() {
					err := it.Err()
					it.Close()
					it = nil
					if err != nil {
						return fmt.Errorf("repl: reading the log at seq %d: %w", next, err)
					}
					if count == 0 {
						// A fresh iterator found nothing: the log ends
						// before its published since.
						it = l.Iter(next)
						if !it.Next() {
							return fmt.Errorf("repl: the log ends before published seq %d", next)
						}
					} else {
						break
					}
				}
				e := it.Entry()
				if e.Seq != next {
					return fmt.Errorf("repl: the log returned seq %d, expected %d", e.Seq, next)
				}
				n := len(buf)
				buf = flume.AppendFrame(buf, e)
				frameBytes += len(buf) - n
				next++
				count++
			}
			if count == 0 {
				break
			}
			w.out = finishBatch(buf, start, uint32(count))
			s.mu.Lock()
			s.mu.sentSeq = next - 1
			s.mu.sentBytes += int64(frameBytes)
			s.mu.sentCount += int64(count)
			s.mu.recs = append(s.mu.recs, sentRec{last: next - 1, cum: s.mu.sentBytes})
			s.mu.Unlock()
			p.stats.entriesSent.Add(int64(count))
			p.stats.bytesSent.Add(int64(frameBytes))
			if err := w.flush(); err != nil {
				return err
			}
			lastSend = time.Now()
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
		case <-s.ackCh:
		case now := <-hb.C:
			if now.Sub(lastSend) >= p.opts.Heartbeat/2 {
				w.out = appendHeartbeat(w.out, heartbeat{Since: since, UnixNano: now.UnixNano(), Through: next - 1})
				if err := w.flush(); err != nil {
					return err
				}
				lastSend = now
			}
		case <-s.ctx.Done():
			return nil
		}
	}
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

// Followers returns the status of every follower seen recently, connected
// or not, sorted by node ID.
func (p *Primary) Followers() []FollowerStatus {
	since := p.db.Since()
	now := time.Now()
	p.mu.Lock()
	list := make([]FollowerStatus, 0, len(p.mu.followers))
	type sess struct {
		i int
		s *session
	}
	var live []sess
	for _, fs := range p.mu.followers {
		st := FollowerStatus{
			NodeID: fs.nodeID, Addr: fs.addr, Connected: fs.session != nil,
			AckedSeq: fs.acked, ReceivedSeq: fs.received, LagEntries: max(0, since-fs.acked),
			ConnectedAt: fs.connectedAt, LastSeen: fs.lastSeen, EntriesPerSec: fs.rate,
		}
		if dt := now.Sub(fs.rateT0); dt >= time.Second {
			st.EntriesPerSec = float64(fs.acked-fs.rateSeq0) / dt.Seconds()
		}
		if fs.session != nil {
			live = append(live, sess{len(list), fs.session})
		}
		list = append(list, st)
	}
	p.mu.Unlock()
	for _, ls := range live {
		st := &list[ls.i]
		s := ls.s
		s.mu.Lock()
		unacked := s.mu.sentBytes - s.mu.durBytes
		if unsent := since - s.mu.sentSeq; unsent > 0 && s.mu.sentCount > 0 {
			unacked += unsent * (s.mu.sentBytes / s.mu.sentCount)
		}
		s.mu.Unlock()
		st.LagBytes = unacked
	}
	for i := range list {
		if list[i].LagEntries > 0 {
			if t, ok := p.lag.publishedAt(list[i].AckedSeq + 1); ok {
				list[i].LagSeconds = now.Sub(t).Seconds()
			}
		}
	}
	sort.Slice(list, func(i, j int) bool { return list[i].NodeID < list[j].NodeID })
	return list
}

// Stats returns the Primary's counters.
func (p *Primary) Stats() Stats { return p.stats.snapshot() }

// DB returns the DB the Primary serves.
func (p *Primary) DB() *flume.DB { return p.db }

// Close stops accepting, closes every connection (telling followers the
// primary is shutting down), wakes WaitAcked callers with ErrServerClosed,
// removes the Primary as the DB's replicator and waits for every goroutine
// it started. Later calls return nil.
func (p *Primary) Close() error {
	p.mu.Lock()
	if p.mu.closed {
		p.mu.Unlock()
		return nil
	}
	p.mu.closed = true
	p.cancel()
	for ln := range p.mu.listeners {
		ln.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	registry.Lock()
	if registry.primaries[p.db] == p {
		delete(registry.primaries, p.db)
	}
	registry.Unlock()
	p.db.SetReplicator(nil)
	return nil
}

// lagRing remembers when each since was published, for LagSeconds: a
// bounded ring of (since, time) pairs in increasing since order. When full
// the oldest pairs are dropped, so ages beyond its reach are underestimated.
type lagRing struct {
	mu    sync.Mutex
	recs  []lagRec
	start int // index of the oldest
	n     int
}

type lagRec struct {
	since int64
	at    time.Time
}

func (r *lagRing) init(size int) { r.recs = make([]lagRec, size) }

func (r *lagRing) record(since int64, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n > 0 && r.recs[(r.start+r.n-1)%len(r.recs)].since >= since {
		return
	}
	if r.n == len(r.recs) {
		r.start = (r.start + 1) % len(r.recs)
		r.n--
	}
	r.recs[(r.start+r.n)%len(r.recs)] = lagRec{since, at}
	r.n++
}

// publishedAt returns when seq was first published (the time of the first
// record with since >= seq), or the oldest known time if seq is older.
func (r *lagRing) publishedAt(seq int64) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == 0 {
		return time.Time{}, false
	}
	i := sort.Search(r.n, func(i int) bool { return r.recs[(r.start+i)%len(r.recs)].since >= seq })
	if i == r.n {
		return time.Time{}, false
	}
	return r.recs[(r.start+i)%len(r.recs)].at, true
}
