package repl

// Invariant 8 of architecture.md §6 for bad input on the wire: malformed
// messages to either side, and a protocol version mismatch.

import (
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/flume-go/flume"
)

// Invariant 8, bad input: garbage on the replication port closes that
// connection with an error; the primary keeps serving others and its log
// does not change.
func TestMalformedInputToPrimary(t *testing.T) {
	pdb := newMemDB(t)
	appendN(t, pdb, 10, "keep")
	opts := fastOpts()
	prim, addr := servePrimary(t, pdb, opts)
	_, before := pdb.Log().Head()
	good := newMemDB(t)
	gf, err := NewFollower(good, addr, fastOpts())
	if err != nil {
		t.Fatal(err)
	}
	defer gf.Close()
	if err := gf.Ready(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	pre := appendPreamble(nil, Version)
	auth := appendAuthInit(pre, authInit{Nonce: randomNonce()})
	inputs := map[string][]byte{
		"http request":        []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		"bad preamble":        []byte("FLRX\x01\x00\x00\x00"),
		"huge length":         append(append([]byte(nil), pre...), 0xff, 0xff, 0xff, 0x7f, 1),
		"wrong first message": appendHello(append([]byte(nil), pre...), Hello{Role: RoleFollower}),
		"truncated auth":      auth[:len(auth)-3],
		"empty message":       append(append([]byte(nil), pre...), 0, 0, 0, 0),
	}
	rng := mrand.New(mrand.NewPCG(1, 2))
	for i := 0; i < 20; i++ {
		b := make([]byte, rng.IntN(200))
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		if i%2 == 0 {
			b = append(append([]byte(nil), pre...), b...)
		}
		inputs[fmt.Sprintf("random %d", i)] = b
	}
	for name, in := range inputs {
		t.Run(name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.Write(in)
			if tc, ok := c.(*net.TCPConn); ok && name != "truncated auth" {
				tc.CloseWrite()
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = io.ReadAll(c)
			if err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
				t.Fatalf("the primary did not close the connection: %v", err)
			}
		})
	}
	if s, h := pdb.Log().Head(); s != 9 || h != before {
		t.Fatal("the primary's log changed")
	}
	appendN(t, pdb, 5, "after")
	waitSince(t, good, 14)
	sameLog(t, pdb, good)
	if prim.Stats().Handshakes != 1 {
		t.Fatalf("handshakes %d, want only the good follower's", prim.Stats().Handshakes)
	}
}

// A truncated or malformed message from the primary mid-stream closes the
// follower's connection with an error; what it stored before stays, and
// nothing of the bad message is stored.
func TestMalformedInputToFollower(t *testing.T) {
	fdb := newMemDB(t)
	id := fdb.Log().ID()
	good := chainEntries(id, flume.GenesisHash(id), 0, "a", "b")
	next := chainEntries(id, good[1].Hash, 2, "c", "d")
	bad := map[string][]byte{
		"cut mid-frame":      batchMsg(3, next)[:30],
		"count lies":         func() []byte { m := batchMsg(3, next); m[5+16] = 3; return m }(),
		"unexpected message": appendAuthProof(nil, authProof{}),
		"broken chain":       batchMsg(3, chainEntries(id, flume.Hash{1}, 2, "c", "d")),
		"unknown type":       {1, 0, 0, 0, 99},
	}
	for name, msg := range bad {
		t.Run(name, func(t *testing.T) {
			fdb := newMemDB(t)
			fdb.AdoptID(id)
			fdb.SetFollower(true, "")
			ended := make(chan struct{}, 10)
			addr := fakePrimary(t, func(c net.Conn) {
				defer func() { ended <- struct{}{} }()
				raw := newRawPeer(t, c)
				since, _ := fdb.Log().Head()
				if _, err := raw.primaryHandshake(Hello{LogID: id, Since: 3}); err != nil {
					return
				}
				if since == -1 {
					raw.send(batchMsg(3, good))
				}
				raw.send(msg)
				if tc, ok := c.(*net.TCPConn); ok {
					tc.CloseWrite()
				}
				io.Copy(io.Discard, c)
				c.Close()
			})
			f, err := NewFollower(fdb, addr, fastOpts())
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			<-ended
			eventually(t, "an error to be reported", func() bool { return f.Status().LastError != "" })
			<-ended // a second connection resumed from the log's end
			if s, h := fdb.Log().Head(); s != 1 || h != good[1].Hash {
				t.Fatalf("follower at %d, want 1 (the good batch only)", s)
			}
			t.Logf("follower error: %s", f.Status().LastError)
		})
	}
}

// Version mismatch: both sides get a clear ErrVersion.
func TestVersionMismatch(t *testing.T) {
	pdb := newMemDB(t)
	_, addr := servePrimary(t, pdb, fastOpts())
	c, _ := net.Dial("tcp", addr)
	raw := newRawPeer(t, c)
	raw.send(appendAuthInit(appendPreamble(nil, Version+1), authInit{}))
	v, err := raw.w.mr.readPreamble()
	if err != nil || v != Version {
		t.Fatalf("primary preamble: %d %v", v, err)
	}
	_, body, err := raw.read()
	if err != nil {
		t.Fatal(err)
	}
	m, _ := decodeError(body)
	if err := peerError(m); !errors.Is(err, ErrVersion) || !strings.Contains(err.Error(), fmt.Sprint(Version+1)) {
		t.Fatalf("got %v, want ErrVersion naming both versions", err)
	}

	addr2 := fakePrimary(t, func(c net.Conn) {
		raw := newRawPeer(t, c)
		raw.w.mr.readPreamble()
		raw.read()
		raw.send(appendPreamble(nil, Version+1))
		io.Copy(io.Discard, c)
		c.Close()
	})
	f, err := NewFollower(newMemDB(t), addr2, fastOpts())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Ready(ctxT(t)); !errors.Is(err, ErrVersion) {
		t.Fatalf("follower: %v, want ErrVersion", err)
	}
}
