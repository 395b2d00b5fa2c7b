package repl

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/flume-go/flume"
)

// Follower replicates a primary's log into a local DB. It keeps one
// connection to the primary, reconnecting with exponential backoff and
// jitter, and resumes each time exactly from its own log's end (read from
// the open log, never a remembered position). While it exists the DB is a
// read-only follower: client appends fail with *flume.NotPrimaryError.
type Follower struct {
	db    *flume.DB
	addr  string
	opts  Options
	log   *slog.Logger
	stats stats

	release func(restore bool) // ends the DB's upstream claim (Close)

	ctx    context.Context
	cancel context.CancelFunc
	// wg counts the goroutines the Follower started: the reconnect loop,
	// and per connection a reader and an appender (the loop goroutine
	// writes acks and heartbeats). Close cancels ctx and waits for it.
	wg sync.WaitGroup

	// mu is never held while taking another lock (LOCKS.md).
	mu struct {
		sync.Mutex
		state        State
		connected    bool
		primarySince int64
		// learned records when each new primarySince was first heard of,
		// oldest first, so that Status can tell the age of the oldest
		// entry the primary has and this follower does not (LagSeconds).
		// Bounded: when full the newest point absorbs later ones.
		learned     []learnedAt
		lastErr     error
		connectedAt time.Time
		primaryHTTP string        // the primary's advertised HTTP URL
		refusal     error         // last attempt's permanent error; nil once a handshake succeeds
		changed     chan struct{} // closed and replaced on every state change
		closed      bool
	}
}

// NewFollower makes db a read-only follower of the primary at addr
// (db.ClaimUpstream(addr)) and starts replicating in the background.
// A DB has at most one upstream: a second NewFollower or Replicate into the
// same DB fails with an error wrapping ErrHasUpstream until the first is
// closed. Use Ready to
// wait for the first handshake and Status to watch progress.
func NewFollower(db *flume.DB, addr string, opts *Options) (*Follower, error) {
	if db == nil {
		return nil, errors.New("repl: NewFollower: nil DB")
	}
	o, err := opts.withDefaults(db)
	if err != nil {
		return nil, err
	}
	if o.Dial == nil && addr == "" {
		return nil, errors.New("repl: NewFollower: no primary address and no Dial function")
	}
	release, err := db.ClaimUpstream(addr)
	if err != nil {
		if errors.Is(err, flume.ErrHasUpstream) {
			return nil, fmt.Errorf("repl: NewFollower: %w; close it before starting another", err)
		}
		return nil, fmt.Errorf("repl: NewFollower: %w", err)
	}
	f := &Follower{db: db, addr: addr, opts: o, release: release,
		log: o.Logger.With("component", "repl.follower", "node", o.NodeID, "primary", addr)}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	f.mu.state = StateConnecting
	f.mu.primarySince = -1
	f.mu.changed = make(chan struct{})
	f.wg.Add(1)
	go f.run()
	return f, nil
}

func (f *Follower) setState(state State, connected bool, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.mu.closed {
		return
	}
	if state != "" {
		f.mu.state = state
	}
	f.mu.connected = connected
	if err != nil {
		f.mu.lastErr = err
	}
	close(f.mu.changed)
	f.mu.changed = make(chan struct{})
}

// run is the reconnect loop; it exits when the Follower closes.
func (f *Follower) run() {
	defer f.wg.Done()
	backoff := f.opts.MinBackoff
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			f.stats.reconnects.Add(1)
		}
		streamed, err := f.connect()
		if f.ctx.Err() != nil {
			return
		}
		if streamed {
			backoff = f.opts.MinBackoff
		}
		delay := backoff
		state := StateConnecting
		if permanent(err) {
			state, delay = StateRefused, f.opts.MaxBackoff
			f.log.Warn("repl: primary refused replication; will retry", "err", err, "retry", delay)
		} else {
			f.log.Info("repl: replication connection ended; reconnecting", "err", err, "retry", delay)
		}
		f.mu.Lock()
		if permanent(err) {
			f.mu.refusal = err
		}
		f.mu.Unlock()
		f.setState(state, false, err)
		backoff = min(2*backoff, f.opts.MaxBackoff)
		// Jitter: wait between half and all of the delay.
		delay = delay/2 + rand.N(delay/2+1)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-f.ctx.Done():
			t.Stop()
			return
		}
	}
}

