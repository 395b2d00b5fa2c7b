package repl

// One test per row of architecture.md §1: each reproduces the scenario in
// which the JavaScript stack failed and shows what flume does instead.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flume-go/flume"
)

var transports = []string{"pipe", "tcp"}

// harness replicates one primary DB to followers over a transport.
type harness struct {
	t         *testing.T
	transport string
	pdb       *flume.DB
	prim      *Primary // tcp: the served Primary
	addr      string
	opts      *Options
}

func newHarness(t *testing.T, transport string, pdb *flume.DB, opts *Options) *harness {
	h := &harness{t: t, transport: transport, pdb: pdb, opts: opts}
	if transport == "tcp" {
		h.prim, h.addr = servePrimary(t, pdb, opts)
	}
	return h
}

// stopper is a Link or a Follower.
type stopper interface{ Close() error }

// follow starts replication into fdb and waits for the handshake.
func (h *harness) follow(fdb *flume.DB) (stopper, error) {
	return h.followOpts(fdb, h.opts)
}

func (h *harness) followOpts(fdb *flume.DB, opts *Options) (stopper, error) {
	if h.transport == "pipe" {
		l, err := Replicate(h.pdb, fdb, opts)
		if err != nil {
			return nil, err
		}
		return l, nil
	}
	f, err := NewFollower(fdb, h.addr, opts)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.Ready(ctx); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func (h *harness) mustFollow(fdb *flume.DB) stopper {
	h.t.Helper()
	s, err := h.follow(fdb)
	if err != nil {
		h.t.Fatal(err)
	}
	return s
}

// Row 1: restart replication while follower appends are in flight. JS: up to
// 19,999 duplicates in 20,000. flume: the follower appends only since+1 and
// resumes from its log's end, so there are none.
func TestJSRestartMidStreamNoDuplicates(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			seed := rand.Uint64()
			t.Logf("seed %d", seed)
			rng := rand.New(rand.NewPCG(seed, 0))
			pdb, fdb := newMemDB(t), newMemDB(t)
			h := newHarness(t, tr, pdb, fastOpts())
			const total = 20000
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx := context.Background()
				for i := 0; i < total; i += 10 {
					vals := make([][]byte, 10)
					for j := range vals {
						vals[j] = []byte(fmt.Sprintf("v%d", i+j))
					}
					if _, _, err := pdb.AppendBatch(ctx, vals); err != nil {
						t.Error(err)
						return
					}
					if i%200 == 0 {
						time.Sleep(500 * time.Microsecond) // keep appends in flight across restarts
					}
				}
			}()
			restarts := 0
			for pdb.Since() < total-1 || restarts < 20 {
				s := h.mustFollow(fdb)
				time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
				s.Close()
				isPrefix(t, pdb, fdb)
				restarts++
			}
			wg.Wait()
			s := h.mustFollow(fdb)
			defer s.Close()
			waitSince(t, fdb, total-1)
			// One more entry, appended last, reaches the follower after
			// anything still in flight: once it is there, a duplicate
			// would be too.
			appendN(t, pdb, 1, "marker")
			waitSince(t, fdb, total)
			if got := fdb.Since(); got != total {
				t.Fatalf("follower since %d, want %d (duplicates?)", got, total)
			}
			sameLog(t, pdb, fdb)
			t.Logf("%d restarts mid-stream, %d entries, no duplicates", restarts, total)
		})
	}
}

