package views_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/views"
)

// tagKeys indexes an entry "t1,t2,..." under each tag; "-" has no keys.
func tagKeys(calls *atomic.Int64) views.KeyFunc {
	return func(e flume.Entry) ([][]byte, error) {
		if calls != nil {
			calls.Add(1)
		}
		if string(e.Data) == "-" {
			return nil, nil
		}
		return bytes.Split(e.Data, []byte(",")), nil
	}
}

type row struct {
	key string
	seq int64
}

func collectRows(t *testing.T, it *views.IndexIter) []row {
	t.Helper()
	defer it.Close()
	var out []row
	for it.Next() {
		m := it.Match()
		out = append(out, row{string(m.Key), m.Seq})
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestIndexQueriesMatchModel: exact and range queries agree with a model
// built from the same entries, including keys that are prefixes of each
// other and keys containing 0x00.
func TestIndexQueriesMatchModel(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	alphabet := []string{"a", "a\x00", "a\x00b", "ab", "b", "\x00", "\xff", "zz"}
	db := newDB(t, nil)
	ix := views.NewIndex(filepath.Join(t.TempDir(), "ix.db"), "v1", tagKeys(nil))
	if err := db.Use("tags", ix); err != nil {
		t.Fatal(err)
	}
	var model []row
	ctx := ctxT(t)
	for i := int64(0); i < 3000; i++ {
		n := rng.IntN(3)
		var tags []string
		for j := 0; j < n; j++ {
			tags = append(tags, alphabet[rng.IntN(len(alphabet))])
		}
		data := strings.Join(tags, ",")
		if n == 0 {
			data = "-"
		}
		if _, err := db.Append(ctx, []byte(data)); err != nil {
			t.Fatal(err)
		}
		slices.Sort(tags)
		for _, tg := range slices.Compact(tags) {
			model = append(model, row{tg, i})
		}
	}
	slices.SortFunc(model, func(a, b row) int {
		if c := strings.Compare(a.key, b.key); c != 0 {
			return c
		}
		return int(a.seq - b.seq)
	})
	filter := func(keep func(k string) bool) []row {
		var out []row
		for _, r := range model {
			if keep(r.key) {
				out = append(out, r)
			}
		}
		return out
	}
	for _, k := range alphabet {
		got := collectRows(t, ix.Query(ctx, views.IndexQuery{Key: []byte(k)}))
		if want := filter(func(x string) bool { return x == k }); !slices.Equal(got, want) {
			t.Fatalf("key %q: %d rows, want %d", k, len(got), len(want))
		}
		seqs, err := ix.Seqs(ctx, []byte(k))
		if err != nil || len(seqs) != len(got) || !slices.IsSorted(seqs) {
			t.Fatalf("Seqs(%q) = %d seqs, %v", k, len(seqs), err)
		}
	}
	bounds := []string{"", "\x00", "a", "a\x00", "ab", "b", "c", "\xff"}
	for _, lo := range bounds {
		for _, hi := range bounds {
			q := views.IndexQuery{}
			if lo != "" {
				q.Gte = []byte(lo)
			}
			if hi != "" {
				q.Lt = []byte(hi)
			}
			got := collectRows(t, ix.Query(ctx, q))
			want := filter(func(x string) bool { return (lo == "" || x >= lo) && (hi == "" || x < hi) })
			if !slices.Equal(got, want) {
				t.Fatalf("range [%q, %q): %d rows, want %d", lo, hi, len(got), len(want))
			}
		}
	}
	// Limit and Values.
	it := ix.Query(ctx, views.IndexQuery{Key: []byte("ab"), Values: true, Limit: 5})
	n := 0
	for it.Next() {
		m := it.Match()
		if !slices.Contains(strings.Split(string(m.Value), ","), "ab") {
			t.Fatalf("match %d value %q lacks its key", m.Seq, m.Value)
		}
		n++
	}
	if it.Err() != nil || n != min(5, len(filter(func(x string) bool { return x == "ab" }))) {
		t.Fatalf("limit 5 gave %d, %v", n, it.Err())
	}
}

func TestIndexReadYourWrites(t *testing.T) {
	db := newDB(t, nil)
	ix := views.NewIndex(filepath.Join(t.TempDir(), "ix.db"), "v1", tagKeys(nil))
	if err := db.Use("tags", ix); err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	for i := int64(0); i < 30; i++ {
		db.Append(ctx, []byte("k"))
		seqs, err := ix.Seqs(ctx, []byte("k"))
		if err != nil || int64(len(seqs)) != i+1 || seqs[i] != i {
			t.Fatalf("after append %d: %v, %v", i, seqs, err)
		}
	}
}

// TestIndexLive: a live query yields the existing matches, then new ones in
// seq order once they are indexed, until ctx ends.
func TestIndexLive(t *testing.T) {
	db := newDB(t, nil)
	ix := views.NewIndex(filepath.Join(t.TempDir(), "ix.db"), "v1", tagKeys(nil))
	if err := db.Use("tags", ix); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, v := range []string{"x", "y", "x,y", "-"} {
		db.Append(ctx, []byte(v))
	}
	it := ix.Query(ctx, views.IndexQuery{Key: []byte("x"), Live: true, Values: true})
	defer it.Close()
	var got []int64
	want := []int64{0, 2}
	for i := 0; i < 200; i++ {
		v := "y"
		if i%3 == 0 {
			v = "x,z"
			want = append(want, int64(4+i))
		}
		db.Append(ctx, []byte(v))
	}
	for len(got) < len(want) && it.Next() {
		m := it.Match()
		if !strings.Contains(string(m.Value), "x") {
			t.Fatalf("match %d value %q", m.Seq, m.Value)
		}
		got = append(got, m.Seq)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("live got %v, want %v", got, want)
	}
	// Every live match is in the index: a new query finds all of them.
	if seqs, err := ix.Seqs(ctx, []byte("x")); err != nil || !slices.Equal(seqs, want) {
		t.Fatalf("index holds %v, %v; want %v", seqs, err, want)
	}
	cancel()
	if it.Next() || !errors.Is(it.Err(), context.Canceled) {
		t.Fatalf("after cancel: err %v, want context.Canceled", it.Err())
	}
}

// TestIndexPersistRebuild: the index resumes from its since on reopen, and
// rebuilds on version change, when ahead of its log, or on another history.
func TestIndexPersistRebuild(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ix.db")
	var calls atomic.Int64
	db := newDB(t, nil)
	if err := db.Use("tags", views.NewIndex(path, "v1", tagKeys(&calls))); err != nil {
		t.Fatal(err)
	}
	appendN(t, db, 5000, func(i int64) string { return fmt.Sprintf("k%d", i%10) })
	if _, err := db.View("tags").(*views.Index).Seqs(ctxT(t), []byte("k1")); err != nil {
		t.Fatal(err)
	}
	full := copyLog(t, db, 4999)
	short := copyLog(t, db, 999)
	db.Close()

	run := func(name string, db *flume.DB, version string, wantSince, wantCalls int64, wantK1 int) {
		t.Helper()
		calls.Store(0)
		ix := views.NewIndex(path, version, tagKeys(&calls))
		if err := db.Use("tags", ix); err != nil {
			t.Fatal(err)
		}
		seqs, err := ix.Seqs(ctxT(t), []byte("k1"))
		if err != nil || ix.Since() != wantSince || calls.Load() != wantCalls || len(seqs) != wantK1 {
			t.Fatalf("%s: since %d, %d keyFn calls, %d k1 rows, %v; want %d, %d, %d", name, ix.Since(), calls.Load(), len(seqs), err, wantSince, wantCalls, wantK1)
		}
		db.Close()
	}
	run("resume", newDB(t, copyLog(t, dbOf(t, full), 4999)), "v1", 4999, 0, 500)
	run("ahead of log", newDB(t, copyLog(t, dbOf(t, short), 999)), "v1", 999, 1000, 100)
	run("resume again", newDB(t, copyLog(t, dbOf(t, short), 999)), "v1", 999, 0, 100)
	run("version change", newDB(t, copyLog(t, dbOf(t, short), 999)), "v2", 999, 1000, 100)
	other := newDB(t, nil)
	appendN(t, other, 1000, func(i int64) string { return "k1" })
	run("other history", other, "v2", 999, 1000, 1000)
}

func TestIndexErrors(t *testing.T) {
	db := newDB(t, nil)
	ix := views.NewIndex(filepath.Join(t.TempDir(), "ix.db"), "v1", func(e flume.Entry) ([][]byte, error) {
		if string(e.Data) == "bad" {
			return nil, errors.New("cannot index")
		}
		return [][]byte{e.Data}, nil
	})
	if err := ix.Query(context.Background(), views.IndexQuery{}).Err(); err == nil {
		t.Fatal("query before Use succeeded")
	}
	if err := db.Use("ix", ix); err != nil {
		t.Fatal(err)
	}
	db.Append(context.Background(), []byte("ok"))
	if seqs, err := ix.Seqs(ctxT(t), []byte("ok")); err != nil || len(seqs) != 1 {
		t.Fatalf("Seqs = %v, %v", seqs, err)
	}
	db.Append(context.Background(), []byte("bad"))
	if _, err := ix.Seqs(ctxT(t), []byte("ok")); err == nil || !strings.Contains(err.Error(), "cannot index") {
		t.Fatalf("Seqs after a failing KeyFunc = %v", err)
	}
	if ix.Since() != 0 {
		t.Fatalf("since %d, want 0 (the failed batch is not committed)", ix.Since())
	}
	db.Close()
	if _, err := ix.Seqs(context.Background(), []byte("ok")); !errors.Is(err, flume.ErrClosed) {
		t.Fatalf("Seqs after Close = %v, want ErrClosed", err)
	}
}
