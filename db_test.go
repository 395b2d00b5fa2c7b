package flume_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/memlog"
)

func TestAppendReturnsOwnSeq(t *testing.T) {
	db := openDB(t, nil)
	ctx := context.Background()
	if s := db.Since(); s != -1 {
		t.Fatalf("empty Since = %d, want -1", s)
	}
	fill(t, db, 3)
	first, last, err := db.AppendBatch(ctx, [][]byte{val(3), val(4), val(5)})
	if err != nil || first != 3 || last != 5 {
		t.Fatalf("AppendBatch = %d, %d, %v; want 3, 5", first, last, err)
	}
	first, last, err = db.AppendBatch(ctx, nil)
	if err != nil || first != 6 || last != 5 {
		t.Fatalf("empty AppendBatch = %d, %d, %v; want 6, 5", first, last, err)
	}
	for s := int64(0); s <= 5; s++ {
		b, err := db.Get(ctx, s)
		if err != nil || string(b) != string(val(s)) {
			t.Fatalf("Get(%d) = %q, %v", s, b, err)
		}
	}
	for _, s := range []int64{-1, 6, 100} {
		if _, err := db.Get(ctx, s); !errors.Is(err, flume.ErrNotFound) {
			t.Fatalf("Get(%d) err = %v, want ErrNotFound", s, err)
		}
	}
}

// TestOpenPublishesExistingLog: Since is the log's position as soon as Open
// returns, never unknown.
func TestOpenPublishesExistingLog(t *testing.T) {
	l := memlog.New()
	if _, err := l.Append([]byte("a"), []byte("b")); err != nil {
		t.Fatal(err)
	}
	db, err := flume.Open(l, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if s := db.Since(); s != 1 {
		t.Fatalf("Since = %d, want 1", s)
	}
}

// TestWaitSinceAnyOrder: waiters at many targets, registered in random
// order, are each released exactly when their target is published, however
// appends are batched.
func TestWaitSinceAnyOrder(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	db := openDB(t, nil)
	const n = 300
	targets := rng.Perm(n)
	ctx := ctxTimeout(t, 20*time.Second)
	var wg sync.WaitGroup
	var released atomic.Int64
	for _, tg := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := db.WaitSince(ctx, int64(tg)); err != nil {
				t.Errorf("WaitSince(%d): %v", tg, err)
				return
			}
			if s := db.Since(); s < int64(tg) {
				t.Errorf("WaitSince(%d) returned at since %d", tg, s)
			}
			released.Add(1)
		}()
	}
	// A waiter beyond the end times out; one with a past target returns at once.
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	for db.Since() < n-1 {
		k := 1 + rng.IntN(7)
		batch := make([][]byte, k)
		for i := range batch {
			batch[i] = []byte("x")
		}
		if _, _, err := db.AppendBatch(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	if released.Load() != n {
		t.Fatalf("%d of %d waiters released", released.Load(), n)
	}
	if err := db.WaitSince(short, db.Since()+1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitSince past end = %v, want DeadlineExceeded", err)
	}
	if err := db.WaitSince(ctx, 0); err != nil {
		t.Fatal(err)
	}
}

// TestWaitSinceReleasedByClose: waiters blocked beyond the end are released
// by Close with ErrClosed (not merely refused once the DB is closed).
func TestWaitSinceReleasedByClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := openDB(t, nil)
		fill(t, db, 1)
		errc := make(chan error, 3)
		for range 3 {
			go func() { errc <- db.WaitSince(context.Background(), 1e9) }()
		}
		synctest.Wait() // every waiter is blocked in WaitSince
		select {
		case err := <-errc:
			t.Fatalf("a waiter returned before Close: %v", err)
		default:
		}
		db.Close()
		for range 3 {
			if err := <-errc; !errors.Is(err, flume.ErrClosed) {
				t.Fatalf("waiter after Close = %v, want ErrClosed", err)
			}
		}
	})
}

func TestChangedAndWatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := openDB(t, nil)
		s, ch := db.Changed()
		if s != -1 {
			t.Fatalf("Changed since = %d", s)
		}
		fill(t, db, 1)
		select {
		case <-ch:
		case <-time.After(5 * time.Second):
			t.Fatal("Changed channel not closed by an append")
		}
		var mu sync.Mutex
		var seen []int64
		got := make(chan struct{}, 100)
		stop := db.Watch(func(s int64) {
			mu.Lock()
			seen = append(seen, s)
			mu.Unlock()
			got <- struct{}{}
		})
		<-got
		fill(t, db, 20)
		deadline := time.After(5 * time.Second)
		for {
			mu.Lock()
			last := seen[len(seen)-1]
			ok := slices.IsSorted(seen)
			mu.Unlock()
			if !ok {
				t.Fatalf("Watch values not increasing: %v", seen)
			}
			if last == 20 {
				break
			}
			select {
			case <-got:
			case <-deadline:
				t.Fatalf("Watch never saw 20: %v", seen)
			}
		}
		stop()
		stop()
		mu.Lock()
		n := len(seen)
		mu.Unlock()
		fill(t, db, 5)
		synctest.Wait() // the watcher has run on those changes, or exited
		mu.Lock()
		defer mu.Unlock()
		if len(seen) != n {
			t.Fatalf("Watch called after stop: %v", seen[n:])
		}
	})
}

// TestCloseEverythingErrClosed: after Close every method reports ErrClosed,
// Close is idempotent, and (TestMain's goleak) no goroutine remains.
func TestCloseEverythingErrClosed(t *testing.T) {
	db := openDB(t, nil)
	fill(t, db, 3)
	v := newTestView()
	if err := db.Use("v", v); err != nil {
		t.Fatal(err)
	}
	stop := db.Watch(func(int64) {})
	defer stop()
	live := db.Stream(context.Background(), flume.StreamOptions{Live: true})
	_, before := db.Changed()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("second Close = %v, want nil", err)
	}
	ctx := context.Background()
	check := func(name string, err error) {
		t.Helper()
		if !errors.Is(err, flume.ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
	_, err := db.Append(ctx, []byte("x"))
	check("Append", err)
	_, _, err = db.AppendBatch(ctx, [][]byte{[]byte("x")})
	check("AppendBatch", err)
	_, _, err = db.AppendWith(ctx, flume.AppendOptions{SyncReplicas: 1})
	check("AppendWith (empty)", err)
	_, err = db.Get(ctx, 0)
	check("Get", err)
	check("WaitSince", db.WaitSince(ctx, 0))
	check("AppendReplicated", db.AppendReplicated([]flume.Entry{{Seq: 3}}))
	check("AdoptID", db.AdoptID(flume.NewLogID()))
	check("Use", db.Use("w", newTestView()))
	check("view Sync", v.host.Sync(ctx))
	s := db.Stream(ctx, flume.StreamOptions{})
	s.Next()
	check("Stream", s.Err())
	for live.Next() {
	}
	check("live Stream", live.Err())
	if !v.closed.Load() {
		t.Error("view not closed by DB.Close")
	}
	select {
	case <-db.Done():
	default:
		t.Error("Done not closed")
	}
	select {
	case <-before:
	default:
		t.Error("a Changed channel taken before Close is still open")
	}
	if _, ch := db.Changed(); ch == nil {
		t.Error("Changed returned a nil channel after Close")
	}
	noop := db.Watch(func(int64) { t.Error("Watch fn called on a closed DB") })
	noop()
}

// TestCloseRacesUse: Use and Watch racing Close never leak a goroutine or
// leave a view open.
func TestCloseRacesUse(t *testing.T) {
	for i := 0; i < 50; i++ {
		db, _ := flume.Open(memlog.New(), nil)
		fill(t, db, 10)
		var vs []*testView
		var wg sync.WaitGroup
		var mu sync.Mutex
		for j := 0; j < 4; j++ {
			v := newTestView()
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := db.Use(string(rune('a'+j)), v); err == nil {
					mu.Lock()
					vs = append(vs, v)
					mu.Unlock()
				}
				db.Watch(func(int64) {})
			}()
		}
		db.Close()
		wg.Wait()
		for _, v := range vs {
			if !v.closed.Load() {
				t.Fatal("a view attached by Use was not closed by Close")
			}
		}
	}
}

// claimReplicator installs r as db's replicator, failing the test if one is.
func claimReplicator(t *testing.T, db *flume.DB, r flume.Replicator) {
	t.Helper()
	if err := db.ClaimReplicator(r); err != nil {
		t.Fatal(err)
	}
}

