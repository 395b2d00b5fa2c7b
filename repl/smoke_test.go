package repl

import (
	"testing"
)

func TestReplicateSmoke(t *testing.T) {
	p, f := newMemDB(t), newMemDB(t)
	appendN(t, p, 100, "a")
	l, err := Replicate(p, f, fastOpts())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	appendN(t, p, 100, "b")
	waitSince(t, f, 199)
	sameLog(t, p, f)
}

func TestTCPSmoke(t *testing.T) {
	p, f := newMemDB(t), newMemDB(t)
	appendN(t, p, 100, "a")
	_, addr := servePrimary(t, p, fastOpts())
	fl, err := NewFollower(f, addr, fastOpts())
	if err != nil {
		t.Fatal(err)
	}
	defer fl.Close()
	if err := fl.Ready(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	appendN(t, p, 100, "b")
	waitSince(t, f, 199)
	sameLog(t, p, f)
}
