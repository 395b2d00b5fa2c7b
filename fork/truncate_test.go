package fork_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/fork"
	"github.com/flume-go/flume/vfs"
	"github.com/flume-go/flume/vfs/errorfs"
)

const (
	logLen   = 10
	cutAfter = 5
)

// cutLog is a log of logLen entries with a batch inside the part Truncate
// cuts.
func cutLog() ([]flume.Entry, *fakeLog) {
	es := chainLog(testID, logLen)
	return es, newFakeLog(es, 6, 8)
}

// TestTruncate: the cut entries land in one complete file, durable before
// the log is cut, with the header describing the cut; the log ends at seq.
func TestTruncate(t *testing.T) {
	for _, chunk := range []int{0, 1, 13} {
		es, l := cutLog()
		fsys := vfs.NewMem()
		wantEpochs := fork.CutEpochs(l.epochs, cutAfter, logLen-1)
		cutSeen := false
		l.chunk = chunk
		l.beforeCut = func() {
			cutSeen = true
			// The moment of the cut: a power loss now keeps the file whole.
			got, _, err := collect(t, fsys.CrashClone(vfs.CrashConfig{}))
			if err != nil {
				t.Fatalf("crash at the cut: %v", err)
			}
			sameEntries(t, got, es[cutAfter+1:])
		}
		res, err := fork.Truncate(fsys, dir, l, cutAfter, es[cutAfter].Hash, testPrimary, "rejoin")
		if err != nil {
			t.Fatal(err)
		}
		if !cutSeen {
			t.Fatal("TruncateAfter did not run")
		}
		if l.Since() != cutAfter {
			t.Fatalf("log ends at %d, want %d", l.Since(), cutAfter)
		}
		if res.Report.Entries != logLen-1-cutAfter || res.Info.State != fork.Complete || len(res.Withdrawn) != 0 {
			t.Fatalf("result %+v", res)
		}
		h := res.Info.Header
		if h.LogID != testID || h.After != cutAfter || h.AfterHash != es[cutAfter].Hash || h.Since != logLen-1 ||
			h.SinceHash != es[logLen-1].Hash || h.Primary != testPrimary || h.Reason != "rejoin" || h.Time.IsZero() {
			t.Errorf("header %+v", h)
		}
		if !reflect.DeepEqual(h.Epochs, wantEpochs) {
			t.Errorf("epochs %v, want %v", h.Epochs, wantEpochs)
		}
		got, _, err := collect(t, fsys)
		if err != nil {
			t.Fatal(err)
		}
		sameEntries(t, got, es[cutAfter+1:])
		infos, _ := fork.List(fsys, dir)
		if len(infos) != 1 || !reflect.DeepEqual(infos[0], res.Info) {
			t.Fatalf("List %+v, want just %+v", infos, res.Info)
		}
	}
}

func TestTruncateRefusesOrChangesNothing(t *testing.T) {
	cases := []struct {
		name  string
		setup func(l *fakeLog)
		want  func(es []flume.Entry) flume.Hash
		is    error
	}{
		{"diverged", nil, func(es []flume.Entry) flume.Hash { return es[cutAfter-1].Hash }, flume.ErrDiverged},
		{"TruncateAfter fails after the copy", func(l *fakeLog) { l.failCut = errBoom }, nil, errBoom},
		{"the log grows during the cut", func(l *fakeLog) { l.grow = chainLog(testID, logLen+1)[logLen:] }, nil, fork.ErrStream},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			es, l := cutLog()
			if tc.setup != nil {
				tc.setup(l)
			}
			want := es[cutAfter].Hash
			if tc.want != nil {
				want = tc.want(es)
			}
			before := l.Since()
			fsys := vfs.NewMem()
			_, err := fork.Truncate(fsys, dir, l, cutAfter, want, testPrimary, "rejoin")
			if !errors.Is(err, tc.is) {
				t.Fatalf("Truncate: %v, want %v", err, tc.is)
			}
			if l.Since() < before {
				t.Fatalf("log cut to %d", l.Since())
			}
			if names, _ := fsys.List(dir); len(names) != 0 {
				t.Fatalf("files left: %q", names)
			}
		})
	}
}

var errBoom = errors.New("boom")

func TestTruncateNothingToCut(t *testing.T) {
	es, l := cutLog()
	fsys := vfs.NewMem()
	res, err := fork.Truncate(fsys, dir, l, logLen-1, es[logLen-1].Hash, testPrimary, "x")
	if err != nil || res.Info.Path != "" || res.Report.Entries != 0 || l.Since() != logLen-1 {
		t.Fatalf("Truncate at since: %+v, %v", res, err)
	}
	if _, err := fork.Truncate(fsys, dir, l, logLen, es[logLen-1].Hash, testPrimary, "x"); err == nil {
		t.Fatal("a cut past the log's end succeeded")
	}
	if names, _ := fsys.List(dir); len(names) != 0 {
		t.Fatalf("files made: %q", names)
	}
}

