package flume_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/filelog"
	"github.com/flume-go/flume/memlog"
)

// stubLog is a memlog whose iterators behave like a stricter log's, or
// misbehave on purpose, to reach every rule of the Cursor. Its iterators
// copy each payload into one buffer that the next Next overwrites (as
// filelog's may), and it counts the iterators it opens and those not yet
// closed.
type stubLog struct {
	*memlog.Log
	lieSince int64 // when >= 0, Since reports this: a log that ends before it
	snapshot bool  // iterators stop at the log's end when they were opened
	skip     int64 // iterators leave this seq out, -1 for none
	failAt   int64 // iterators fail with failErr at this seq, -1 for none
	failErr  error

	opened, open atomic.Int64
}

func newStubLog() *stubLog { return &stubLog{Log: memlog.New(), lieSince: -1, skip: -1, failAt: -1} }

func (l *stubLog) Since() int64 {
	if l.lieSince >= 0 {
		return l.lieSince
	}
	return l.Log.Since()
}

// errIterLoop is what a stubLog's iterators report once a reader has opened
// an implausible number of them: a cursor re-opening forever fails the test
// rather than hanging it.
var errIterLoop = errors.New("stub log: 1000 iterators opened")

func (l *stubLog) Iter(from int64) flume.Iterator {
	l.open.Add(1)
	if l.opened.Add(1) > 1000 {
		return &stubIter{l: l, in: l.Log.Iter(from), err: errIterLoop}
	}
	end := int64(1<<63 - 1)
	if l.snapshot {
		end = l.Log.Since()
	}
	return &stubIter{l: l, in: l.Log.Iter(from), end: end}
}

type stubIter struct {
	l      *stubLog
	in     flume.Iterator
	end    int64
	buf    []byte
	cur    flume.Entry
	err    error
	closed bool
}

func (it *stubIter) Next() bool {
	if it.err != nil || it.closed {
		return false
	}
	for it.in.Next() {
		e := it.in.Entry()
		if e.Seq > it.end {
			return false
		}
		if e.Seq == it.l.skip {
			continue
		}
		if e.Seq == it.l.failAt {
			it.err = it.l.failErr
			return false
		}
		it.buf = append(it.buf[:0], e.Data...)
		e.Data = it.buf
		it.cur = e
		return true
	}
	it.err = it.in.Err()
	return false
}

func (it *stubIter) Entry() flume.Entry { return it.cur }
func (it *stubIter) Err() error         { return it.err }
func (it *stubIter) Close() error {
	if !it.closed {
		it.closed = true
		it.l.open.Add(-1)
	}
	return it.in.Close()
}

