package repl

import (
	"context"
	"crypto/hmac"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flume-go/flume"
)

// Follower replicates a primary's log into a local DB. It keeps one
// connection to the primary, reconnecting with exponential backoff and
// jitter, and resumes each time exactly from its own log's end (read from
// the open log, never a remembered position). While it exists the DB is a
// read-only follower: client appends fail with *flume.NotPrimaryError.
//
// Goroutines: the reconnect loop, and per connection a reader and an
// appender (the loop goroutine writes acks and heartbeats). Close stops and
// waits for all of them.
type Follower struct {
	db    *flume.DB
	addr  string
	opts  Options
	log   *slog.Logger
	stats stats

	prevFollower bool
	prevPrimary  string

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu struct {
		sync.Mutex
		state        string
		connected    bool
		primarySince int64
		// learned records when each new primarySince was first heard of,
		// oldest first, so that Status can tell the age of the oldest
		// entry the primary has and this follower does not (LagSeconds).
		// Bounded: when full the newest point absorbs later ones.
		learned     []learnedAt
		lastErr     error
		connectedAt time.Time
		refusal     error         // last attempt's permanent error; nil once a handshake succeeds
		changed     chan struct{} // closed and replaced on every state change
		closed      bool
	}
}

// NewFollower makes db a read-only follower of the primary at addr
// (db.SetFollower(true, addr)) and starts replicating in the background.
// A DB has at most one upstream: a second NewFollower or Replicate into the
// same DB fails with ErrHasUpstream until the first is closed. Use Ready to
// wait for the first handshake and Status to watch progress.
func NewFollower(db *flume.DB, addr string, opts *Options) (*Follower, error) {
	if db == nil {
		return nil, errors.New("repl: NewFollower: nil DB")
	}
	o := opts.withDefaults(db)
	if o.Dial == nil && addr == "" {
		return nil, errors.New("repl: NewFollower: no primary address and no Dial function")
	}
	registry.Lock()
	if cur, ok := registry.followers[db]; ok {
		registry.Unlock()
		return nil, fmt.Errorf("%w (%s); close it before starting another", ErrHasUpstream, cur.addr)
	}
	f := &Follower{db: db, addr: addr, opts: o, log: o.Logger.With("component", "repl.follower", "node", o.NodeID, "primary", addr)}
	registry.followers[db] = f
	registry.Unlock()

	f.prevFollower, f.prevPrimary = db.Role()
	db.SetFollower(true, addr)
	f.ctx, f.cancel = context.WithCancel(context.Background())
	f.mu.state = StateConnecting
	f.mu.primarySince = -1
	f.mu.changed = make(chan struct{})
	f.wg.Add(1)
	go f.run()
	return f, nil
}

// learnedAt is when the follower learned that the primary holds seq.
type learnedAt struct {
	seq int64
	at  time.Time
}

const maxLearned = 4096

// notePrimarySinceLocked records the primary's since as reported by a
// handshake, an Entries message or a heartbeat. f.mu is held.
func (f *Follower) notePrimarySinceLocked(ps int64, now time.Time) {
	switch {
	case ps < f.mu.primarySince:
		// Another primary, or one that restarted with less: start over.
		f.mu.primarySince, f.mu.learned = ps, append(f.mu.learned[:0], learnedAt{ps, now})
	case ps > f.mu.primarySince:
		f.mu.primarySince = ps
		if n := len(f.mu.learned); n >= maxLearned {
			f.mu.learned[n-1].seq = ps
		} else {
			f.mu.learned = append(f.mu.learned, learnedAt{ps, now})
		}
	}
}

func (f *Follower) setState(state string, connected bool, err error) {
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
		streamed, err := f.session()
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
		if _, ok := conn.(*tls.Conn); !ok {
			cfg := f.opts.TLS
			if cfg.ServerName == "" && !cfg.InsecureSkipVerify {
				cfg = cfg.Clone()
				host, _, herr := net.SplitHostPort(f.addr)
				if herr != nil {
					host = f.addr
				}
				cfg.ServerName = host
			}
			tc := tls.Client(conn, cfg)
			hctx, cancel := context.WithTimeout(ctx, f.opts.DeadAfter)
			err := tc.HandshakeContext(hctx)
			cancel()
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
	}
	return conn, nil
}

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

