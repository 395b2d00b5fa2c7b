package repl

// Invariants of architecture.md §6 (1, 2, 3, 5, 6, 7, 8) and the security,
// liveness and observability requirements of the replication issue.

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/flume-go/flume/internal/testpki"
	"github.com/flume-go/flume/internal/testutil"
	"github.com/flume-go/flume/memlog"

	"github.com/flume-go/flume"
)

// Invariants 1, 2, 3: three followers, one restarted repeatedly while the
// primary appends; every follower is a prefix of the primary at every check
// and all are equal at the end (since, chain hash, every entry).
func TestInvariantThreeFollowersOneRestarted(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			seed := mrand.Uint64()
			t.Logf("seed %d", seed)
			rng := mrand.New(mrand.NewPCG(seed, 1))
			pdb := newMemDB(t)
			h := newHarness(t, tr, pdb, fastOpts())
			fdbs := []*flume.DB{newMemDB(t), newMemDB(t), newMemDB(t)}
			var stops []stopper
			for _, f := range fdbs[1:] {
				stops = append(stops, h.mustFollow(f))
			}
			const total = 30000
			done := make(chan struct{})
			go func() {
				defer close(done)
				wrng := mrand.New(mrand.NewPCG(seed, 2))
				for n := 0; n < total; {
					k := min(1+wrng.IntN(50), total-n)
					vals := make([][]byte, k)
					for i := range vals {
						vals[i] = []byte(fmt.Sprintf("e%d-%d", n+i, wrng.IntN(1000)))
					}
					if _, _, err := pdb.AppendBatch(context.Background(), vals); err != nil {
						t.Error(err)
						return
					}
					n += k
					if wrng.IntN(20) == 0 {
						time.Sleep(200 * time.Microsecond)
					}
				}
			}()
			restarts := 0
		loop:
			for {
				s := h.mustFollow(fdbs[0])
				time.Sleep(time.Duration(rng.IntN(5000)) * time.Microsecond)
				for _, f := range fdbs {
					isPrefix(t, pdb, f)
				}
				s.Close()
				restarts++
				select {
				case <-done:
					if restarts >= 10 {
						break loop
					}
				default:
				}
			}
			stops = append(stops, h.mustFollow(fdbs[0]))
			for _, f := range fdbs {
				waitSince(t, f, total-1)
			}
			for _, s := range stops {
				s.Close()
			}
			for _, f := range fdbs {
				sameLog(t, pdb, f)
			}
			t.Logf("%d restarts of follower 0 while appending %d entries", restarts, total)
		})
	}
}

// slowConn delays every read, making a follower that drains its connection
// at a few MB/s.
type slowConn struct {
	net.Conn
	delay time.Duration
	max   int
}

func (c *slowConn) Read(b []byte) (int, error) {
	time.Sleep(c.delay)
	if len(b) > c.max {
		b = b[:c.max]
	}
	return c.Conn.Read(b)
}

