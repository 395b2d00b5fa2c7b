package views_test

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/vfs"
	"github.com/flume-go/flume/vfs/errorfs"
	"github.com/flume-go/flume/views"
)

const statePath = "/v/sums.state"

// checkedSums is newSums whose reducer also checks that the state it is
// handed is the fold of every entry before e: a state that does not match
// the view's since stops the feed with an error.
func checkedSums(fsys vfs.FS, saveInterval time.Duration, calls, first *atomic.Int64) *views.Reduce[sums] {
	return views.NewReduce(statePath, "v1", nil, func(s sums, e flume.Entry) (sums, error) {
		if s != wantSums(e.Seq) {
			return s, fmt.Errorf("state %+v before entry %d, want %+v: state and since disagree", s, e.Seq, wantSums(e.Seq))
		}
		if calls.Add(1) == 1 {
			first.Store(e.Seq)
		}
		n, err := strconv.ParseInt(string(e.Data), 10, 64)
		if err != nil {
			return s, err
		}
		return sums{s.Count + 1, s.Sum + n}, nil
	}, &views.ReduceOptions[sums]{FS: fsys, SaveInterval: saveInterval})
}

// safeBuffer is a bytes.Buffer for a logger written from several goroutines.
type safeBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *safeBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *safeBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// reopen restarts the view on fsys (read-only) over a copy of db's log up to upTo (what
// a durable log would hold after the crash) and returns the since the view
// loaded from its file. It fails the test unless the view loads without
// discarding its file, resumes from exactly that since (the reducer runs
// once per later entry) and catches up to a state equal to a fresh fold.
func reopen(t *testing.T, db *flume.DB, upTo int64, fsys vfs.FS, desc string) (loaded int64) {
	t.Helper()
	var logs safeBuffer
	db2, err := flume.Open(copyLog(t, db, upTo), &flume.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	var calls, first atomic.Int64
	// Read-only: closing this view must not save over the state under test.
	ro := errorfs.Wrap(fsys, errorfs.OnPredicate(func(op errorfs.Op) bool { return op.Kind.IsWrite() }, nil))
	r := checkedSums(ro, time.Hour, &calls, &first)
	if err := db2.Use("sums", r); err != nil {
		t.Fatalf("%s: reopen: %v", desc, err)
	}
	s, err := r.Get(ctxT(t))
	if err != nil || s != wantSums(upTo+1) {
		t.Fatalf("%s: after reopen: %+v, %v; want %+v", desc, s, err, wantSums(upTo+1))
	}
	loaded = upTo
	if calls.Load() > 0 {
		loaded = first.Load() - 1
	}
	if calls.Load() != upTo-loaded {
		t.Fatalf("%s: %d reducer calls from since %d to %d", desc, calls.Load(), loaded, upTo)
	}
	if l := logs.String(); strings.Contains(l, "level=WARN") || strings.Contains(l, "rebuilding") {
		t.Fatalf("%s: the view did not resume from its file:\n%s", desc, l)
	}
	return loaded
}

// crashClones returns what m would hold after a crash now: only synced
// state, and (seeded) random parts of what was not synced.
func crashClones(m *vfs.MemFS, seed uint64) []*vfs.MemFS {
	out := []*vfs.MemFS{m.CrashClone(vfs.CrashConfig{})}
	for _, pct := range []int{50, 100} {
		out = append(out, m.CrashClone(vfs.CrashConfig{UnsyncedDataPercent: pct, Rand: rand.New(rand.NewPCG(seed, uint64(pct)))}))
	}
	return out
}

func readState(t *testing.T, fsys vfs.FS) []byte {
	t.Helper()
	b, err := vfs.ReadFile(fsys, statePath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestReduceCrashDuringSave crashes before every filesystem operation of a
// save and after it: the file holds the state saved before (or none) or the
// new one, whole; the reopened view resumes from that state's since and
// catches up to a fresh fold.
func TestReduceCrashDuringSave(t *testing.T) {
	for _, firstSave := range []bool{false, true} {
		t.Run(fmt.Sprintf("firstSave=%v", firstSave), func(t *testing.T) {
			m := vfs.NewMem()
			m.MkdirAll("/v", 0o755)
			var recording atomic.Bool
			var clones []*vfs.MemFS // before each operation of the save, then after it
			fsys := errorfs.Wrap(m, errorfs.InjectorFunc(func(op errorfs.Op) error {
				if recording.Load() { // only the save below runs while recording
					clones = append(clones, crashClones(m, uint64(op.Index))...)
				}
				return nil
			}))
			db := newDB(t, nil)
			var calls, first atomic.Int64
			r := checkedSums(fsys, time.Hour, &calls, &first) // saves only when told
			if err := db.Use("sums", r); err != nil {
				t.Fatal(err)
			}
			appendN(t, db, 10, num)
			if _, err := r.Get(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			oldSince := int64(-1)
			if !firstSave {
				if err := r.Save(); err != nil {
					t.Fatal(err)
				}
				oldSince = 9
			}
			old := readState(t, m)
			appendN(t, db, 10, num)
			if s, err := r.Get(ctxT(t)); err != nil || s != wantSums(20) {
				t.Fatalf("Get = %+v, %v", s, err)
			}
			recording.Store(true)
			err := r.Save()
			recording.Store(false)
			if err != nil {
				t.Fatal(err)
			}
			clones = append(clones, crashClones(m, 0)...)
			saved := readState(t, m)
			if saved == nil || bytes.Equal(saved, old) {
				t.Fatal("Save did not write a new state")
			}

			sawOld, sawNew := false, false
			for i, c := range clones {
				desc := fmt.Sprintf("crash clone %d of %d", i, len(clones))
				got, wantSince := readState(t, c), int64(19)
				switch {
				case bytes.Equal(got, saved):
					sawNew = true
				case bytes.Equal(got, old):
					sawOld, wantSince = true, oldSince
				default:
					t.Fatalf("%s: state file is neither the old nor the new one:\n%q", desc, got)
				}
				if loaded := reopen(t, db, 19, c, desc); loaded != wantSince {
					t.Fatalf("%s: view resumed from %d, want %d", desc, loaded, wantSince)
				}
			}
			if !sawOld || !sawNew {
				t.Fatalf("crash points kept old %v, new %v; want both", sawOld, sawNew)
			}
			for _, c := range clones[len(clones)-3:] {
				if !bytes.Equal(readState(t, c), saved) {
					t.Fatal("a crash after Save returned lost the saved state")
				}
			}
		})
	}
}

// TestReduceCrashDuringFeed saves after every batch while entries arrive
// one by one, and crashes before every filesystem operation: each crash
// leaves a state the view had, which it resumes from; the durable since
// never goes backwards.
func TestReduceCrashDuringFeed(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	m := vfs.NewMem()
	m.MkdirAll("/v", 0o755)
	var (
		mu     sync.Mutex
		clones []*vfs.MemFS // synced-only and random, alternating
		rng    = rand.New(rand.NewPCG(seed, 0))
	)
	fsys := errorfs.Wrap(m, errorfs.InjectorFunc(func(op errorfs.Op) error {
		mu.Lock() // the feed goroutine saves
		defer mu.Unlock()
		clones = append(clones, m.CrashClone(vfs.CrashConfig{}),
			m.CrashClone(vfs.CrashConfig{UnsyncedDataPercent: rng.IntN(101), Rand: rand.New(rand.NewPCG(rng.Uint64(), 0))}))
		return nil
	}))
	db := newDB(t, nil)
	var calls, first atomic.Int64
	r := checkedSums(fsys, -1, &calls, &first) // save after every batch
	if err := db.Use("sums", r); err != nil {
		t.Fatal(err)
	}
	const n = 30
	for i := int64(0); i < n; i++ {
		if _, err := db.Append(ctxT(t), []byte(num(i))); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Get(ctxT(t)); err != nil { // one batch, one save per entry
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	clones = append(clones, m.CrashClone(vfs.CrashConfig{}))
	if len(clones) < 6*n {
		t.Fatalf("%d crash points for %d saves", len(clones), n)
	}
	durable := int64(-1)
	for i, c := range clones {
		desc := fmt.Sprintf("seed %d, crash clone %d of %d", seed, i, len(clones))
		loaded := reopen(t, db, n-1, c, desc)
		if i%2 == 0 || i == len(clones)-1 { // synced only
			if loaded < durable {
				t.Fatalf("%s: view resumed from %d after a crash that kept %d", desc, loaded, durable)
			}
			durable = loaded
		}
	}
	if durable != n-1 {
		t.Fatalf("after the last save the durable since is %d, want %d", durable, n-1)
	}
}

// TestReduceSaveErrors fails each filesystem operation of a save in turn:
// Save returns the injected error, the view keeps serving, the file still
// holds a whole state the view had (the old one after a crash), and the
// next Save succeeds.
func TestReduceSaveErrors(t *testing.T) {
	for i := int64(0); ; i++ {
		if i > 50 {
			t.Fatal("Save never succeeded")
		}
		m := vfs.NewMem()
		m.MkdirAll("/v", 0o755)
		fsys := errorfs.Wrap(m, nil)
		db := newDB(t, nil)
		var calls, first atomic.Int64
		r := checkedSums(fsys, time.Hour, &calls, &first)
		if err := db.Use("sums", r); err != nil {
			t.Fatal(err)
		}
		appendN(t, db, 10, num)
		if _, err := r.Get(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		if err := r.Save(); err != nil {
			t.Fatal(err)
		}
		appendN(t, db, 10, num)
		if _, err := r.Get(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		fsys.SetInjector(errorfs.OnIndex(fsys.Ops() + i))
		err := r.Save()
		fsys.SetInjector(nil)
		if fsys.Injected() == 0 {
			if err != nil {
				t.Fatalf("Save with nothing injected: %v", err)
			}
			if i < 6 {
				t.Fatalf("a save took only %d operations", i)
			}
			db.Close()
			break
		}
		desc := fmt.Sprintf("failing op %d of a save", i)
		if !errorfs.IsInjected(err) {
			t.Fatalf("%s: Save = %v, want the injected error", desc, err)
		}
		if s, err := r.Get(ctxT(t)); err != nil || s != wantSums(20) {
			t.Fatalf("%s: Get = %+v, %v; the view must keep serving", desc, s, err)
		}
		// Without a crash the file holds the old state or, if only the
		// directory sync failed, the new one; after a crash the old one.
		if loaded := reopen(t, db, 19, m, desc); loaded != 9 && loaded != 19 {
			t.Fatalf("%s: view resumed from %d, want 9 or 19", desc, loaded)
		}
		if loaded := reopen(t, db, 19, m.CrashClone(vfs.CrashConfig{}), desc+", crash"); loaded != 9 {
			t.Fatalf("%s, crash: view resumed from %d, want 9", desc, loaded)
		}
		if err := r.Save(); err != nil {
			t.Fatalf("%s: retry: %v", desc, err)
		}
		if loaded := reopen(t, db, 19, m.CrashClone(vfs.CrashConfig{}), desc+", retry, crash"); loaded != 19 {
			t.Fatalf("%s, retry, crash: view resumed from %d, want 19", desc, loaded)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestReduceSaveFailsDuringFeed: while every write fails, the feed goes on
// (a failed save does not stop the view), Close reports the error, and the
// file still holds the last saved state, from which a restart resumes.
func TestReduceSaveFailsDuringFeed(t *testing.T) {
	m := vfs.NewMem()
	m.MkdirAll("/v", 0o755)
	fsys := errorfs.Wrap(m, nil)
	db := newDB(t, nil)
	var calls, first atomic.Int64
	r := checkedSums(fsys, -1, &calls, &first)
	if err := db.Use("sums", r); err != nil {
		t.Fatal(err)
	}
	appendN(t, db, 10, num)
	if _, err := r.Get(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	fsys.SetInjector(errorfs.OnPredicate(func(op errorfs.Op) bool { return op.Kind.IsWrite() }, nil))
	appendN(t, db, 10, num)
	if s, err := r.Get(ctxT(t)); err != nil || s != wantSums(20) {
		t.Fatalf("Get while saves fail = %+v, %v", s, err)
	}
	if fsys.Injected() == 0 {
		t.Fatal("no save was attempted while writes failed")
	}
	src := newDB(t, copyLog(t, db, 19)) // the log as it was, for reopen
	if err := db.Close(); !errorfs.IsInjected(err) {
		t.Fatalf("Close = %v, want the injected error", err)
	}
	if loaded := reopen(t, src, 19, m.CrashClone(vfs.CrashConfig{}), "after failed saves"); loaded != 9 {
		t.Fatalf("resumed from %d, want 9", loaded)
	}
}
