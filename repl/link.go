package repl

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/flume-go/flume"
)

// Link is an in-process replication from one DB into another (the seed's
// two-DBs-in-one-program example), over net.Pipe with the same protocol,
// authentication, handshake and flow control as over TCP.
type Link struct {
	p    *Primary
	f    *Follower
	once sync.Once
}

// Replicate starts replicating primary into follower in this process and
// returns once the first handshake succeeded (the follower is catching up
// or live), or with its error: a *RefusedError when the logs diverged (both
// left unchanged), ErrHasUpstream when follower already has an upstream.
//
// The primary DB's existing Primary (from NewPrimary or another link) is
// reused, so that WaitAcked counts every follower; otherwise the Link makes
// one, closed with the last link that uses it. opts applies to both sides;
// TLS and Dial are ignored (the link is a pipe).
func Replicate(primary, follower *flume.DB, opts *Options) (*Link, error) {
	if primary == nil || follower == nil {
		return nil, errors.New("repl: Replicate: nil DB")
	}
	if primary == follower {
		return nil, errors.New("repl: Replicate: a DB cannot replicate into itself")
	}
	var o Options
	if opts != nil {
		o = *opts
	}
	o.TLS, o.Dial = nil, nil

	p, err := linkPrimary(primary, o, opts)
	if err != nil {
		return nil, err
	}

	l := &Link{p: p}
	o.Dial = func(ctx context.Context) (net.Conn, error) {
		c1, c2 := net.Pipe()
		if !p.goServe(c2) {
			c1.Close()
			c2.Close()
			return nil, ErrServerClosed
		}
		return c1, nil
	}
	f, err := NewFollower(follower, "in-process", &o)
	if err != nil {
		l.release()
		return nil, err
	}
	l.f = f
	ctx, cancel := context.WithTimeout(context.Background(), 2*f.opts.DeadAfter)
	err = f.Ready(ctx)
	cancel()
	if err != nil {
		f.close(true)
		l.release()
		return nil, err
	}
	return l, nil
}

// linkPrimary returns the primary DB's Primary with one more link counted:
// the one installed as its replicator (by NewPrimary or another link), or
// a new one owned by the links, closed with the last of them.
func linkPrimary(db *flume.DB, o Options, opts *Options) (*Primary, error) {
	for {
		switch r := db.Replicator().(type) {
		case *Primary:
			if r.addLink() {
				return r, nil
			}
			<-r.done // retired by its last link: wait until it is gone
			continue
		case nil:
		default:
			return nil, fmt.Errorf("repl: Replicate: %w (not a repl.Primary)", ErrHasPrimary)
		}
		popts := o
		popts.NodeID = ""
		if opts != nil && opts.NodeID != "" {
			popts.NodeID = opts.NodeID + "-primary"
		}
		p, err := newPrimary(db, &popts, true)
		if errors.Is(err, ErrHasPrimary) {
			continue // another Replicate installed one first
		}
		if err != nil {
			return nil, err
		}
		p.addLink()
		return p, nil
	}
}

// addLink counts one more Link using p; false if p is closed or retired.
func (p *Primary) addLink() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mu.closed || p.mu.retired {
		return false
	}
	p.mu.links++
	return true
}

// release gives up the link's share of its Primary, closing it when the
// links made it and this was the last.
func (l *Link) release() {
	p := l.p
	p.mu.Lock()
	p.mu.links--
	closeIt := p.owned && p.mu.links == 0
	if closeIt {
		p.mu.retired = true
	}
	p.mu.Unlock()
	if closeIt {
		p.Close()
	}
}

// Primary returns the sending side (shared with other links from the same
// DB).
func (l *Link) Primary() *Primary { return l.p }

// Follower returns the receiving side.
func (l *Link) Follower() *Follower { return l.f }

// Close stops the link: the follower is closed (its DB stays read-only) and
// the Primary too if this link made it and no other link uses it. Later
// calls return nil.
func (l *Link) Close() error {
	l.once.Do(func() {
		l.f.Close()
		l.release()
	})
	return nil
}
