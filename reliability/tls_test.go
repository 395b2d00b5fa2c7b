package reliability

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/internal/testutil"
	"github.com/flume-go/flume/memlog"
	"github.com/flume-go/flume/repl"
)

// pki is a throwaway CA for the TLS tests.
type pki struct {
	ca   *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "reliability CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &pki{ca: ca, key: key, pool: pool}
}

// leaf issues a certificate valid from notBefore to notAfter.
func (p *pki) leaf(t *testing.T, name string, usage x509.ExtKeyUsage, notBefore, notAfter time.Time) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: notBefore, NotAfter: notAfter, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestTLSClientCertsRefusedAndCounted: a primary that requires client
// certificates refuses a follower without one and a follower whose
// certificate has expired, counts each refusal, and those followers learn
// nothing; a follower with a valid certificate replicates.
func TestTLSClientCertsRefusedAndCounted(t *testing.T) {
	p := newPKI(t)
	now := time.Now()
	server := &tls.Config{MinVersion: tls.VersionTLS12, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: p.pool,
		Certificates: []tls.Certificate{p.leaf(t, "primary", x509.ExtKeyUsageServerAuth, now.Add(-time.Hour), now.Add(time.Hour))}}
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
		o.TLS = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: p.pool, ServerName: "127.0.0.1"}
		if cert != nil {
			o.TLS.Certificates = []tls.Certificate{*cert}
		}
		f, err := repl.NewFollower(db, ln.Addr().String(), o)
		if err != nil {
			t.Fatal(err)
		}
		return db, f
	}
	expired := p.leaf(t, "old-follower", x509.ExtKeyUsageClientAuth, now.Add(-48*time.Hour), now.Add(-24*time.Hour))
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
	good := p.leaf(t, "follower", x509.ExtKeyUsageClientAuth, now.Add(-time.Hour), now.Add(time.Hour))
	db, f := follow(&good)
	defer db.Close()
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := db.WaitSince(ctx, 9); err != nil {
		t.Fatalf("follower with a valid certificate did not replicate: %v; %+v", err, f.Status())
	}
}