// Invariant 7: a slow follower does not grow the primary's memory. The
// primary reads from its log and keeps at most MaxInFlight bytes in flight;
// the heap stays flat while a 48 MiB log trickles out.
func TestInvariantSlowFollowerBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("streams 48 MiB")
	}
	pdb := newMemDB(t)
	const n, size = 48 << 10, 1 << 10
	val := bytes.Repeat([]byte{'x'}, size)
	batch := make([][]byte, 1024)
	for i := range batch {
		batch[i] = val
	}
	for i := 0; i < n; i += len(batch) {
		if _, _, err := pdb.AppendBatch(context.Background(), batch); err != nil {
			t.Fatal(err)
		}
	}
	opts := fastOpts()
	opts.MaxInFlight = 1 << 20
	prim, addr := servePrimary(t, pdb, opts)
	fdb, err := flume.Open(newSinkLog(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer fdb.Close()
	fopts := fastOpts()
	fopts.DeadAfter = 5 * time.Second
	fopts.Dial = func(ctx context.Context) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		return &slowConn{Conn: c, delay: 200 * time.Microsecond, max: 8 << 10}, nil
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	f, err := NewFollower(fdb, addr, fopts)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var peakHeap uint64
	var peakInFlight int64
	for i := 0; fdb.Since() < n-1; i++ {
		time.Sleep(20 * time.Millisecond)
		if i%10 != 0 {
			continue
		}
		runtime.GC() // measure live memory, not garbage awaiting collection
		runtime.ReadMemStats(&ms)
		peakHeap = max(peakHeap, ms.HeapAlloc)
		prim.mu.Lock()
		for _, fs := range prim.mu.followers {
			if s := fs.session; s != nil {
				s.mu.Lock()
				peakInFlight = max(peakInFlight, s.mu.sentBytes-s.mu.recvBytes)
				s.mu.Unlock()
			}
		}
		prim.mu.Unlock()
	}
	growth := int64(peakHeap) - int64(base)
	t.Logf("streamed %d MiB to a slow follower: peak live heap growth %.1f MiB, peak in flight %.2f MiB", n*size>>20, float64(growth)/(1<<20), float64(peakInFlight)/(1<<20))
	if limit := int64(opts.MaxInFlight + opts.MaxBatchBytes + 4*flume.FrameSize(size)); peakInFlight > limit {
		t.Fatalf("in flight %d bytes exceeds the window bound %d", peakInFlight, limit)
	}
	if growth > 16<<20 {
		t.Fatalf("heap grew by %d MiB while streaming %d MiB", growth>>20, n*size>>20)
	}
}

// Invariant 5 (sync replication, k=1): with the only follower stopped an
// append fails after the deadline with a typed error that says how many
// acked, and stays in the log; once the follower returns, appends succeed.
func TestSyncK1FollowerStopped(t *testing.T) {
	fl := newMemDB(t)
	pdb := openSync(t, 1, 200*time.Millisecond)
	_, addr := servePrimary(t, pdb, fastOpts())
	start := func() *Follower {
		f, err := NewFollower(fl, addr, fastOpts())
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Ready(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		return f
	}
	f := start()
	ctx := context.Background()
	if seq, err := pdb.Append(ctx, []byte("one")); err != nil || seq != 0 {
		t.Fatalf("sync append with a follower: %d, %v", seq, err)
	}
	if fl.Since() < 0 {
		t.Fatal("sync append returned before the follower had it")
	}
	f.Close()
	t0 := time.Now()
	seq, err := pdb.Append(ctx, []byte("two"))
	var nre *flume.NotReplicatedError
	if !errors.As(err, &nre) || !errors.Is(err, flume.ErrNotReplicated) {
		t.Fatalf("got %v, want *flume.NotReplicatedError", err)
	}
	if nre.Acked != 0 || nre.Required != 1 || seq != 1 || nre.Last != 1 {
		t.Fatalf("error says %d of %d acked for seq %d (returned %d)", nre.Acked, nre.Required, nre.Last, seq)
	}
	if d := time.Since(t0); d < 150*time.Millisecond || d > 2*time.Second {
		t.Fatalf("failed after %v, want about the 200ms deadline", d)
	}
	if pdb.Since() != 1 {
		t.Fatal("the unreplicated entry is not in the primary's log")
	}
	f = start()
	defer f.Close()
	if _, err := pdb.Append(ctx, []byte("three")); err != nil {
		t.Fatalf("sync append after the follower returned: %v", err)
	}
	waitSince(t, fl, 2)
	sameLog(t, pdb, fl)
}

func openSync(t testing.TB, k int, timeout time.Duration) *flume.DB {
	db, err := flume.Open(newMemLog(), &flume.Options{SyncReplicas: k, SyncTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// Sync appends from many writers share acks (group commit) and each gets
// its own seq; k=2 with two followers needs both.
func TestSyncManyWritersK2(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			pdb := openSync(t, 2, 5*time.Second)
			h := newHarness(t, tr, pdb, fastOpts())
			f1, f2 := newMemDB(t), newMemDB(t)
			s1, s2 := h.mustFollow(f1), h.mustFollow(f2)
			defer s1.Close()
			defer s2.Close()
			var wg sync.WaitGroup
			var fails atomic.Int64
			for w := 0; w < 64; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < 50; i++ {
						seq, err := pdb.Append(context.Background(), []byte("v"))
						if err != nil {
							fails.Add(1)
							t.Error(err)
							return
						}
						if f1.Since() < seq || f2.Since() < seq {
							t.Errorf("seq %d acknowledged before both followers had it", seq)
						}
					}
				}()
			}
			wg.Wait()
			if fails.Load() > 0 {
				t.Fatal("sync appends failed")
			}
			sameLog(t, pdb, f1)
			sameLog(t, pdb, f2)
		})
	}
}

