package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/repl"
)

// Errors of role changes (Promote, Follow). Compare with errors.Is; the
// HTTP API answers each with the status named here.
var (
	// ErrIsPrimary is returned by Promote on a node that already takes
	// appends (409).
	ErrIsPrimary = errors.New("server: this node is already the primary")
	// ErrPeerAhead is returned by Promote without Force when a peer reports
	// a longer log or a higher epoch than this node (409). The concrete
	// error is a *PeerAheadError naming the peer.
	ErrPeerAhead = errors.New("server: a peer is ahead of this node")
	// ErrBadRequest marks a malformed role-change request: no or a bad
	// address, a bad peer URL (400). Nothing changed.
	ErrBadRequest = errors.New("server: bad request")
	// ErrUnreachable is returned by Follow when the new primary's address
	// cannot be dialled (502). Nothing changed: the node keeps its role and
	// its upstream.
	ErrUnreachable = errors.New("server: primary unreachable")
	// ErrNotReady is returned by Follow when the new upstream accepted a TCP
	// connection but no replication handshake completed within
	// Config.ReadyTimeout (502): not a flume primary's replication address,
	// or a node that is not (yet) a primary. The node now follows that
	// address and keeps retrying in the background.
	ErrNotReady = errors.New("server: no replication handshake with the new primary")
	// ErrReplaced is returned by Follow when another role change replaced
	// the new upstream before its first handshake (409).
	ErrReplaced = errors.New("server: replaced by a later role change")
)

// PeerAheadError says which peer made Promote refuse. It unwraps to
// ErrPeerAhead.
type PeerAheadError struct {
	Peer   PeerReport   // the first peer found ahead
	Peers  []PeerReport // every peer asked
	Reason string       // "longer log (since 120 > 99)" or "higher epoch (3 > 2)"
}

func (e *PeerAheadError) Error() string {
	return fmt.Sprintf("server: promote refused: peer %s (%s) reports a %s; promote the node with the longest log, or force", e.Peer.URL, e.Peer.NodeID, e.Reason)
}

// Unwrap makes errors.Is(err, ErrPeerAhead) true.
func (e *PeerAheadError) Unwrap() error { return ErrPeerAhead }

// FollowError is a Follow that switched the node to the new upstream but
// got no handshake: the handshake was refused (diverged or unrelated logs,
// authentication, version: it unwraps to the repl error) or did not happen
// in time (ErrNotReady). The node follows Primary and keeps retrying in the
// background.
type FollowError struct {
	Primary string     // the address now followed
	Demoted bool       // the node was a primary before this Follow
	State   repl.State // the new upstream's state when the answer was given
	Err     error
}

func (e *FollowError) Error() string {
	return fmt.Sprintf("server: follow %s: %v; this node now follows %s (state %s) and keeps retrying in the background", e.Primary, e.Err, e.Primary, e.State)
}

// Unwrap returns the cause.
func (e *FollowError) Unwrap() error { return e.Err }

// PromoteRequest is the body of POST /promote.
type PromoteRequest struct {
	// Force promotes even when a peer reports a longer log or a higher
	// epoch.
	Force bool `json:"force,omitempty"`
	// Peers are the HTTP API URLs of the other nodes of the group (the
	// scheme defaults to http://). Each is asked for its /status first.
	Peers []string `json:"peers,omitempty"`
}

// PromoteResult is the answer to a successful POST /promote.
type PromoteResult struct {
	Epoch     uint64 `json:"epoch"`     // the new epoch
	Start     int64  `json:"start"`     // first seq of the new epoch
	Promotion string `json:"promotion"` // the promotion's random ID, hex
	// ReplAddr is this node's replication listener, which followers now
	// follow (flume repoint ReplAddr). Empty: the node has none.
	ReplAddr string       `json:"repl_addr,omitempty"`
	Peers    []PeerReport `json:"peers"` // what each peer reported
	// Warning says what the promotion could not do: no replication
	// listener, replication failed to start.
	Warning string `json:"warning,omitempty"`
}