// TestTruncateCrashAtEveryOp: a power loss before any filesystem operation
// of Truncate comes before the cut, so the log is whole: after Reconcile
// no fork file remains, and a retried Truncate saves the entries exactly
// once. (The moment after the last operation is the cut, checked by
// TestTruncate.)
func TestTruncateCrashAtEveryOp(t *testing.T) {
	es, l := cutLog()
	mem := vfs.NewMem()
	var snaps []*vfs.MemFS
	fsys := errorfs.Wrap(mem, errorfs.InjectorFunc(func(op errorfs.Op) error {
		for _, pct := range []int{0, 100} {
			snaps = append(snaps, mem.CrashClone(vfs.CrashConfig{UnsyncedDataPercent: pct}))
		}
		return nil
	}))
	l.beforeCut = func() { snaps = append(snaps, mem.CrashClone(vfs.CrashConfig{})) }
	if _, err := fork.Truncate(fsys, dir, l, cutAfter, es[cutAfter].Hash, testPrimary, "rejoin"); err != nil {
		t.Fatal(err)
	}
	atCut := snaps[len(snaps)-1]
	snaps = snaps[:len(snaps)-1]
	if len(snaps) < 10 {
		t.Fatalf("only %d operations", len(snaps)/2)
	}
	sealed := 0 // crashes that left a complete file of a cut that never happened
	for i, snap := range snaps {
		_, whole := cutLog()
		removed, err := fork.Reconcile(snap, dir, whole)
		if err != nil {
			t.Fatalf("crash %d: Reconcile: %v", i, err)
		}
		for _, name := range removed {
			if !strings.HasSuffix(name, fork.TempSuffix) {
				sealed++
			}
		}
		if infos, err := fork.List(snap, dir); err != nil || len(infos) != 0 {
			t.Fatalf("crash before op %d (log whole): after Reconcile %d files, %v", i/2, len(infos), err)
		}
		res, err := fork.Truncate(snap, dir, whole, cutAfter, es[cutAfter].Hash, testPrimary, "retry")
		if err != nil {
			t.Fatalf("crash %d: retry: %v", i, err)
		}
		got, files, err := collect(t, snap)
		if err != nil || len(files) != 1 || files[0] != res.Info.Name {
			t.Fatalf("crash %d: after the retry: files %q, %v", i, files, err)
		}
		sameEntries(t, got, es[cutAfter+1:])
	}
	if sealed == 0 {
		t.Error("no crash point left a sealed file for Reconcile to withdraw")
	}
	// A crash at the cut with the log not cut yet (the cut itself was lost):
	// the retry withdraws the first file and saves the entries once.
	_, whole := cutLog()
	res, err := fork.Truncate(atCut, dir, whole, cutAfter, es[cutAfter].Hash, testPrimary, "retry")
	if err != nil || len(res.Withdrawn) != 1 {
		t.Fatalf("retry after a lost cut: withdrew %q, %v", res.Withdrawn, err)
	}
	got, files, err := collect(t, atCut)
	if err != nil || len(files) != 1 {
		t.Fatalf("after the retry: files %q, %v", files, err)
	}
	sameEntries(t, got, es[cutAfter+1:])
}

// TestTruncateFaults: an I/O error at any filesystem operation fails
// Truncate with that error, leaves the log whole and no file behind; the
// next Truncate succeeds.
func TestTruncateFaults(t *testing.T) {
	for i := int64(0); ; i++ {
		es, l := cutLog()
		mem := vfs.NewMem()
		fsys := errorfs.Wrap(mem, errorfs.OnIndex(i))
		_, err := fork.Truncate(fsys, dir, l, cutAfter, es[cutAfter].Hash, testPrimary, "rejoin")
		if fsys.Injected() == 0 {
			if err != nil {
				t.Fatalf("no fault injected at %d, but: %v", i, err)
			}
			if i < 8 {
				t.Fatalf("only %d operations", i)
			}
			return
		}
		if !errors.Is(err, errorfs.ErrInjected) {
			t.Fatalf("fault at op %d: Truncate returned %v, want the injected error", i, err)
		}
		if l.Since() != logLen-1 {
			t.Fatalf("fault at op %d: log cut to %d", i, l.Since())
		}
		if infos, err := fork.List(mem, dir); err != nil || len(infos) != 0 {
			t.Fatalf("fault at op %d: %d files left (%+v), %v", i, len(infos), infos, err)
		}
		if _, err := fork.Truncate(mem, dir, l, cutAfter, es[cutAfter].Hash, testPrimary, "rejoin"); err != nil {
			t.Fatalf("fault at op %d: clean retry: %v", i, err)
		}
		got, _, err := collect(t, mem)
		if err != nil {
			t.Fatal(err)
		}
		sameEntries(t, got, es[cutAfter+1:])
	}
}
