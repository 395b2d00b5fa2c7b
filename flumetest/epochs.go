package flumetest

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/frame"
)

// NextEpochRecord returns the record that begins epoch e at l's head:
// Start is Since()+1 and Prev the head hash. Its promotion ID is derived
// from e and the head, and When and Promoter are fixed, so that tests are
// reproducible while two promotions at different points still differ.
func NextEpochRecord(l flume.Log, e uint64) flume.EpochRecord {
	since, head := l.Head()
	var b [40]byte
	copy(b[:32], head[:])
	binary.LittleEndian.PutUint64(b[32:], e)
	sum := sha256.Sum256(b[:])
	r := flume.EpochRecord{Epoch: e, Start: since + 1, Prev: head, When: 1_700_000_000_000_000_000 + int64(e), Promoter: 0x0f1e2d3c}
	copy(r.Promotion[:], sum[:])
	return r
}

// testEpochs runs the conformance tests of flume.EpochLog and
// flume.TruncatableLog for a log that implements them, and skips those of
// an interface it does not implement.
func testEpochs(t *testing.T, open func(t *testing.T) flume.Log) {
	probe := open(t)
	_, isE := probe.(flume.EpochLog)
	_, isT := probe.(flume.TruncatableLog)
	closeLog(t, probe)
	run := func(name string, ok bool, why string, f func(t *testing.T, l flume.Log)) {
		t.Run(name, func(t *testing.T) {
			if !ok {
				t.Skipf("the log does not implement %s", why)
			}
			f(t, open(t))
		})
	}
	t.Run("BeginEpochRules", func(t *testing.T) {
		if !isE {
			t.Skip("the log does not implement flume.EpochLog")
		}
		testBeginEpochRules(t, open)
	})
	run("FenceAndHintMonotonic", isE, "flume.EpochLog", testFenceAndHint)
	run("EpochLogClosed", isE, "flume.EpochLog", testEpochLogClosed)
	run("DropEmptyEpochs", isE, "flume.EpochLog", testDropEmptyEpochs)
	run("TruncateWrongHash", isT, "flume.TruncatableLog", testTruncateWrongHash)
	run("TruncateFailingFork", isT, "flume.TruncatableLog", testTruncateFailingFork)
	run("TruncateCut", isT, "flume.TruncatableLog", testTruncateCut)
	run("TruncateIterators", isT, "flume.TruncatableLog", testTruncateIterators)
	run("TruncateEpochBoundary", isE && isT, "flume.EpochLog and flume.TruncatableLog", testTruncateEpochBoundary)
}

// snapshot is what a refused call must leave unchanged.
type snapshot struct {
	since  int64
	head   flume.Hash
	epoch  uint64
	epochs []flume.EpochRecord
}

func snap(l flume.Log) snapshot {
	s := snapshot{epoch: l.Epoch()}
	s.since, s.head = l.Head()
	if el, ok := l.(flume.EpochLog); ok {
		s.epochs = el.Epochs()
	}
	return s
}

func (s snapshot) check(t testing.TB, l flume.Log, what string) {
	t.Helper()
	if n := snap(l); n.since != s.since || n.head != s.head || n.epoch != s.epoch || !sameRecords(n.epochs, s.epochs) {
		t.Fatalf("%s changed the log: since %d epoch %d history %v, was since %d epoch %d history %v",
			what, n.since, n.epoch, n.epochs, s.since, s.epoch, s.epochs)
	}
}

func sameRecords(a, b []flume.EpochRecord) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func mustBegin(t testing.TB, l flume.EpochLog, r flume.EpochRecord) {
	t.Helper()
	if err := l.BeginEpoch(r); err != nil {
		t.Fatalf("BeginEpoch(%s): %v", r, err)
	}
}