// FollowRequest is the body of POST /follow.
type FollowRequest struct {
	// Primary is the new primary's replication address, HOST:PORT.
	Primary string `json:"primary"`
	// PrimaryHTTP is the new primary's HTTP API URL, when known: this node
	// names it in its 421 answers (primary_http) so that clients can retry
	// there. The replication handshake does not carry it.
	PrimaryHTTP string `json:"primary_http,omitempty"`
}

// FollowResult is the answer to a successful POST /follow.
type FollowResult struct {
	Primary     string     `json:"primary"`
	PrimaryHTTP string     `json:"primary_http,omitempty"`
	Demoted     bool       `json:"demoted"` // the node was a primary
	State       repl.State `json:"state"`   // catching-up or streaming
	Since       int64      `json:"since"`
	// PrimarySince is the new primary's since at the handshake.
	PrimarySince int64 `json:"primary_since"`
}

// Role outcomes counted in flume_role_changes_total{op,outcome}.
const (
	outcomeOK          = "ok"
	outcomeBadRequest  = "bad_request"
	outcomeIsPrimary   = "is_primary"
	outcomeNoEpochs    = "no_epochs"
	outcomePeerAhead   = "peer_ahead"
	outcomeUnreachable = "unreachable"
	outcomeRefused     = "refused"
	outcomeNotReady    = "not_ready"
	outcomeClosed      = "closed"
	outcomeError       = "error"
)

func roleOutcome(err error) string {
	var fe *FollowError
	switch {
	case err == nil:
		return outcomeOK
	case errors.Is(err, ErrBadRequest):
		return outcomeBadRequest
	case errors.Is(err, ErrIsPrimary):
		return outcomeIsPrimary
	case errors.Is(err, flume.ErrNoEpochs):
		return outcomeNoEpochs
	case errors.Is(err, ErrPeerAhead):
		return outcomePeerAhead
	case errors.Is(err, ErrUnreachable):
		return outcomeUnreachable
	case errors.Is(err, ErrNotReady):
		return outcomeNotReady
	case errors.As(err, &fe) && !errors.Is(err, ErrReplaced):
		return outcomeRefused
	case errors.Is(err, ErrServerClosed), errors.Is(err, flume.ErrClosed), errors.Is(err, ErrReplaced):
		return outcomeClosed
	}
	return outcomeError
}