// logBuffer is a slog handler target safe for concurrent use.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Invariant 8, credentials: a wrong or missing secret is refused on both
// sides, counted, logged, and the peer learns nothing about the log.
func TestAuthRefused(t *testing.T) {
	cases := []struct {
		name       string
		pSec, fSec []byte
	}{
		{"wrong secret", []byte("right"), []byte("wrong")},
		{"follower has none", []byte("right"), nil},
		{"primary has none", nil, []byte("right")},
	}
	for _, tr := range []string{"tcp", "pipe"} {
		for _, tc := range cases {
			t.Run(tr+"/"+tc.name, func(t *testing.T) {
				pdb, fdb := newMemDB(t), newMemDB(t)
				appendN(t, pdb, 5, "secret-data")
				var logs logBuffer
				popts := fastOpts()
				popts.Secret = tc.pSec
				popts.Logger = slog.New(slog.NewTextHandler(&logs, nil))
				fopts := fastOpts()
				fopts.Secret = tc.fSec
				fid := fdb.Log().ID()
				var err error
				var prim *Primary
				if tr == "tcp" {
					var addr string
					prim, addr = servePrimary(t, pdb, popts)
					var f *Follower
					f, err = NewFollower(fdb, addr, fopts)
					if err != nil {
						t.Fatal(err)
					}
					defer f.Close()
					err = f.Ready(ctxT(t))
					if st := f.Status(); st.PrimarySince != -1 || st.State != StateRefused {
						t.Fatalf("follower learned the primary's since (%d) or state %s", st.PrimarySince, st.State)
					}
				} else {
					prim, _ = NewPrimary(pdb, popts)
					defer prim.Close()
					_, err = Replicate(pdb, fdb, fopts)
				}
				if !errors.Is(err, ErrAuth) {
					t.Fatalf("got %v, want ErrAuth", err)
				}
				if fdb.Since() != -1 || fdb.Log().ID() != fid {
					t.Fatal("the follower changed")
				}
				eventually(t, "the primary to count the failure", func() bool { return prim.Stats().AuthFailures > 0 })
				if tc.pSec != nil && !strings.Contains(logs.String(), "authentication") {
					t.Fatalf("the failure was not logged: %q", logs.String())
				}
				if prim.Stats().Handshakes != 0 {
					t.Fatal("a handshake completed")
				}
			})
		}
	}
	// A peer that skips checking the primary's proof and answers with a
	// wrong one gets an auth error and never a Hello.
	pdb := newMemDB(t)
	popts := fastOpts()
	popts.Secret = []byte("right")
	prim, addr := servePrimary(t, pdb, popts)
	c, _ := net.Dial("tcp", addr)
	raw := newRawPeer(t, c)
	_, _, err := raw.followerHandshake([]byte("wrong"), Hello{NodeID: "x", Since: -1})
	if !errors.Is(err, ErrAuth) {
		t.Fatalf("raw peer with a wrong proof: %v, want ErrAuth before any Hello", err)
	}
	if prim.Stats().AuthFailures != 1 {
		t.Fatalf("auth failures %d, want 1", prim.Stats().AuthFailures)
	}
	// And the right secret works.
	fdb := newMemDB(t)
	fopts := fastOpts()
	fopts.Secret = []byte("right")
	f, err := NewFollower(fdb, addr, fopts)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Ready(ctxT(t)); err != nil {
		t.Fatal(err)
	}
}

