package repl

// Liveness requirements of the replication issue: dead peers are dropped,
// idle ones are kept, and Close is prompt whatever the peer does.

import (
	"bytes"
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// Liveness: a peer that goes silent is dropped within DeadAfter, on both
// sides, and the follower reconnects.
func TestDeadPeerDetected(t *testing.T) {
	t.Run("silent follower", func(t *testing.T) {
		pdb := newMemDB(t)
		prim, addr := servePrimary(t, pdb, fastOpts())
		c, _ := net.Dial("tcp", addr)
		raw := newRawPeer(t, c)
		if _, _, err := raw.followerHandshake(nil, Hello{NodeID: "mute", Since: -1}); err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		eventually(t, "the primary to drop the silent follower", func() bool {
			fs := prim.Followers()
			return len(fs) == 1 && !fs[0].Connected
		})
		if d := time.Since(t0); d > 2*fastOpts().DeadAfter {
			t.Fatalf("dropped after %v, DeadAfter is %v", d, fastOpts().DeadAfter)
		}
		// The primary says why, in case only this direction died.
		for {
			typ, body, err := raw.read()
			if err != nil {
				t.Fatalf("connection ended without an Error message: %v", err)
			}
			if typ != MsgError {
				continue // heartbeats sent before the primary gave up
			}
			m, err := decodeError(body)
			if err != nil || m.Code != CodeDead {
				t.Fatalf("Error message %+v, %v; want code %s", m, err, CodeDead)
			}
			if perr := peerError(m); !strings.Contains(perr.Error(), "heard nothing") {
				t.Fatalf("peerError(%+v) = %v", m, perr)
			}
			break
		}
	})
	t.Run("silent primary", func(t *testing.T) {
		var conns atomic.Int32
		hold := make(chan struct{})
		addr := fakePrimary(t, func(c net.Conn) {
			conns.Add(1)
			raw := newRawPeer(t, c)
			raw.primaryHandshake(Hello{Since: -1})
			go func() { <-hold; c.Close() }() // say nothing more
		})
		defer close(hold)
		f, err := NewFollower(newMemDB(t), addr, fastOpts())
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		eventually(t, "the follower to notice and reconnect", func() bool { return conns.Load() >= 2 })
		if !strings.Contains(f.Status().LastError, "dead") {
			t.Fatalf("last error %q does not say the primary was dead", f.Status().LastError)
		}
	})
}

// Close is prompt even when a follower stopped reading and the primary's
// writes are blocked on it.
func TestCloseWithStalledFollower(t *testing.T) {
	// Over net.Pipe every write waits for a reader, and synctest.Wait
	// shows the sender blocked in its write before Close: this is the case
	// the test names, proved rather than slept towards.
	t.Run("pipe", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			pdb := newMemDB(t)
			appendN(t, pdb, 1, "x")
			opts := fastOpts()
			opts.DeadAfter = 30 * time.Second
			p, err := NewPrimary(pdb, opts)
			if err != nil {
				t.Fatal(err)
			}
			c, pc := net.Pipe()
			done := make(chan error, 1)
			go func() { done <- p.ServeConn(pc) }()
			raw := newRawPeer(t, c)
			if _, _, err := raw.followerHandshake(nil, Hello{NodeID: "stalled", Since: -1}); err != nil {
				t.Fatal(err)
			}
			appendN(t, pdb, 3, "unread")
			synctest.Wait() // everything that can run has: the primary is stuck writing
			if st := p.Stats(); st.EntriesSent == 0 || len(done) != 0 {
				t.Fatalf("the primary is not blocked sending: %+v, served %d", st, len(done))
			}
			t0 := time.Now()
			p.Close()
			if err := <-done; err != ErrServerClosed {
				t.Fatalf("ServeConn: %v", err)
			}
			// Fake time moves only while every goroutine waits on a timer:
			// Close must not wait for the 30s DeadAfter or the write
			// deadline to free the sender.
			if d := time.Since(t0); d > 2*time.Second {
				t.Fatalf("Close took %v with a stalled follower", d)
			}
		})
	})
	// Over TCP a blocked write cannot be observed; the test streams more
	// than the socket buffers hold to a peer that never reads, waits until
	// the primary is sending to it, and closes.
	t.Run("tcp", func(t *testing.T) {
		pdb := newMemDB(t)
		appendN(t, pdb, 1, "x")
		opts := fastOpts()
		opts.DeadAfter = 30 * time.Second
		p, err := NewPrimary(pdb, opts)
		if err != nil {
			t.Fatal(err)
		}
		ln := listen(t)
		done := make(chan error, 1)
		go func() { done <- p.Serve(ln) }()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		raw := newRawPeer(t, c)
		if _, _, err := raw.followerHandshake(nil, Hello{NodeID: "stalled", Since: -1}); err != nil {
			t.Fatal(err)
		}
		big := bytes.Repeat([]byte{'z'}, 64<<10)
		for i := 0; i < 200; i++ { // 12.5 MiB: more than the socket buffers hold
			if _, err := pdb.Append(context.Background(), big); err != nil {
				t.Fatal(err)
			}
		}
		eventually(t, "the primary to stream to the stalled follower", func() bool { return p.Stats().EntriesSent > 1 })
		t0 := time.Now()
		p.Close()
		if err := <-done; err != ErrServerClosed {
			t.Fatalf("Serve: %v", err)
		}
		if d := time.Since(t0); d > 2*time.Second {
			t.Fatalf("Close took %v with a stalled follower", d)
		}
	})
}

// Heartbeats keep an idle connection alive well past DeadAfter, in both
// directions: no reconnects, one handshake. Over the pipe the test runs in
// a synctest bubble, so the idle time is fake: exactly 4×DeadAfter of
// heartbeat ticks and deadlines, in no real time.
func TestIdleConnectionStaysUp(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			if tr == "pipe" {
				synctest.Test(t, func(t *testing.T) { idleConnectionStaysUp(t, tr) })
				return
			}
			idleConnectionStaysUp(t, tr) // real sockets: the idle time is real
		})
	}
}

func idleConnectionStaysUp(t *testing.T, tr string) {
	pdb, fdb := newMemDB(t), newMemDB(t)
	h := newHarness(t, tr, pdb, fastOpts())
	s := h.mustFollow(fdb)
	defer s.Close()
	time.Sleep(4 * fastOpts().DeadAfter)
	var f *Follower
	var p *Primary
	if l, ok := s.(*Link); ok {
		f, p = l.Follower(), l.Primary()
	} else {
		f, p = s.(*Follower), h.prim
	}
	if st := f.Stats(); st.Reconnects != 0 || st.Handshakes != 1 {
		t.Fatalf("idle follower reconnected: %+v (last error %q)", st, f.Status().LastError)
	}
	if st := p.Stats(); st.Handshakes != 1 {
		t.Fatalf("primary saw %d handshakes", st.Handshakes)
	}
	appendN(t, pdb, 3, "after-idle")
	waitSince(t, fdb, 2)
}
