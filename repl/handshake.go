package repl

import (
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
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