// TLS with client certificates required: a follower with a certificate
// from the CA replicates; one without is refused and counted.
func TestTLSClientCertRequired(t *testing.T) {
	pki := testpki.New(t)
	server := &tls.Config{Certificates: []tls.Certificate{pki.Server(t, "primary")},
		ClientCAs: pki.Pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
	pdb := newMemDB(t)
	appendN(t, pdb, 20, "tls")
	popts := fastOpts()
	popts.TLS = server
	prim, addr := servePrimary(t, pdb, popts)

	noCert := fastOpts()
	noCert.TLS = &tls.Config{RootCAs: pki.Pool}
	fdb := newMemDB(t)
	f, err := NewFollower(fdb, addr, noCert)
	if err != nil {
		t.Fatal(err)
	}
	err = f.Ready(ctxT(t))
	f.Close()
	if !errors.Is(err, ErrAuth) {
		t.Fatalf("follower without a client certificate: %v, want ErrAuth", err)
	}
	if fdb.Since() != -1 {
		t.Fatal("follower without a certificate received entries")
	}
	eventually(t, "the primary to count the TLS failure", func() bool { return prim.Stats().AuthFailures > 0 })

	// A plain-TCP follower: once the primary has refused it (the positive
	// signal that it tried), it must hold nothing.
	plain := fastOpts()
	fdb2 := newMemDB(t)
	before := prim.Stats().AuthFailures
	f, err = NewFollower(fdb2, addr, plain)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the plain-TCP follower to be refused", func() bool {
		return prim.Stats().AuthFailures > before && f.Status().LastError != ""
	})
	t.Logf("plain-TCP follower: %s", f.Status().LastError)
	f.Close()
	if fdb2.Since() != -1 {
		t.Fatal("a plain-TCP follower received entries from a TLS primary")
	}

	withCert := fastOpts()
	withCert.TLS = &tls.Config{RootCAs: pki.Pool, Certificates: []tls.Certificate{pki.Client(t, "follower")}}
	fdb3 := newMemDB(t)
	f, err = NewFollower(fdb3, addr, withCert)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Ready(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	appendN(t, pdb, 5, "more")
	waitSince(t, fdb3, 24)
	sameLog(t, pdb, fdb3)
}

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

// Observability: lag in entries, bytes and seconds while a follower is
// behind; zero once caught up; upstream status on the follower.
func TestStatusLag(t *testing.T) {
	pdb := newMemDB(t)
	opts := fastOpts()
	opts.DeadAfter = 10 * time.Second
	prim, addr := servePrimary(t, pdb, opts)
	var gate atomic.Bool // while set, the follower's acks stall
	fopts := fastOpts()
	fopts.DeadAfter = 10 * time.Second
	fopts.NodeID = "f1"
	fopts.Dial = func(ctx context.Context) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		return &gatedConn{Conn: c, gate: &gate}, err
	}
	fdb := newMemDB(t)
	f, err := NewFollower(fdb, addr, fopts)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Ready(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "streaming", func() bool { return f.Status().State == StateStreaming })
	appendN(t, pdb, 100, "x")
	waitSince(t, fdb, 99)
	// Acks up to 99 arrive before the gate closes, so the lag below is
	// the 50 entries appended while it is closed.
	eventually(t, "the primary to hear the ack of 99", func() bool {
		st := prim.Followers()
		return len(st) == 1 && st[0].AckedSeq == 99
	})
	gate.Store(true)
	appendN(t, pdb, 50, "lagging")
	// Sent, not acknowledged: the lag in entries and bytes shows at once,
	// and its age grows past 80ms.
	var s FollowerStatus
	lagging := func() bool {
		st := prim.Followers()
		if len(st) != 1 {
			return false
		}
		s = st[0]
		return s.LagEntries >= 50 && s.LagSeconds >= 0.08
	}
	if !testutil.Poll(2*time.Second, lagging) { // within gatedConn's 3s hold
		t.Fatalf("lagging follower status %+v", s)
	}
	if s.NodeID != "f1" || !s.Connected || s.LagBytes < 50*int64(flume.FrameSize(9)) {
		t.Fatalf("lagging follower status %+v", s)
	}
	gate.Store(false)
	eventually(t, "lag to reach zero", func() bool {
		s := prim.Followers()[0]
		return s.LagEntries == 0 && s.LagBytes == 0 && s.LagSeconds == 0 && s.AckedSeq == 149 && s.ReceivedSeq == 149
	})
	us := f.Status()
	if us.State != StateStreaming || !us.Connected || us.PrimarySince != 149 || us.Since != 149 || us.LagEntries != 0 || us.Primary != addr {
		t.Fatalf("upstream status %+v", us)
	}
	ps, fs := prim.Stats(), f.Stats()
	if ps.EntriesSent != 150 || fs.EntriesReceived != 150 || ps.BytesSent != fs.BytesReceived || ps.Handshakes != 1 {
		t.Fatalf("stats: primary %+v follower %+v", ps, fs)
	}
}