func testBeginEpochRules(t *testing.T, open func(t *testing.T) flume.Log) {
	l := open(t)
	el := l.(flume.EpochLog)
	if h := el.Epochs(); len(h) != 0 {
		t.Fatalf("new log has history %v", h)
	}
	refuse := func(what string, r flume.EpochRecord, want error) {
		t.Helper()
		s := snap(l)
		err := el.BeginEpoch(r)
		if err == nil || (want != nil && !errors.Is(err, want)) {
			t.Fatalf("BeginEpoch with %s: %v, want an error (%v)", what, err, want)
		}
		s.check(t, l, "BeginEpoch with "+what)
	}
	r1 := NextEpochRecord(l, 1)
	mustBegin(t, el, r1) // on a scratch log: an empty log with a history keeps its ID
	if err := l.SetID(flume.NewLogID()); !errors.Is(err, flume.ErrNotEmpty) {
		t.Fatalf("SetID on an empty log with an epoch history: %v, want ErrNotEmpty", err)
	}
	if err := l.SetID(l.ID()); err != nil {
		t.Fatalf("SetID with the same ID: %v", err)
	}
	closeLog(t, l)
	l = open(t)
	defer closeLog(t, l)
	el = l.(flume.EpochLog)
	r1 = NextEpochRecord(l, 1)
	bad := r1
	bad.Start++
	refuse("a start past Since()+1", bad, flume.ErrOutOfOrder)
	bad.Start -= 2
	refuse("a start at Since()", bad, flume.ErrOutOfOrder)
	bad = r1
	bad.Prev[0] ^= 1
	refuse("a wrong previous hash", bad, flume.ErrDiverged)
	mustBegin(t, el, r1)
	if l.Epoch() != 1 || !sameRecords(el.Epochs(), []flume.EpochRecord{r1}) {
		t.Fatalf("after BeginEpoch: epoch %d history %v", l.Epoch(), el.Epochs())
	}
	el.Epochs()[0].Epoch = 99 // a copy
	if el.Epochs()[0] != r1 {
		t.Fatal("Epochs returned the log's own slice")
	}
	mustAppend(t, l, []byte("a"), []byte("b"))
	if e, err := l.Entry(1); err != nil || e.Epoch != 1 {
		t.Fatalf("entry after BeginEpoch: epoch %d, %v; want 1", e.Epoch, err)
	}
	refuse("a record made before the last appends", r1, flume.ErrOutOfOrder)
	refuse("the same epoch again", NextEpochRecord(l, 1), nil)
	if err := l.SetEpoch(5); err != nil {
		t.Fatal(err)
	}
	refuse("an epoch below Epoch() (set by SetEpoch)", NextEpochRecord(l, 3), nil)
	r5 := NextEpochRecord(l, 5) // equal to Epoch() and above the last record: allowed
	mustBegin(t, el, r5)
	mustAppend(t, l, []byte("c"))
	refuse("a lower epoch", NextEpochRecord(l, 4), nil)
	if h := el.Epochs(); !sameRecords(h, []flume.EpochRecord{r1, r5}) || l.Epoch() != 5 {
		t.Fatalf("history %v epoch %d, want [%s %s] and 5", h, l.Epoch(), r1, r5)
	}
	CheckLog(t, l, nil)
}

func testFenceAndHint(t *testing.T, l flume.Log) {
	defer closeLog(t, l)
	el := l.(flume.EpochLog)
	if el.FencedEpoch() != 0 || el.CommittedHint() != -1 {
		t.Fatalf("new log: fenced %d hint %d, want 0 and -1", el.FencedEpoch(), el.CommittedHint())
	}
	steps := []struct {
		fence        uint64
		hint         int64
		wantF, wantH int64
	}{{3, -1, 3, -1}, {2, 10, 3, 10}, {3, 9, 3, 10}, {0, -7, 3, 10}, {7, 11, 7, 11}}
	for _, s := range steps {
		if err := el.Fence(s.fence); err != nil {
			t.Fatalf("Fence(%d): %v", s.fence, err)
		}
		if err := el.SetCommittedHint(s.hint); err != nil {
			t.Fatalf("SetCommittedHint(%d): %v", s.hint, err)
		}
		if int64(el.FencedEpoch()) != s.wantF || el.CommittedHint() != s.wantH {
			t.Fatalf("after Fence(%d), SetCommittedHint(%d): fenced %d hint %d, want %d %d",
				s.fence, s.hint, el.FencedEpoch(), el.CommittedHint(), s.wantF, s.wantH)
		}
	}
	if l.Epoch() != 0 || len(el.Epochs()) != 0 {
		t.Fatal("fencing changed the epoch or the history")
	}
}

