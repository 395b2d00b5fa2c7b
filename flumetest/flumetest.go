// Package flumetest is the conformance suite every flume.Log passes, plus
// benchmark bodies shared by memlog and filelog. TestLog's Epochs group
// (and TestDurableLog's EpochsSurviveReopen) also test flume.EpochLog and
// flume.TruncatableLog, for the logs that implement them.
//
//	func TestConformance(t *testing.T) {
//		flumetest.TestLog(t, func(t *testing.T) flume.Log { return memlog.New() })
//	}
package flumetest

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/flume-go/flume"
)

// TestLog runs the conformance suite. open returns a new, empty log; the
// suite closes it. The Epochs group tests flume.EpochLog and
// flume.TruncatableLog for a log that implements them (and skips
// otherwise).
func TestLog(t *testing.T, open func(t *testing.T) flume.Log) {
	t.Run("Empty", func(t *testing.T) { testEmpty(t, open(t)) })
	t.Run("AppendGet", func(t *testing.T) { testAppendGet(t, open(t)) })
	t.Run("BatchAtomicSeqs", func(t *testing.T) { testBatch(t, open(t)) })
	t.Run("HeadMatchesChain", func(t *testing.T) { testHead(t, open(t)) })
	t.Run("Iter", func(t *testing.T) { testIter(t, open(t)) })
	t.Run("IterManySegments", func(t *testing.T) { testIterMany(t, open(t)) })
	t.Run("AppendEntries", func(t *testing.T) { testAppendEntries(t, open(t)) })
	t.Run("SetID", func(t *testing.T) { testSetID(t, open(t)) })
	t.Run("Epoch", func(t *testing.T) { testEpoch(t, open(t)) })
	t.Run("Copies", func(t *testing.T) { testCopies(t, open(t)) })
	t.Run("EntrySizes", func(t *testing.T) { testSizes(t, open(t)) })
	t.Run("Closed", func(t *testing.T) { testClosed(t, open(t)) })
	t.Run("ConcurrentAppendIterate", func(t *testing.T) { testConcurrent(t, open(t)) })
	t.Run("Epochs", func(t *testing.T) { testEpochs(t, open) })
}

// Payload returns the test payload of entry i: "entry-<i>" padded to size
// bytes (at least the name).
func Payload(i int64, size int) []byte {
	b := fmt.Appendf(nil, "entry-%d", i)
	for len(b) < size {
		b = append(b, byte('a'+i%26))
	}
	return b
}

// CheckLog reads the whole log and checks that entry i holds want(i) (when
// want is not nil), that the seqs are dense, that the chain recomputed from
// GenesisHash(ID) matches every stored hash and Head, and that Get agrees
// with Iter.
func CheckLog(t testing.TB, l flume.Log, want func(i int64) []byte) {
	t.Helper()
	since, head := l.Head()
	h := flume.GenesisHash(l.ID())
	it := l.Iter(0)
	defer it.Close()
	n := int64(0)
	for it.Next() && n <= since {
		e := it.Entry()
		if e.Seq != n {
			t.Fatalf("iter: got seq %d, want %d", e.Seq, n)
		}
		h = flume.ChainHash(h, e.Seq, e.Epoch, e.Data)
		if h != e.Hash {
			t.Fatalf("entry %d: stored hash %s, recomputed %s", n, e.Hash.Short(), h.Short())
		}
		if want != nil && !bytes.Equal(e.Data, want(n)) {
			t.Fatalf("entry %d: got %q, want %q", n, trunc(e.Data), trunc(want(n)))
		}
		if n%97 == 0 || n == since {
			g, err := l.Entry(n)
			if err != nil {
				t.Fatalf("Entry(%d): %v", n, err)
			}
			if g.Seq != n || g.Hash != e.Hash || g.Epoch != e.Epoch || !bytes.Equal(g.Data, e.Data) {
				t.Fatalf("Entry(%d) = %+v disagrees with Iter %+v", n, g, e)
			}
		}
		n++
	}
	if err := it.Err(); err != nil {
		t.Fatalf("iter: %v", err)
	}
	if n != since+1 {
		t.Fatalf("iter yielded %d entries, Since is %d", n, since)
	}
	if h != head {
		t.Fatalf("Head hash %s, recomputed %s", head.Short(), h.Short())
	}
}

func trunc(b []byte) []byte {
	if len(b) > 40 {
		return b[:40]
	}
	return b
}

func mustAppend(t testing.TB, l flume.Log, data ...[]byte) int64 {
	t.Helper()
	s, err := l.Append(data...)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	return s
}

