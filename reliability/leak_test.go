package reliability

import (
	"bytes"
	"runtime"
	"runtime/pprof"
	"strconv"
	"testing"
	"time"

	"github.com/flume-go/flume/internal/checker"
	"github.com/flume-go/flume/internal/testutil"
)

// TestReconnectCyclesNoLeak: a follower whose connection is reset through
// the proxy 100 times (and declared dead after a blackhole a few times)
// reconnects and resumes every time, and the process ends with as many
// goroutines and file descriptors as after the first cycle, and about the
// same heap.
func TestReconnectCyclesNoLeak(t *testing.T) {
	seed := testSeed(t)
	c := newCluster(t, clusterConfig{kind: logKinds[0], followers: 1, seed: seed})
	m := c.fs[0]
	n := 0
	cycle := func(how string) {
		t.Helper()
		before := c.prim.Stats().Handshakes
		switch how {
		case "reset":
			m.proxy.ResetConns()
		case "dead":
			// Silence both ways: the primary and the follower must each
			// notice the dead peer (DeadAfter) and drop the connection.
			m.proxy.Blackhole()
			if !testutil.Poll(5*time.Second, func() bool { return !m.f.Status().Connected }) {
				t.Fatalf("follower never noticed the dead primary: %+v", m.f.Status())
			}
			m.proxy.ResetConns() // the TCP connection itself is still up
			m.proxy.Unblackhole()
		}
		if !testutil.Poll(10*time.Second, func() bool { return c.prim.Stats().Handshakes > before }) {
			t.Fatalf("cycle %d (%s): follower did not reconnect: %+v", n, how, m.f.Status())
		}
		c.appendOnce(0, 1, 1, "cycle-"+how+"-"+strconv.Itoa(n))
		n++
		if err := c.waitCaughtUp(10 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	cycle("reset")
	cycle("dead")

	runtime.GC()
	baseG, baseFD := runtime.NumGoroutine(), countFDs()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	baseHeap := ms.HeapInuse

	for i := 0; i < 100; i++ {
		cycle("reset")
	}
	for i := 0; i < 3; i++ {
		cycle("dead")
	}
	if rep := c.check(checker.Options{RequireCaughtUp: true}); !rep.OK() {
		t.Fatal(rep.Err())
	}
	// Goroutines of closed connections exit shortly after the close.
	if !testutil.Poll(5*time.Second, func() bool { return runtime.NumGoroutine() <= baseG && countFDs() <= baseFD }) {
		var buf bytes.Buffer
		pprof.Lookup("goroutine").WriteTo(&buf, 1)
		t.Fatalf("after %d reconnects: goroutines %d (baseline %d), fds %d (baseline %d)\n%s\n%s",
			n, runtime.NumGoroutine(), baseG, countFDs(), baseFD, buf.String(), fdList())
	}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	if grow := int64(ms.HeapInuse) - int64(baseHeap); grow > 8<<20 {
		t.Fatalf("heap in use grew by %d bytes over %d reconnects", grow, n)
	}
	t.Logf("%d reconnects: goroutines %d (baseline %d), fds %d (baseline %d), heap %d KiB (baseline %d KiB), reconnects seen by the follower %d",
		n, runtime.NumGoroutine(), baseG, countFDs(), baseFD, ms.HeapInuse>>10, baseHeap>>10, m.f.Stats().Reconnects)
}
