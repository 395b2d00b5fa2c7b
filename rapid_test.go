package flume_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"pgregory.net/rapid"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/memlog"
)

// dbModel is the specification of a DB: a slice of payloads.
type dbModel struct {
	db      *flume.DB
	entries [][]byte
}

// modelStream is what a non-live stream with o must yield from m.
func (m *dbModel) stream(o flume.StreamOptions) []int64 {
	var out []int64
	for s := int64(0); s < int64(len(m.entries)); s++ {
		if (o.Gt == nil || s > *o.Gt) && (o.Gte == nil || s >= *o.Gte) &&
			(o.Lt == nil || s < *o.Lt) && (o.Lte == nil || s <= *o.Lte) {
			out = append(out, s)
		}
	}
	if o.SkipOld {
		out = nil
	}
	if o.Reverse {
		slices.Reverse(out)
	}
	if o.Limit > 0 && len(out) > o.Limit {
		out = out[:o.Limit]
	}
	return out
}

func optBound(t *rapid.T, name string) *int64 {
	if rapid.Bool().Draw(t, name+"?") {
		return flume.At(rapid.Int64Range(-3, 40).Draw(t, name))
	}
	return nil
}

// TestDBStateMachine drives a DB with random appends, batches, gets and
// streams and compares every answer with dbModel.
func TestDBStateMachine(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		db, err := flume.Open(memlog.New(), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		m := &dbModel{db: db}
		ctx := context.Background()
		v := newTestView()
		if err := db.Use("v", v); err != nil {
			t.Fatal(err)
		}
		payload := rapid.SliceOfN(rapid.Byte(), 0, 16)
		t.Repeat(map[string]func(*rapid.T){
			"append": func(t *rapid.T) {
				p := payload.Draw(t, "p")
				s, err := db.Append(ctx, p)
				if err != nil || s != int64(len(m.entries)) {
					t.Fatalf("Append = %d, %v; want %d", s, err, len(m.entries))
				}
				m.entries = append(m.entries, p)
			},
			"batch": func(t *rapid.T) {
				ps := rapid.SliceOfN(payload, 0, 6).Draw(t, "ps")
				first, last, err := db.AppendBatch(ctx, ps)
				n := int64(len(m.entries))
				if err != nil || first != n || last != n+int64(len(ps))-1 {
					t.Fatalf("AppendBatch(%d) = %d, %d, %v; want %d, %d", len(ps), first, last, err, n, n+int64(len(ps))-1)
				}
				m.entries = append(m.entries, ps...)
			},
			"get": func(t *rapid.T) {
				s := rapid.Int64Range(-2, int64(len(m.entries))+2).Draw(t, "seq")
				b, err := db.Get(ctx, s)
				if s < 0 || s >= int64(len(m.entries)) {
					if !errors.Is(err, flume.ErrNotFound) {
						t.Fatalf("Get(%d) = %v, want ErrNotFound", s, err)
					}
					return
				}
				if err != nil || string(b) != string(m.entries[s]) {
					t.Fatalf("Get(%d) = %q, %v; want %q", s, b, err, m.entries[s])
				}
			},
			"stream": func(t *rapid.T) {
				o := flume.StreamOptions{
					Gt: optBound(t, "gt"), Gte: optBound(t, "gte"), Lt: optBound(t, "lt"), Lte: optBound(t, "lte"),
					Reverse: rapid.Bool().Draw(t, "reverse"),
					Limit:   rapid.IntRange(0, 5).Draw(t, "limit"),
					SkipOld: rapid.IntRange(0, 9).Draw(t, "skipold") == 0,
				}
				s := db.Stream(ctx, o)
				defer s.Close()
				var got []int64
				for s.Next() {
					e := s.Entry()
					if string(e.Data) != string(m.entries[e.Seq]) {
						t.Fatalf("stream entry %d = %q, want %q", e.Seq, e.Data, m.entries[e.Seq])
					}
					got = append(got, e.Seq)
				}
				if s.Err() != nil {
					t.Fatal(s.Err())
				}
				if want := m.stream(o); !slices.Equal(got, want) {
					t.Fatalf("stream %+v: got %v, want %v", o, got, want)
				}
			},
			"view": func(t *rapid.T) {
				if err := v.host.Sync(ctx); err != nil {
					t.Fatal(err)
				}
				if n := v.count(); n != int64(len(m.entries)) {
					t.Fatalf("view applied %d entries after Sync, want %d", n, len(m.entries))
				}
			},
			"live": func(t *rapid.T) {
				// A live stream from gt yields the old entries, then one
				// appended after it was opened, then waits.
				gt := rapid.Int64Range(-1, int64(len(m.entries))).Draw(t, "gt")
				s := db.Stream(ctx, flume.StreamOptions{Gt: &gt, Live: true})
				defer s.Close()
				p := payload.Draw(t, "p")
				seq, err := db.Append(ctx, p)
				if err != nil {
					t.Fatal(err)
				}
				m.entries = append(m.entries, p)
				for want := max(gt+1, 0); want <= seq; want++ {
					if !s.Next() {
						t.Fatalf("live stream ended before %d: %v", want, s.Err())
					}
					if e := s.Entry(); e.Seq != want || string(e.Data) != string(m.entries[want]) {
						t.Fatalf("live stream yielded %d %q, want %d %q", e.Seq, e.Data, want, m.entries[want])
					}
				}
			},
			"": func(t *rapid.T) {
				if s := db.Since(); s != int64(len(m.entries))-1 {
					t.Fatalf("Since = %d, want %d", s, len(m.entries)-1)
				}
				if err := db.WaitSince(ctx, int64(len(m.entries))-1); err != nil {
					t.Fatal(err)
				}
			},
		})
	})
}