// Promote makes this follower the primary of a new epoch: unless req.Force,
// it first asks each of req.Peers for its /status and refuses with a
// *PeerAheadError if a reachable peer reports a longer log or a higher
// epoch (an unreachable peer is reported, and does not block). Then it
// stops following and begins the new epoch (repl.Follower.Promote: the
// epoch record is durable first), starts a repl.Primary with the node's
// options, and serves replication on the node's replication listener.
//
// It fails with ErrIsPrimary on a primary and with an error wrapping
// flume.ErrNoEpochs when the log keeps no epoch history; then nothing
// changes.
func (s *Server) Promote(ctx context.Context, req PromoteRequest) (res PromoteResult, err error) {
	defer func() { s.metrics.roleChange("promote", roleOutcome(err)) }()
	urls, err := normalizePeers(req.Peers)
	if err != nil {
		return res, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(s.drainCtx, cancel)()

	s.changeMu.Lock()
	defer s.changeMu.Unlock()
	s.mu.Lock()
	closed, f := s.mu.closed, s.mu.follower
	s.mu.Unlock()
	if closed {
		return res, ErrServerClosed
	}
	if follower, _ := s.db.Role(); !follower {
		return res, fmt.Errorf("%w (epoch %d): promote a follower", ErrIsPrimary, s.db.Log().Epoch())
	}
	if _, ok := s.db.Log().(flume.EpochLog); !ok {
		return res, fmt.Errorf("server: promote: %w (%T): it could not tell the new epoch's history from the old one", flume.ErrNoEpochs, s.db.Log())
	}

	var self Status
	res.Peers, self = s.checkPeers(ctx, urls)
	if ctx.Err() != nil {
		return res, fmt.Errorf("server: promote: %w", ctx.Err())
	}
	if !req.Force {
		for _, p := range res.Peers {
			if reason := p.aheadOf(self.LogSince, self.highestEpoch()); reason != "" {
				return res, &PeerAheadError{Peer: p, Peers: res.Peers, Reason: reason}
			}
		}
	}

	var r flume.EpochRecord
	if f != nil {
		r, err = f.Promote()
	} else {
		// A follower without a running Follower (its start failed): the
		// DB holds no upstream claim, so no replicated append can race.
		r, err = s.db.Promote(s.cfg.NodeID)
	}
	if err != nil {
		err = fmt.Errorf("server: promote: %w", err)
		if f != nil {
			s.retire(nil, f)
			if follower, _ := s.db.Role(); follower {
				// Still a follower: follow the same primary again.
				nf, ferr := repl.NewFollower(s.db, f.Status().Primary, &s.ropts)
				s.setRole(nil, nf, s.upstreamHTTP(), false)
				if ferr != nil {
					err = errors.Join(err, fmt.Errorf("server: follow %s again: %w", f.Status().Primary, ferr))
				}
			}
		}
		return res, err
	}
	if f != nil {
		s.retire(nil, f)
	}
	res.Epoch, res.Start, res.Promotion = r.Epoch, r.Start, r.Promotion.String()
	res.ReplAddr = s.replAddr()
	p, perr := repl.NewPrimary(s.db, &s.ropts)
	s.setRole(p, nil, "", false)
	switch {
	case perr != nil:
		res.Warning = fmt.Sprintf("promoted, but replication did not start: %v (followers cannot connect; sync appends fail)", perr)
		s.logger.Error("promoted, but replication did not start", "epoch", r.Epoch, "err", perr)
	case res.ReplAddr == "":
		res.Warning = "this node has no replication listener (serve --repl): followers cannot connect until it restarts with one"
	}
	s.logger.Info("promoted to primary", "epoch", r.Epoch, "start", r.Start, "promotion", res.Promotion,
		"forced", req.Force, "peers", len(res.Peers))
	return res, nil
}

// Follow makes the node follow the primary at req.Primary. It first dials
// the address (unreachable: ErrUnreachable, nothing changes). A follower
// then stops its current Follower; a primary demotes itself first: its DB
// turns read-only at once and its Primary closes, so that sync appends
// still waiting for acknowledgements fail (the HTTP API answers them 409
// "deposed"). A new repl.Follower then claims the DB and connects in the
// background; Follow waits up to Config.ReadyTimeout for its first
// handshake. A refused or missing handshake returns a *FollowError: the
// node still follows the new address and keeps retrying.
func (s *Server) Follow(ctx context.Context, req FollowRequest) (res FollowResult, err error) {
	defer func() { s.metrics.roleChange("follow", roleOutcome(err)) }()
	addr := strings.TrimSpace(req.Primary)
	if err := s.checkFollowAddr(addr); err != nil {
		return res, err
	}
	httpURL := ""
	if req.PrimaryHTTP != "" {
		if httpURL, err = normalizeURL(req.PrimaryHTTP); err != nil {
			return res, fmt.Errorf("%w: primary_http: %v", ErrBadRequest, err)
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(s.drainCtx, cancel)()

	// Reachable at all? A primary is not deposed for a typo.
	if err := s.probe(ctx, addr); err != nil {
		if ctx.Err() != nil {
			return res, fmt.Errorf("server: follow %s: %w", addr, ctx.Err())
		}
		return res, fmt.Errorf("%w: %s: %v (nothing changed)", ErrUnreachable, addr, err)
	}

	f, demoted, err := s.switchUpstream(addr, httpURL)
	if err != nil {
		return res, err
	}
	res.Primary, res.PrimaryHTTP, res.Demoted = addr, httpURL, demoted

	rctx, rcancel := context.WithTimeout(ctx, s.cfg.ReadyTimeout)
	err = f.Ready(rctx)
	timedOut := rctx.Err() != nil && ctx.Err() == nil
	rcancel()
	st := f.Status()
	res.State, res.Since, res.PrimarySince = st.State, st.Since, st.PrimarySince
	switch {
	case err == nil:
		s.logger.Info("following a new primary", "primary", addr, "state", st.State, "demoted", demoted)
		return res, nil
	case s.drainCtx.Err() != nil:
		return res, ErrServerClosed
	case errors.Is(err, repl.ErrClosed):
		err = ErrReplaced
	case timedOut:
		last := st.LastError
		if last == "" {
			last = "no answer"
		}
		err = fmt.Errorf("%w within %v (last error: %s); is %s a flume primary's replication address (--repl)? A follower closes replication connections until it is promoted",
			ErrNotReady, s.cfg.ReadyTimeout, last, addr)
	case ctx.Err() != nil:
		err = fmt.Errorf("%w: %v", ErrNotReady, ctx.Err())
	}
	s.logger.Warn("following a new primary: no handshake yet; retrying in the background", "primary", addr, "err", err)
	return res, &FollowError{Primary: addr, Demoted: demoted, State: st.State, Err: err}
}

// probe dials addr, and with replication TLS completes a TLS handshake
// (so that the primary does not count a failed authentication), then
// hangs up, within Config.ReadyTimeout.
func (s *Server) probe(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ReadyTimeout)
	defer cancel()
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if s.cfg.TLS == nil {
		return nil
	}
	cfg := s.cfg.TLS.Clone()
	if cfg.ServerName == "" && !cfg.InsecureSkipVerify {
		cfg.ServerName, _, _ = net.SplitHostPort(addr)
	}
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("TLS handshake: %w", err)
	}
	tc.Close()
	return nil
}

// checkFollowAddr refuses an address that is not HOST:PORT or is this
// node's own replication listener.
func (s *Server) checkFollowAddr(addr string) error {
	if addr == "" {
		return fmt.Errorf(`%w: no primary address: want {"primary":"HOST:PORT"}`, ErrBadRequest)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return fmt.Errorf("%w: primary address %q: want HOST:PORT (the primary's --repl address)", ErrBadRequest, addr)
	}
	if own := s.replAddr(); own != "" {
		if oh, op, _ := net.SplitHostPort(own); op == port && (host == oh || isLocalHost(host) && isLocalHost(oh)) {
			return fmt.Errorf("%w: %s is this node's own replication address", ErrBadRequest, addr)
		}
	}
	return nil
}

func isLocalHost(h string) bool {
	if h == "localhost" || h == "" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && (ip.IsLoopback() || ip.IsUnspecified())
}

// switchUpstream makes the node a follower of addr: it ends the current
// role (demoting a primary) and starts a Follower, all under changeMu.
func (s *Server) switchUpstream(addr, httpURL string) (f *repl.Follower, demoted bool, err error) {
	s.changeMu.Lock()
	defer s.changeMu.Unlock()
	s.mu.Lock()
	closed, oldP, oldF := s.mu.closed, s.mu.primary, s.mu.follower
	s.mu.Unlock()
	if closed {
		return nil, false, ErrServerClosed
	}
	if follower, _ := s.db.Role(); !follower {
		// Demote: read-only first, so that no append is acknowledged by a
		// node that is no longer the primary; then count the demotion, so
		// that sync appends woken by the Primary's Close are answered as
		// deposed.
		demoted = true
		s.db.SetFollower(true, addr)
		s.setRole(nil, nil, httpURL, true)
		if oldP != nil {
			oldP.Close()
		}
		s.retire(oldP, nil)
		s.logger.Warn("demoted: this node is no longer the primary", "epoch", s.db.Log().Epoch(), "since", s.db.Since(), "now_following", addr)
	} else if oldF != nil {
		oldF.Close() // the DB stays a read-only follower
		s.retire(nil, oldF)
	}
	f, err = repl.NewFollower(s.db, addr, &s.ropts)
	if err != nil {
		s.setRole(nil, nil, httpURL, false)
		return nil, demoted, fmt.Errorf("server: follow %s: %w", addr, err)
	}
	s.setRole(nil, f, httpURL, false)
	return f, demoted, nil
}

// setRole installs the node's current Primary or Follower (or neither) and
// its upstream's HTTP URL; demotion counts a primary stepping down.
func (s *Server) setRole(p *repl.Primary, f *repl.Follower, httpURL string, demotion bool) {
	s.mu.Lock()
	s.mu.primary, s.mu.follower, s.mu.primaryHTTP = p, f, httpURL
	if demotion {
		s.mu.demotions++
	}
	s.mu.Unlock()
}

// retire adds the counters of a closed Primary or Follower to the node's,
// so that the flume_repl_* counters never go down across role changes. It
// takes mu; the caller holds changeMu, so each is retired once.
func (s *Server) retire(p *repl.Primary, f *repl.Follower) {
	var st repl.Stats
	switch {
	case p != nil:
		st = p.Stats()
	case f != nil:
		st = f.Stats()
	default:
		return
	}
	s.mu.Lock()
	s.mu.retired = addStats(s.mu.retired, st)
	s.mu.Unlock()
}

func addStats(a, b repl.Stats) repl.Stats {
	return repl.Stats{
		Handshakes: a.Handshakes + b.Handshakes, Refusals: a.Refusals + b.Refusals, AuthFailures: a.AuthFailures + b.AuthFailures,
		Reconnects: a.Reconnects + b.Reconnects, EntriesSent: a.EntriesSent + b.EntriesSent, BytesSent: a.BytesSent + b.BytesSent,
		EntriesReceived: a.EntriesReceived + b.EntriesReceived, BytesReceived: a.BytesReceived + b.BytesReceived,
	}
}

// demotions counts how often this node stepped down from primary; the
// HTTP API compares it before and after an append to tell a deposed
// primary's failed sync append.
func (s *Server) demotions() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.demotions
}

