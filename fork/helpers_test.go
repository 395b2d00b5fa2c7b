package fork_test

import (
	"bytes"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/fork"
	"github.com/flume-go/flume/frame"
	"github.com/flume-go/flume/vfs"
)

var (
	testID      = flume.LogID{0xf0, 0x4c, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14}
	primaryID   = testID // a rejoin cut: the new primary has the same history ID
	testTime    = time.Date(2026, 12, 2, 17, 0, 0, 123456789, time.UTC)
	testPrimary = fork.Position{LogID: primaryID, Epoch: 3, Since: 7, Hash: flume.Hash{0xaa, 0xbb}}
)

const dir = "data/forked"

// chainLog builds a chain of n entries from seq 0: epoch 1 up to seq 3,
// epoch 2 after; payloads of several sizes, JSON and not.
func chainLog(id flume.LogID, n int) []flume.Entry {
	prev := flume.GenesisHash(id)
	es := make([]flume.Entry, n)
	for i := range es {
		seq := int64(i)
		epoch := uint64(1)
		if seq > 3 {
			epoch = 2
		}
		var data []byte
		switch i % 4 {
		case 0:
			data = fmt.Appendf(nil, `{"n":%d}`, i)
		case 1:
			data = bytes.Repeat([]byte{byte(i)}, 300+i) // not JSON
		case 2:
			data = nil // empty payload
		case 3:
			data = fmt.Appendf(nil, `"entry %d"`, i)
		}
		h := flume.ChainHash(prev, seq, epoch, data)
		es[i] = flume.Entry{Seq: seq, Epoch: epoch, Hash: h, Data: data}
		prev = h
	}
	return es
}

// frames encodes entries as a log stores them; the entries with seqs in
// batch (first, last) form one atomic batch (all but the last frame carry
// the "batch continues" bit).
func frames(es []flume.Entry, batchFirst, batchLast int64) []byte {
	var b []byte
	for _, e := range es {
		more := e.Seq >= batchFirst && e.Seq < batchLast
		b = frame.AppendMore(b, e, more)
	}
	return b
}

// header describes the cut of es after seq after.
func header(es []flume.Entry, after int64, reason string) fork.Header {
	h := fork.Header{LogID: testID, After: after, Since: es[len(es)-1].Seq, SinceHash: es[len(es)-1].Hash,
		Primary: testPrimary, Reason: reason, Time: testTime}
	h.AfterHash = flume.GenesisHash(testID)
	if after >= 0 {
		h.AfterHash = es[after].Hash
	}
	return h
}