// TestRoleClaims: the DB owns its replication role. One upstream and one
// replicator at a time; releasing an upstream keeps the DB read-only unless
// asked to restore the role it had before.
func TestRoleClaims(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, nil)
	rel, err := db.ClaimUpstream("p1:7601")
	if err != nil {
		t.Fatal(err)
	}
	if f, p := db.Role(); !f || p != "p1:7601" {
		t.Fatalf("Role after ClaimUpstream = %v, %q", f, p)
	}
	if _, err := db.Append(ctx, []byte("x")); !errors.Is(err, flume.ErrNotPrimary) {
		t.Fatalf("Append with an upstream = %v, want ErrNotPrimary", err)
	}
	if _, err := db.ClaimUpstream("p2:7601"); !errors.Is(err, flume.ErrHasUpstream) || !strings.Contains(err.Error(), "p1:7601") {
		t.Fatalf("second ClaimUpstream = %v, want ErrHasUpstream naming p1:7601", err)
	}
	rel(false)
	rel(true) // later calls do nothing
	if f, p := db.Role(); !f || p != "p1:7601" {
		t.Fatalf("Role after release(false) = %v, %q; want still a follower", f, p)
	}
	rel2, err := db.ClaimUpstream("p2:7601")
	if err != nil {
		t.Fatalf("ClaimUpstream after release = %v", err)
	}
	rel2(true) // back to the role before this claim: follower of p1
	if f, p := db.Role(); !f || p != "p1:7601" {
		t.Fatalf("Role after release(true) = %v, %q; want follower of p1:7601", f, p)
	}

	r1, r2 := &fakeReplicator{}, &fakeReplicator{}
	err = db.ClaimReplicator(r1)
	if err != nil || db.Replicator() != r1 {
		t.Fatalf("ClaimReplicator = %v, Replicator() = %v", err, db.Replicator())
	}
	if err := db.ClaimReplicator(r2); !errors.Is(err, flume.ErrHasPrimary) {
		t.Fatalf("second ClaimReplicator = %v, want ErrHasPrimary", err)
	}
	db.ReleaseReplicator(r2) // not installed: nothing happens
	if db.Replicator() != r1 {
		t.Fatal("releasing another replicator removed the installed one")
	}
	db.ReleaseReplicator(r1)
	if db.Replicator() != nil {
		t.Fatal("Replicator() after release is not nil")
	}
	if err := db.ClaimReplicator(r2); err != nil {
		t.Fatalf("ClaimReplicator after release = %v", err)
	}
	db.Close()
	if _, err := db.ClaimUpstream("p3"); !errors.Is(err, flume.ErrClosed) {
		t.Fatalf("ClaimUpstream after Close = %v, want ErrClosed", err)
	}
}

func TestFollowerRefusesAppend(t *testing.T) {
	db := openDB(t, nil)
	ctx := context.Background()
	fill(t, db, 2)
	db.SetFollower(true, "10.1.2.3:7601")
	if f, p := db.Role(); !f || p != "10.1.2.3:7601" {
		t.Fatalf("Role = %v, %q", f, p)
	}
	_, err := db.Append(ctx, []byte("x"))
	var npe *flume.NotPrimaryError
	if !errors.As(err, &npe) || npe.Primary != "10.1.2.3:7601" || !errors.Is(err, flume.ErrNotPrimary) {
		t.Fatalf("Append on follower = %v, want *NotPrimaryError naming 10.1.2.3:7601", err)
	}
	if !strings.Contains(err.Error(), "10.1.2.3:7601") {
		t.Fatalf("error %q does not name the primary", err)
	}
	if _, _, err := db.AppendBatch(ctx, [][]byte{[]byte("x")}); !errors.As(err, &npe) {
		t.Fatalf("AppendBatch on follower = %v", err)
	}
	// Replicated entries continue the log exactly.
	primary := memlog.New()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	fdb := openDB(t, nil)
	if err := fdb.AdoptID(primary.ID()); err != nil {
		t.Fatal(err)
	}
	fdb.SetFollower(true, "p")
	primary.Append([]byte("a"), []byte("b"), []byte("c"))
	var es []flume.Entry
	for s := int64(0); s < 3; s++ {
		e, _ := primary.Entry(s)
		es = append(es, e)
	}
	if err := fdb.AppendReplicated(es[:2]); err != nil {
		t.Fatal(err)
	}
	if err := fdb.AppendReplicated(es[:1]); !errors.Is(err, flume.ErrOutOfOrder) {
		t.Fatalf("duplicate replicated entry = %v, want ErrOutOfOrder", err)
	}
	bad := es[2]
	bad.Data = []byte("evil")
	if err := fdb.AppendReplicated([]flume.Entry{bad}); !errors.Is(err, flume.ErrDiverged) {
		t.Fatalf("diverged entry = %v, want ErrDiverged", err)
	}
	if err := fdb.WaitSince(ctxTimeout(t, time.Second), 1); err != nil || fdb.Since() != 1 {
		t.Fatalf("follower since %d, %v", fdb.Since(), err)
	}
	fdb.SetFollower(false, "")
	if s, err := fdb.Append(ctx, []byte("d")); err != nil || s != 2 {
		t.Fatalf("Append after promotion = %d, %v", s, err)
	}
}