func testEpochLogClosed(t *testing.T, l flume.Log) {
	el := l.(flume.EpochLog)
	r := NextEpochRecord(l, 1)
	closeLog(t, l)
	for what, err := range map[string]error{
		"BeginEpoch":       el.BeginEpoch(r),
		"Fence":            el.Fence(1),
		"SetCommittedHint": el.SetCommittedHint(1),
	} {
		if !errors.Is(err, flume.ErrClosed) {
			t.Fatalf("%s after Close: %v, want ErrClosed", what, err)
		}
	}
	if tl, ok := l.(flume.TruncatableLog); ok {
		if _, err := tl.TruncateAfter(-1, flume.GenesisHash(l.ID()), nil); !errors.Is(err, flume.ErrClosed) {
			t.Fatalf("TruncateAfter after Close: %v, want ErrClosed", err)
		}
	}
}

// appendBatches appends n entries Payload(i, size) in batches of 3, so that
// cuts fall inside batches as well as between them.
func appendBatches(t testing.TB, l flume.Log, n int64, size int) []flume.Entry {
	t.Helper()
	for i := l.Since() + 1; i < n; i += 3 {
		var b [][]byte
		for j := i; j < min(i+3, n); j++ {
			b = append(b, Payload(j, size))
		}
		mustAppend(t, l, b...)
	}
	all := make([]flume.Entry, n)
	for i := range all {
		e, err := l.Entry(int64(i))
		if err != nil {
			t.Fatal(err)
		}
		all[i] = e
	}
	return all
}

func testTruncateWrongHash(t *testing.T, l flume.Log) {
	defer closeLog(t, l)
	tl := l.(flume.TruncatableLog)
	all := appendBatches(t, l, 20, 30)
	s := snap(l)
	var fork bytes.Buffer
	for _, c := range []struct {
		seq  int64
		want flume.Hash
		err  error
	}{
		{5, all[6].Hash, flume.ErrDiverged},
		{5, flume.Hash{}, flume.ErrDiverged},
		{-1, all[0].Hash, flume.ErrDiverged},
		{19, all[18].Hash, flume.ErrDiverged},
		{20, all[19].Hash, nil}, // past the end
		{-2, flume.GenesisHash(l.ID()), nil},
	} {
		_, err := tl.TruncateAfter(c.seq, c.want, &fork)
		if err == nil || (c.err != nil && !errors.Is(err, c.err)) {
			t.Fatalf("TruncateAfter(%d, %s): %v, want an error (%v)", c.seq, c.want.Short(), err, c.err)
		}
		s.check(t, l, fmt.Sprintf("a refused TruncateAfter(%d)", c.seq))
		if fork.Len() != 0 {
			t.Fatalf("a refused TruncateAfter(%d) wrote %d bytes to the fork", c.seq, fork.Len())
		}
	}
	CheckLog(t, l, func(i int64) []byte { return Payload(i, 30) })
}

type failingWriter struct{ left int }

func (w *failingWriter) Write(p []byte) (int, error) {
	if len(p) > w.left {
		n := w.left
		w.left = 0
		return n, errors.New("fork: disk full")
	}
	w.left -= len(p)
	return len(p), nil
}

func testTruncateFailingFork(t *testing.T, l flume.Log) {
	defer closeLog(t, l)
	tl := l.(flume.TruncatableLog)
	all := appendBatches(t, l, 40, 200)
	s := snap(l)
	for _, left := range []int{0, 10, 300, 2000} {
		if _, err := tl.TruncateAfter(10, all[10].Hash, &failingWriter{left: left}); err == nil {
			t.Fatalf("TruncateAfter with a fork failing after %d bytes succeeded", left)
		}
		s.check(t, l, "a TruncateAfter whose fork failed")
	}
	CheckLog(t, l, func(i int64) []byte { return Payload(i, 200) })
	if _, err := tl.TruncateAfter(10, all[10].Hash, &failingWriter{left: 1 << 30}); err != nil {
		t.Fatal(err)
	}
	if l.Since() != 10 {
		t.Fatalf("Since = %d after the cut, want 10", l.Since())
	}
}

