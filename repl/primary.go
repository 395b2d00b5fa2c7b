package repl

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flume-go/flume"
)

// Primary serves a DB's log to followers: it authenticates them, runs the
// handshake, streams entries from each follower's since+1 to the end and
// then live, and collects their acknowledgements for synchronous appends
// (it is the DB's flume.Replicator). All methods are safe for concurrent
// use.
type Primary struct {
	db    *flume.DB
	opts  Options
	log   *slog.Logger
	stats stats
	lag   lagRing

	ctx    context.Context
	cancel context.CancelFunc
	// wg counts every goroutine the Primary started: one per Serve call
	// (the accept loop, on the caller's goroutine), one per connection
	// (ServeConn, on the caller's goroutine, or started by Serve) plus its
	// ack reader, and one lag tracker. Close cancels ctx and waits for it.
	wg sync.WaitGroup

	done chan struct{} // closed at the end of Close
	// deposed is set by depose (a newer epoch exists): WaitAcked fails with
	// it. Kept here so that a sync append's wait takes no DB lock.
	deposed atomic.Pointer[flume.DeposedError]
	owned   bool // made by Replicate: closed with its last link
	early   earlyState

	// mu is taken before a sendSession's mu (LOCKS.md).
	mu struct {
		sync.Mutex
		closed    bool
		retired   bool // owned and its last link is gone: Close is under way
		links     int  // Replicate links sharing this Primary
		listeners map[net.Listener]struct{}
		followers map[string]*followerState // by node ID
		waiters   map[*ackWaiter]struct{}
	}
}

var _ flume.Replicator = (*Primary)(nil)

// followerState is what the primary keeps about one follower, across its
// connections. Guarded by Primary.mu.
type followerState struct {
	nodeID      string
	addr        string
	session     *sendSession // current connection, nil when disconnected
	acked       int64
	received    int64
	connectedAt time.Time
	lastSeen    time.Time
	rateT0      time.Time
	rateSeq0    int64
	rate        float64
	lastDisc    time.Time
}

// NewPrimary makes db the source of replication and installs the Primary as
// the DB's flume.Replicator (db.ClaimReplicator). A DB has at most one
// Primary: while another is installed NewPrimary fails with ErrHasPrimary.
func NewPrimary(db *flume.DB, opts *Options) (*Primary, error) {
	if db == nil {
		return nil, errors.New("repl: NewPrimary: nil DB")
	}
	return newPrimary(db, opts, false)
}

func newPrimary(db *flume.DB, opts *Options, owned bool) (*Primary, error) {
	o, err := opts.withDefaults(db)
	if err != nil {
		return nil, err
	}
	p := &Primary{db: db, opts: o, log: o.Logger.With("component", "repl.primary", "node", o.NodeID), done: make(chan struct{}), owned: owned}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.mu.listeners = make(map[net.Listener]struct{})
	p.mu.followers = make(map[string]*followerState)
	p.mu.waiters = make(map[*ackWaiter]struct{})
	p.lag.init(8192)
	if err := p.startEpoch(); err != nil {
		p.cancel()
		return nil, fmt.Errorf("repl: NewPrimary: %w", err)
	}
	since, ch := db.Changed()
	p.lag.record(since, time.Now())
	// Claimed last: another goroutine may find p through db.Replicator()
	// from here on, so p must be whole.
	if err := db.ClaimReplicator(p); err != nil {
		p.cancel()
		return nil, fmt.Errorf("repl: NewPrimary: %w", err)
	}
	p.wg.Add(1)
	go p.trackLag(ch)
	return p, nil
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
			if errors.As(err, &ne) && ne.Timeout() {
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

func (p *Primary) serveConn(conn net.Conn) (err error) {
	defer conn.Close()
	addr := "pipe"
	if ra := conn.RemoteAddr(); ra != nil {
		addr = ra.String()
	}
	ctx, cancel := context.WithCancel(p.ctx)
	defer cancel()
	if p.opts.TLS != nil {
		tc, err := tlsHandshake(ctx, conn, p.opts.TLS, true, p.opts.DeadAfter)
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
	w := newWire(conn, p.opts.DeadAfter)
	// Close promptly when the Primary closes, even mid-handshake.
	stop := context.AfterFunc(ctx, w.stopReads)
	defer stop()
	defer func() {
		// A follower that honours a newer epoch refused this primary: it
		// has been deposed, and acknowledges nothing from now on.
		var re *RefusedError
		if errors.As(err, &re) && re.FromPeer && re.Reason == CodeStaleEpoch {
			p.depose(re.Remote.Epoch, "")
		}
	}()

	remote, d, err := p.handshake(w, addr)
	if err != nil {
		if p.ctx.Err() != nil {
			return ErrServerClosed
		}
		return err
	}
	s := &sendSession{p: p, w: w, ctx: ctx, cancel: cancel, ackCh: make(chan struct{}, 1)}
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
		w.sendCause(err)
		p.log.Info("repl: follower disconnected", "follower", remote.NodeID, "remote", addr, "err", err)
	}
	return err
}

// attach registers s as the current connection of follower nodeID,
// replacing (and closing) an older connection of the same node.
func (p *Primary) attach(nodeID, addr string, s *sendSession, since int64) *followerState {
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

func (p *Primary) detach(s *sendSession) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s.fs.session == s {
		s.fs.session = nil
		s.fs.lastDisc = time.Now()
	}
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
	p.db.ReleaseReplicator(p)
	close(p.done)
	return nil
}
