package flumetest

import (
	"bytes"
	"testing"

	"github.com/flume-go/flume"
)

// TestDurableLog runs the reopen suite for durable logs. open opens (or
// creates) the log stored in dir; the suite passes each subtest its own
// t.TempDir() and closes every log it opens. The EpochsSurviveReopen group
// runs for a log that implements flume.EpochLog (and flume.TruncatableLog).
func TestDurableLog(t *testing.T, open func(t *testing.T, dir string) flume.Log) {
	t.Run("EpochsSurviveReopen", func(t *testing.T) { testEpochsReopen(t, open) })
	t.Run("ReopenKeepsEverything", func(t *testing.T) {
		dir := t.TempDir()
		l := open(t, dir)
		if err := l.SetEpoch(2); err != nil {
			t.Fatal(err)
		}
		const n = 2500
		for i := int64(0); i < n; i += 5 {
			mustAppend(t, l, Payload(i, 90), Payload(i+1, 90), Payload(i+2, 90), Payload(i+3, 90), Payload(i+4, 90))
		}
		id := l.ID()
		since, head := l.Head()
		closeLog(t, l)

		l = open(t, dir)
		defer closeLog(t, l)
		if l.ID() != id || l.Epoch() != 2 {
			t.Fatalf("after reopen: ID %s epoch %d, want %s 2", l.ID(), l.Epoch(), id)
		}
		if s, h := l.Head(); s != since || h != head {
			t.Fatalf("after reopen: Head %d %s, want %d %s", s, h.Short(), since, head.Short())
		}
		CheckLog(t, l, func(i int64) []byte { return Payload(i, 90) })
		if s := mustAppend(t, l, Payload(n, 90)); s != n {
			t.Fatalf("append after reopen = %d, want %d", s, n)
		}
		CheckLog(t, l, func(i int64) []byte { return Payload(i, 90) })
	})
	t.Run("ReopenEmptyAndSetID", func(t *testing.T) {
		dir := t.TempDir()
		l := open(t, dir)
		id := l.ID()
		closeLog(t, l)
		l = open(t, dir)
		if l.ID() != id || l.Since() != -1 {
			t.Fatalf("empty reopen: ID %s since %d", l.ID(), l.Since())
		}
		nid := flume.NewLogID()
		if err := l.SetID(nid); err != nil {
			t.Fatal(err)
		}
		es := entriesFor(l, 3, 1)
		if err := l.AppendEntries(es); err != nil {
			t.Fatal(err)
		}
		closeLog(t, l)
		l = open(t, dir)
		defer closeLog(t, l)
		if l.ID() != nid {
			t.Fatalf("SetID not durable: %s, want %s", l.ID(), nid)
		}
		for _, e := range es {
			g, err := l.Entry(e.Seq)
			if err != nil || g.Hash != e.Hash || g.Epoch != 1 || !bytes.Equal(g.Data, e.Data) {
				t.Fatalf("Entry(%d) after reopen = %+v, %v", e.Seq, g, err)
			}
		}
		CheckLog(t, l, nil)
	})
	t.Run("ReopenMany", func(t *testing.T) {
		dir := t.TempDir()
		for round := int64(0); round < 5; round++ {
			l := open(t, dir)
			if s := l.Since(); s != round*100-1 {
				t.Fatalf("round %d: Since = %d", round, s)
			}
			for i := int64(0); i < 100; i++ {
				mustAppend(t, l, Payload(round*100+i, 300))
			}
			closeLog(t, l)
		}
		l := open(t, dir)
		defer closeLog(t, l)
		CheckLog(t, l, func(i int64) []byte { return Payload(i, 300) })
	})
}
