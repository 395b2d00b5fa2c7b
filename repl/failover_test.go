package repl

import (
	"context"
	"errors"
	"testing"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/vfs"
)

// TestFailoverFenceAndRejoin is the manual failover of the failover issue,
// in one process: a follower B is promoted while its primary A goes on
// alone (an async tail B never got); a node G that follows B refuses A,
// which deposes A; then A rejoins B by a verified cut: its tail goes to
// forked/, nothing is re-copied, B's epoch record is adopted, and both logs
// end equal.
func TestFailoverFenceAndRejoin(t *testing.T) {
	ctx := context.Background()
	adb, bdb, gdb := newMemDB(t), newMemDB(t), newMemDB(t)
	appendN(t, adb, 20, "a")
	l1, err := Replicate(adb, bdb, fastOpts())
	if err != nil {
		t.Fatal(err)
	}
	waitSince(t, bdb, 19)
	rec, err := l1.Follower().Promote()
	if err != nil {
		t.Fatal(err)
	}
	l1.Close()
	// A goes on alone: entries 20..24 of epoch 0 that B never got.
	appendN(t, adb, 5, "lost")
	// B writes its own 20..22 in epoch 1.
	appendN(t, bdb, 3, "b")

	// G follows B, and so promises epoch 1.
	l2, err := Replicate(bdb, gdb, fastOpts())
	if err != nil {
		t.Fatal(err)
	}
	waitSince(t, gdb, 22)
	if h := gdb.Log().(flume.EpochLog).Epochs(); len(h) != 1 || !h[0].Same(rec) {
		t.Fatalf("G's epoch history %v, want B's promotion %v", h, rec)
	}
	if fe := gdb.Log().(flume.EpochLog).FencedEpoch(); fe != 1 {
		t.Fatalf("G fenced at %d, want 1", fe)
	}
	l2.Close()

	// G refuses A (epoch 0 < 1), and A learns it has been deposed.
	if _, err := Replicate(adb, gdb, fastOpts()); !errors.Is(err, flume.ErrFenced) {
		t.Fatalf("G following the old primary: %v, want ErrFenced", err)
	}
	if gdb.Since() != 22 {
		t.Fatalf("G took entries from the deposed primary: since %d", gdb.Since())
	}
	if _, err := adb.Append(ctx, []byte(`"split brain"`)); !errors.Is(err, flume.ErrDeposed) {
		t.Fatalf("append on the deposed primary = %v, want ErrDeposed", err)
	}

	// A rejoins B: its tail 20..24 is cut into forked/, then it follows.
	fsys := vfs.NewMem()
	opts := fastOpts()
	opts.ForkDir, opts.FS = "/data/forked", fsys
	l3, err := Replicate(bdb, adb, opts)
	if err != nil {
		t.Fatalf("rejoin: %v", err)
	}
	defer l3.Close()
	waitSince(t, adb, 22)
	sameLog(t, bdb, adb)
	if h := adb.Log().(flume.EpochLog).Epochs(); len(h) != 1 || !h[0].Same(rec) {
		t.Fatalf("A's epoch history after the rejoin %v, want [%v]", h, rec)
	}
	st := l3.Follower().Stats()
	if st.Cuts != 1 || st.EntriesReceived != 3 {
		t.Fatalf("rejoin stats: %d cuts, %d entries received; want 1 cut and only the 3 new entries (no re-copy)", st.Cuts, st.EntriesReceived)
	}
	cut := forkedEntries(t, fsys, opts.ForkDir)
	if len(cut) != 5 || cut[0] != "20:lost-0" || cut[4] != "24:lost-4" {
		t.Fatalf("forked entries %v, want A's 20..24", cut)
	}
	// Live replication goes on in epoch 1.
	appendN(t, bdb, 2, "c")
	waitSince(t, adb, 24)
	sameLog(t, bdb, adb)
}

// TestRejoinRefusals: a rejoin that cannot be verified or kept cuts
// nothing: no fork directory, or a cut at or below the committed hint.
func TestRejoinRefusals(t *testing.T) {
	setup := func(t *testing.T) (adb, bdb *flume.DB) {
		adb, bdb = newMemDB(t), newMemDB(t)
		appendN(t, adb, 10, "a")
		l, err := Replicate(adb, bdb, fastOpts())
		if err != nil {
			t.Fatal(err)
		}
		waitSince(t, bdb, 9)
		if _, err := l.Follower().Promote(); err != nil {
			t.Fatal(err)
		}
		l.Close()
		appendN(t, adb, 3, "lost")
		appendN(t, bdb, 1, "b")
		return adb, bdb
	}
	t.Run("no fork directory", func(t *testing.T) {
		adb, bdb := setup(t)
		if _, err := Replicate(bdb, adb, fastOpts()); !errors.Is(err, flume.ErrDiverged) {
			t.Fatalf("rejoin without ForkDir = %v, want a refusal", err)
		}
		if adb.Since() != 12 {
			t.Fatalf("a refused rejoin cut the log to %d", adb.Since())
		}
	})
	t.Run("below the committed hint", func(t *testing.T) {
		adb, bdb := setup(t)
		// A knows that seq 11 was committed (acked by the sync set).
		if err := adb.Log().(flume.EpochLog).SetCommittedHint(11); err != nil {
			t.Fatal(err)
		}
		opts := fastOpts()
		opts.ForkDir, opts.FS = "/forked", vfs.NewMem()
		if _, err := Replicate(bdb, adb, opts); !errors.Is(err, ErrWouldLoseCommitted) {
			t.Fatalf("rejoin below the committed hint = %v, want ErrWouldLoseCommitted", err)
		}
		if adb.Since() != 12 {
			t.Fatalf("a refused rejoin cut the log to %d", adb.Since())
		}
	})
}
