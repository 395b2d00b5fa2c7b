package flume_test

import (
	"context"
	"errors"
	"math"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/flume-go/flume"
)

func seqs(from, to int64) []int64 {
	var out []int64
	if from <= to {
		for s := from; s <= to; s++ {
			out = append(out, s)
		}
	} else {
		for s := from; s >= to; s-- {
			out = append(out, s)
		}
	}
	return out
}

// TestStreamOptions checks every option and their combinations on a
// ten-entry log (seqs 0..9) against explicit expectations.
func TestStreamOptions(t *testing.T) {
	at := flume.At
	cases := []struct {
		name    string
		opts    flume.StreamOptions
		want    []int64
		wantErr bool
	}{
		{"all", flume.StreamOptions{}, seqs(0, 9), false},
		{"gt", flume.StreamOptions{Gt: at(3)}, seqs(4, 9), false},
		{"gte", flume.StreamOptions{Gte: at(3)}, seqs(3, 9), false},
		{"lt", flume.StreamOptions{Lt: at(3)}, seqs(0, 2), false},
		{"lte", flume.StreamOptions{Lte: at(3)}, seqs(0, 3), false},
		{"gt lt", flume.StreamOptions{Gt: at(3), Lt: at(7)}, seqs(4, 6), false},
		{"gte lte", flume.StreamOptions{Gte: at(3), Lte: at(7)}, seqs(3, 7), false},
		{"gt and gte: stricter gte", flume.StreamOptions{Gt: at(3), Gte: at(5)}, seqs(5, 9), false},
		{"gt and gte: stricter gt", flume.StreamOptions{Gt: at(5), Gte: at(3)}, seqs(6, 9), false},
		{"lt and lte: stricter lt", flume.StreamOptions{Lt: at(4), Lte: at(6)}, seqs(0, 3), false},
		{"lt and lte: stricter lte", flume.StreamOptions{Lt: at(8), Lte: at(2)}, seqs(0, 2), false},
		{"gt -1 is everything", flume.StreamOptions{Gt: at(-1)}, seqs(0, 9), false},
		{"gte negative", flume.StreamOptions{Gte: at(-5)}, seqs(0, 9), false},
		{"gt last", flume.StreamOptions{Gt: at(9)}, nil, false},
		{"gte past end", flume.StreamOptions{Gte: at(50)}, nil, false},
		{"lt 0", flume.StreamOptions{Lt: at(0)}, nil, false},
		{"lte -1", flume.StreamOptions{Lte: at(-1)}, nil, false},
		{"empty range", flume.StreamOptions{Gt: at(5), Lt: at(6)}, nil, false},
		{"inverted range", flume.StreamOptions{Gte: at(7), Lte: at(3)}, nil, false},
		{"gt maxint", flume.StreamOptions{Gt: at(math.MaxInt64)}, nil, false},
		{"lt minint", flume.StreamOptions{Lt: at(math.MinInt64)}, nil, false},
		{"lte maxint", flume.StreamOptions{Lte: at(math.MaxInt64)}, seqs(0, 9), false},
		{"gte minint", flume.StreamOptions{Gte: at(math.MinInt64)}, seqs(0, 9), false},
		{"reverse", flume.StreamOptions{Reverse: true}, seqs(9, 0), false},
		{"reverse gt lt", flume.StreamOptions{Reverse: true, Gt: at(3), Lt: at(7)}, seqs(6, 4), false},
		{"reverse gte lte", flume.StreamOptions{Reverse: true, Gte: at(3), Lte: at(7)}, seqs(7, 3), false},
		{"reverse lte past end", flume.StreamOptions{Reverse: true, Lte: at(100)}, seqs(9, 0), false},
		{"reverse limit", flume.StreamOptions{Reverse: true, Limit: 3}, seqs(9, 7), false},
		{"reverse range limit", flume.StreamOptions{Reverse: true, Lt: at(6), Limit: 2}, seqs(5, 4), false},
		{"reverse empty", flume.StreamOptions{Reverse: true, Gt: at(9)}, nil, false},
		{"limit", flume.StreamOptions{Limit: 3}, seqs(0, 2), false},
		{"limit gt", flume.StreamOptions{Limit: 3, Gt: at(5)}, seqs(6, 8), false},
		{"limit larger than range", flume.StreamOptions{Limit: 100, Gte: at(8)}, seqs(8, 9), false},
		{"limit 1", flume.StreamOptions{Limit: 1}, seqs(0, 0), false},
		{"skipold without live", flume.StreamOptions{SkipOld: true}, nil, false},
		{"reverse skipold", flume.StreamOptions{Reverse: true, SkipOld: true}, nil, false},
		{"live with lte inside log ends", flume.StreamOptions{Live: true, Lte: at(5)}, seqs(0, 5), false},
		{"live with lt inside log ends", flume.StreamOptions{Live: true, Gt: at(2), Lt: at(5)}, seqs(3, 4), false},
		{"live with limit inside log ends", flume.StreamOptions{Live: true, Limit: 4}, seqs(0, 3), false},
		{"live skipold with lte behind end", flume.StreamOptions{Live: true, SkipOld: true, Lte: at(9)}, nil, false},
		{"reverse live is an error", flume.StreamOptions{Reverse: true, Live: true}, nil, true},
		{"negative limit is an error", flume.StreamOptions{Limit: -1}, nil, true},
	}
	db := openDB(t, nil)
	fill(t, db, 10)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := collect(t, db.Stream(ctxTimeout(t, 5*time.Second), tc.opts))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error: %v", err, tc.wantErr)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestStreamEmptyLog(t *testing.T) {
	db := openDB(t, nil)
	for _, o := range []flume.StreamOptions{{}, {Reverse: true}, {Gt: flume.At(-1)}, {SkipOld: true}} {
		got, err := collect(t, db.Stream(context.Background(), o))
		if err != nil || len(got) != 0 {
			t.Fatalf("%+v: got %v, %v; want nothing", o, got, err)
		}
	}
}