// Row 3: two replication streams into one follower. JS: every entry twice.
// flume: one upstream per follower DB; a second is refused with a clear
// error, and the follower holds every entry once.
func TestJSTwoUpstreamsRefused(t *testing.T) {
	pdb, fdb := newMemDB(t), newMemDB(t)
	appendN(t, pdb, 50, "a")
	tcp := newHarness(t, "tcp", pdb, fastOpts())
	first := tcp.mustFollow(fdb)
	defer first.Close()

	_, err := NewFollower(fdb, tcp.addr, fastOpts())
	if !errors.Is(err, ErrHasUpstream) || !strings.Contains(err.Error(), tcp.addr) {
		t.Fatalf("second NewFollower: %v, want ErrHasUpstream naming the current upstream", err)
	}
	if _, err := Replicate(pdb, fdb, fastOpts()); !errors.Is(err, ErrHasUpstream) {
		t.Fatalf("Replicate into a following DB: %v, want ErrHasUpstream", err)
	}
	other := newMemDB(t)
	if _, err := Replicate(other, fdb, fastOpts()); !errors.Is(err, ErrHasUpstream) {
		t.Fatalf("Replicate from another DB: %v, want ErrHasUpstream", err)
	}
	appendN(t, pdb, 50, "b")
	appendN(t, pdb, 1, "marker") // the follower has everything once it has this, and sameLog sees any extra entry
	waitSince(t, fdb, 100)
	sameLog(t, pdb, fdb)

	// The same node connecting twice to a primary: the newer connection
	// replaces the older, never two streams.
	p2, f2 := newMemDB(t), newMemDB(t)
	opts := fastOpts()
	opts.NodeID = "same"
	prim, addr := servePrimary(t, p2, opts)
	fa, err := NewFollower(f2, addr, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	if err := fa.Ready(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	c, _ := net.Dial("tcp", addr)
	raw := newRawPeer(t, c)
	since, hash := f2.Log().Head()
	if _, _, err := raw.followerHandshake(nil, Hello{NodeID: "same", LogID: f2.Log().ID(), Since: since, Hash: hash}); err != nil {
		t.Fatal(err)
	}
	if n := len(prim.Followers()); n != 1 {
		t.Fatalf("primary lists %d followers for one node ID", n)
	}
}

// Row 4: follower ahead of or diverged from the primary. JS: garbage
// appended. flume: the handshake refuses with an error naming both
// positions; neither log changes.
func TestJSDivergedRefused(t *testing.T) {
	type setup func(t *testing.T, h *harness, pdb, fdb *flume.DB)
	// branch copies pdb into fdb, then lets fdb write on its own.
	branch := func(t *testing.T, h *harness, pdb, fdb *flume.DB, fextra, pextra int) {
		s := h.mustFollow(fdb)
		waitSince(t, fdb, pdb.Since())
		s.Close()
		fdb.SetFollower(false, "")
		appendN(t, fdb, fextra, "f")
		appendN(t, pdb, pextra, "p")
	}
	cases := []struct {
		name string
		code Code
		prep setup
	}{
		{"follower ahead", CodeAhead, func(t *testing.T, h *harness, p, f *flume.DB) { branch(t, h, p, f, 5, 0) }},
		{"diverged, follower shorter", CodeDiverged, func(t *testing.T, h *harness, p, f *flume.DB) { branch(t, h, p, f, 2, 5) }},
		{"diverged, same length", CodeDiverged, func(t *testing.T, h *harness, p, f *flume.DB) { branch(t, h, p, f, 5, 5) }},
		{"diverged, follower longer", CodeAhead, func(t *testing.T, h *harness, p, f *flume.DB) { branch(t, h, p, f, 7, 5) }},
		{"unrelated logs", CodeLogID, func(t *testing.T, h *harness, p, f *flume.DB) { appendN(t, f, 3, "other") }},
	}
	for _, tr := range transports {
		for _, tc := range cases {
			t.Run(tr+"/"+tc.name, func(t *testing.T) {
				pdb, fdb := newMemDB(t), newMemDB(t)
				appendN(t, pdb, 10, "base")
				h := newHarness(t, tr, pdb, fastOpts())
				tc.prep(t, h, pdb, fdb)
				ps, ph := pdb.Log().Head()
				fs, fh := fdb.Log().Head()
				pid, fid := pdb.Log().ID(), fdb.Log().ID()

				_, err := h.follow(fdb)
				var re *RefusedError
				if !errors.As(err, &re) || re.Reason != tc.code {
					t.Fatalf("got %v, want a refusal (%s)", err, tc.code)
				}
				if !errors.Is(err, flume.ErrDiverged) {
					t.Fatalf("refusal %v does not unwrap to flume.ErrDiverged", err)
				}
				for _, want := range []string{fmt.Sprintf("since %d", ps), fmt.Sprintf("since %d", fs)} {
					if !strings.Contains(err.Error(), want) {
						t.Fatalf("error %q does not name position %q", err, want)
					}
				}
				if h.prim != nil {
					// Over TCP a follower retries a refusal. Keep one
					// retrying until the primary has refused it twice
					// more: only then does "nothing changed" cover retries.
					before := h.prim.Stats().Refusals
					f, err := NewFollower(fdb, h.addr, fastOpts())
					if err != nil {
						t.Fatal(err)
					}
					defer f.Close()
					eventually(t, "the primary to refuse a retry", func() bool { return h.prim.Stats().Refusals >= before+2 })
				}
				if s, hh := pdb.Log().Head(); s != ps || hh != ph || pdb.Log().ID() != pid {
					t.Fatalf("primary changed: since %d→%d", ps, s)
				}
				if s, hh := fdb.Log().Head(); s != fs || hh != fh || fdb.Log().ID() != fid {
					t.Fatalf("follower changed: since %d→%d", fs, s)
				}
				if h.prim != nil && h.prim.Stats().Refusals == 0 {
					t.Fatal("refusal not counted on the primary")
				}
			})
		}
	}
}

// Row 5: a deleted/unknown position. JS: "past end", replication stops.
// flume: positions are entry numbers; a bad one is a clear protocol error
// that closes the connection and stores nothing.
func TestJSBadPosition(t *testing.T) {
	t.Run("ack past what was sent", func(t *testing.T) {
		pdb := newMemDB(t)
		appendN(t, pdb, 10, "a")
		prim, addr := servePrimary(t, pdb, fastOpts())
		c, _ := net.Dial("tcp", addr)
		raw := newRawPeer(t, c)
		id := pdb.Log().ID()
		if _, _, err := raw.followerHandshake(nil, Hello{NodeID: "bad", LogID: id, Since: -1, Hash: flume.GenesisHash(id)}); err != nil {
			t.Fatal(err)
		}
		raw.send(appendAck(nil, ack{Durable: 500, Received: 500}))
		var err error
		for err == nil {
			var typ MsgType
			var body []byte
			typ, body, err = raw.read()
			if typ == MsgError {
				m, _ := decodeError(body)
				err = peerError(m)
			}
		}
		var pe *ProtocolError
		if !errors.As(err, &pe) || pe.Code != CodeBadPosition || !strings.Contains(err.Error(), "500") {
			t.Fatalf("got %v, want a bad-position error naming seq 500", err)
		}
		if pdb.Since() != 9 {
			t.Fatal("primary log changed")
		}
		_ = prim
	})
	for name, first := range map[string]func(since int64) int64{
		"gap":       func(s int64) int64 { return s + 5 },
		"duplicate": func(s int64) int64 { return s },
	} {
		t.Run("batch with a "+name, func(t *testing.T) {
			fdb := newMemDB(t)
			appendN(t, fdb, 3, "x") // the follower's own history, as if replicated
			fdb.SetFollower(true, "")
			id := fdb.Log().ID()
			since, hash := fdb.Log().Head()
			sent := make(chan error, 10)
			addr := fakePrimary(t, func(c net.Conn) {
				raw := newRawPeer(t, c)
				if _, err := raw.primaryHandshake(Hello{LogID: id, Since: since + 10, Hash: hash}); err != nil {
					sent <- err
					return
				}
				es := chainEntries(id, hash, first(since), "p", "q")
				raw.send(batchMsg(since+10, es))
				_, body, err := raw.read()
				if err == nil {
					m, _ := decodeError(body)
					err = peerError(m)
				}
				sent <- err
				c.Close()
			})
			f, err := NewFollower(fdb, addr, fastOpts())
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			err = <-sent
			var pe *ProtocolError
			if !errors.As(err, &pe) || pe.Code != CodeBadPosition {
				t.Fatalf("primary heard %v, want a bad-position error", err)
			}
			if s, h := fdb.Log().Head(); s != since || h != hash {
				t.Fatalf("follower log changed to %d", s)
			}
			eventually(t, "the follower to report the bad position", func() bool {
				return strings.Contains(f.Status().LastError, "expected")
			})
		})
	}
}

// Row 6: the append callback reports the batch's last seq. flume: every
// append returns its own seq, and that seq holds its value on every replica.
func TestJSEachAppendOwnSeq(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			pdb, fdb := newMemDB(t), newMemDB(t)
			h := newHarness(t, tr, pdb, fastOpts())
			s := h.mustFollow(fdb)
			defer s.Close()
			var mu sync.Mutex
			got := map[int64]string{}
			var wg sync.WaitGroup
			for w := 0; w < 8; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < 200; i++ {
						v := fmt.Sprintf("w%d-%d", w, i)
						seq, err := pdb.Append(context.Background(), []byte(v))
						if err != nil {
							t.Error(err)
							return
						}
						mu.Lock()
						if old, dup := got[seq]; dup {
							t.Errorf("seq %d returned twice (%s, %s)", seq, old, v)
						}
						got[seq] = v
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			waitSince(t, fdb, 1599)
			for seq, v := range got {
				b, err := fdb.Get(context.Background(), seq)
				if err != nil || string(b) != v {
					t.Fatalf("follower seq %d = %q, %v; the append returned it for %q", seq, b, err, v)
				}
			}
		})
	}
}

