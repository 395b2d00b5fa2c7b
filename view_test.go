package flume_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/memlog"
)

// testView records what it is fed. gate, when set, blocks Apply until a
// value is received; fail makes Apply fail at that seq.
type testView struct {
	mu      sync.Mutex
	since   int64
	hash    flume.Hash
	applied []int64
	resets  int
	gate    chan struct{}
	failAt  int64
	host    flume.ViewHost
	closed  atomic.Bool
}

func newTestView() *testView { return &testView{since: -1, failAt: -1} }

func (v *testView) Open(h flume.ViewHost) error { v.host = h; return nil }
func (v *testView) Since() int64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.since
}
func (v *testView) SinceHash() flume.Hash {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.hash
}
func (v *testView) Apply(es []flume.Entry) error {
	if v.gate != nil {
		<-v.gate
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, e := range es {
		if e.Seq != v.since+1 {
			return errors.New("out of order")
		}
		if e.Seq == v.failAt {
			return errors.New("boom")
		}
		v.applied = append(v.applied, e.Seq)
		v.since, v.hash = e.Seq, e.Hash
	}
	return nil
}
func (v *testView) Reset() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.since, v.hash, v.applied = -1, flume.Hash{}, nil
	v.resets++
	return nil
}
func (v *testView) Close() error { v.closed.Store(true); return nil }
func (v *testView) count() int64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return int64(len(v.applied))
}

// chainView hides SinceHash unless asked, to test plain Views too.
type plainView struct{ *testView }

func (p plainView) SinceHash() {} // not the ChainView signature

func TestViewCatchesUpAndFollows(t *testing.T) {
	db := openDB(t, nil)
	fill(t, db, 10000) // more than ViewBatch
	v := newTestView()
	if err := db.Use("v", v); err != nil {
		t.Fatal(err)
	}
	if err := db.Use("v", newTestView()); err == nil {
		t.Fatal("second view with the same name accepted")
	}
	if db.View("v") != flume.View(v) {
		t.Fatal("View(name) does not return the view")
	}
	ctx := ctxTimeout(t, 10*time.Second)
	fill(t, db, 5)
	if err := v.host.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if v.Since() != 10004 || v.count() != 10005 {
		t.Fatalf("view since %d with %d applied, want 10004/10005", v.Since(), v.count())
	}
}