// TestStreamSnapshot: a non-live stream ends where the log ended when it was
// opened, even while appends continue.
func TestStreamSnapshot(t *testing.T) {
	db := openDB(t, nil)
	fill(t, db, 10)
	s := db.Stream(context.Background(), flume.StreamOptions{})
	defer s.Close()
	var got []int64
	for s.Next() {
		got = append(got, s.Entry().Seq)
		fill(t, db, 1)
	}
	if !slices.Equal(got, seqs(0, 9)) || s.Err() != nil {
		t.Fatalf("got %v, %v; want 0..9", got, s.Err())
	}
}

// TestStreamLiveExactlyOnce: a live stream opened before concurrent appends
// sees every entry exactly once, in order, with the right payload.
func TestStreamLiveExactlyOnce(t *testing.T) {
	db := openDB(t, nil)
	fill(t, db, 100)
	const writers, per = 4, 500
	total := int64(100 + writers*per)
	ctx := ctxTimeout(t, 20*time.Second)
	streams := []flume.StreamOptions{{Live: true}, {Live: true, Gt: flume.At(49)}, {Live: true, SkipOld: true}}
	results := make([][]int64, len(streams))
	var rwg sync.WaitGroup
	for i, o := range streams {
		s := db.Stream(ctx, o)
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			defer s.Close()
			for s.Next() {
				e := s.Entry()
				if len(e.Data) == 0 {
					t.Errorf("entry %d empty", e.Seq)
				}
				results[i] = append(results[i], e.Seq)
				if e.Seq == total-1 {
					return
				}
			}
			t.Errorf("stream %d ended early: %v", i, s.Err())
		}()
	}
	var wwg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wwg.Add(1)
		go func() {
			defer wwg.Done()
			for i := 0; i < per; i++ {
				if _, err := db.Append(ctx, []byte("x")); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wwg.Wait()
	rwg.Wait()
	for i, want := range [][]int64{seqs(0, total-1), seqs(50, total-1), seqs(100, total-1)} {
		if !slices.Equal(results[i], want) {
			t.Errorf("stream %d: got %d entries (first %v), want %d in order", i, len(results[i]), results[i][:min(5, len(results[i]))], len(want))
		}
	}
}

func TestStreamSkipOldLive(t *testing.T) {
	db := openDB(t, nil)
	fill(t, db, 5)
	ctx := ctxTimeout(t, 5*time.Second)
	s := db.Stream(ctx, flume.StreamOptions{Live: true, SkipOld: true})
	defer s.Close()
	fill(t, db, 3)
	var got []int64
	for len(got) < 3 && s.Next() {
		got = append(got, s.Entry().Seq)
	}
	if !slices.Equal(got, []int64{5, 6, 7}) {
		t.Fatalf("got %v, want [5 6 7]", got)
	}
	// SkipOld with a lower bound beyond the end starts at the bound.
	s2 := db.Stream(ctx, flume.StreamOptions{Live: true, SkipOld: true, Gte: flume.At(10), Limit: 2})
	fill(t, db, 5)
	got, err := collect(t, s2)
	if err != nil || !slices.Equal(got, []int64{10, 11}) {
		t.Fatalf("got %v, %v; want [10 11]", got, err)
	}
}

// TestStreamLiveBoundsAndLimit: a live stream ends by itself at its upper
// bound or its limit, once the entries arrive.
func TestStreamLiveBoundsAndLimit(t *testing.T) {
	db := openDB(t, nil)
	fill(t, db, 3)
	ctx := ctxTimeout(t, 5*time.Second)
	for _, tc := range []struct {
		o    flume.StreamOptions
		want []int64
	}{
		{flume.StreamOptions{Live: true, Lte: flume.At(6)}, seqs(0, 6)},
		{flume.StreamOptions{Live: true, Gt: flume.At(1), Lt: flume.At(5)}, seqs(2, 4)},
		{flume.StreamOptions{Live: true, Gte: flume.At(2), Limit: 4}, seqs(2, 5)},
	} {
		s := db.Stream(ctx, tc.o)
		var got []int64
		var err error
		done := make(chan struct{})
		go func() { got, err = collect(t, s); close(done) }()
		for db.Since() < 10 {
			fill(t, db, 1)
		}
		<-done
		if err != nil || !slices.Equal(got, tc.want) {
			t.Fatalf("%+v: got %v, %v; want %v", tc.o, got, err, tc.want)
		}
	}
}

func TestStreamLiveEndsWithCtxAndClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := openDB(t, nil)
		fill(t, db, 2)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		s := db.Stream(ctx, flume.StreamOptions{Live: true})
		errc := make(chan error, 1)
		go func() { _, err := collect(t, s); errc <- err }()
		synctest.Wait() // the stream has passed the end and waits for more
		if len(errc) != 0 {
			t.Fatalf("live stream ended before cancel: %v", <-errc)
		}
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}

		s = db.Stream(context.Background(), flume.StreamOptions{Live: true})
		go func() { _, err := collect(t, s); errc <- err }()
		synctest.Wait()
		if len(errc) != 0 {
			t.Fatalf("live stream ended before Close: %v", <-errc)
		}
		db.Close()
		if err := <-errc; !errors.Is(err, flume.ErrClosed) {
			t.Fatalf("err = %v, want ErrClosed", err)
		}
	})
}