// openOver opens a DB over l and closes it when the test ends.
func openOver(t testing.TB, l flume.Log) *flume.DB {
	t.Helper()
	db, err := flume.Open(l, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// drain reads c until Next returns false and returns the seqs it yielded,
// checking that each payload is val(seq) and each seq is NextSeq-1.
func drain(t testing.TB, c *flume.Cursor) []int64 {
	t.Helper()
	var got []int64
	for c.Next() {
		e := c.Entry()
		if want := string(val(e.Seq)); string(e.Data) != want {
			t.Fatalf("entry %d holds %q, want %q", e.Seq, e.Data, want)
		}
		if c.NextSeq() != e.Seq+1 {
			t.Fatalf("after entry %d NextSeq is %d", e.Seq, c.NextSeq())
		}
		got = append(got, e.Seq)
	}
	return got
}

// upTo is from..to ascending, empty when from > to.
func upTo(from, to int64) []int64 {
	if from > to {
		return nil
	}
	return seqs(from, to)
}

func ready(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// TestCursorReadsOnlyPublished: entries in the log past the DB's published
// since (appended to the log directly) are not yielded until published.
func TestCursorReadsOnlyPublished(t *testing.T) {
	for _, from := range []int64{-5, 0, 2, 3, 5, 9} {
		t.Run(fmt.Sprintf("from=%d", from), func(t *testing.T) {
			db := openDB(t, nil)
			fill(t, db, 3) // 0..2, published
			if _, err := db.Log().Append(val(3), val(4)); err != nil {
				t.Fatal(err)
			}
			c := db.Cursor(from)
			defer c.Close()
			start := max(from, 0)
			if got, want := drain(t, c), upTo(start, 2); !slices.Equal(got, want) || c.Err() != nil {
				t.Fatalf("got %v, %v; want %v, nil", got, c.Err(), want)
			}
			if got, want := c.NextSeq(), max(start, 3); got != want {
				t.Fatalf("NextSeq = %d, want %d", got, want)
			}
			if start <= 3 && ready(c.Changed()) {
				t.Fatal("Changed is ready with nothing new published")
			}
			if s, err := db.Append(context.Background(), val(5)); err != nil || s != 5 {
				t.Fatalf("append = %d, %v", s, err)
			}
			if !ready(c.Changed()) {
				t.Fatal("Changed not ready after a publish")
			}
			if got, want := drain(t, c), upTo(max(start, 3), 5); !slices.Equal(got, want) || c.Err() != nil {
				t.Fatalf("after publish: got %v, %v; want %v, nil", got, c.Err(), want)
			}
		})
	}
}

// TestCursorChanged: Changed is ready exactly when Next may have something
// new, also before the first Next and for a cursor past the end of the log.
func TestCursorChanged(t *testing.T) {
	ctx := context.Background()
	t.Run("nothing published", func(t *testing.T) {
		db := openDB(t, nil)
		c := db.Cursor(0)
		defer c.Close()
		if ready(c.Changed()) {
			t.Fatal("ready on an empty log")
		}
		fill(t, db, 1)
		if !ready(c.Changed()) || next(t, c) != 0 {
			t.Fatal("not ready after a publish")
		}
	})
	t.Run("entries to read", func(t *testing.T) {
		db := openDB(t, nil)
		fill(t, db, 2)
		c := db.Cursor(1)
		defer c.Close()
		if !ready(c.Changed()) || c.Wait(ctx) != nil || next(t, c) != 1 {
			t.Fatal("not ready with entry 1 published")
		}
		if ready(c.Changed()) {
			t.Fatal("ready with everything read")
		}
	})
	t.Run("past the end", func(t *testing.T) {
		db := openDB(t, nil)
		fill(t, db, 2)
		c := db.Cursor(5)
		defer c.Close()
		if ready(c.Changed()) {
			t.Fatal("ready with entry 5 not published")
		}
		fill(t, db, 1)
		if !ready(c.Changed()) || c.Next() || c.Err() != nil {
			t.Fatalf("a publish below 5: ready %v, Next true or err %v", ready(c.Changed()), c.Err())
		}
		if ready(c.Changed()) {
			t.Fatal("ready again with entry 5 not published")
		}
		fill(t, db, 3)
		if !ready(c.Changed()) || next(t, c) != 5 {
			t.Fatal("not ready with entry 5 published")
		}
	})
	t.Run("closed DB", func(t *testing.T) {
		db := openDB(t, nil)
		db.Close()
		c := db.Cursor(0)
		if !ready(c.Changed()) || c.Err() != flume.ErrClosed || c.Wait(ctx) != flume.ErrClosed {
			t.Fatalf("closed DB: ready %v, err %v; want ready and ErrClosed", ready(c.Changed()), c.Err())
		}
	})
}

// TestCursorTails interleaves appends and reads at random over logs whose
// iterators see later appends (memlog) or stop at the end they saw when
// opened (filelog, a snapshotting stub): the cursor yields every entry once,
// in order, and holds no iterator once closed.
func TestCursorTails(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	for _, tc := range []struct {
		name string
		open func(t *testing.T) flume.Log
	}{
		{"memlog", func(*testing.T) flume.Log { return memlog.New() }},
		{"snapshot", func(*testing.T) flume.Log { l := newStubLog(); l.snapshot = true; return l }},
		{"filelog", func(t *testing.T) flume.Log {
			l, err := filelog.Open(t.TempDir(), &filelog.Options{Sync: filelog.SyncNever})
			if err != nil {
				t.Fatal(err)
			}
			return l
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 0))
			l := tc.open(t)
			db := openOver(t, l)
			c := db.Cursor(0)
			var got []int64
			for round := 0; round < 200; round++ {
				fill(t, db, rng.IntN(8))
				for n := rng.IntN(12); n > 0 && c.Next(); n-- {
					e := c.Entry()
					if string(e.Data) != string(val(e.Seq)) {
						t.Fatalf("entry %d holds %q", e.Seq, e.Data)
					}
					got = append(got, e.Seq)
				}
				if err := c.Err(); err != nil {
					t.Fatal(err)
				}
			}
			got = append(got, drain(t, c)...)
			if want := seqs(0, db.Since()); !slices.Equal(got, want) || c.Err() != nil {
				t.Fatalf("got %d entries (%v), want %d in order", len(got), c.Err(), len(want))
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			if s, ok := l.(*stubLog); ok && s.open.Load() != 0 {
				t.Fatalf("%d iterators left open", s.open.Load())
			}
		})
	}
}

// TestCursorIterators: the cursor opens its iterator only when there is a
// published entry to read, keeps it while it yields, and replaces it only
// when it stopped at the end it saw when opened.
func TestCursorIterators(t *testing.T) {
	for _, snapshot := range []bool{false, true} {
		t.Run(fmt.Sprintf("snapshot=%v", snapshot), func(t *testing.T) {
			l := newStubLog()
			l.snapshot = snapshot
			db := openOver(t, l)
			c := db.Cursor(0)
			defer c.Close()
			if c.Next() || c.Err() != nil || l.opened.Load() != 0 {
				t.Fatalf("empty log: Next true or err %v or %d iterators opened", c.Err(), l.opened.Load())
			}
			fill(t, db, 3)
			if got := []int64{next(t, c), next(t, c)}; !slices.Equal(got, []int64{0, 1}) {
				t.Fatalf("got %v, want [0 1]", got)
			}
			fill(t, db, 3)
			if got := drain(t, c); !slices.Equal(got, seqs(2, 5)) || c.Err() != nil {
				t.Fatalf("got %v, %v; want 2..5", got, c.Err())
			}
			// A snapshotting iterator ends at 2 and is replaced at 3; a
			// tailing one (memlog's) serves everything.
			want := int64(1)
			if snapshot {
				want = 2
			}
			if n := l.opened.Load(); n != want {
				t.Fatalf("%d iterators opened, want %d", n, want)
			}
			if n := l.open.Load(); n != 1 {
				t.Fatalf("%d iterators open, want 1", n)
			}
			c.Close()
			if n := l.open.Load(); n != 0 {
				t.Fatalf("%d iterators open after Close, want 0", n)
			}
		})
	}
}

func next(t *testing.T, c *flume.Cursor) int64 {
	t.Helper()
	if !c.Next() {
		t.Fatalf("Next = false (%v)", c.Err())
	}
	return c.Entry().Seq
}

// TestCursorErrors: a log that lies is reported, with the seq, after the
// good entries before the lie; the error is sticky and the iterator is
// released.
func TestCursorErrors(t *testing.T) {
	errBoom := errors.New("boom")
	cases := []struct {
		name    string
		setup   func(l *stubLog)
		from    int64
		want    []int64
		wantIs  error
		wantMsg string
	}{
		{"log ends before its published since",
			func(l *stubLog) { l.lieSince = 7 }, 0, seqs(0, 4), flume.ErrCorrupt, "log ends before published seq 5"},
		{"fresh iterator finds nothing at a published seq",
			func(l *stubLog) { l.lieSince = 7 }, 6, nil, flume.ErrCorrupt, "log ends before published seq 6"},
		{"snapshot iterator, then nothing at a published seq",
			func(l *stubLog) { l.lieSince, l.snapshot = 7, true }, 1, seqs(1, 4), flume.ErrCorrupt, "log ends before published seq 5"},
		{"log returns another seq",
			func(l *stubLog) { l.skip = 2 }, 0, seqs(0, 1), flume.ErrCorrupt, "log returned seq 3, expected 2"},
		{"log read error",
			func(l *stubLog) { l.failAt, l.failErr = 3, errBoom }, 0, seqs(0, 2), errBoom, "read log at seq 3: boom"},
		{"log closed under the cursor",
			func(l *stubLog) { l.failAt, l.failErr = 1, flume.ErrClosed }, 0, seqs(0, 0), flume.ErrClosed, "flume: closed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := newStubLog()
			if _, err := l.Append(val(0), val(1), val(2), val(3), val(4)); err != nil {
				t.Fatal(err)
			}
			tc.setup(l)
			db := openOver(t, l)
			c := db.Cursor(tc.from)
			defer c.Close()
			got := drain(t, c)
			err := c.Err()
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			if !errors.Is(err, tc.wantIs) || !strings.Contains(fmt.Sprint(err), tc.wantMsg) {
				t.Fatalf("err = %v, want %v containing %q", err, tc.wantIs, tc.wantMsg)
			}
			if tc.wantIs == flume.ErrClosed && err != flume.ErrClosed {
				t.Fatalf("err = %#v, want ErrClosed itself", err)
			}
			if c.Next() || c.Err() != err || c.Wait(context.Background()) != err || !ready(c.Changed()) {
				t.Fatalf("after the error: Next true or Err/Wait changed or Changed not ready (%v)", c.Err())
			}
			if n := l.open.Load(); n != 0 {
				t.Fatalf("%d iterators open after the error, want 0", n)
			}
		})
	}
}

// TestCursorClosed: a cursor ends with ErrClosed when the DB closes (also
// one that is waiting) or when it is closed itself.
func TestCursorClosed(t *testing.T) {
	t.Run("closed DB", func(t *testing.T) {
		l := newStubLog()
		db := openOver(t, l)
		fill(t, db, 3)
		db.Close()
		c := db.Cursor(0)
		if c.Next() || c.Err() != flume.ErrClosed || l.opened.Load() != 0 {
			t.Fatalf("Next on a closed DB: err %v, %d iterators opened; want ErrClosed, 0", c.Err(), l.opened.Load())
		}
	})
	t.Run("DB closes while waiting", func(t *testing.T) {
		db := openDB(t, nil)
		fill(t, db, 3)
		c := db.Cursor(0)
		defer c.Close()
		if got := drain(t, c); len(got) != 3 || c.Err() != nil {
			t.Fatalf("got %v, %v", got, c.Err())
		}
		errc := make(chan error, 1)
		go func() { errc <- c.Wait(context.Background()) }()
		time.Sleep(10 * time.Millisecond)
		db.Close()
		if err := <-errc; err != nil {
			t.Fatalf("Wait = %v, want nil (Next reports the close)", err)
		}
		if c.Next() || c.Err() != flume.ErrClosed {
			t.Fatalf("Next after DB Close: err %v, want ErrClosed", c.Err())
		}
	})
	t.Run("Wait ends with ctx", func(t *testing.T) {
		db := openDB(t, nil)
		c := db.Cursor(0)
		defer c.Close()
		if c.Next() {
			t.Fatal("Next on an empty log")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
		defer cancel()
		if err := c.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Wait = %v, want DeadlineExceeded", err)
		}
	})
	t.Run("cursor Close", func(t *testing.T) {
		l := newStubLog()
		db := openOver(t, l)
		fill(t, db, 3)
		c := db.Cursor(0)
		next(t, c)
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		if err := c.Close(); err != nil {
			t.Fatalf("second Close = %v", err)
		}
		if c.Next() || c.Err() != flume.ErrClosed || l.open.Load() != 0 {
			t.Fatalf("after Close: err %v, %d iterators open; want ErrClosed, 0", c.Err(), l.open.Load())
		}
	})
}

// TestCursorWaitsForAppends: a cursor tailing concurrent writers with Wait
// sees every entry exactly once, in order.
func TestCursorWaitsForAppends(t *testing.T) {
	db := openDB(t, nil)
	const writers, per = 4, 300
	ctx := ctxTimeout(t, 20*time.Second)
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				if _, err := db.Append(ctx, []byte("x")); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	defer wg.Wait() // before the DB's cleanup closes it
	c := db.Cursor(0)
	defer c.Close()
	var got []int64
	for {
		for c.Next() {
			got = append(got, c.Entry().Seq)
		}
		if len(got) == writers*per {
			break
		}
		if err := c.Wait(ctx); err != nil {
			t.Fatalf("after %d entries: %v", len(got), err)
		}
	}
	if !slices.Equal(got, seqs(0, writers*per-1)) {
		t.Fatalf("got %d entries, not 0..%d in order", len(got), writers*per-1)
	}
}

// TestCursorBatch: batches stop at maxEntries or once their payloads reach
// maxBytes (a larger entry comes alone), and every payload stays intact
// through the batch although the log's iterator reuses its buffer.
func TestCursorBatch(t *testing.T) {
	tens := slices.Repeat([]int{10}, 10)
	cases := []struct {
		name       string
		sizes      []int
		maxEntries int
		maxBytes   int
		want       []int // batch lengths
	}{
		{"by entries", tens, 4, 1 << 20, []int{4, 4, 2}},
		{"by bytes", tens, 100, 25, []int{3, 3, 3, 1}},
		{"bytes reached exactly", tens, 100, 30, []int{3, 3, 3, 1}},
		{"bytes just above", tens, 100, 31, []int{4, 4, 2}},
		{"both", tens, 2, 15, []int{2, 2, 2, 2, 2}},
		{"limits below 1 mean 1", tens, 0, 0, slices.Repeat([]int{1}, 10)},
		{"huge entry", []int{5, 100, 5, 5, 300}, 10, 50, []int{2, 3}},
		{"huge entry first", []int{300, 5, 5}, 10, 50, []int{1, 2}},
		{"empty payloads", []int{0, 0, 0}, 10, 1, []int{3}},
	}
	payload := func(seq int64, size int) []byte { return bytes.Repeat([]byte{'a' + byte(seq%26)}, size) }
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := newStubLog()
			db := openOver(t, l)
			for i, n := range tc.sizes {
				if _, err := db.Append(context.Background(), payload(int64(i), n)); err != nil {
					t.Fatal(err)
				}
			}
			c := db.Cursor(0)
			defer c.Close()
			var got []int
			next := int64(0)
			for {
				b := c.Batch(tc.maxEntries, tc.maxBytes)
				if len(b) == 0 {
					break
				}
				got = append(got, len(b))
				for _, e := range b {
					if e.Seq != next || !bytes.Equal(e.Data, payload(e.Seq, tc.sizes[e.Seq])) {
						t.Fatalf("batch %d: entry seq %d (want %d) holds %q", len(got), e.Seq, next, e.Data)
					}
					next++
				}
			}
			if !slices.Equal(got, tc.want) || c.Err() != nil {
				t.Fatalf("batches %v, %v; want %v, nil", got, c.Err(), tc.want)
			}
		})
	}
}