// readAll reads a whole file of fsys.
func readAll(t testing.TB, fsys vfs.FS, path string) []byte {
	t.Helper()
	b, err := vfs.ReadFile(fsys, path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// writeFile replaces path in fsys with b (test setup: no durability needed).
func writeFile(t testing.TB, fsys vfs.FS, path string, b []byte) {
	t.Helper()
	f, err := fsys.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(b, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// collect returns every entry Entries reports, with copied data, and the
// names of the files they came from.
func collect(t testing.TB, fsys vfs.FS) ([]flume.Entry, []string, error) {
	t.Helper()
	var es []flume.Entry
	var names []string
	err := fork.Entries(fsys, dir, func(i fork.Info, e flume.Entry) error {
		e.Data = bytes.Clone(e.Data)
		es = append(es, e)
		if len(names) == 0 || names[len(names)-1] != i.Name {
			names = append(names, i.Name)
		}
		return nil
	})
	return es, names, err
}

func sameEntries(t testing.TB, got, want []flume.Entry) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d entries, want %d", len(got), len(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.Seq != w.Seq || g.Epoch != w.Epoch || g.Hash != w.Hash || !bytes.Equal(g.Data, w.Data) {
			t.Fatalf("entry %d: got seq %d epoch %d hash %s data %q, want seq %d epoch %d hash %s data %q",
				i, g.Seq, g.Epoch, g.Hash.Short(), g.Data, w.Seq, w.Epoch, w.Hash.Short(), w.Data)
		}
	}
}

// fakeLog is a TruncatableLog and EpochLog over a slice, with the
// TruncateAfter of the contract (check the hash, write the frames, then
// cut) and hooks to fail or observe it. Methods Truncate does not use
// panic (the embedded interface is nil).
type fakeLog struct {
	flume.EpochLog
	id      flume.LogID
	entries []flume.Entry
	stored  []byte // the frames as stored, in seq order
	offsets []int  // offset of each entry's frame in stored
	epochs  []flume.EpochRecord

	chunk     int           // TruncateAfter writes in chunks of this size (0: all at once)
	beforeCut func()        // runs after the frames were written, before the cut
	failCut   error         // TruncateAfter returns it instead of cutting
	grow      []flume.Entry // appended between Truncate's Head and the copy (a misbehaving caller)
}

func newFakeLog(es []flume.Entry, batchFirst, batchLast int64) *fakeLog {
	l := &fakeLog{id: testID}
	for _, e := range es {
		l.offsets = append(l.offsets, len(l.stored))
		l.stored = frame.AppendMore(l.stored, e, e.Seq >= batchFirst && e.Seq < batchLast)
		l.entries = append(l.entries, e)
	}
	l.epochs = []flume.EpochRecord{
		{Epoch: 1, Start: 0, Prev: flume.GenesisHash(testID), Promotion: flume.PromotionID{1}},
		{Epoch: 2, Start: 4, Prev: es[3].Hash, Promotion: flume.PromotionID{2}},
	}
	return l
}

func (l *fakeLog) ID() flume.LogID { return l.id }
func (l *fakeLog) Since() int64    { return int64(len(l.entries)) - 1 }
func (l *fakeLog) Head() (int64, flume.Hash) {
	if len(l.entries) == 0 {
		return -1, flume.GenesisHash(l.id)
	}
	e := l.entries[len(l.entries)-1]
	return e.Seq, e.Hash
}
func (l *fakeLog) Entry(seq int64) (flume.Entry, error) {
	if seq < 0 || seq > l.Since() {
		return flume.Entry{}, flume.ErrNotFound
	}
	return l.entries[seq], nil
}
func (l *fakeLog) Epochs() []flume.EpochRecord { return l.epochs }

func (l *fakeLog) TruncateAfter(seq int64, want flume.Hash, w io.Writer) (flume.TruncateReport, error) {
	if l.grow != nil {
		for _, e := range l.grow {
			l.offsets = append(l.offsets, len(l.stored))
			l.stored = frame.AppendMore(l.stored, e, false)
			l.entries = append(l.entries, e)
		}
		l.grow = nil
	}
	rep := flume.TruncateReport{After: seq, From: seq + 1, To: l.Since()}
	got := flume.GenesisHash(l.id)
	if seq >= 0 {
		got = l.entries[seq].Hash
	}
	if got != want {
		return rep, flume.ErrDiverged
	}
	var cut []byte
	if seq+1 < int64(len(l.entries)) {
		cut = l.stored[l.offsets[seq+1]:]
	}
	for len(cut) > 0 {
		n := len(cut)
		if l.chunk > 0 {
			n = min(n, l.chunk)
		}
		if _, err := w.Write(cut[:n]); err != nil {
			return rep, err
		}
		cut = cut[n:]
	}
	if l.beforeCut != nil {
		l.beforeCut()
	}
	if l.failCut != nil {
		return rep, l.failCut
	}
	rep.Entries = l.Since() - seq
	if seq+1 < int64(len(l.entries)) {
		rep.Bytes = int64(len(l.stored) - l.offsets[seq+1])
		l.stored = l.stored[:l.offsets[seq+1]]
	}
	l.entries = l.entries[:seq+1]
	l.offsets = l.offsets[:seq+1]
	var keep []flume.EpochRecord
	for _, r := range l.epochs {
		if r.Start <= seq+1 {
			keep = append(keep, r)
		}
	}
	l.epochs = keep
	return rep, nil
}

var (
	_ flume.TruncatableLog = (*fakeLog)(nil)
	_ flume.EpochLog       = (*fakeLog)(nil)
)