// A cancelled context also stops a non-live stream over a long range.
func TestStreamCtxStopsLongRead(t *testing.T) {
	db := openDB(t, nil)
	fill(t, db, 2000)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := db.Stream(ctx, flume.StreamOptions{})
	defer s.Close()
	n := 0
	for s.Next() {
		if n++; n == 10 {
			cancel()
		}
	}
	if !errors.Is(s.Err(), context.Canceled) || n > 10+256 {
		t.Fatalf("read %d entries, err %v; want to stop soon after cancel", n, s.Err())
	}
}

// TestSlowConsumerDoesNotBlockAppends: a live stream that never reads does not
// slow or block writers.
func TestSlowConsumerDoesNotBlockAppends(t *testing.T) {
	db := openDB(t, nil)
	ctx := ctxTimeout(t, 10*time.Second)
	s := db.Stream(ctx, flume.StreamOptions{Live: true})
	defer s.Close()
	if !func() bool { fill(t, db, 1); return s.Next() }() {
		t.Fatal(s.Err())
	}
	done := make(chan struct{})
	go func() { fill(t, db, 5000); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("appends blocked by an idle live stream")
	}
	n := 1
	for n < 5001 && s.Next() {
		n++
	}
	if n != 5001 {
		t.Fatalf("stream read %d entries, want 5001 (%v)", n, s.Err())
	}
}

func TestStreamCloseIsIdempotent(t *testing.T) {
	db := openDB(t, nil)
	fill(t, db, 3)
	s := db.Stream(context.Background(), flume.StreamOptions{})
	if !s.Next() {
		t.Fatal(s.Err())
	}
	s.Close()
	s.Close()
	if s.Next() || s.Err() != nil {
		t.Fatalf("Next after Close = true or err %v", s.Err())
	}
}
