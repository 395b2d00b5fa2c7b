package flume_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/memlog"
)

// replicatedFollower returns a follower DB holding n entries written on a
// separate primary log (so they carry that log's ID and chain), and the
// primary log.
func replicatedFollower(t *testing.T, n int) (*flume.DB, *memlog.Log) {
	t.Helper()
	primary := memlog.New()
	for i := 0; i < n; i++ {
		if _, err := primary.Append(val(int64(i))); err != nil {
			t.Fatal(err)
		}
	}
	fdb := openDB(t, nil)
	if err := fdb.AdoptID(primary.ID()); err != nil {
		t.Fatal(err)
	}
	fdb.SetFollower(true, "primary:7601")
	var es []flume.Entry
	for s := int64(0); s < int64(n); s++ {
		e, err := primary.Entry(s)
		if err != nil {
			t.Fatal(err)
		}
		es = append(es, e)
	}
	if n > 0 {
		if err := fdb.AppendReplicated(es); err != nil {
			t.Fatal(err)
		}
	}
	return fdb, primary
}

func TestPromote(t *testing.T) {
	ctx := context.Background()
	fdb, _ := replicatedFollower(t, 5)
	el := fdb.Log().(flume.EpochLog)
	since, hash := el.Head()
	r, err := fdb.Promote("n1")
	if err != nil {
		t.Fatal(err)
	}
	if r.Epoch != 1 || r.Start != since+1 || r.Prev != hash || r.Promotion == (flume.PromotionID{}) {
		t.Fatalf("record %+v; want epoch 1 from %d after %s with a promotion ID", r, since+1, hash.Short())
	}
	if h := el.Epochs(); len(h) != 1 || !h[0].Same(r) {
		t.Fatalf("epoch history %v, want [%v]", h, r)
	}
	if el.FencedEpoch() != 1 {
		t.Fatalf("fenced at %d, want 1", el.FencedEpoch())
	}
	if f, _ := fdb.Role(); f {
		t.Fatal("still a follower after Promote")
	}
	seq, err := fdb.Append(ctx, []byte(`"after"`))
	if err != nil || seq != 5 {
		t.Fatalf("Append after Promote = %d, %v", seq, err)
	}
	if e, _ := fdb.Log().Entry(seq); e.Epoch != 1 {
		t.Fatalf("entry %d written in epoch %d, want 1", seq, e.Epoch)
	}
	if _, err := fdb.Promote("n1"); !errors.Is(err, flume.ErrNotFollower) {
		t.Fatalf("Promote of a primary = %v, want ErrNotFollower", err)
	}
	if err := fdb.AppendReplicated([]flume.Entry{{Seq: 6}}); !errors.Is(err, flume.ErrNotFollower) {
		t.Fatalf("AppendReplicated on a promoted DB = %v, want ErrNotFollower", err)
	}
	// Another upstream may be claimed again: the promotion ended the claim.
	if rel, err := fdb.ClaimUpstream("p2"); err != nil {
		t.Fatalf("ClaimUpstream after Promote = %v", err)
	} else {
		rel(true)
	}
}

// TestPromoteAboveEverySeenEpoch: the new epoch is above the log's epoch,
// its last record and its fence, so a node fenced by a newer primary never
// reuses that primary's number.
func TestPromoteAboveEverySeenEpoch(t *testing.T) {
	fdb, _ := replicatedFollower(t, 2)
	el := fdb.Log().(flume.EpochLog)
	if err := el.Fence(7); err != nil {
		t.Fatal(err)
	}
	r, err := fdb.Promote("n2")
	if err != nil || r.Epoch != 8 {
		t.Fatalf("Promote = %+v, %v; want epoch 8", r, err)
	}
}

