package repl

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/internal/testutil"
	"github.com/flume-go/flume/memlog"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fastOpts are options for tests: quick heartbeats and reconnects.
func fastOpts() *Options {
	return &Options{Heartbeat: 20 * time.Millisecond, DeadAfter: 300 * time.Millisecond, MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}
}

func newMemDB(t testing.TB) *flume.DB {
	t.Helper()
	db, err := flume.Open(memlog.New(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func appendN(t testing.TB, db *flume.DB, n int, prefix string) {
	t.Helper()
	ctx := context.Background()
	for i := 0; i < n; i++ {
		if _, err := db.Append(ctx, []byte(fmt.Sprintf("%s-%d", prefix, i))); err != nil {
			t.Fatal(err)
		}
	}
}

// waitSince waits until db.Since() >= seq.
func waitSince(t testing.TB, db *flume.DB, seq int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := db.WaitSince(ctx, seq); err != nil {
		t.Fatalf("waiting for since %d (now %d): %v", seq, db.Since(), err)
	}
}

// sameLog fails unless the two logs are identical: same ID, since, chain
// hash, and every entry equal.
func sameLog(t testing.TB, a, b *flume.DB) {
	t.Helper()
	la, lb := a.Log(), b.Log()
	sa, ha := la.Head()
	sb, hb := lb.Head()
	if la.ID() != lb.ID() || sa != sb || ha != hb {
		t.Fatalf("logs differ: %s since %d hash %s vs %s since %d hash %s", la.ID(), sa, ha.Short(), lb.ID(), sb, hb.Short())
	}
	ia, ib := la.Iter(0), lb.Iter(0)
	defer ia.Close()
	defer ib.Close()
	for ia.Next() {
		if !ib.Next() {
			t.Fatalf("follower ends early at %d", ia.Entry().Seq)
		}
		ea, eb := ia.Entry(), ib.Entry()
		if ea.Seq != eb.Seq || ea.Hash != eb.Hash || !bytes.Equal(ea.Data, eb.Data) {
			t.Fatalf("entry %d differs: %q vs %q", ea.Seq, ea.Data, eb.Data)
		}
	}
	if ib.Next() {
		t.Fatalf("follower has extra entry %d", ib.Entry().Seq)
	}
}

// isPrefix fails unless f's log is a prefix of p's (invariant 2).
func isPrefix(t testing.TB, p, f *flume.DB) {
	t.Helper()
	sf, hf := f.Log().Head()
	if sf < 0 {
		return
	}
	e, err := p.Log().Entry(sf)
	if err != nil {
		t.Fatalf("follower at %d, primary has no such entry: %v", sf, err)
	}
	if e.Hash != hf {
		t.Fatalf("follower at %d has hash %s, primary %s", sf, hf.Short(), e.Hash.Short())
	}
}

// listen returns a loopback TCP listener.
func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// servePrimary starts a Primary on loopback TCP and returns it and its
// address; it is closed at cleanup.
func servePrimary(t testing.TB, db *flume.DB, opts *Options) (*Primary, string) {
	t.Helper()
	p, err := NewPrimary(db, opts)
	if err != nil {
		t.Fatal(err)
	}
	ln := listen(t)
	done := make(chan error, 1)
	go func() { done <- p.Serve(ln) }()
	t.Cleanup(func() {
		p.Close()
		if err := <-done; err != ErrServerClosed {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return p, ln.Addr().String()
}

// eventually fails t unless cond holds within 10s.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, what, 10*time.Second, cond)
}

func newMemLog() flume.Log { return memlog.New() }

// listenOn listens on addr again (a restarted primary), retrying briefly
// while the old socket is released.
func listenOn(addr string) (ln net.Listener, err error) {
	testutil.Poll(time.Second, func() bool { ln, err = net.Listen("tcp", addr); return err == nil })
	return ln, err
}
