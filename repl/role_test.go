package repl

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/flume-go/flume"
)

// TestReplicateSharesPrimary: every link from one DB shares one Primary, so
// WaitAcked counts all their followers; the Primary the links made goes
// away with the last of them, and a Primary made by NewPrimary is reused
// and outlives the links.
func TestReplicateSharesPrimary(t *testing.T) {
	pdb := newMemDB(t)
	f1, f2 := newMemDB(t), newMemDB(t)
	l1, err := Replicate(pdb, f1, fastOpts())
	if err != nil {
		t.Fatal(err)
	}
	l2, err := Replicate(pdb, f2, fastOpts())
	if err != nil {
		t.Fatal(err)
	}
	if l1.Primary() != l2.Primary() || pdb.Replicator() != l1.Primary() {
		t.Fatal("two links from one DB do not share its Primary")
	}
	_, _, err = pdb.AppendWith(ctxT(t), flume.AppendOptions{SyncReplicas: 2}, []byte("x"))
	if err != nil {
		t.Fatalf("k=2 append over two links: %v", err)
	}
	l1.Close()
	if pdb.Replicator() != l2.Primary() {
		t.Fatal("the Primary went away while a link still uses it")
	}
	l2.Close()
	if pdb.Replicator() != nil {
		t.Fatal("the links' Primary outlived the last link")
	}
	p, err := NewPrimary(pdb, fastOpts())
	if err != nil {
		t.Fatalf("NewPrimary after the links closed: %v", err)
	}
	p.Close()
}

func TestNewPrimaryReusedByReplicate(t *testing.T) {
	pdb, fdb := newMemDB(t), newMemDB(t)
	p, err := NewPrimary(pdb, fastOpts())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, err := NewPrimary(pdb, fastOpts()); !errors.Is(err, ErrHasPrimary) {
		t.Fatalf("second NewPrimary = %v, want ErrHasPrimary", err)
	}
	l, err := Replicate(pdb, fdb, fastOpts())
	if err != nil {
		t.Fatal(err)
	}
	if l.Primary() != p {
		t.Fatal("Replicate did not reuse the DB's Primary")
	}
	l.Close()
	if pdb.Replicator() != p {
		t.Fatal("closing a link closed a Primary it did not make")
	}
}

// TestReplicateConcurrentLinks opens and closes links from one DB from many
// goroutines: each must get a live Primary (never one its last link is
// closing) and the DB must end with none.
func TestReplicateConcurrentLinks(t *testing.T) {
	pdb := newMemDB(t)
	appendN(t, pdb, 10, "a")
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 5; j++ {
				fdb := newMemDB(t)
				l, err := Replicate(pdb, fdb, fastOpts())
				if err != nil {
					errc <- err
					return
				}
				if err := fdb.WaitSince(ctxT(t), 9); err != nil {
					errc <- err
				}
				l.Close()
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	if pdb.Replicator() != nil {
		t.Fatal("a Primary made by links outlived them all")
	}
}

// TestFailedReplicateRestoresRole: a Replicate that cannot get going leaves
// the follower DB with the role it had (writable), and its upstream free.
func TestFailedReplicateRestoresRole(t *testing.T) {
	pdb, fdb := newMemDB(t), newMemDB(t)
	appendN(t, pdb, 3, "p")
	appendN(t, fdb, 3, "f") // another history: refused
	if _, err := Replicate(pdb, fdb, fastOpts()); err == nil {
		t.Fatal("Replicate of unrelated logs succeeded")
	}
	if f, _ := fdb.Role(); f {
		t.Fatal("a refused Replicate left the DB read-only")
	}
	if _, err := fdb.Append(context.Background(), []byte("x")); err != nil {
		t.Fatalf("Append after a refused Replicate: %v", err)
	}
	rel, err := fdb.ClaimUpstream("elsewhere")
	if err != nil {
		t.Fatalf("upstream still claimed after a refused Replicate: %v", err)
	}
	rel(true)
}

// TestFollowerPromote: a follower stops replicating and becomes the primary
// of a new epoch, and can then serve followers of its own.
func TestFollowerPromote(t *testing.T) {
	pdb, fdb := newMemDB(t), newMemDB(t)
	appendN(t, pdb, 20, "a")
	l, err := Replicate(pdb, fdb, fastOpts())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	waitSince(t, fdb, 19)
	r, err := l.Follower().Promote()
	if err != nil {
		t.Fatal(err)
	}
	if r.Epoch != 1 || r.Start != 20 {
		t.Fatalf("promotion record %v, want epoch 1 from seq 20", r)
	}
	if _, err := l.Follower().Promote(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Promote = %v, want ErrClosed", err)
	}
	seq, err := fdb.Append(context.Background(), []byte(`"new primary"`))
	if err != nil || seq != 20 {
		t.Fatalf("Append on the promoted DB = %d, %v", seq, err)
	}
	// The old primary goes on alone: nothing of it reaches the new one.
	appendN(t, pdb, 5, "old")
	if fdb.Since() != 20 {
		t.Fatalf("the promoted DB took entries from its old primary: since %d", fdb.Since())
	}
	// The new primary serves a follower of its own, epoch records and all.
	gdb := newMemDB(t)
	l2, err := Replicate(fdb, gdb, fastOpts())
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	waitSince(t, gdb, 20)
	if e, _ := gdb.Log().Entry(20); e.Epoch != 1 {
		t.Fatalf("entry 20 on the new follower has epoch %d, want 1", e.Epoch)
	}
}

// TestAdvertiseHTTP: the primary's HTTP URL reaches its followers in the
// handshake, for their 421 answers.
func TestAdvertiseHTTP(t *testing.T) {
	pdb, fdb := newMemDB(t), newMemDB(t)
	opts := fastOpts()
	opts.AdvertiseHTTP = "http://10.0.0.1:7600"
	_, addr := servePrimary(t, pdb, opts)
	f, err := NewFollower(fdb, addr, fastOpts())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Ready(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if got := f.Status().PrimaryHTTP; got != opts.AdvertiseHTTP {
		t.Fatalf("follower learned primary HTTP %q, want %q", got, opts.AdvertiseHTTP)
	}
}