// TestCursorBatchThenError: the entries read before an error come in the
// batch, the error with them; the next batch is empty.
func TestCursorBatchThenError(t *testing.T) {
	l := newStubLog()
	l.skip = 5
	db := openOver(t, l)
	fill(t, db, 8)
	c := db.Cursor(0)
	defer c.Close()
	b := c.Batch(100, 1<<20)
	var got []int64
	for _, e := range b {
		got = append(got, e.Seq)
	}
	if !slices.Equal(got, seqs(0, 4)) || !errors.Is(c.Err(), flume.ErrCorrupt) {
		t.Fatalf("batch %v, err %v; want 0..4 and ErrCorrupt", got, c.Err())
	}
	if b := c.Batch(100, 1<<20); len(b) != 0 {
		t.Fatalf("batch after the error has %d entries", len(b))
	}
}

// TestCursorDoesNotAllocate: reading, batching and finding nothing new cost
// no allocation once the cursor's iterator and buffers exist.
func TestCursorDoesNotAllocate(t *testing.T) {
	db := openDB(t, nil)
	fill(t, db, 20000)
	c := db.Cursor(0)
	defer c.Close()
	next(t, c) // opens the iterator
	if n := testing.AllocsPerRun(1000, func() {
		if !c.Next() {
			t.Fatal(c.Err())
		}
	}); n != 0 {
		t.Errorf("Next: %v allocs per entry, want 0", n)
	}
	c.Batch(256, 1<<20) // sizes the buffers
	if n := testing.AllocsPerRun(20, func() {
		if len(c.Batch(256, 1<<20)) != 256 {
			t.Fatal(c.Err())
		}
	}); n != 0 {
		t.Errorf("Batch: %v allocs per batch, want 0", n)
	}
	drain(t, c)
	if n := testing.AllocsPerRun(100, func() {
		if c.Next() {
			t.Fatal("Next true at the end")
		}
	}); n != 0 {
		t.Errorf("Next at the end: %v allocs, want 0", n)
	}
}

