package repl

// Invariant 8 of architecture.md §6 for credentials, and the security
// requirements of the replication issue: shared secrets and TLS client
// certificates.

import (
	"bytes"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/flume-go/flume/internal/testpki"
)

// logBuffer is a slog handler target safe for concurrent use.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Invariant 8, credentials: a wrong or missing secret is refused on both
// sides, counted, logged, and the peer learns nothing about the log.
func TestAuthRefused(t *testing.T) {
	cases := []struct {
		name       string
		pSec, fSec []byte
	}{
		{"wrong secret", []byte("right"), []byte("wrong")},
		{"follower has none", []byte("right"), nil},
		{"primary has none", nil, []byte("right")},
	}
	for _, tr := range []string{"tcp", "pipe"} {
		for _, tc := range cases {
			t.Run(tr+"/"+tc.name, func(t *testing.T) {
				pdb, fdb := newMemDB(t), newMemDB(t)
				appendN(t, pdb, 5, "secret-data")
				var logs logBuffer
				popts := fastOpts()
				popts.Secret = tc.pSec
				popts.Logger = slog.New(slog.NewTextHandler(&logs, nil))
				fopts := fastOpts()
				fopts.Secret = tc.fSec
				fid := fdb.Log().ID()
				var err error
				var prim *Primary
				if tr == "tcp" {
					var addr string
					prim, addr = servePrimary(t, pdb, popts)
					var f *Follower
					f, err = NewFollower(fdb, addr, fopts)
					if err != nil {
						t.Fatal(err)
					}
					defer f.Close()
					err = f.Ready(ctxT(t))
					if st := f.Status(); st.PrimarySince != -1 || st.State != StateRefused {
						t.Fatalf("follower learned the primary's since (%d) or state %s", st.PrimarySince, st.State)
					}
				} else {
					prim, _ = NewPrimary(pdb, popts)
					defer prim.Close()
					_, err = Replicate(pdb, fdb, fopts)
				}
				if !errors.Is(err, ErrAuth) {
					t.Fatalf("got %v, want ErrAuth", err)
				}
				if fdb.Since() != -1 || fdb.Log().ID() != fid {
					t.Fatal("the follower changed")
				}
				eventually(t, "the primary to count the failure", func() bool { return prim.Stats().AuthFailures > 0 })
				if tc.pSec != nil && !strings.Contains(logs.String(), "authentication") {
					t.Fatalf("the failure was not logged: %q", logs.String())
				}
				if prim.Stats().Handshakes != 0 {
					t.Fatal("a handshake completed")
				}
			})
		}
	}
	// A peer that skips checking the primary's proof and answers with a
	// wrong one gets an auth error and never a Hello.
	pdb := newMemDB(t)
	popts := fastOpts()
	popts.Secret = []byte("right")
	prim, addr := servePrimary(t, pdb, popts)
	c, _ := net.Dial("tcp", addr)
	raw := newRawPeer(t, c)
	_, _, err := raw.followerHandshake([]byte("wrong"), Hello{NodeID: "x", Since: -1})
	if !errors.Is(err, ErrAuth) {
		t.Fatalf("raw peer with a wrong proof: %v, want ErrAuth before any Hello", err)
	}
	if prim.Stats().AuthFailures != 1 {
		t.Fatalf("auth failures %d, want 1", prim.Stats().AuthFailures)
	}
	// And the right secret works.
	fdb := newMemDB(t)
	fopts := fastOpts()
	fopts.Secret = []byte("right")
	f, err := NewFollower(fdb, addr, fopts)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Ready(ctxT(t)); err != nil {
		t.Fatal(err)
	}
}

// TLS with client certificates required: a follower with a certificate
// from the CA replicates; one without is refused and counted.
func TestTLSClientCertRequired(t *testing.T) {
	pki := testpki.New(t)
	server := &tls.Config{Certificates: []tls.Certificate{pki.Server(t, "primary")},
		ClientCAs: pki.Pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
	pdb := newMemDB(t)
	appendN(t, pdb, 20, "tls")
	popts := fastOpts()
	popts.TLS = server
	prim, addr := servePrimary(t, pdb, popts)

	noCert := fastOpts()
	noCert.TLS = &tls.Config{RootCAs: pki.Pool}
	fdb := newMemDB(t)
	f, err := NewFollower(fdb, addr, noCert)
	if err != nil {
		t.Fatal(err)
	}
	err = f.Ready(ctxT(t))
	f.Close()
	if !errors.Is(err, ErrAuth) {
		t.Fatalf("follower without a client certificate: %v, want ErrAuth", err)
	}
	if fdb.Since() != -1 {
		t.Fatal("follower without a certificate received entries")
	}
	eventually(t, "the primary to count the TLS failure", func() bool { return prim.Stats().AuthFailures > 0 })

	// A plain-TCP follower: once the primary has refused it (the positive
	// signal that it tried), it must hold nothing.
	plain := fastOpts()
	fdb2 := newMemDB(t)
	before := prim.Stats().AuthFailures
	f, err = NewFollower(fdb2, addr, plain)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the plain-TCP follower to be refused", func() bool {
		return prim.Stats().AuthFailures > before && f.Status().LastError != ""
	})
	t.Logf("plain-TCP follower: %s", f.Status().LastError)
	f.Close()
	if fdb2.Since() != -1 {
		t.Fatal("a plain-TCP follower received entries from a TLS primary")
	}

	withCert := fastOpts()
	withCert.TLS = &tls.Config{RootCAs: pki.Pool, Certificates: []tls.Certificate{pki.Client(t, "follower")}}
	fdb3 := newMemDB(t)
	f, err = NewFollower(fdb3, addr, withCert)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Ready(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	appendN(t, pdb, 5, "more")
	waitSince(t, fdb3, 24)
	sameLog(t, pdb, fdb3)
}
