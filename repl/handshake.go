package repl

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/fork"
)

// Decision is the outcome of a handshake, the same on both sides.
type Decision struct {
	// Send is true when the local node sends entries (it is the primary).
	Send bool
	// From is the first seq the primary streams: the follower's since+1.
	From int64
	// AdoptID is true when the follower is empty and must take the
	// primary's log ID before its first append.
	AdoptID bool
	// UpToDate is true when both logs end at the same entry: the stream
	// goes straight to live.
	UpToDate bool
}

// decide is the handshake's decision table (docs/protocol.md, "Handshake").
// It is a pure function of the two Hellos. On the primary, local.Anchor must
// hold the local chain hash at remote.Since whenever that seq exists locally
// (0 <= remote.Since <= local.Since); the follower cannot check a hash
// behind its primary's head and relies on the primary's check and on the
// chain check of every appended entry.
//
// It returns a *RefusedError (nothing may be changed on either side), an
// error wrapping ErrVersion, or a *ProtocolError for impossible positions.
func decide(local, remote Hello) (Decision, error) {
	if local.Version != remote.Version {
		return Decision{}, fmt.Errorf("%w: local version %d, remote version %d", ErrVersion, local.Version, remote.Version)
	}
	refuse := func(code Code, format string, args ...any) (Decision, error) {
		return Decision{}, &RefusedError{Reason: code, Local: local.Position(), Remote: remote.Position(), Message: fmt.Sprintf(format, args...)}
	}
	if local.Role == remote.Role {
		return refuse(CodeRole, "both sides are %s; one must be the primary and one the follower", local.Role)
	}
	if local.Role != RolePrimary && local.Role != RoleFollower {
		return refuse(CodeRole, "unknown local role %s", local.Role)
	}
	if remote.Role != RolePrimary && remote.Role != RoleFollower {
		return refuse(CodeRole, "unknown remote role %s", remote.Role)
	}
	p, f := local, remote
	if local.Role == RoleFollower {
		p, f = remote, local
	}
	if f.Since < -1 || p.Since < -1 {
		return Decision{}, &ProtocolError{Code: CodeBadPosition, Reason: fmt.Sprintf("since must be >= -1 (primary %d, follower %d)", p.Since, f.Since)}
	}
	d := Decision{Send: local.Role == RolePrimary}
	if f.Since == -1 {
		// An empty follower takes the primary's whole history.
		d.From, d.AdoptID, d.UpToDate = 0, f.LogID != p.LogID, p.Since == -1
		return d, nil
	}
	if f.LogID != p.LogID {
		return refuse(CodeLogID, "follower log %s and primary log %s are unrelated histories", f.LogID, p.LogID)
	}
	if f.Since > p.Since {
		return refuse(CodeAhead, "follower ends at seq %d but the primary only at %d; a primary never takes entries from a follower", f.Since, p.Since)
	}
	switch {
	case f.Since == p.Since:
		if f.Hash != p.Hash {
			return refuse(CodeDiverged, "at seq %d the follower has chain hash %s, the primary %s", f.Since, f.Hash.Short(), p.Hash.Short())
		}
	case local.Role == RolePrimary:
		a := local.Anchor
		if a == nil || a.Since != f.Since {
			return Decision{}, fmt.Errorf("repl: decide: primary has no anchor hash at the follower's seq %d", f.Since)
		}
		if a.Hash != f.Hash {
			return refuse(CodeDiverged, "at seq %d the follower has chain hash %s, the primary %s", f.Since, f.Hash.Short(), a.Hash.Short())
		}
	}
	d.From, d.UpToDate = f.Since+1, f.Since == p.Since
	return d, nil
}