// The follower's own view of its lag: while its log cannot append, it
// still hears of the primary's entries, and LagSeconds is the age of the
// oldest one it does not hold (never more than the time since the primary
// appended it); zero again once it catches up.
func TestUpstreamLagSeconds(t *testing.T) {
	pdb := newMemDB(t)
	_, addr := servePrimary(t, pdb, fastOpts())
	gl := &stallLog{Log: memlog.New()}
	fdb, err := flume.Open(gl, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer fdb.Close()
	f, err := NewFollower(fdb, addr, fastOpts())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	appendN(t, pdb, 10, "x")
	waitSince(t, fdb, 9)
	eventually(t, "caught up", func() bool { st := f.Status(); return st.LagEntries == 0 && st.LagSeconds == 0 })

	gl.mu.Lock() // the follower's appends stall
	var release sync.Once
	unstall := func() { release.Do(gl.mu.Unlock) }
	defer unstall() // a failing check must not leave Close waiting on the log
	t0 := time.Now()
	appendN(t, pdb, 50, "behind")
	// How much it hears depends on how the primary batched the 50 entries:
	// a stalled follower stops reading once its append queue is full.
	eventually(t, "the follower to hear of new entries", func() bool { return f.Status().PrimarySince > 9 })
	eventually(t, "lag seconds to grow", func() bool { return f.Status().LagSeconds >= 0.05 })
	st := f.Status()
	lag := st.PrimarySince - 9
	if st.Since != 9 || st.LagEntries != lag || st.LagSeconds > time.Since(t0).Seconds() ||
		st.LagBytes < lag*int64(flume.FrameSize(3)) || st.LagBytes > lag*int64(flume.FrameSize(9)) {
		t.Fatalf("behind for %v: status %+v", time.Since(t0), st)
	}
	unstall()
	waitSince(t, fdb, 59)
	eventually(t, "lag to reach zero", func() bool {
		st := f.Status()
		return st.LagEntries == 0 && st.LagBytes == 0 && st.LagSeconds == 0
	})
}

// stallLog is a log whose replicated appends wait while mu is held.
type stallLog struct {
	flume.Log
	mu sync.Mutex
}

func (l *stallLog) AppendEntries(es []flume.Entry) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.Log.AppendEntries(es)
}

// gatedConn stalls writes (the follower's acks) while gate is set.
type gatedConn struct {
	net.Conn
	gate *atomic.Bool
}

func (c *gatedConn) Close() error {
	c.gate.Store(false)
	return c.Conn.Close()
}

func (c *gatedConn) Write(b []byte) (int, error) {
	for start := time.Now(); c.gate.Load() && time.Since(start) < 3*time.Second; {
		time.Sleep(time.Millisecond)
	}
	return c.Conn.Write(b)
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