func closeLog(t testing.TB, l flume.Log) {
	t.Helper()
	if err := l.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

func testEmpty(t *testing.T, l flume.Log) {
	defer closeLog(t, l)
	if s := l.Since(); s != -1 {
		t.Fatalf("Since = %d, want -1", s)
	}
	s, h := l.Head()
	if s != -1 || h != flume.GenesisHash(l.ID()) {
		t.Fatalf("Head = %d %s, want -1 genesis", s, h.Short())
	}
	if l.ID().IsZero() {
		t.Fatal("new log has a zero ID")
	}
	if _, err := l.Get(0); !errors.Is(err, flume.ErrNotFound) {
		t.Fatalf("Get(0) on empty: %v, want ErrNotFound", err)
	}
	it := l.Iter(0)
	if it.Next() || it.Err() != nil {
		t.Fatalf("Iter on empty: next true or err %v", it.Err())
	}
	it.Close()
	if s, err := l.Append(); err != nil || s != -1 {
		t.Fatalf("Append() = %d, %v; want -1, nil", s, err)
	}
	if err := l.Sync(); err != nil {
		t.Fatalf("Sync: %v", err)
	}
}

func testAppendGet(t *testing.T, l flume.Log) {
	defer closeLog(t, l)
	for i := int64(0); i < 10; i++ {
		if s := mustAppend(t, l, Payload(i, 0)); s != i {
			t.Fatalf("Append returned %d, want %d", s, i)
		}
		if s := l.Since(); s != i {
			t.Fatalf("Since = %d, want %d", s, i)
		}
	}
	for i := int64(0); i < 10; i++ {
		d, err := l.Get(i)
		if err != nil || !bytes.Equal(d, Payload(i, 0)) {
			t.Fatalf("Get(%d) = %q, %v", i, d, err)
		}
	}
	for _, s := range []int64{-1, 10, 1 << 40} {
		if _, err := l.Get(s); !errors.Is(err, flume.ErrNotFound) {
			t.Fatalf("Get(%d): %v, want ErrNotFound", s, err)
		}
		if _, err := l.Entry(s); !errors.Is(err, flume.ErrNotFound) {
			t.Fatalf("Entry(%d): %v, want ErrNotFound", s, err)
		}
	}
	CheckLog(t, l, func(i int64) []byte { return Payload(i, 0) })
}

func testBatch(t *testing.T, l flume.Log) {
	defer closeLog(t, l)
	if s := mustAppend(t, l, []byte("a"), []byte("b"), []byte("c")); s != 2 {
		t.Fatalf("batch of 3 returned %d, want 2", s)
	}
	// Concurrent batches get contiguous seqs each.
	const writers, batches, size = 4, 20, 5
	var wg sync.WaitGroup
	lasts := make([][]int64, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := 0; b < batches; b++ {
				var data [][]byte
				for k := 0; k < size; k++ {
					data = append(data, fmt.Appendf(nil, "w%d-b%d-k%d", w, b, k))
				}
				s, err := l.Append(data...)
				if err != nil {
					t.Errorf("Append: %v", err)
					return
				}
				lasts[w] = append(lasts[w], s)
			}
		}()
	}
	wg.Wait()
	for w := range lasts {
		for b, last := range lasts[w] {
			for k := 0; k < size; k++ {
				seq := last - size + 1 + int64(k)
				d, err := l.Get(seq)
				if want := fmt.Sprintf("w%d-b%d-k%d", w, b, k); err != nil || string(d) != want {
					t.Fatalf("Get(%d) = %q, %v; want %q", seq, d, err, want)
				}
			}
		}
	}
	if s := l.Since(); s != 2+writers*batches*size {
		t.Fatalf("Since = %d, want %d", s, 2+writers*batches*size)
	}
	CheckLog(t, l, nil)
}

func testHead(t *testing.T, l flume.Log) {
	defer closeLog(t, l)
	h := flume.GenesisHash(l.ID())
	for i := int64(0); i < 50; i++ {
		d := Payload(i, int(i*7%300))
		mustAppend(t, l, d)
		h = flume.ChainHash(h, i, l.Epoch(), d)
		s, hh := l.Head()
		if s != i || hh != h {
			t.Fatalf("Head = %d %s, want %d %s", s, hh.Short(), i, h.Short())
		}
		e, err := l.Entry(i)
		if err != nil || e.Hash != h || e.Seq != i {
			t.Fatalf("Entry(%d) = %+v, %v", i, e, err)
		}
	}
}