// TestViewAheadOfLogRebuilds: a view whose since is past the log's end is
// Reset and rebuilt from 0.
func TestViewAheadOfLogRebuilds(t *testing.T) {
	db := openDB(t, nil)
	fill(t, db, 10)
	v := newTestView()
	v.since = 100
	if err := db.Use("v", v); err != nil {
		t.Fatal(err)
	}
	if err := v.host.Sync(ctxTimeout(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if v.resets != 1 || v.Since() != 9 || v.count() != 10 {
		t.Fatalf("resets %d since %d applied %d; want 1, 9, 10", v.resets, v.Since(), v.count())
	}
}

// TestViewOtherHistoryRebuilds: a ChainView whose hash at its since is not
// the log's is rebuilt; a matching one resumes without reapplying.
func TestViewOtherHistoryRebuilds(t *testing.T) {
	db := openDB(t, nil)
	fill(t, db, 10)
	e, _ := db.Log().Entry(4)

	good := newTestView()
	good.since, good.hash = 4, e.Hash
	if err := db.Use("good", good); err != nil {
		t.Fatal(err)
	}
	bad := newTestView()
	bad.since, bad.hash = 4, flume.Hash{1}
	if err := db.Use("bad", bad); err != nil {
		t.Fatal(err)
	}
	plain := plainView{newTestView()}
	plain.since = 4 // no hash to compare: trusted
	if err := db.Use("plain", plain); err != nil {
		t.Fatal(err)
	}
	ctx := ctxTimeout(t, 5*time.Second)
	for _, v := range []*testView{good, bad, plain.testView} {
		if err := v.host.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if good.resets != 0 || good.count() != 5 {
		t.Fatalf("matching view: resets %d applied %d; want 0, 5", good.resets, good.count())
	}
	if bad.resets != 1 || bad.count() != 10 {
		t.Fatalf("diverged view: resets %d applied %d; want 1, 10", bad.resets, bad.count())
	}
	if plain.resets != 0 || plain.count() != 5 {
		t.Fatalf("plain view: resets %d applied %d; want 0, 5", plain.resets, plain.count())
	}
}

// TestViewSyncDeadline: a read waits for the view to catch up, bounded by
// its context, and succeeds once the view catches up.
func TestViewSyncDeadline(t *testing.T) {
	db := openDB(t, nil)
	v := newTestView()
	v.gate = make(chan struct{})
	if err := db.Use("v", v); err != nil {
		t.Fatal(err)
	}
	fill(t, db, 3)
	short, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := v.host.Sync(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Sync with a stuck view = %v, want DeadlineExceeded", err)
	}
	close(v.gate)
	if err := v.host.Sync(ctxTimeout(t, 5*time.Second)); err != nil || v.Since() != 2 {
		t.Fatalf("Sync = %v at since %d", err, v.Since())
	}
}

// TestViewSyncToAnyOrder: view waiters at many targets in random order are
// each released when the view reaches theirs.
func TestViewSyncToAnyOrder(t *testing.T) {
	db := openDB(t, nil)
	v := newTestView()
	v.gate = make(chan struct{})
	if err := db.Use("v", v); err != nil {
		t.Fatal(err)
	}
	ctx := ctxTimeout(t, 10*time.Second)
	const n = 200
	var wg sync.WaitGroup
	for _, tg := range rand.Perm(n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := v.host.SyncTo(ctx, int64(tg)); err != nil {
				t.Errorf("SyncTo(%d): %v", tg, err)
				return
			}
			if s := v.Since(); s < int64(tg) {
				t.Errorf("SyncTo(%d) released at %d", tg, s)
			}
		}()
	}
	// Feed in small steps: each Apply passes one gate.
	stop, fed := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(fed)
		for {
			select {
			case v.gate <- struct{}{}:
				time.Sleep(50 * time.Microsecond)
			case <-stop:
				return
			}
		}
	}()
	for i := 0; i < n; i++ {
		fill(t, db, 1)
	}
	wg.Wait()
	close(stop)
	<-fed
	close(v.gate) // no Apply blocks on it now
}

func TestViewApplyErrorStopsFeed(t *testing.T) {
	db := openDB(t, nil)
	v := newTestView()
	v.failAt = 5
	if err := db.Use("v", v); err != nil {
		t.Fatal(err)
	}
	fill(t, db, 10)
	err := v.host.Sync(ctxTimeout(t, 5*time.Second))
	if err == nil || v.host.Err() == nil {
		t.Fatalf("Sync = %v, Err = %v; want the Apply error", err, v.host.Err())
	}
	if v.Since() != 4 {
		t.Fatalf("view since %d, want 4", v.Since())
	}
}

// TestViewBatchDataIsCopied: entries handed to Apply stay valid for the whole
// call even though a log iterator's data is valid only until Next (memlog
// happens to alias; this checks content through the whole batch).
func TestViewBatchDataIsCopied(t *testing.T) {
	l := memlog.New()
	db, _ := flume.Open(l, nil)
	defer db.Close()
	fill(t, db, 5000)
	var bad atomic.Int64
	v := &checkView{bad: &bad}
	if err := db.Use("c", v); err != nil {
		t.Fatal(err)
	}
	if err := v.host.Sync(ctxTimeout(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if bad.Load() != 0 {
		t.Fatalf("%d entries with wrong data in Apply batches", bad.Load())
	}
}

type checkView struct {
	host  flume.ViewHost
	since atomic.Int64
	bad   *atomic.Int64
}

func (c *checkView) Open(h flume.ViewHost) error { c.host = h; c.since.Store(-1); return nil }
func (c *checkView) Since() int64                { return c.since.Load() }
func (c *checkView) Apply(es []flume.Entry) error {
	for _, e := range es {
		if string(e.Data) != string(val(e.Seq)) {
			c.bad.Add(1)
		}
	}
	c.since.Store(es[len(es)-1].Seq)
	return nil
}
func (c *checkView) Reset() error { c.since.Store(-1); return nil }
func (c *checkView) Close() error { return nil }