// TestStreamAndViewWrapCursorErrors: the cursor's errors reach stream and
// view readers with their prefixes and identity.
func TestStreamAndViewWrapCursorErrors(t *testing.T) {
	l := newStubLog()
	if _, err := l.Append(val(0), val(1)); err != nil {
		t.Fatal(err)
	}
	l.lieSince = 4
	db := openOver(t, l)
	_, err := collect(t, db.Stream(context.Background(), flume.StreamOptions{}))
	if !errors.Is(err, flume.ErrCorrupt) || !strings.HasPrefix(fmt.Sprint(err), "flume: stream: ") ||
		!strings.Contains(fmt.Sprint(err), "published seq 2") {
		t.Fatalf("stream err = %v, want a flume: stream: ErrCorrupt at seq 2", err)
	}
	v := newTestView()
	if err := db.Use("v", v); err != nil {
		t.Fatal(err)
	}
	err = v.host.Sync(ctxTimeout(t, 5*time.Second))
	if !errors.Is(err, flume.ErrCorrupt) || !strings.HasPrefix(fmt.Sprint(err), `flume: view "v": `) || v.Since() != 1 {
		t.Fatalf("view err = %v at since %d, want a flume: view \"v\": ErrCorrupt after seq 1", err, v.Since())
	}
}

func ExampleDB_Cursor() {
	ctx := context.Background()
	db, _ := flume.Open(memlog.New(), nil)
	defer db.Close()
	db.Append(ctx, []byte("a"))
	db.Append(ctx, []byte("b"))

	c := db.Cursor(0)
	defer c.Close()
	go db.Append(ctx, []byte("c")) // published while the cursor reads or waits
	for n := 0; n < 3; n++ {
		// Next never blocks: when it has read everything published, wait
		// (here with Wait; a select on c.Changed() works too) and retry.
		for !c.Next() {
			if err := c.Wait(ctx); err != nil {
				panic(err) // the cursor stopped: c.Err()
			}
		}
		fmt.Println(c.Entry().Seq, string(c.Entry().Data))
	}
	// Output:
	// 0 a
	// 1 b
	// 2 c
}