// upstreamHTTP is the HTTP API URL of the node's primary, "" when unknown:
// Config.PrimaryHTTP or FollowRequest.PrimaryHTTP if given, else what the
// primary advertised in the replication handshake.
func (s *Server) upstreamHTTP() string {
	s.mu.Lock()
	u, f := s.mu.primaryHTTP, s.mu.follower
	s.mu.Unlock()
	if u == "" && f != nil {
		u = f.Status().PrimaryHTTP
	}
	return u
}

// replAddr is the address of the node's (first) replication listener, ""
// when it has none.
func (s *Server) replAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.mu.replLns) == 0 {
		return ""
	}
	return s.mu.replLns[0].Addr().String()
}

// serveRepl accepts replication connections on ln for as long as the
// server runs and hands each to the current Primary. A follower closes them
// at once: a follower pointed at this node before its promotion sees the
// connection end and retries with backoff until the node is promoted. It
// returns ErrServerClosed after Shutdown or Close (which close ln), or the
// listener's error.
func (s *Server) serveRepl(ln net.Listener) error {
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.isClosed() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				t := time.NewTimer(delay)
				select {
				case <-t.C:
					continue
				case <-s.drainCtx.Done():
					t.Stop()
					// Keep accepting until teardown closes ln: a drain
					// still needs followers for sync appends.
					continue
				}
			}
			return fmt.Errorf("server: accept replication: %w", err)
		}
		delay = 0
		s.mu.Lock()
		p, closed := s.mu.primary, s.mu.closed
		if p != nil && !closed {
			s.connWG.Add(1)
		}
		s.mu.Unlock()
		if p == nil || closed {
			s.logger.Debug("replication connection refused: not the primary", "remote", c.RemoteAddr().String())
			c.Close()
			continue
		}
		go func() {
			defer s.connWG.Done()
			if err := p.ServeConn(c); err != nil && !errors.Is(err, repl.ErrServerClosed) {
				s.logger.Debug("replication connection ended", "remote", c.RemoteAddr().String(), "err", err)
			}
		}()
	}
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.closed
}