// Row 7: one flipped byte crashes the JS process. flume: every entry's CRC
// is checked on receipt; a corrupt frame closes the connection with an
// error naming it, and nothing is stored.
func TestJSCorruptFrameRejected(t *testing.T) {
	fdb := newMemDB(t)
	id := fdb.Log().ID()
	heard := make(chan error, 10)
	addr := fakePrimary(t, func(c net.Conn) {
		raw := newRawPeer(t, c)
		if _, err := raw.primaryHandshake(Hello{LogID: id, Since: 2, Hash: flume.Hash{}}); err != nil {
			heard <- err
			return
		}
		msg := batchMsg(2, chainEntries(id, flume.GenesisHash(id), 0, "aaaa", "bbbb", "cccc"))
		msg[len(msg)-2] ^= 0x10 // flip a bit in the last payload
		raw.send(msg)
		_, body, err := raw.read()
		if err == nil {
			m, _ := decodeError(body)
			err = peerError(m)
		}
		heard <- err
		c.Close()
	})
	f, err := NewFollower(fdb, addr, fastOpts())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	err = <-heard
	var pe *ProtocolError
	if !errors.As(err, &pe) || pe.Code != CodeCorrupt || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("primary heard %v, want a corrupt-frame error", err)
	}
	if fdb.Since() != -1 {
		t.Fatalf("follower stored %d entries of a corrupt batch", fdb.Since()+1)
	}
	eventually(t, "the follower to report the checksum failure", func() bool {
		return strings.Contains(f.Status().LastError, "checksum")
	})
}