func TestTruncateAfter(t *testing.T) {
	ctx := context.Background()
	fdb, primary := replicatedFollower(t, 10)
	v := newTestView()
	if err := fdb.Use("v", v); err != nil {
		t.Fatal(err)
	}
	if err := v.host.Sync(ctxTimeout(t, 5*time.Second)); err != nil || v.Since() != 9 {
		t.Fatalf("view at %d, %v", v.Since(), err)
	}
	// A live stream that has read everything, and a cursor that has read
	// only below the cut.
	s := fdb.Stream(ctx, flume.StreamOptions{Gt: flume.At(-1), Live: true})
	defer s.Close()
	for i := 0; i < 10; i++ {
		if !s.Next() {
			t.Fatalf("stream ended at %d: %v", i, s.Err())
		}
	}
	c := fdb.Cursor(0)
	defer c.Close()
	for i := 0; i < 3; i++ {
		if !c.Next() {
			t.Fatalf("cursor ended at %d: %v", i, c.Err())
		}
	}

	at5, _ := primary.Entry(5)
	// A wrong hash cuts nothing.
	var fork bytes.Buffer
	if _, err := fdb.TruncateAfter(5, flume.Hash{1}, &fork); !errors.Is(err, flume.ErrDiverged) {
		t.Fatalf("TruncateAfter with a wrong hash = %v, want ErrDiverged", err)
	}
	if fdb.Since() != 9 || fork.Len() != 0 {
		t.Fatalf("a refused cut changed the log (since %d) or wrote %d bytes", fdb.Since(), fork.Len())
	}

	rep, err := fdb.TruncateAfter(5, at5.Hash, &fork)
	if err != nil {
		t.Fatal(err)
	}
	if rep.After != 5 || rep.From != 6 || rep.To != 9 || rep.Entries != 4 || fork.Len() == 0 {
		t.Fatalf("report %+v, fork %d bytes", rep, fork.Len())
	}
	if fdb.Since() != 5 {
		t.Fatalf("published since %d after the cut, want 5", fdb.Since())
	}
	// The stream had handed out entries 6..9: it must say so.
	if s.Next() {
		t.Fatalf("stream yielded %d after a cut below it", s.Entry().Seq)
	}
	if !errors.Is(s.Err(), flume.ErrTruncated) {
		t.Fatalf("stream error %v, want ErrTruncated", s.Err())
	}
	// The cursor had read 0..2 only: it goes on, through 5.
	for want := int64(3); want <= 5; want++ {
		if !c.Next() || c.Entry().Seq != want {
			t.Fatalf("cursor after the cut: %v, %v; want seq %d", c.Entry().Seq, c.Err(), want)
		}
	}
	if c.Next() || c.Err() != nil {
		t.Fatalf("cursor past the new end: %v", c.Err())
	}
	// The view was ahead: it was reset and rebuilt from the log.
	if err := v.host.Sync(ctxTimeout(t, 5*time.Second)); err != nil || v.Since() != 5 || v.SinceHash() != at5.Hash {
		t.Fatalf("view at %d (%s), %v; want 5 (%s)", v.Since(), v.SinceHash().Short(), err, at5.Hash.Short())
	}
	v.mu.Lock()
	resets := v.resets
	v.mu.Unlock()
	if resets != 1 {
		t.Fatalf("view reset %d times, want 1", resets)
	}
	// New entries continue from 6 and reach the cursor and the view.
	fdb.SetFollower(false, "")
	seq, err := fdb.Append(ctx, []byte(`"new"`))
	if err != nil || seq != 6 {
		t.Fatalf("Append after the cut = %d, %v", seq, err)
	}
	if !c.Next() || c.Entry().Seq != 6 || string(c.Entry().Data) != `"new"` {
		t.Fatalf("cursor read %d %q, want the new entry 6", c.Entry().Seq, c.Entry().Data)
	}
	if err := v.host.SyncTo(ctxTimeout(t, 5*time.Second), 6); err != nil {
		t.Fatal(err)
	}
	// Only a follower cuts.
	if _, err := fdb.TruncateAfter(5, at5.Hash, &fork); !errors.Is(err, flume.ErrNotFollower) {
		t.Fatalf("TruncateAfter on a primary = %v, want ErrNotFollower", err)
	}
}

// TestHoldAbove: a follower that holds stores entries above its hold but
// shows none of them to readers until the hold rises; a promotion shows
// them all. (Parallel fsyncs: a follower exposes no more than its primary.)
func TestHoldAbove(t *testing.T) {
	ctx := context.Background()
	fdb, primary := replicatedFollower(t, 2) // seqs 0-1, exposed
	fdb.HoldAbove(1)
	var es []flume.Entry
	for i := int64(2); i < 6; i++ {
		s, err := primary.Append(val(i))
		if err != nil {
			t.Fatal(err)
		}
		e, _ := primary.Entry(s)
		es = append(es, e)
	}
	if err := fdb.AppendReplicated(es); err != nil {
		t.Fatal(err)
	}
	if fdb.Since() != 1 || fdb.Held() != 4 || fdb.Log().Since() != 5 {
		t.Fatalf("since %d, held %d, log %d; want 1, 4 held, log 5", fdb.Since(), fdb.Held(), fdb.Log().Since())
	}
	if _, err := fdb.Get(ctx, 2); !errors.Is(err, flume.ErrNotFound) {
		t.Fatalf("Get of a held entry = %v, want ErrNotFound", err)
	}
	n := 0
	for st := fdb.Stream(ctx, flume.StreamOptions{}); st.Next(); {
		n++
	}
	if n != 2 {
		t.Fatalf("a stream shows %d entries, want the 2 exposed", n)
	}
	fdb.HoldAbove(3)
	if fdb.Since() != 3 {
		t.Fatalf("since %d after raising the hold to 3", fdb.Since())
	}
	fdb.HoldAbove(2) // a hold never falls
	if fdb.Since() != 3 || fdb.Held() != 2 {
		t.Fatalf("since %d, held %d after a lower hold; want 3, 2", fdb.Since(), fdb.Held())
	}
	if _, err := fdb.Promote("n1"); err != nil {
		t.Fatal(err)
	}
	if fdb.Since() != 5 || fdb.Held() != 0 {
		t.Fatalf("after promote: since %d, held %d; want every entry exposed", fdb.Since(), fdb.Held())
	}
	if eps := fdb.Log().(flume.EpochLog).Epochs(); len(eps) != 1 || eps[0].Start != 6 {
		t.Fatalf("promoted epochs %v: the new epoch must begin after the held entries", eps)
	}
}