// fakeReplicator acknowledges with a fixed number of followers; fewer than k
// means waiting until ctx ends.
type fakeReplicator struct {
	acked atomic.Int64
	calls atomic.Int64
	seq   atomic.Int64
}

func (f *fakeReplicator) WaitAcked(ctx context.Context, seq int64, k int) (int, error) {
	f.calls.Add(1)
	f.seq.Store(seq)
	if n := int(f.acked.Load()); n >= k {
		return n, nil
	}
	<-ctx.Done()
	return int(f.acked.Load()), ctx.Err()
}

func TestSyncAppend(t *testing.T) {
	ctx := context.Background()
	t.Run("success", func(t *testing.T) {
		db := openDB(t, &flume.Options{SyncReplicas: 2})
		rep := &fakeReplicator{}
		rep.acked.Store(2)
		claimReplicator(t, db, rep)
		first, last, err := db.AppendBatch(ctx, [][]byte{[]byte("a"), []byte("b")})
		if err != nil || first != 0 || last != 1 || rep.seq.Load() != 1 {
			t.Fatalf("sync AppendBatch = %d, %d, %v (waited for %d)", first, last, err, rep.seq.Load())
		}
	})
	t.Run("timeout", func(t *testing.T) {
		db := openDB(t, &flume.Options{SyncReplicas: 2, SyncTimeout: 30 * time.Millisecond})
		rep := &fakeReplicator{}
		rep.acked.Store(1)
		claimReplicator(t, db, rep)
		start := time.Now()
		seq, err := db.Append(ctx, []byte("a"))
		var nre *flume.NotReplicatedError
		if !errors.As(err, &nre) || nre.Acked != 1 || nre.Required != 2 || nre.Last != 0 || seq != 0 {
			t.Fatalf("Append = %d, %v; want seq 0 and *NotReplicatedError 1 of 2", seq, err)
		}
		if !errors.Is(err, flume.ErrNotReplicated) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("error %v does not unwrap to ErrNotReplicated and DeadlineExceeded", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("timed out after %v, want about 30ms", d)
		}
		if b, err := db.Get(ctx, 0); err != nil || string(b) != "a" {
			t.Fatalf("entry not in the log after timeout: %q, %v", b, err)
		}
		// The caller's earlier deadline wins.
		short, cancel := context.WithTimeout(ctx, 5*time.Millisecond)
		defer cancel()
		db2 := openDB(t, &flume.Options{SyncReplicas: 2, SyncTimeout: time.Hour})
		claimReplicator(t, db2, rep)
		if _, err := db2.Append(short, []byte("a")); !errors.As(err, &nre) {
			t.Fatalf("Append with short ctx = %v", err)
		}
	})
	t.Run("per-call override", func(t *testing.T) {
		db := openDB(t, &flume.Options{SyncReplicas: 3, SyncTimeout: time.Hour})
		rep := &fakeReplicator{}
		claimReplicator(t, db, rep)
		if _, _, err := db.AppendWith(ctx, flume.AppendOptions{SyncReplicas: 0}, []byte("a")); err != nil || rep.calls.Load() != 0 {
			t.Fatalf("async override = %v, %d replicator calls", err, rep.calls.Load())
		}
		rep.acked.Store(1)
		if _, _, err := db.AppendWith(ctx, flume.AppendOptions{SyncReplicas: 1}, []byte("b")); err != nil {
			t.Fatalf("k=1 override = %v", err)
		}
	})
	t.Run("no replicator", func(t *testing.T) {
		db := openDB(t, &flume.Options{SyncReplicas: 1})
		seq, err := db.Append(ctx, []byte("a"))
		var nre *flume.NotReplicatedError
		if !errors.As(err, &nre) || seq != 0 || db.Since() != 0 {
			t.Fatalf("Append = %d, %v", seq, err)
		}
	})
	t.Run("close ends the wait", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			db, _ := flume.Open(memlog.New(), &flume.Options{SyncReplicas: 1, SyncTimeout: time.Hour})
			rep := &fakeReplicator{}
			claimReplicator(t, db, rep)
			errc := make(chan error, 1)
			go func() { _, err := db.Append(context.Background(), []byte("a")); errc <- err }()
			synctest.Wait() // the append is blocked waiting for acks
			if rep.calls.Load() != 1 || len(errc) != 0 {
				t.Fatalf("append not waiting for acks: %d replicator calls, %d results", rep.calls.Load(), len(errc))
			}
			db.Close()
			select {
			case err := <-errc:
				if !errors.Is(err, flume.ErrNotReplicated) || !errors.Is(err, flume.ErrClosed) {
					t.Fatalf("Append during Close = %v", err)
				}
			case <-time.After(5 * time.Second): // in the bubble: fires only once nothing else can happen
				t.Fatal("Close did not end the sync wait")
			}
		})
	})
}

