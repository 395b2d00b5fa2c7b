package flume_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/memlog"
)

// TestMain fails the package if any test leaves a goroutine running: every
// goroutine the DB starts must end by Close.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// openDB opens a DB over a fresh memlog and closes it when the test ends.
func openDB(t testing.TB, opts *flume.Options) *flume.DB {
	t.Helper()
	db, err := flume.Open(memlog.New(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func val(i int64) []byte { return fmt.Appendf(nil, "v%d", i) }

// fill appends n entries val(Since()+1)...; it returns the last seq.
func fill(t testing.TB, db *flume.DB, n int) int64 {
	t.Helper()
	ctx := context.Background()
	last := db.Since()
	for i := 0; i < n; i++ {
		s, err := db.Append(ctx, val(last+1))
		if err != nil {
			t.Fatal(err)
		}
		if s != last+1 {
			t.Fatalf("append returned seq %d, want %d", s, last+1)
		}
		last = s
	}
	return last
}

// collect drains s and returns the seqs it yielded, checking each payload.
func collect(t testing.TB, s *flume.Stream) ([]int64, error) {
	t.Helper()
	defer s.Close()
	var got []int64
	for s.Next() {
		e := s.Entry()
		if want := string(val(e.Seq)); string(e.Data) != want {
			t.Fatalf("entry %d holds %q, want %q", e.Seq, e.Data, want)
		}
		got = append(got, e.Seq)
	}
	return got, s.Err()
}

func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