func testIter(t *testing.T, l flume.Log) {
	defer closeLog(t, l)
	for i := int64(0); i < 100; i++ {
		mustAppend(t, l, Payload(i, 10))
	}
	for _, from := range []int64{-5, 0, 1, 50, 99, 100, 150} {
		it := l.Iter(from)
		want := max(from, 0)
		for it.Next() {
			e := it.Entry()
			if e.Seq != want || !bytes.Equal(e.Data, Payload(want, 10)) {
				t.Fatalf("Iter(%d): got seq %d %q, want %d", from, e.Seq, e.Data, want)
			}
			want++
		}
		if it.Err() != nil {
			t.Fatalf("Iter(%d): %v", from, it.Err())
		}
		if from <= 100 && want != 100 {
			t.Fatalf("Iter(%d) stopped at %d, want 100", from, want)
		}
		it.Close()
	}
	// An iterator at the end sees entries appended later.
	it := l.Iter(100)
	defer it.Close()
	if it.Next() {
		t.Fatal("Iter(100) yielded before the append")
	}
	mustAppend(t, l, Payload(100, 10))
	if !it.Next() || it.Entry().Seq != 100 {
		t.Fatalf("Iter(100) did not see the new entry (err %v)", it.Err())
	}
}

func testIterMany(t *testing.T, l flume.Log) {
	defer closeLog(t, l)
	// Enough data to cross several segments of a small-segment filelog.
	const n = 3000
	var batch [][]byte
	for i := int64(0); i < n; i++ {
		batch = append(batch, Payload(i, 100))
		if len(batch) == 7 || i == n-1 {
			mustAppend(t, l, batch...)
			batch = batch[:0]
		}
	}
	CheckLog(t, l, func(i int64) []byte { return Payload(i, 100) })
	for _, from := range []int64{1, 999, 1500, 2999} {
		it := l.Iter(from)
		want := from
		for it.Next() {
			if it.Entry().Seq != want {
				t.Fatalf("Iter(%d): got %d, want %d", from, it.Entry().Seq, want)
			}
			want++
		}
		if it.Err() != nil || want != n {
			t.Fatalf("Iter(%d): ended at %d, err %v", from, want, it.Err())
		}
		it.Close()
	}
	for i := int64(0); i < n; i += 37 {
		d, err := l.Get(i)
		if err != nil || !bytes.Equal(d, Payload(i, 100)) {
			t.Fatalf("Get(%d): %v", i, err)
		}
	}
}

// entriesFor builds n entries continuing l's head with the given epoch.
func entriesFor(l flume.Log, n int, epoch uint64) []flume.Entry {
	since, h := l.Head()
	var es []flume.Entry
	for i := 0; i < n; i++ {
		since++
		d := Payload(since, 20)
		h = flume.ChainHash(h, since, epoch, d)
		es = append(es, flume.Entry{Seq: since, Epoch: epoch, Hash: h, Data: d})
	}
	return es
}

func testAppendEntries(t *testing.T, l flume.Log) {
	defer closeLog(t, l)
	es := entriesFor(l, 5, 7)
	if err := l.AppendEntries(es); err != nil {
		t.Fatalf("AppendEntries: %v", err)
	}
	for _, e := range es {
		g, err := l.Entry(e.Seq)
		if err != nil || g.Hash != e.Hash || g.Epoch != 7 || !bytes.Equal(g.Data, e.Data) {
			t.Fatalf("Entry(%d) = %+v, %v", e.Seq, g, err)
		}
	}
	unchanged := func(what string, err, want error) {
		t.Helper()
		s0, h0 := l.Head()
		if !errors.Is(err, want) {
			t.Fatalf("%s: %v, want %v", what, err, want)
		}
		if s, h := l.Head(); s != s0 || h != h0 {
			t.Fatalf("%s changed the log", what)
		}
	}
	s0, h0 := l.Head()
	next := entriesFor(l, 3, 7)
	unchanged("gap", l.AppendEntries(next[1:]), flume.ErrOutOfOrder)
	unchanged("duplicate", l.AppendEntries(es[4:]), flume.ErrOutOfOrder)
	bad := append([]flume.Entry(nil), next...)
	bad[2].Hash[0] ^= 1
	unchanged("bad hash at the end of a batch", l.AppendEntries(bad), flume.ErrDiverged)
	bad = append([]flume.Entry(nil), next...)
	bad[1].Data = []byte("other")
	unchanged("bad data in the middle", l.AppendEntries(bad), flume.ErrDiverged)
	if s, h := l.Head(); s != s0 || h != h0 || l.Since() != 4 {
		t.Fatalf("log changed by refused batches: since %d", s)
	}
	if err := l.AppendEntries(next); err != nil {
		t.Fatalf("AppendEntries after refusals: %v", err)
	}
	if s := mustAppend(t, l, []byte("after")); s != 8 {
		t.Fatalf("Append after AppendEntries = %d, want 8", s)
	}
	CheckLog(t, l, nil)
}

func testSetID(t *testing.T, l flume.Log) {
	defer closeLog(t, l)
	id := flume.NewLogID()
	if err := l.SetID(id); err != nil {
		t.Fatalf("SetID on empty: %v", err)
	}
	if l.ID() != id {
		t.Fatal("ID not changed")
	}
	if _, h := l.Head(); h != flume.GenesisHash(id) {
		t.Fatal("Head hash is not the new genesis")
	}
	mustAppend(t, l, []byte("x"))
	if err := l.SetID(flume.NewLogID()); !errors.Is(err, flume.ErrNotEmpty) {
		t.Fatalf("SetID on non-empty: %v, want ErrNotEmpty", err)
	}
	if err := l.SetID(id); err != nil {
		t.Fatalf("SetID with the same ID: %v", err)
	}
	CheckLog(t, l, nil)
}

