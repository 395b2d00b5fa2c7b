package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/flume-go/flume/internal/testutil"
)

// writeCerts writes a CA and a certificate for 127.0.0.1 signed by it (used
// by both nodes as server and client certificate) and returns the paths.
func writeCerts(t *testing.T) (cert, key, ca string) {
	t.Helper()
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "flume test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	nodeKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "node"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &nodeKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(nodeKey)
	write := func(name, typ string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return write("node.pem", "CERTIFICATE", der), write("node.key", "EC PRIVATE KEY", keyDER), write("ca.pem", "CERTIFICATE", caDER)
}

// TestTLSReplication: primary and follower with mutual TLS replicate; a
// follower without TLS is refused.
func TestTLSReplication(t *testing.T) {
	cert, key, ca := writeCerts(t)
	cfg, err := LoadTLS(cert, key, ca)
	if err != nil {
		t.Fatal(err)
	}
	p := startNode(t, Config{TLS: cfg})
	wantCode(t, do(t, "POST", p.url+"/log", "", `{"tls":true}`), 200)
	f := startNode(t, Config{TLS: cfg, Follow: p.replAddr})
	if !testutil.Poll(10*time.Second, func() bool { return f.DB().Since() >= 0 }) {
		t.Fatalf("TLS follower did not replicate: %+v", f.Status().Primary)
	}
	plain := startNode(t, Config{Follow: p.replAddr})
	// The refusal counted is the positive signal that the plain follower
	// tried; only then does "it copied nothing" say anything.
	if !testutil.Poll(10*time.Second, func() bool { return p.replState().stats.AuthFailures > 0 }) {
		t.Fatalf("plain follower not refused: %+v", p.replState().stats)
	}
	if s := plain.DB().Since(); s != -1 {
		t.Errorf("plain follower copied entries: since %d", s)
	}
	if _, err := LoadTLS(cert, "", ""); err == nil {
		t.Errorf("LoadTLS with a cert and no key succeeded")
	}
	if c, err := LoadTLS("", "", ""); c != nil || err != nil {
		t.Errorf("LoadTLS with nothing: %v %v", c, err)
	}
}