func (f *Follower) dial(ctx context.Context) (net.Conn, error) {
	var conn net.Conn
	var err error
	if f.opts.Dial != nil {
		conn, err = f.opts.Dial(ctx)
	} else {
		d := net.Dialer{Timeout: f.opts.DeadAfter}
		conn, err = d.DialContext(ctx, "tcp", f.addr)
	}
	if err != nil {
		return nil, fmt.Errorf("repl: dial %s: %w", f.addr, err)
	}
	if f.opts.TLS != nil {
		cfg := f.opts.TLS
		if cfg.ServerName == "" && !cfg.InsecureSkipVerify {
			cfg = cfg.Clone()
			host, _, herr := net.SplitHostPort(f.addr)
			if herr != nil {
				host = f.addr
			}
			cfg.ServerName = host
		}
		tc, err := tlsHandshake(ctx, conn, cfg, false, f.opts.DeadAfter)
		if err != nil {
			conn.Close()
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			f.stats.authFailures.Add(1)
			f.log.Warn("repl: TLS handshake with the primary failed", "err", err)
			return nil, fmt.Errorf("%w: TLS handshake with %s: %v", ErrAuth, f.addr, err)
		}
		conn = tc
	}
	return conn, nil
}

// connect runs one connection. streamed reports whether the handshake
// succeeded (the backoff then starts over).
func (f *Follower) connect() (streamed bool, err error) {
	f.setState(StateConnecting, false, nil)
	conn, err := f.dial(f.ctx)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(f.ctx)
	defer cancel()
	w := newWire(conn, f.opts.DeadAfter)
	stop := context.AfterFunc(ctx, w.stopReads)
	defer stop()

	f.setState(StateHandshake, true, nil)
	remote, d, err := f.handshake(w)
	if err != nil {
		if _, ok := conn.(*tls.Conn); ok && !permanent(err) {
			// With TLS 1.3 a server that rejects the client's certificate
			// says so with an alert at the first read.
			var oe *net.OpError
			if errors.As(err, &oe) && oe.Op == "remote error" {
				f.stats.authFailures.Add(1)
				err = fmt.Errorf("%w: the primary rejected this follower's TLS credentials: %v", ErrAuth, oe.Err)
			}
		}
		return false, err
	}
	if d.AdoptID {
		if err := f.db.AdoptID(remote.LogID); err != nil {
			return false, fmt.Errorf("repl: adopting the primary's log ID %s: %w", remote.LogID, err)
		}
	}
	f.stats.handshakes.Add(1)
	f.mu.Lock()
	f.notePrimarySinceLocked(remote.Since, time.Now())
	f.mu.connectedAt = time.Now()
	f.mu.primaryHTTP = remote.HTTP
	f.mu.refusal = nil
	f.mu.Unlock()
	state := StateCatchingUp
	if d.UpToDate {
		state = StateStreaming
	}
	f.setState(state, true, nil)
	f.log.Info("repl: connected to primary", "from", d.From, "primary_since", remote.Since)

	s := &recvSession{f: f, w: w, ctx: ctx, cancel: cancel, appendCh: make(chan *rxBatch, 8),
		syncOnAppend: flume.SyncsOnAppend(f.db.Log()), syncCh: make(chan struct{}, 1)}
	s.durable.Store(d.From - 1)
	s.received.Store(d.From - 1)
	s.written.Store(d.From - 1)
	s.lastD, s.lastR, s.lastSend = d.From-1, d.From-1, time.Now()
	s.epochs = remote.Epochs
	s.committed.Store(-1)
	s.hintPersisted = -1
	if el, ok := f.db.Log().(flume.EpochLog); ok {
		s.hintPersisted = el.CommittedHint()
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); s.readLoop(d.From) }()
	go func() { defer wg.Done(); s.appendLoop() }()
	if !s.syncOnAppend {
		wg.Add(1)
		go func() { defer wg.Done(); s.syncLoop() }()
	}
	err = s.writeLoop()
	cancel()
	w.stopReads()
	wg.Wait()
	for b := range s.appendCh { // left over if the appender failed
		b.release()
	}
	if e := s.err(); e != nil {
		err = e
	}
	if err != nil && f.ctx.Err() == nil {
		w.sendCause(err)
	}
	if f.ctx.Err() != nil {
		err = ErrClosed
	}
	return true, err
}