// TestNewEpoch: a primary begins a new epoch above every one it has seen,
// durably, and owns it; a follower or a deposed primary cannot.
func TestNewEpoch(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, nil)
	if db.OwnEpoch() {
		t.Fatal("a freshly opened DB owns its epoch")
	}
	if _, err := db.Append(ctx, val(0)); err != nil {
		t.Fatal(err)
	}
	r, err := db.NewEpoch("p")
	if err != nil {
		t.Fatal(err)
	}
	el := db.Log().(flume.EpochLog)
	if r.Epoch != 1 || r.Start != 1 || el.FencedEpoch() != 1 || !db.OwnEpoch() {
		t.Fatalf("new epoch %v, fenced %d, own %v; want epoch 1 from seq 1, fenced at 1, owned", r, el.FencedEpoch(), db.OwnEpoch())
	}
	seq, err := db.Append(ctx, val(1))
	if e, _ := db.Log().Entry(seq); err != nil || e.Epoch != 1 {
		t.Fatalf("append after NewEpoch: %v, epoch %d", err, e.Epoch)
	}

	db.Depose(5, "other:7601")
	var de *flume.DeposedError
	if _, err := db.NewEpoch("p"); !errors.As(err, &de) {
		t.Fatalf("NewEpoch on a deposed primary = %v, want the DeposedError", err)
	}
	fdb, _ := replicatedFollower(t, 1)
	if _, err := fdb.NewEpoch("f"); !errors.Is(err, flume.ErrHasUpstream) {
		t.Fatalf("NewEpoch on a follower = %v, want ErrHasUpstream", err)
	}
	if h := fdb.Log().(flume.EpochLog).Epochs(); len(h) != 0 {
		t.Fatalf("a refused NewEpoch changed the history: %v", h)
	}
}

// TestHoldEndsWhenWritable: a DB that held entries as a follower and goes
// back to taking appends (its upstream claim released with restore) shows
// what it held and its own appends.
func TestHoldEndsWhenWritable(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, nil)
	if _, err := db.Append(ctx, val(0)); err != nil {
		t.Fatal(err)
	}
	release, err := db.ClaimUpstream("primary:7601")
	if err != nil {
		t.Fatal(err)
	}
	db.HoldAbove(0)
	release(true)
	seq, err := db.Append(ctx, val(1))
	if err != nil {
		t.Fatal(err)
	}
	if db.Since() != seq {
		t.Fatalf("since %d after an append at %d: a stale hold hides the primary's own appends", db.Since(), seq)
	}
}

// TestTruncateLowersHold: a cut lowers a follower's hold to the cut point,
// so entries of its next primary past the cut show only once that primary
// publishes them, not because its old primary had published as far.
func TestTruncateLowersHold(t *testing.T) {
	fdb, primary := replicatedFollower(t, 6) // 0-5, exposed
	fdb.HoldAbove(5)
	at2, _ := primary.Entry(2)
	var fork bytes.Buffer
	if _, err := fdb.TruncateAfter(2, at2.Hash, &fork); err != nil {
		t.Fatal(err)
	}
	// The new primary's history from seq 3, sent before its fsync.
	other := memlog.New()
	if err := other.SetID(primary.ID()); err != nil {
		t.Fatal(err)
	}
	var es []flume.Entry
	for i := int64(0); i < 6; i++ {
		d := val(i)
		if i >= 3 {
			d = []byte(`"new"`)
		}
		s, err := other.Append(d)
		if err != nil {
			t.Fatal(err)
		}
		if s >= 3 {
			e, _ := other.Entry(s)
			es = append(es, e)
		}
	}
	if err := fdb.AppendReplicated(es); err != nil {
		t.Fatal(err)
	}
	if fdb.Since() != 2 || fdb.Held() != 3 {
		t.Fatalf("after the cut and 3 new entries: since %d, held %d; want 2 and 3 held until the new primary publishes them", fdb.Since(), fdb.Held())
	}
	fdb.HoldAbove(4)
	if fdb.Since() != 4 {
		t.Fatalf("since %d after the new primary published 4", fdb.Since())
	}
}