// session runs one connection. streamed reports whether the handshake
// succeeded (the backoff then starts over).
func (f *Follower) session() (streamed bool, err error) {
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
	f.mu.refusal = nil
	f.mu.Unlock()
	state := StateCatchingUp
	if d.UpToDate {
		state = StateStreaming
	}
	f.setState(state, true, nil)
	f.log.Info("repl: connected to primary", "from", d.From, "primary_since", remote.Since)

	s := &fsession{f: f, w: w, ctx: ctx, cancel: cancel, appendCh: make(chan *rxBatch, 8),
		syncOnAppend: flume.SyncsOnAppend(f.db.Log()), syncCh: make(chan struct{}, 1)}
	s.durable.Store(d.From - 1)
	s.received.Store(d.From - 1)
	s.written.Store(d.From - 1)
	s.lastD, s.lastR, s.lastSend = d.From-1, d.From-1, time.Now()
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
		var pe *ProtocolError
		if errors.As(err, &pe) && !pe.FromPeer {
			w.sendError(errorMsg{Code: pe.Code, Message: err.Error()})
		}
	}
	if f.ctx.Err() != nil {
		err = ErrClosed
	}
	return true, err
}

// handshake authenticates the primary, proves the secret and exchanges
// Hellos.
func (f *Follower) handshake(w *wire) (Hello, Decision, error) {
	w.c.SetDeadline(time.Now().Add(f.opts.DeadAfter))
	defer w.clearDeadlines()
	hasSecret := len(f.opts.Secret) > 0
	nonce := randomNonce()
	w.out = appendPreamble(w.out[:0], Version)
	w.out = appendAuthInit(w.out, authInit{HasSecret: hasSecret, Nonce: nonce})
	if err := w.flush(); err != nil {
		return Hello{}, Decision{}, err
	}
	ver, err := w.mr.readPreamble()
	if err != nil {
		return Hello{}, Decision{}, err
	}
	if ver != Version {
		f.stats.refusals.Add(1)
		return Hello{}, Decision{}, fmt.Errorf("%w: primary speaks protocol version %d, this follower %d", ErrVersion, ver, Version)
	}
	t, body, err := w.read(nil)
	if err != nil {
		return Hello{}, Decision{}, err
	}
	if t == MsgError {
		return Hello{}, Decision{}, f.handshakeError(body)
	}
	if t != MsgAuthChallenge {
		return Hello{}, Decision{}, protoErr("expected AuthChallenge, got %s", t)
	}
	ch, err := decodeAuthChallenge(body)
	if err != nil {
		return Hello{}, Decision{}, err
	}
	var proof authProof
	if hasSecret {
		var why string
		if !ch.HasSecret {
			why = "the primary has no shared secret configured; refusing to follow an unauthenticated primary"
		} else if want := authMAC(f.opts.Secret, RolePrimary, nonce, ch.Nonce); !hmac.Equal(want[:], ch.Proof[:]) {
			why = "the primary's proof does not match this follower's secret"
		}
		if why != "" {
			f.stats.authFailures.Add(1)
			f.log.Warn("repl: primary failed authentication", "why", why)
			w.sendError(errorMsg{Code: CodeAuth, Message: why})
			return Hello{}, Decision{}, fmt.Errorf("%w: %s", ErrAuth, why)
		}
		proof.Proof = authMAC(f.opts.Secret, RoleFollower, nonce, ch.Nonce)
	}
	l := f.db.Log()
	if !flume.SyncsOnAppend(l) {
		// The primary takes the since in our Hello as durable here (it
		// may answer synchronous appends with it), so make it so.
		if err := l.Sync(); err != nil {
			return Hello{}, Decision{}, fmt.Errorf("repl: fsync before handshake: %w", err)
		}
	}
	since, hash := l.Head()
	local := Hello{Version: Version, Role: RoleFollower, NodeID: f.opts.NodeID, LogID: l.ID(), Epoch: l.Epoch(), Since: since, Hash: hash}
	w.out = appendAuthProof(w.out, proof)
	w.out = appendHello(w.out, local)
	if err := w.flush(); err != nil {
		return Hello{}, Decision{}, err
	}
	w.mr.max = maxMessage
	t, body, err = w.read(body)
	if err != nil {
		return Hello{}, Decision{}, err
	}
	if t == MsgError {
		return Hello{}, Decision{}, f.handshakeError(body)
	}
	if t != MsgHello {
		return Hello{}, Decision{}, protoErr("expected Hello, got %s", t)
	}
	remote, err := decodeHello(body)
	if err != nil {
		return Hello{}, Decision{}, err
	}
	t, body, err = w.read(body)
	if err != nil {
		return Hello{}, Decision{}, err
	}
	if t == MsgError {
		return Hello{}, Decision{}, f.handshakeError(body)
	}
	if t != MsgAccept {
		return Hello{}, Decision{}, protoErr("expected Accept, got %s", t)
	}
	acc, err := decodeAccept(body)
	if err != nil {
		return Hello{}, Decision{}, err
	}
	remote.Version = Version
	d, err := decide(local, remote)
	if err != nil {
		f.stats.refusals.Add(1)
		w.sendError(errorMsg{Code: codeOf(err), Sender: local.Position(), Receiver: remote.Position(), Message: err.Error()})
		return Hello{}, Decision{}, err
	}
	if acc.From != d.From {
		return Hello{}, Decision{}, &ProtocolError{Code: CodeBadPosition, Reason: fmt.Sprintf("primary would stream from seq %d but this log ends at %d (expected %d)", acc.From, since, d.From)}
	}
	return remote, d, nil
}

