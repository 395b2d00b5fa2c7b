package views_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/views"
)

type sums struct {
	Count int64 `json:"count"`
	Sum   int64 `json:"sum"`
}

// newSums returns a reduce view summing numeric entries and counting how
// often its reducer runs.
func newSums(path, version string, calls *atomic.Int64, opts *views.ReduceOptions[sums]) *views.Reduce[sums] {
	return views.NewReduce(path, version, nil, func(s sums, e flume.Entry) (sums, error) {
		calls.Add(1)
		n, err := strconv.ParseInt(string(e.Data), 10, 64)
		if err != nil {
			return s, err
		}
		return sums{s.Count + 1, s.Sum + n}, nil
	}, opts)
}

func wantSums(n int64) sums { return sums{n, n * (n - 1) / 2} }

func TestReduceReadYourWrites(t *testing.T) {
	db := newDB(t, nil)
	var calls atomic.Int64
	r := newSums("", "v1", &calls, nil)
	if _, err := r.Get(context.Background()); err == nil {
		t.Fatal("Get before Use succeeded")
	}
	if err := db.Use("sums", r); err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	for i := int64(0); i < 50; i++ {
		if _, err := db.Append(ctx, []byte(num(i))); err != nil {
			t.Fatal(err)
		}
		s, err := r.Get(ctx)
		if err != nil || s != wantSums(i+1) {
			t.Fatalf("after append %d: Get = %+v, %v; want %+v", i, s, err, wantSums(i+1))
		}
	}
	err := r.Read(ctx, func(s sums) error {
		if s.Count != 50 {
			t.Errorf("Read sees %d", s.Count)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestReducePersistResume: a reopened DB resumes the view from its saved
// since without reapplying anything.
func TestReducePersistResume(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sums.state")
	db := newDB(t, nil)
	var calls atomic.Int64
	if err := db.Use("sums", newSums(path, "v1", &calls, nil)); err != nil {
		t.Fatal(err)
	}
	appendN(t, db, 10000, num)
	if s, err := db.View("sums").(*views.Reduce[sums]).Get(ctxT(t)); err != nil || s != wantSums(10000) {
		t.Fatalf("Get = %+v, %v", s, err)
	}
	log2 := copyLog(t, db, 9999)
	if err := db.Close(); err != nil { // saves the state
		t.Fatal(err)
	}

	db2 := newDB(t, log2)
	calls.Store(0)
	r2 := newSums(path, "v1", &calls, nil)
	if err := db2.Use("sums", r2); err != nil {
		t.Fatal(err)
	}
	if r2.Since() != 9999 {
		t.Fatalf("reopened view since %d, want 9999", r2.Since())
	}
	appendN(t, db2, 5, num)
	s, err := r2.Get(ctxT(t))
	if err != nil || s != wantSums(10005) || calls.Load() != 5 {
		t.Fatalf("after reopen: %+v, %v, %d reducer calls; want %+v with 5 calls", s, err, calls.Load(), wantSums(10005))
	}
}

func TestReduceRebuilds(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sums.state")
	db := newDB(t, nil)
	var calls atomic.Int64
	if err := db.Use("sums", newSums(path, "v1", &calls, nil)); err != nil {
		t.Fatal(err)
	}
	appendN(t, db, 100, num)
	if _, err := db.View("sums").(*views.Reduce[sums]).Get(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	full := copyLog(t, db, 99)
	short := copyLog(t, db, 39)
	db.Close()
	saved, _ := os.ReadFile(path)

	check := func(name string, l func() *flume.DB, version string, want sums, wantCalls int64) {
		t.Helper()
		os.WriteFile(path, saved, 0o600)
		calls.Store(0)
		db := l()
		r := newSums(path, version, &calls, nil)
		if err := db.Use("sums", r); err != nil {
			t.Fatal(err)
		}
		s, err := r.Get(ctxT(t))
		if err != nil || s != want || calls.Load() != wantCalls {
			t.Fatalf("%s: %+v, %v, %d calls; want %+v, %d calls", name, s, err, calls.Load(), want, wantCalls)
		}
		db.Close()
	}
	check("same version resumes", func() *flume.DB { return newDB(t, copyLog(t, dbOf(t, full), 99)) }, "v1", wantSums(100), 0)
	check("version change rebuilds", func() *flume.DB { return newDB(t, copyLog(t, dbOf(t, full), 99)) }, "v2", wantSums(100), 100)
	check("ahead of log rebuilds", func() *flume.DB { return newDB(t, copyLog(t, dbOf(t, short), 39)) }, "v1", wantSums(40), 40)
	check("other history rebuilds", func() *flume.DB {
		db := newDB(t, nil)
		appendN(t, db, 100, func(i int64) string { return num(2 * i) })
		return db
	}, "v1", sums{100, 9900}, 100)
	// A damaged file is discarded and rebuilt.
	bad := append([]byte(nil), saved...)
	bad[len(bad)-1] ^= 0xFF
	saved = bad
	check("corrupt file rebuilds", func() *flume.DB { return newDB(t, copyLog(t, dbOf(t, full), 99)) }, "v1", wantSums(100), 100)
}

// dbOf wraps a log in a DB only to reuse copyLog on it.
func dbOf(t *testing.T, l interface{ ID() flume.LogID }) *flume.DB {
	t.Helper()
	db, err := flume.Open(l.(flume.Log), nil)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func TestReduceSaveEveryBatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sums.state")
	db := newDB(t, nil)
	var calls atomic.Int64
	r := newSums(path, "v1", &calls, &views.ReduceOptions[sums]{SaveInterval: -1})
	if err := db.Use("sums", r); err != nil {
		t.Fatal(err)
	}
	appendN(t, db, 10, num)
	if _, err := r.Get(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	// Saved without Close: a crash now resumes from 9.
	var calls2 atomic.Int64
	db2 := newDB(t, copyLog(t, db, 9))
	r2 := newSums(path, "v1", &calls2, nil)
	if err := db2.Use("sums", r2); err != nil {
		t.Fatal(err)
	}
	if s, err := r2.Get(ctxT(t)); err != nil || s != wantSums(10) || calls2.Load() != 0 {
		t.Fatalf("got %+v, %v, %d calls", s, err, calls2.Load())
	}
}

func TestReduceErrorAndDeadline(t *testing.T) {
	db := newDB(t, nil)
	var calls atomic.Int64
	r := newSums("", "v1", &calls, nil)
	if err := db.Use("sums", r); err != nil {
		t.Fatal(err)
	}
	appendN(t, db, 3, num)
	db.Append(context.Background(), []byte("not a number"))
	if _, err := r.Get(ctxT(t)); err == nil {
		t.Fatal("Get after a failing reducer succeeded")
	}
	if r.Since() != 2 {
		t.Fatalf("since %d after failure at 3, want 2", r.Since())
	}
	// A view that cannot catch up, its ReduceFunc stuck in the middle of
	// a batch: Get honours the deadline and Since answers at once.
	gate, entered := make(chan struct{}), make(chan struct{}, 1)
	slow := views.NewReduce("", "v1", nil, func(n int, e flume.Entry) (int, error) {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-gate
		return n + 1, nil
	}, nil)
	if err := db.Use("slow", slow); err != nil {
		t.Fatal(err)
	}
	<-entered // a fold is in progress
	since := make(chan int64, 1)
	go func() { since <- slow.Since() }()
	select {
	case s := <-since:
		if s != -1 {
			t.Fatalf("Since during the first fold = %d, want -1", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Since waited for a fold in progress")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	got := make(chan error, 1)
	go func() { _, err := slow.Get(ctx); got <- err }()
	select {
	case err := <-got:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Get = %v, want DeadlineExceeded", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Get ignored its deadline while a fold was in progress")
	}
	close(gate)
}

func TestReduceClosed(t *testing.T) {
	db := newDB(t, nil)
	r := views.NewReduce("", "v", nil, func(n int, e flume.Entry) (int, error) { return n + 1, nil }, nil)
	if err := db.Use("n", r); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := r.Get(context.Background()); !errors.Is(err, flume.ErrClosed) {
		t.Fatalf("Get after Close = %v, want ErrClosed", err)
	}
}

// A map state updated in place is read safely through Read (run with -race).
func TestReduceMapStateRead(t *testing.T) {
	db := newDB(t, nil)
	r := views.NewReduce("", "v", func() map[string]int { return map[string]int{} },
		func(m map[string]int, e flume.Entry) (map[string]int, error) { m[string(e.Data)]++; return m, nil }, nil)
	if err := db.Use("m", r); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); appendN(t, db, 2000, func(i int64) string { return num(i % 7) }) }()
	for i := 0; i < 20; i++ {
		r.Read(ctxT(t), func(m map[string]int) error { _ = len(m); _ = m["1"]; return nil })
	}
	<-done
	r.Read(ctxT(t), func(m map[string]int) error {
		if m["0"] != 286 {
			t.Errorf("m[0] = %d, want 286", m["0"])
		}
		return nil
	})
}
