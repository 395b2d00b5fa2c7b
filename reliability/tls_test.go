package reliability

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/internal/testpki"
	"github.com/flume-go/flume/internal/testutil"
	"github.com/flume-go/flume/memlog"
	"github.com/flume-go/flume/repl"
)

// TestTLSClientCertsRefusedAndCounted: a primary that requires client
// certificates refuses a follower without one and a follower whose
// certificate has expired, counts each refusal, and those followers learn
// nothing; a follower with a valid certificate replicates.
func TestTLSClientCertsRefusedAndCounted(t *testing.T) {
	p := testpki.New(t)
	now := time.Now()
	server := &tls.Config{MinVersion: tls.VersionTLS12, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: p.Pool,
		Certificates: []tls.Certificate{p.Server(t, "primary")}}
	pdb, err := flume.Open(memlog.New(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pdb.Close()
	po := replOpts(nil)
	po.TLS = server
	prim, err := repl.NewPrimary(pdb, po)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- prim.Serve(ln) }()
	defer func() { prim.Close(); <-served }()
	for i := 0; i < 10; i++ {
		if _, err := pdb.Append(context.Background(), []byte("secret-entry")); err != nil {
			t.Fatal(err)
		}
	}

	follow := func(cert *tls.Certificate) (*flume.DB, *repl.Follower) {
		t.Helper()
		db, err := flume.Open(memlog.New(), nil)
		if err != nil {
			t.Fatal(err)
		}
		o := replOpts(nil)
		o.TLS = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: p.Pool, ServerName: "127.0.0.1"}
		if cert != nil {
			o.TLS.Certificates = []tls.Certificate{*cert}
		}
		f, err := repl.NewFollower(db, ln.Addr().String(), o)
		if err != nil {
			t.Fatal(err)
		}
		return db, f
	}
	expired := p.Issue(t, testpki.Leaf{Name: "old-follower", Usage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-24 * time.Hour)})
	for _, tc := range []struct {
		name string
		cert *tls.Certificate
	}{{"no certificate", nil}, {"expired certificate", &expired}} {
		t.Run(tc.name, func(t *testing.T) {
			before := prim.Stats().AuthFailures
			db, f := follow(tc.cert)
			defer db.Close()
			defer f.Close()
			if !testutil.Poll(10*time.Second, func() bool { return prim.Stats().AuthFailures > before }) {
				t.Fatalf("primary did not count the refusal: %+v; follower %+v", prim.Stats(), f.Status())
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if err := f.Ready(ctx); !errors.Is(err, repl.ErrAuth) {
				t.Fatalf("Ready: %v, want repl.ErrAuth", err)
			}
			if s := db.Since(); s != -1 {
				t.Fatalf("refused follower holds %d entries", s+1)
			}
		})
	}
	good := p.Client(t, "follower")
	db, f := follow(&good)
	defer db.Close()
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := db.WaitSince(ctx, 9); err != nil {
		t.Fatalf("follower with a valid certificate did not replicate: %v; %+v", err, f.Status())
	}
}
