package reliability

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math/rand"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/internal/checker"
	"github.com/flume-go/flume/internal/testutil"
	"github.com/flume-go/flume/memlog"
	"github.com/flume-go/flume/repl"
)

// garbage returns the i-th kind of hostile input for a replication port:
// random bytes, a valid preamble followed by random bytes, a message header
// claiming 4 GiB, a random AuthInit body, a lone preamble (then silence),
// and nothing at all.
func garbage(rnd *rand.Rand, i int) (kind string, b []byte) {
	pre := binary.LittleEndian.AppendUint16([]byte{'F', 'L', 'R', 'P'}, repl.Version)
	pre = append(pre, 0, 0)
	rb := func(n int) []byte { b := make([]byte, n); rnd.Read(b); return b }
	switch i % 6 {
	case 0:
		return "random", rb(1 + rnd.Intn(64<<10))
	case 1:
		return "preamble+random", append(pre, rb(1+rnd.Intn(8<<10))...)
	case 2:
		h := binary.LittleEndian.AppendUint32(append([]byte(nil), pre...), 0xffffffff)
		return "huge-length", append(h, 1)
	case 3:
		body := rb(rnd.Intn(200))
		h := binary.LittleEndian.AppendUint32(append([]byte(nil), pre...), uint32(1+len(body)))
		return "random-authinit", append(append(h, 1), body...)
	case 4:
		return "preamble-then-silence", pre
	default:
		return "empty", nil
	}
}

// TestReplPortGarbage: hostile connections to the primary's replication
// port (each kind above, many times) while appenders and two followers keep
// working. Every hostile connection is closed by the primary within its
// handshake bound, no append fails unexpectedly, the followers catch up
// and the checker holds (nothing foreign entered any log, chains
// recompute).
func TestReplPortGarbage(t *testing.T) {
	seed := testSeed(t)
	rnd := rand.New(rand.NewSource(seed))
	c := newCluster(t, clusterConfig{kind: logKinds[0], followers: 2, seed: seed, secret: []byte("s3cret")})
	ctx, cancel := context.WithCancel(context.Background())
	wg := c.runAppenders(ctx, 2, "garbage")

	const conns = 60
	type job struct {
		kind string
		b    []byte
	}
	jobs := make([]job, conns)
	for i := range jobs {
		jobs[i].kind, jobs[i].b = garbage(rnd, i)
	}
	var cw sync.WaitGroup
	errc := make(chan error, conns)
	sem := make(chan struct{}, 8)
	for _, j := range jobs {
		cw.Add(1)
		sem <- struct{}{}
		go func() {
			defer cw.Done()
			defer func() { <-sem }()
			conn, err := net.Dial("tcp", c.addr)
			if err != nil {
				errc <- err
				return
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			conn.Write(j.b) // may fail once the primary hangs up
			// The primary must close the connection (EOF or reset),
			// not leave it hanging until our deadline.
			_, err = io.Copy(io.Discard, conn)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				errc <- errors.New(j.kind + ": primary kept the connection open for 5s")
			}
		}()
	}
	cw.Wait()
	cancel()
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	for _, err := range c.unexpected {
		t.Errorf("unexpected append error: %v", err)
	}
	if err := c.waitCaughtUp(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	rep := c.check(checker.Options{RequireCaughtUp: true})
	if !rep.OK() {
		t.Fatal(rep.Err())
	}
	st := c.prim.Stats()
	if st.AuthFailures == 0 {
		t.Errorf("primary counted no auth failures after %d hostile connections: %+v", conns, st)
	}
	t.Logf("%d hostile connections; primary stats %+v; %d entries verified", conns, st, rep.EntriesVerified)
}

// TestWrongSecretRefusedAndCounted: followers with the wrong secret or none
// are refused with repl.ErrAuth, counted by the primary, and learn nothing:
// their logs stay empty under their own IDs.
func TestWrongSecretRefusedAndCounted(t *testing.T) {
	seed := testSeed(t)
	c := newCluster(t, clusterConfig{kind: logKinds[0], followers: 1, seed: seed, secret: []byte("right")})
	c.appendOnce(0, 5, 1, "secret")
	for _, tc := range []struct {
		name   string
		secret []byte
	}{{"wrong", []byte("wrong")}, {"none", nil}} {
		t.Run(tc.name, func(t *testing.T) {
			l := memlog.New()
			id := l.ID()
			db, err := flume.Open(l, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			before := c.prim.Stats().AuthFailures
			o := replOpts(tc.secret)
			f, err := repl.NewFollower(db, c.addr, o)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err = f.Ready(ctx)
			f.Close()
			if !errors.Is(err, repl.ErrAuth) {
				t.Fatalf("Ready: %v, want repl.ErrAuth", err)
			}
			// The follower may see the failure first (the primary's proof
			// does not verify): the primary counts it when the follower
			// hangs up.
			if !testutil.Poll(5*time.Second, func() bool { return c.prim.Stats().AuthFailures > before }) {
				t.Fatalf("auth failures %d, want > %d", c.prim.Stats().AuthFailures, before)
			}
			if s := db.Since(); s != -1 || l.ID() != id {
				t.Fatalf("refused follower learned something: since %d, ID changed %v", s, l.ID() != id)
			}
		})
	}
	if err := c.waitCaughtUp(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if rep := c.check(checker.Options{RequireCaughtUp: true}); !rep.OK() {
		t.Fatal(rep.Err())
	}
}
