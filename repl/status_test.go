package repl

// Observability requirements of the replication issue: lag in entries,
// bytes and seconds on both sides.

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/frame"
	"github.com/flume-go/flume/internal/testutil"
	"github.com/flume-go/flume/memlog"
)

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
	if s.NodeID != "f1" || !s.Connected || s.LagBytes < 50*int64(frame.Size(9)) {
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
		st.LagBytes < lag*int64(frame.Size(3)) || st.LagBytes > lag*int64(frame.Size(9)) {
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