// TestConcurrentAppendStreamView runs writers, live readers, a view and view
// readers together (meant for -race).
func TestConcurrentAppendStreamView(t *testing.T) {
	db := openDB(t, nil)
	v := newTestView()
	if err := db.Use("count", v); err != nil {
		t.Fatal(err)
	}
	ctx := ctxTimeout(t, 30*time.Second)
	const writers, per = 4, 300
	total := int64(writers * per)
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i += 3 {
				if _, _, err := db.AppendBatch(ctx, [][]byte{[]byte("a"), []byte("b"), []byte("c")}); err != nil {
					t.Error(err)
					return
				}
				if i%30 == 0 {
					before := db.Since()
					if err := v.host.Sync(ctx); err != nil {
						t.Error(err)
						return
					}
					if got := v.Since(); got < before {
						t.Errorf("view at %d after Sync, log was at %d", got, before)
					}
				}
			}
		}()
	}
	for r := 0; r < 3; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := db.Stream(ctx, flume.StreamOptions{Live: true, Lt: flume.At(total)})
			defer s.Close()
			next := int64(0)
			for s.Next() {
				if s.Entry().Seq != next {
					t.Errorf("stream yielded %d, want %d", s.Entry().Seq, next)
					return
				}
				next++
			}
			if next != total || s.Err() != nil {
				t.Errorf("stream ended at %d: %v", next, s.Err())
			}
		}()
	}
	wg.Wait()
	if err := v.host.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if n := v.count(); n != total {
		t.Fatalf("view applied %d entries, want %d", n, total)
	}
}

// TestCloseRacesEverything: appends, live streams, waiters, view reads and
// watchers racing Close each end with success or ErrClosed (never a panic,
// hang or other error), and nothing is left running.
func TestCloseRacesEverything(t *testing.T) {
	defer goleak.VerifyNone(t)
	for round := 0; round < 20; round++ {
		db, _ := flume.Open(memlog.New(), nil)
		v := newTestView()
		if err := db.Use("v", v); err != nil {
			t.Fatal(err)
		}
		ok := func(what string, err error) {
			if err != nil && !errors.Is(err, flume.ErrClosed) {
				t.Errorf("%s: %v", what, err)
			}
		}
		var wg sync.WaitGroup
		start := make(chan struct{})
		for w := 0; w < 3; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				for i := 0; i < 200; i++ {
					if _, err := db.Append(context.Background(), []byte("x")); err != nil {
						ok("Append", err)
						return
					}
				}
			}()
		}
		for r := 0; r < 2; r++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s := db.Stream(context.Background(), flume.StreamOptions{Live: true})
				defer s.Close()
				<-start
				for s.Next() {
				}
				ok("live stream", s.Err())
			}()
		}
		wg.Add(2)
		go func() { defer wg.Done(); <-start; ok("WaitSince", db.WaitSince(context.Background(), 1e9)) }()
		go func() {
			defer wg.Done()
			<-start
			for i := 0; i < 50; i++ {
				if err := v.host.Sync(context.Background()); err != nil {
					ok("view Sync", err)
					return
				}
			}
		}()
		db.Watch(func(int64) {})
		close(start)
		time.Sleep(time.Duration(round%5) * 100 * time.Microsecond)
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		// Whatever was acknowledged was applied in order by the view.
		if n, s := v.count(), v.Since(); n != s+1 {
			t.Fatalf("view applied %d entries but is at %d", n, s)
		}
	}
}