// authMAC is the challenge-response proof: HMAC-SHA256 keyed by the shared
// secret over a domain label, the prover's role and both nonces. The role
// makes a primary's proof useless as a follower's (no reflection); fresh
// nonces from both sides make every proof single-use.
func authMAC(secret []byte, role Role, followerNonce, primaryNonce [nonceSize]byte) [macSize]byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("flume/repl/v1 auth\x00"))
	m.Write([]byte{byte(role)})
	m.Write(followerNonce[:])
	m.Write(primaryNonce[:])
	var out [macSize]byte
	m.Sum(out[:0])
	return out
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
	body, fromPeer, err := w.expect(nil, MsgAuthInit)
	switch {
	case fromPeer:
		return Hello{}, Decision{}, p.authFail(w, addr, protoErr("expected %s, got %s", MsgAuthInit, MsgError))
	case errors.Is(err, errUnexpected):
		return Hello{}, Decision{}, p.authFail(w, addr, err)
	case err != nil:
		return Hello{}, Decision{}, err
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
	body, fromPeer, err = w.expect(body, MsgAuthProof)
	switch {
	case fromPeer:
		if errors.Is(err, ErrAuth) {
			p.log.Warn("repl: authentication failed: the follower rejected the primary's proof", "remote", addr, "err", err)
			p.stats.authFailures.Add(1)
		}
		return Hello{}, Decision{}, err
	case errors.Is(err, errUnexpected):
		return Hello{}, Decision{}, p.authFail(w, addr, err)
	case err != nil:
		return Hello{}, Decision{}, err
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
	body, _, err = w.expect(body, MsgHello)
	if errors.Is(err, errUnexpected) {
		w.sendError(errorMsg{Code: CodeProtocol, Message: err.Error()})
	}
	if err != nil {
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
	d, cut, err := p.decideV3(local, remote)
	w.out = appendHello(w.out, local)
	if err != nil {
		p.stats.refusals.Add(1)
		p.log.Warn("repl: follower refused", "follower", remote.NodeID, "remote", addr, "err", err)
		w.out = appendError(w.out, errorMsg{Code: codeOf(err), Sender: local.Position(), Receiver: remote.Position(), Message: err.Error()})
		w.flush()
		return Hello{}, Decision{}, err
	}
	if cut != nil {
		p.log.Warn("repl: follower holds entries this primary lacks; telling it to cut them", "follower", remote.NodeID, "remote", addr, "after", cut.To, "its_since", remote.Since)
		w.out = appendTruncate(w.out, *cut)
	}
	w.out = appendAccept(w.out, accept{From: d.From})
	if err := w.flush(); err != nil {
		return Hello{}, Decision{}, err
	}
	return remote, d, nil
}

// decideV3 is the primary's whole decision: the stale-epoch rows (a
// follower that honours a newer epoch deposes this primary), then decide's
// rows, and, where decide refuses a follower that holds entries this
// primary lacks, the verified cut (cutPoint) that lets it rejoin.
func (p *Primary) decideV3(local, remote Hello) (Decision, *truncate, error) {
	pv, fv := viewOf(local), viewOf(remote)
	if err := staleEpoch(pv, fv); err != nil {
		p.depose(max(fv.FencedEpoch, fv.epoch()), "")
		return Decision{}, nil, err
	}
	d, err := decide(local, remote)
	var re *RefusedError
	if err == nil || !errors.As(err, &re) || (re.Reason != CodeAhead && re.Reason != CodeDiverged) {
		return d, nil, err
	}
	cd, cerr := cutPoint(pv, fv)
	if cerr != nil {
		return Decision{}, nil, cerr
	}
	if !cd.Cut {
		return Decision{}, nil, err
	}
	e, rerr := p.db.Log().Entry(cd.To)
	if rerr != nil {
		return Decision{}, nil, fmt.Errorf("repl: reading entry %d for a rejoin: %w", cd.To, rerr)
	}
	return Decision{Send: true, From: cd.To + 1}, &truncate{To: cd.To, Hash: e.Hash, PrimaryEpoch: pv.epoch()}, nil
}

// viewOf is what a Hello states about its sender's history, for cutPoint.
func viewOf(h Hello) historyView {
	return historyView{Position: h.Position(), Epochs: h.Epochs, FencedEpoch: h.FencedEpoch, CommittedHint: h.CommittedHint, Unclean: h.Unclean}
}

// staleEpoch refuses a primary older than an epoch the follower has seen or
// promised to honour (rows 5a and 5b), or one that knows itself deposed.
// Both sides check it: the primary to depose itself, the follower so that
// it never takes entries from a deposed primary whatever that one says.
func staleEpoch(p, f historyView) error {
	pe := p.epoch()
	var why string
	switch {
	case p.FencedEpoch > pe:
		why = fmt.Sprintf("the primary is in epoch %d but has itself promised to honour epoch %d: it has been deposed", pe, p.FencedEpoch)
	case f.FencedEpoch > pe:
		why = fmt.Sprintf("the primary's epoch %d is older than the follower's fenced epoch %d: the primary has been deposed", pe, f.FencedEpoch)
	case f.epoch() > pe:
		why = fmt.Sprintf("the primary's epoch %d is older than the follower's newest epoch %d: the primary has been deposed", pe, f.epoch())
	default:
		return nil
	}
	return &RefusedError{Reason: CodeStaleEpoch, Local: p.Position, Remote: f.Position, Message: why}
}

// stateHello is a node's Hello as its log states it: position, epoch
// history and fencing state (for a log that keeps them).
func stateHello(l flume.Log, role Role, nodeID, http string) Hello {
	since, hash := l.Head()
	h := Hello{Version: Version, Role: role, NodeID: nodeID, LogID: l.ID(), Epoch: l.Epoch(), Since: since, Hash: hash, CommittedHint: -1, HTTP: http}
	if el, ok := l.(flume.EpochLog); ok {
		h.FencedEpoch, h.CommittedHint, h.Epochs = el.FencedEpoch(), el.CommittedHint(), el.Epochs()
		h.Unclean = h.CommittedHint > since // it lost entries the group had committed
	}
	return h
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
	h := stateHello(l, RolePrimary, p.opts.NodeID, p.opts.AdvertiseHTTP)
	since, hash := h.Since, h.Hash
	if c := p.committed(); c > h.CommittedHint {
		h.CommittedHint = c
	}
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
	body, err := f.expect(w, nil, MsgAuthChallenge)
	if err != nil {
		return Hello{}, Decision{}, err
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
	local := stateHello(l, RoleFollower, f.opts.NodeID, "")
	w.out = appendAuthProof(w.out, proof)
	w.out = appendHello(w.out, local)
	if err := w.flush(); err != nil {
		return Hello{}, Decision{}, err
	}
	w.mr.max = maxMessage
	body, err = f.expect(w, body, MsgHello)
	if err != nil {
		return Hello{}, Decision{}, err
	}
	remote, err := decodeHello(body)
	if err != nil {
		return Hello{}, Decision{}, err
	}
	remote.Version = Version
	refuse := func(err error) (Hello, Decision, error) {
		f.stats.refusals.Add(1)
		w.sendError(errorMsg{Code: codeOf(err), Sender: local.Position(), Receiver: remote.Position(), Message: err.Error()})
		return Hello{}, Decision{}, err
	}
	// Never take entries from a deposed primary, whatever it says.
	if err := staleEpoch(viewOf(remote), viewOf(local)); err != nil {
		return refuse(err)
	}
	t, body, err := w.read(body)
	if err != nil {
		return Hello{}, Decision{}, err
	}
	if t == MsgTruncate {
		m, err := decodeTruncate(body)
		if err != nil {
			return Hello{}, Decision{}, err
		}
		if err := f.rejoin(m, local, remote); err != nil {
			var re *RefusedError
			if errors.As(err, &re) {
				return refuse(err)
			}
			return Hello{}, Decision{}, err
		}
		local = stateHello(l, RoleFollower, f.opts.NodeID, "")
		t, body, err = w.read(body)
		if err != nil {
			return Hello{}, Decision{}, err
		}
	}
	switch t {
	case MsgAccept:
	case MsgError:
		m, derr := decodeError(body)
		if derr != nil {
			return Hello{}, Decision{}, derr
		}
		return Hello{}, Decision{}, f.countPeerError(peerError(m))
	default:
		return Hello{}, Decision{}, &ProtocolError{Code: CodeProtocol, Reason: fmt.Sprintf("expected %s, got %s", MsgAccept, t), Err: errUnexpected}
	}
	acc, err := decodeAccept(body)
	if err != nil {
		return Hello{}, Decision{}, err
	}
	d, err := decide(local, remote)
	if err != nil {
		return refuse(err)
	}
	// Records of promotions that wrote nothing and that the primary never
	// saw go before the primary's own records are adopted.
	if cd, cerr := cutPoint(viewOf(remote), viewOf(local)); cerr == nil && cd.KeepEpochs < len(local.Epochs) {
		if err := f.db.DropEmptyEpochs(cd.KeepEpochs); err != nil {
			return Hello{}, Decision{}, fmt.Errorf("repl: dropping epochs the primary never saw: %w", err)
		}
	}
	if acc.From != d.From {
		return Hello{}, Decision{}, &ProtocolError{Code: CodeBadPosition, Reason: fmt.Sprintf("primary would stream from seq %d but this log ends at %d (expected %d)", acc.From, local.Since, d.From)}
	}
	// Promise the primary's epoch durably before acknowledging anything in
	// it: from now on no older primary is followed.
	if el, ok := l.(flume.EpochLog); ok {
		if e := viewOf(remote).epoch(); e > el.FencedEpoch() {
			if err := el.Fence(e); err != nil {
				return Hello{}, Decision{}, fmt.Errorf("repl: fencing at epoch %d: %w", e, err)
			}
		}
	}
	return remote, d, nil
}

// rejoin carries out a primary's Truncate: this node holds entries the
// primary lacks. It recomputes the cut from both Hellos (the primary must
// have asked for exactly that one), then, through fork.Truncate, checks its
// own chain hash at the cut, copies the entries after it to ForkDir (durable
// before anything is cut) and cuts them through the DB (views rebuilt,
// readers told). A hash mismatch or a refused cut is a *RefusedError and
// nothing is cut.
func (f *Follower) rejoin(m truncate, local, remote Hello) error {
	cd, err := cutPoint(viewOf(remote), viewOf(local))
	if err != nil {
		return err
	}
	if !cd.Cut || cd.To != m.To {
		return &ProtocolError{Code: CodeBadPosition, Reason: fmt.Sprintf("the primary asks this node to cut its log after seq %d, but the two histories part after seq %d (cut %v)", m.To, cd.To, cd.Cut)}
	}
	if f.opts.ForkDir == "" {
		return &RefusedError{Reason: CodeDiverged, Local: local.Position(), Remote: remote.Position(),
			Message: fmt.Sprintf("rejoining needs seqs %d-%d cut, but no fork directory is configured to keep them (Options.ForkDir): nothing cut", m.To+1, local.Since)}
	}
	pos := fork.Position{LogID: remote.LogID, Epoch: viewOf(remote).epoch(), Since: remote.Since, Hash: remote.Hash}
	reason := fmt.Sprintf("rejoin: the primary %s (epoch %d) lacks seqs %d-%d", remote.NodeID, pos.Epoch, m.To+1, local.Since)
	res, err := fork.Truncate(f.opts.FS, f.opts.ForkDir, truncDB{f.db.Log(), f.db}, m.To, m.Hash, pos, reason)
	if err != nil {
		if errors.Is(err, flume.ErrDiverged) {
			return &RefusedError{Reason: CodeDiverged, Local: local.Position(), Remote: remote.Position(),
				Message: fmt.Sprintf("the primary's chain hash at seq %d is not this log's: nothing cut: %v", m.To, err)}
		}
		return fmt.Errorf("repl: rejoin: cutting after seq %d: %w", m.To, err)
	}
	f.stats.cuts.Add(1)
	f.log.Warn("repl: rejoined by a verified cut; the cut entries are kept", "after", m.To, "entries", res.Report.Entries, "fork", res.Info.Path)
	return nil
}

// truncDB is a DB's log whose TruncateAfter goes through the DB, so that a
// cut is published to readers and views (fork.Truncate takes a
// flume.TruncatableLog).
type truncDB struct {
	flume.Log
	db *flume.DB
}

func (t truncDB) TruncateAfter(seq int64, want flume.Hash, w io.Writer) (flume.TruncateReport, error) {
	return t.db.TruncateAfter(seq, want, w)
}

// expect reads the primary's next handshake message (w.expect) and counts
// a peer's refusal or authentication failure in the follower's stats.
func (f *Follower) expect(w *wire, buf []byte, want MsgType) ([]byte, error) {
	body, fromPeer, err := w.expect(buf, want)
	if !fromPeer {
		return body, err
	}
	return body, f.countPeerError(err)
}

// countPeerError counts a refusal or authentication failure the primary
// reported, and returns it.
func (f *Follower) countPeerError(err error) error {
	switch {
	case errors.Is(err, ErrAuth):
		f.stats.authFailures.Add(1)
		f.log.Warn("repl: primary rejected authentication", "err", err)
	case permanent(err):
		f.stats.refusals.Add(1)
	}
	return err
}

func randomNonce() [nonceSize]byte {
	var n [nonceSize]byte
	rand.Read(n[:])
	return n
}