// DecodeFrames decodes a fork written by TruncateAfter: a sequence of
// entry frames.
func DecodeFrames(b []byte) ([]flume.Entry, error) {
	var es []flume.Entry
	for len(b) > 0 {
		e, n, err := frame.Decode(b)
		if err != nil {
			return es, err
		}
		es = append(es, e)
		b = b[n:]
	}
	return es, nil
}

func sameEntry(a, b flume.Entry) bool {
	return a.Seq == b.Seq && a.Epoch == b.Epoch && a.Hash == b.Hash && bytes.Equal(a.Data, b.Data)
}

// checkCut cuts l after seq and checks the report, the fork and the log.
func checkCut(t testing.TB, l flume.Log, all []flume.Entry, seq int64) {
	t.Helper()
	tl := l.(flume.TruncatableLog)
	since := l.Since()
	want := flume.GenesisHash(l.ID())
	if seq >= 0 {
		want = all[seq].Hash
	}
	var fork bytes.Buffer
	rep, err := tl.TruncateAfter(seq, want, &fork)
	if err != nil {
		t.Fatalf("TruncateAfter(%d): %v", seq, err)
	}
	wantRep := flume.TruncateReport{After: seq, From: seq + 1, To: since, Entries: since - seq, Bytes: int64(fork.Len())}
	if rep != wantRep {
		t.Fatalf("TruncateAfter(%d) report %+v, want %+v", seq, rep, wantRep)
	}
	cut, err := DecodeFrames(fork.Bytes())
	if err != nil {
		t.Fatalf("fork of TruncateAfter(%d): %v", seq, err)
	}
	if int64(len(cut)) != since-seq {
		t.Fatalf("fork of TruncateAfter(%d) holds %d entries, want %d", seq, len(cut), since-seq)
	}
	for i, e := range cut {
		if !sameEntry(e, all[seq+1+int64(i)]) {
			t.Fatalf("fork entry %d is %+v, want %+v", i, e, all[seq+1+int64(i)])
		}
	}
	if s, h := l.Head(); s != seq || h != want || l.Since() != seq {
		t.Fatalf("after TruncateAfter(%d): Head %d %s, want %d %s", seq, s, h.Short(), seq, want.Short())
	}
	if _, err := l.Get(seq + 1); !errors.Is(err, flume.ErrNotFound) {
		t.Fatalf("Get(%d) after the cut: %v, want ErrNotFound", seq+1, err)
	}
	CheckLog(t, l, func(i int64) []byte { return all[i].Data })
}

func testTruncateCut(t *testing.T, l flume.Log) {
	defer closeLog(t, l)
	// Enough entries to span several segments of a small-segment filelog.
	all := appendBatches(t, l, 300, 150)
	checkCut(t, l, all, 299) // nothing to cut
	checkCut(t, l, all, 250) // inside a batch (249..251)
	checkCut(t, l, all, 248) // at the end of a batch
	checkCut(t, l, all, 100) // inside a batch, several segments back
	// Appends continue from seq+1 on h(seq).
	d := []byte("after the cut")
	if s := mustAppend(t, l, d); s != 101 {
		t.Fatalf("append after the cut got seq %d, want 101", s)
	}
	if e, _ := l.Entry(101); e.Hash != flume.ChainHash(all[100].Hash, 101, l.Epoch(), d) {
		t.Fatal("the entry after the cut does not chain from h(100)")
	}
	all = append(all[:101], appendBatches(t, l, 400, 150)[101:]...)
	CheckLog(t, l, func(i int64) []byte { return all[i].Data })
	checkCut(t, l, all, -1) // everything
	if s := mustAppend(t, l, []byte("first again")); s != 0 {
		t.Fatalf("append after cutting everything got seq %d, want 0", s)
	}
	CheckLog(t, l, nil)
}

