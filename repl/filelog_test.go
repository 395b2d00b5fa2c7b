package repl

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/filelog"
)

// openFileDB opens (or reopens) a DB on a file log in dir.
func openFileDB(t testing.TB, dir string, sync filelog.SyncMode, dbOpts *flume.Options) *flume.DB {
	t.Helper()
	l, err := filelog.Open(dir, &filelog.Options{Sync: sync})
	if err != nil {
		t.Fatal(err)
	}
	db, err := flume.Open(l, dbOpts)
	if err != nil {
		l.Close()
		t.Fatal(err)
	}
	return db
}

// Row 2: the follower is reopened from disk and replication starts. JS: the
// replication began before the log had loaded and 500 entries were silently
// lost. flume: the position is read from the open log, so the follower
// resumes exactly at its end, however often it is closed and reopened while
// the primary keeps appending.
func TestJSReopenFromDiskNoLoss(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			pdb := openFileDB(t, t.TempDir(), filelog.SyncNever, nil)
			defer pdb.Close()
			h := newHarness(t, tr, pdb, fastOpts())
			fdir := t.TempDir()
			appendN(t, pdb, 500, "before")

			fdb := openFileDB(t, fdir, filelog.SyncAlways, nil)
			s := h.mustFollow(fdb)
			waitSince(t, fdb, 499)
			s.Close()
			fdb.Close()

			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 40; i++ {
					appendN(t, pdb, 50, fmt.Sprintf("during%d", i))
					time.Sleep(time.Millisecond)
				}
			}()
			for round := 0; round < 8; round++ {
				fdb = openFileDB(t, fdir, filelog.SyncAlways, nil)
				if since := fdb.Since(); since < 499 {
					t.Fatalf("reopened follower since %d, want >= 499", since)
				}
				isPrefix(t, pdb, fdb)
				s := h.mustFollow(fdb)
				time.Sleep(time.Duration(rand.IntN(5)) * time.Millisecond)
				s.Close()
				fdb.Close()
			}
			wg.Wait()
			fdb = openFileDB(t, fdir, filelog.SyncAlways, nil)
			defer fdb.Close()
			s = h.mustFollow(fdb)
			defer s.Close()
			waitSince(t, fdb, pdb.Since())
			sameLog(t, pdb, fdb)
			if got := fdb.Since(); got != 500+40*50-1 {
				t.Fatalf("follower since %d, want %d", got, 500+40*50-1)
			}
		})
	}
}

// A follower on a file log adopts the primary's ID durably: after a
// restart it is still the same history and resumes, not refused.
func TestFileFollowerKeepsAdoptedID(t *testing.T) {
	pdb := openFileDB(t, t.TempDir(), filelog.SyncNever, nil)
	defer pdb.Close()
	appendN(t, pdb, 10, "x")
	_, addr := servePrimary(t, pdb, fastOpts())
	fdir := t.TempDir()
	for i := 0; i < 3; i++ {
		fdb := openFileDB(t, fdir, filelog.SyncAlways, nil)
		f, err := NewFollower(fdb, addr, fastOpts())
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Ready(ctxT(t)); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		appendN(t, pdb, 5, fmt.Sprintf("r%d", i))
		waitSince(t, fdb, pdb.Since())
		sameLog(t, pdb, fdb)
		f.Close()
		fdb.Close()
	}
}

// The primary restarts from disk: its followers reconnect and resume, and
// sync appends with fsync always on both sides succeed after it returns.
func TestPrimaryRestartFromDisk(t *testing.T) {
	pdir, fdir := t.TempDir(), t.TempDir()
	dbOpts := &flume.Options{SyncReplicas: 1, SyncTimeout: 5 * time.Second}
	fdb := openFileDB(t, fdir, filelog.SyncAlways, nil)
	defer fdb.Close()
	ln := listen(t)
	addr := ln.Addr().String()
	ln.Close()
	f, err := NewFollower(fdb, addr, fastOpts())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for round := 0; round < 3; round++ {
		pdb := openFileDB(t, pdir, filelog.SyncAlways, dbOpts)
		p, err := NewPrimary(pdb, fastOpts())
		if err != nil {
			t.Fatal(err)
		}
		ln, err := listenOn(addr)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- p.Serve(ln) }()
		for i := 0; i < 20; i++ {
			if _, err := pdb.Append(context.Background(), []byte(fmt.Sprintf("r%d-%d", round, i))); err != nil {
				t.Fatalf("round %d append %d: %v", round, i, err)
			}
		}
		sameLog(t, pdb, fdb)
		p.Close()
		<-done
		pdb.Close()
	}
}