func (f *Follower) handshakeError(body []byte) error {
	m, err := decodeError(body)
	if err != nil {
		return err
	}
	err = peerError(m)
	switch {
	case errors.Is(err, ErrAuth):
		f.stats.authFailures.Add(1)
		f.log.Warn("repl: primary rejected authentication", "err", err)
	case permanent(err):
		f.stats.refusals.Add(1)
	}
	return err
}

// fsession is one streaming connection of a Follower.
type fsession struct {
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
}

func (s *fsession) fail(err error) {
	s.mu.Lock()
	if s.firstErr == nil {
		s.firstErr = err
	}
	s.mu.Unlock()
	s.cancel()
}

func (s *fsession) err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.firstErr
}

// readLoop reads Entries and heartbeats, verifies framing, CRC and seqs,
// and hands batches to the appender.
func (s *fsession) readLoop(next int64) {
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
func (s *fsession) appendLoop() {
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
		err := f.db.AppendReplicated(merged)
		last := merged[len(merged)-1].Seq
		if err != nil && len(held) > 1 {
			// Keep the good prefix: retry batch by batch.
			last = -2
			for _, b := range held {
				if err = f.db.AppendReplicated(b.entries); err != nil {
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
func (s *fsession) appended(last int64) error {
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
func (s *fsession) syncLoop() {
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
func (s *fsession) sendProgress(tick bool) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	d, r := s.durable.Load(), s.received.Load()
	now := time.Now()
	switch {
	case d != s.lastD || r != s.lastR:
		s.w.out = appendAck(s.w.out, ack{Durable: d, Received: max(r, d)})
		s.lastD, s.lastR = d, r
	case tick && now.Sub(s.lastSend) >= s.f.opts.Heartbeat/2:
		s.w.out = appendHeartbeat(s.w.out, heartbeat{Since: d, UnixNano: now.UnixNano(), Through: max(r, d)})
	default:
		return nil
	}
	s.lastSend = now
	return s.w.flush()
}

// writeLoop sends heartbeats (and any ack not yet sent) until the session
// ends.
func (s *fsession) writeLoop() error {
	hb := time.NewTicker(s.f.opts.Heartbeat)
	defer hb.Stop()
	for {
		select {
		case <-hb.C:
			if err := s.sendProgress(true); err != nil {
				return err
			}
		case <-s.ctx.Done():
			return nil
		}
	}
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

// Status returns the follower's view of its upstream.
func (f *Follower) Status() UpstreamStatus {
	since := f.db.Since()
	f.mu.Lock()
	defer f.mu.Unlock()
	st := UpstreamStatus{
		Primary: f.addr, State: f.mu.state, Connected: f.mu.connected, Since: since,
		PrimarySince: f.mu.primarySince, Reconnects: f.stats.reconnects.Load(), ConnectedAt: f.mu.connectedAt,
	}
	if f.mu.primarySince >= 0 {
		st.LagEntries = max(0, f.mu.primarySince-since)
	}
	if n := f.stats.entriesReceived.Load(); n > 0 && st.LagEntries > 0 {
		st.LagBytes = st.LagEntries * (f.stats.bytesReceived.Load() / n)
	}
	// Drop what this follower now holds; the first point left is the
	// oldest news of an entry it does not hold.
	i := 0
	for i < len(f.mu.learned) && f.mu.learned[i].seq <= since {
		i++
	}
	f.mu.learned = f.mu.learned[i:]
	if len(f.mu.learned) > 0 {
		st.LagSeconds = time.Since(f.mu.learned[0].at).Seconds()
	}
	if f.mu.lastErr != nil {
		st.LastError = f.mu.lastErr.Error()
	}
	return st
}

// Stats returns the follower's counters.
func (f *Follower) Stats() Stats { return f.stats.snapshot() }

// DB returns the follower's DB.
func (f *Follower) DB() *flume.DB { return f.db }

// Close stops replicating, closes the connection and waits for every
// goroutine the Follower started. The DB stays a read-only follower
// (promotion is an explicit db.SetFollower(false, "")), and may be given a
// new upstream. Later calls return nil.
func (f *Follower) Close() error {
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
	registry.Lock()
	if registry.followers[f.db] == f {
		delete(registry.followers, f.db)
	}
	registry.Unlock()
	return nil
}