func testTruncateIterators(t *testing.T, l flume.Log) {
	defer closeLog(t, l)
	all := appendBatches(t, l, 30, 40)
	read := func(it flume.Iterator, n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			if !it.Next() {
				t.Fatalf("iterator ended early: %v", it.Err())
			}
		}
	}
	below := l.Iter(0) // will stand at 4, below the cut
	read(below, 4)
	at := l.Iter(10) // stands at seq+1
	past := l.Iter(0)
	read(past, 20) // yielded cut entries
	from := l.Iter(15)
	for _, it := range []flume.Iterator{below, at, past, from} {
		defer it.Close()
	}
	checkCut(t, l, all, 9)
	for i := int64(4); i <= 9; i++ {
		if !below.Next() || !sameEntry(below.Entry(), all[i]) {
			t.Fatalf("iterator below the cut: entry %d is %+v (err %v)", i, below.Entry(), below.Err())
		}
	}
	if below.Next() || below.Err() != nil {
		t.Fatalf("iterator below the cut went past it: %+v, err %v", below.Entry(), below.Err())
	}
	for name, it := range map[string]flume.Iterator{"past the cut": past, "opened past the cut": from} {
		if it.Next() || !errors.Is(it.Err(), flume.ErrTruncated) {
			t.Fatalf("iterator %s: next %+v, err %v; want ErrTruncated", name, it.Entry(), it.Err())
		}
	}
	// New entries after the cut are what the surviving iterators see.
	mustAppend(t, l, []byte("new-10"), []byte("new-11"))
	for name, it := range map[string]flume.Iterator{"below the cut": below, "at the cut": at} {
		for _, want := range []string{"new-10", "new-11"} {
			if !it.Next() || string(it.Entry().Data) != want {
				t.Fatalf("iterator %s: got %q (err %v), want %q", name, it.Entry().Data, it.Err(), want)
			}
		}
	}
}

func testTruncateEpochBoundary(t *testing.T, l flume.Log) {
	defer closeLog(t, l)
	el := l.(flume.EpochLog)
	r1 := NextEpochRecord(l, 1)
	mustBegin(t, el, r1)
	appendBatches(t, l, 5, 20)
	r2 := NextEpochRecord(l, 2)
	mustBegin(t, el, r2)
	appendBatches(t, l, 10, 20)
	r3 := NextEpochRecord(l, 3) // the current epoch, still without entries
	mustBegin(t, el, r3)
	all := appendBatches(t, l, 10, 20)
	for _, c := range []struct {
		seq  int64
		want []flume.EpochRecord
	}{
		{9, []flume.EpochRecord{r1, r2, r3}}, // nothing cut: r3 starts at 10 = seq+1
		{7, []flume.EpochRecord{r1, r2}},     // r3 starts past 8
		{4, []flume.EpochRecord{r1, r2}},     // r2 starts at 5 = seq+1: kept
		{3, []flume.EpochRecord{r1}},
	} {
		checkCut(t, l, all, c.seq)
		if h := el.Epochs(); !sameRecords(h, c.want) {
			t.Fatalf("after TruncateAfter(%d): history %v, want %v", c.seq, h, c.want)
		}
		if l.Epoch() != 3 {
			t.Fatalf("after TruncateAfter(%d): Epoch() = %d, want 3 (a cut never lowers it)", c.seq, l.Epoch())
		}
	}
	if err := el.BeginEpoch(NextEpochRecord(l, 2)); err == nil {
		t.Fatal("BeginEpoch below Epoch() after a cut succeeded")
	}
	r4 := NextEpochRecord(l, 4)
	mustBegin(t, el, r4)
	mustAppend(t, l, []byte("epoch 4"))
	if e, _ := l.Entry(4); e.Epoch != 4 {
		t.Fatalf("entry after the new epoch has epoch %d, want 4", e.Epoch)
	}
	all = appendBatches(t, l, l.Since()+1, 0) // appends nothing: reads the log back
	checkCut(t, l, all, -1)
	if h := el.Epochs(); !sameRecords(h, []flume.EpochRecord{r1}) { // r1 starts at 0 = seq+1
		t.Fatalf("after cutting everything: history %v, want [%s]", h, r1)
	}
}