func testEpoch(t *testing.T, l flume.Log) {
	defer closeLog(t, l)
	mustAppend(t, l, []byte("e0"))
	if err := l.SetEpoch(3); err != nil {
		t.Fatalf("SetEpoch: %v", err)
	}
	if l.Epoch() != 3 {
		t.Fatalf("Epoch = %d, want 3", l.Epoch())
	}
	mustAppend(t, l, []byte("e3"))
	if err := l.SetEpoch(2); err == nil {
		t.Fatal("SetEpoch lower: no error")
	}
	for seq, want := range []uint64{0, 3} {
		e, err := l.Entry(int64(seq))
		if err != nil || e.Epoch != want {
			t.Fatalf("Entry(%d).Epoch = %d, %v; want %d", seq, e.Epoch, err, want)
		}
	}
	CheckLog(t, l, nil)
}

func testCopies(t *testing.T, l flume.Log) {
	defer closeLog(t, l)
	d := []byte("original")
	mustAppend(t, l, d)
	copy(d, "XXXXXXXX")
	g, _ := l.Get(0)
	if string(g) != "original" {
		t.Fatalf("log retained the caller's slice: %q", g)
	}
	g[0] = 'Y'
	if g2, _ := l.Get(0); string(g2) != "original" {
		t.Fatalf("Get returned the log's storage: %q", g2)
	}
}

func testSizes(t *testing.T, l flume.Log) {
	defer closeLog(t, l)
	sizes := []int{0, 1, 511, 512, 513, 4096, 300 << 10}
	for i, n := range sizes {
		mustAppend(t, l, Payload(int64(i), n))
	}
	for i, n := range sizes {
		d, err := l.Get(int64(i))
		if err != nil || !bytes.Equal(d, Payload(int64(i), n)) {
			t.Fatalf("Get(%d) of %d bytes: %v", i, n, err)
		}
	}
	if _, err := l.Append(make([]byte, flume.MaxEntrySize+1)); err == nil {
		t.Fatal("oversized entry accepted")
	}
	if s := l.Since(); s != int64(len(sizes)-1) {
		t.Fatalf("Since = %d after a refused append", s)
	}
	CheckLog(t, l, func(i int64) []byte { return Payload(i, sizes[i]) })
}

func testClosed(t *testing.T, l flume.Log) {
	mustAppend(t, l, []byte("x"))
	it := l.Iter(0)
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, flume.ErrClosed) {
			t.Fatalf("%s after Close: %v, want ErrClosed", what, err)
		}
	}
	_, err := l.Append([]byte("y"))
	check("Append", err)
	_, err = l.Get(0)
	check("Get", err)
	_, err = l.Entry(0)
	check("Entry", err)
	check("AppendEntries", l.AppendEntries(entriesFor(l, 1, 0)))
	check("SetID", l.SetID(flume.NewLogID()))
	check("SetEpoch", l.SetEpoch(9))
	check("Sync", l.Sync())
	if it.Next() {
		t.Fatal("iterator yielded after Close")
	}
	check("Iter", it.Err())
	it2 := l.Iter(0)
	if it2.Next() {
		t.Fatal("new iterator yielded after Close")
	}
	check("new Iter", it2.Err())
}

func testConcurrent(t *testing.T, l flume.Log) {
	defer closeLog(t, l)
	const writers, per = 4, 300
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				if _, err := l.Append(fmt.Appendf(nil, "w%d-%d", w, i)); err != nil {
					t.Errorf("Append: %v", err)
					return
				}
			}
		}()
	}
	var rg sync.WaitGroup
	for r := 0; r < 2; r++ {
		rg.Add(1)
		go func() {
			defer rg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				since := l.Since()
				it := l.Iter(0)
				n := int64(0)
				for it.Next() {
					if e := it.Entry(); e.Seq != n {
						t.Errorf("iter: got %d, want %d", e.Seq, n)
					}
					n++
				}
				if it.Err() != nil {
					t.Errorf("iter: %v", it.Err())
				}
				if n < since+1 {
					t.Errorf("iter saw %d entries, Since was %d before", n, since)
				}
				it.Close()
				if since >= 0 {
					if _, err := l.Get(since); err != nil {
						t.Errorf("Get(%d): %v", since, err)
					}
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	rg.Wait()
	if s := l.Since(); s != writers*per-1 {
		t.Fatalf("Since = %d, want %d", s, writers*per-1)
	}
	CheckLog(t, l, nil)
}