// Ready blocks until the follower has completed a handshake (it is
// catching up or streaming) and returns nil; or returns the error of the
// latest attempt if it was refused or failed authentication
// (*RefusedError, ErrAuth, ErrVersion); or ctx.Err(); or ErrClosed.
// Transient failures (primary unreachable) are waited out.
func (f *Follower) Ready(ctx context.Context) error {
	for {
		f.mu.Lock()
		state, err, ch, closed := f.mu.state, f.mu.refusal, f.mu.changed, f.mu.closed
		f.mu.Unlock()
		switch {
		case closed:
			return ErrClosed
		case state == StateCatchingUp || state == StateStreaming:
			return nil
		case err != nil:
			return err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Stats returns the follower's counters.
func (f *Follower) Stats() Stats { return f.stats.snapshot() }

// DB returns the follower's DB.
func (f *Follower) DB() *flume.DB { return f.db }

// Close stops replicating, closes the connection and waits for every
// goroutine the Follower started. The DB stays a read-only follower
// (promotion is an explicit db.SetFollower(false, "")), and may be given a
// new upstream. Later calls return nil.
func (f *Follower) Close() error { return f.close(false) }

// Promote stops replicating and makes the DB the primary of a new epoch
// (flume.DB.Promote), with no moment in between when another upstream could
// claim the DB or a client append could land outside the new epoch. It
// returns the new epoch's record. The Follower is closed afterwards; serve
// the DB with NewPrimary. It fails with flume.ErrNoEpochs (and changes
// nothing) if the DB's log keeps no epoch history, and with ErrClosed after
// Close. If the promotion itself fails (the epoch record could not be made
// durable) the Follower is closed and the DB stays a read-only follower.
func (f *Follower) Promote() (flume.EpochRecord, error) {
	if _, ok := f.db.Log().(flume.EpochLog); !ok {
		return flume.EpochRecord{}, fmt.Errorf("repl: promote: %w", flume.ErrNoEpochs)
	}
	f.mu.Lock()
	if f.mu.closed {
		f.mu.Unlock()
		return flume.EpochRecord{}, ErrClosed
	}
	f.mu.Unlock()
	f.cancel()
	f.wg.Wait() // no replicated append is in flight from here on
	r, err := f.db.Promote(f.opts.NodeID)
	if err == nil {
		f.log.Info("repl: promoted to primary", "epoch", r.Epoch, "start", r.Start)
	}
	f.close(false) // the claim ended with the promotion; this one is a no-op
	if err != nil {
		return flume.EpochRecord{}, fmt.Errorf("repl: promote: %w", err)
	}
	return r, nil
}

// close is Close; with restore the DB gets back the role it had before
// NewFollower (Replicate's failure path), else it stays a follower.
func (f *Follower) close(restore bool) error {
	f.mu.Lock()
	if f.mu.closed {
		f.mu.Unlock()
		return nil
	}
	f.mu.Unlock()
	f.cancel()
	f.wg.Wait()
	f.mu.Lock()
	f.mu.closed, f.mu.state, f.mu.connected = true, StateClosed, false
	close(f.mu.changed)
	f.mu.changed = make(chan struct{})
	f.mu.Unlock()
	f.release(restore)
	return nil
}

// State is where a Follower stands with its upstream. Its string form is
// what /status and `flume status` show.
type State string

// Follower states.
const (
	StateConnecting State = "connecting"  // dialing, or waiting to redial
	StateHandshake  State = "handshake"   // authenticating and exchanging Hellos
	StateCatchingUp State = "catching-up" // streaming, behind the primary's since at the handshake
	StateStreaming  State = "streaming"   // caught up, following live
	StateRefused    State = "refused"     // the last handshake was refused or failed auth; retrying
	StateClosed     State = "closed"      // Close was called
)