// testEpochsReopen: the epoch history, the fencing state and cuts survive
// reopening a durable log, and appends go on after a reopened cut.
func testEpochsReopen(t *testing.T, open func(t *testing.T, dir string) flume.Log) {
	dir := t.TempDir()
	l := open(t, dir)
	el, ok := l.(flume.EpochLog)
	if !ok {
		closeLog(t, l)
		t.Skip("the log does not implement flume.EpochLog")
	}
	r1 := NextEpochRecord(l, 1)
	mustBegin(t, el, r1)
	appendBatches(t, l, 100, 120)
	r2 := NextEpochRecord(l, 2)
	mustBegin(t, el, r2)
	appendBatches(t, l, 200, 120)
	r3 := NextEpochRecord(l, 3)
	mustBegin(t, el, r3)
	if err := el.Fence(7); err != nil {
		t.Fatal(err)
	}
	if err := el.SetCommittedHint(150); err != nil {
		t.Fatal(err)
	}
	want := snap(l)
	closeLog(t, l)

	reopen := func(what string) (flume.Log, flume.EpochLog) {
		t.Helper()
		l := open(t, dir)
		el := l.(flume.EpochLog)
		want.check(t, l, what)
		if el.FencedEpoch() != 7 || el.CommittedHint() != 150 {
			t.Fatalf("%s: fenced %d hint %d, want 7 and 150", what, el.FencedEpoch(), el.CommittedHint())
		}
		CheckLog(t, l, nil)
		return l, el
	}
	l, _ = reopen("reopen")
	if _, ok := l.(flume.TruncatableLog); !ok {
		closeLog(t, l)
		return
	}
	all := appendBatches(t, l, 200, 0)
	checkCut(t, l, all, 130) // inside a batch (129..131), in epoch 2
	want = snap(l)
	if !sameRecords(want.epochs, []flume.EpochRecord{r1, r2}) || want.epoch != 3 {
		t.Fatalf("after the cut: history %v epoch %d", want.epochs, want.epoch)
	}
	closeLog(t, l)
	l, _ = reopen("reopen after a cut")
	if s := mustAppend(t, l, []byte("after")); s != 131 {
		t.Fatalf("append after a reopened cut got seq %d, want 131", s)
	}
	all = appendBatches(t, l, 132, 0)
	checkCut(t, l, all, -1)
	want = snap(l)
	closeLog(t, l)
	l, _ = reopen("reopen after cutting everything")
	defer closeLog(t, l)
	if h := want.epochs; !sameRecords(h, []flume.EpochRecord{r1}) {
		t.Fatalf("after cutting everything: history %v, want [%s]", h, r1)
	}
	if s := mustAppend(t, l, []byte("first")); s != 0 {
		t.Fatalf("append after cutting everything got seq %d, want 0", s)
	}
}

// testDropEmptyEpochs: records of epochs that never got an entry can be
// dropped (and another history's records begun in their place); a record
// that covers entries never can.
func testDropEmptyEpochs(t *testing.T, l flume.Log) {
	el := l.(flume.EpochLog)
	r1 := NextEpochRecord(l, 1)
	mustBegin(t, el, r1)
	if _, err := l.Append([]byte("a"), []byte("b")); err != nil {
		t.Fatal(err)
	}
	r3 := NextEpochRecord(l, 3) // a promotion that writes nothing
	mustBegin(t, el, r3)
	if err := el.DropEmptyEpochs(0); err == nil {
		t.Fatal("DropEmptyEpochs dropped a record that covers entries")
	}
	if h := el.Epochs(); len(h) != 2 {
		t.Fatalf("a refused drop changed the history: %v", h)
	}
	if err := el.DropEmptyEpochs(1); err != nil {
		t.Fatal(err)
	}
	if h := el.Epochs(); len(h) != 1 || !h[0].Same(r1) || l.Epoch() != 1 {
		t.Fatalf("after the drop: history %v, epoch %d; want [%v], epoch 1", h, l.Epoch(), r1)
	}
	// Another history's epoch 2 can now begin where epoch 3 did.
	r2 := NextEpochRecord(l, 2)
	r2.Promotion[0] ^= 0xff
	mustBegin(t, el, r2)
	last, err := l.Append([]byte("c"))
	if err != nil {
		t.Fatal(err)
	}
	if e, err := l.Entry(last); err != nil || e.Epoch != 2 {
		t.Fatalf("entry after the new epoch: epoch %d, %v; want 2", e.Epoch, err)
	}
	if err := el.DropEmptyEpochs(5); err != nil {
		t.Fatalf("DropEmptyEpochs past the history: %v", err)
	}
}
