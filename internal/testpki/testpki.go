// Package testpki is a throwaway public-key infrastructure for flume's TLS
// tests: a CA, and server, client or node (both) certificates it signs for
// the loopback addresses, in memory or written as PEM files.
//
//	ca := testpki.New(t)
//	srv := &tls.Config{Certificates: []tls.Certificate{ca.Server(t, "primary")},
//		ClientCAs: ca.Pool, ClientAuth: tls.RequireAndVerifyClientCert}
//	cli := &tls.Config{RootCAs: ca.Pool, Certificates: []tls.Certificate{ca.Client(t, "follower")}}
//
// Keys are ECDSA P-256; nothing here is fit for anything but tests.
package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a certificate authority that exists for one test.
type CA struct {
	Cert *x509.Certificate // the CA's own certificate
	Pool *x509.CertPool    // holds Cert: RootCAs for clients, ClientCAs for servers
	key  *ecdsa.PrivateKey
}

// Every leaf certificate names the loopback addresses test servers listen
// on: 127.0.0.1, ::1 and localhost.
var (
	loopbackIPs   = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	loopbackNames = []string{"localhost"}
)

// New makes a CA valid from an hour ago to a day from now.
func New(t testing.TB) *CA {
	t.Helper()
	key := newKey(t)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(t), Subject: pkix.Name{CommonName: "flume test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("testpki: CA certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("testpki: CA certificate: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{Cert: cert, Pool: pool, key: key}
}

// Leaf describes a certificate for Issue.
type Leaf struct {
	Name  string             // subject common name
	Usage []x509.ExtKeyUsage // e.g. x509.ExtKeyUsageServerAuth
	// NotBefore and NotAfter default to an hour ago and a day from now;
	// set them to issue an expired or not yet valid certificate.
	NotBefore, NotAfter time.Time
}

// Issue signs a certificate for the loopback addresses as l describes.
func (ca *CA) Issue(t testing.TB, l Leaf) tls.Certificate {
	t.Helper()
	now := time.Now()
	if l.NotBefore.IsZero() {
		l.NotBefore = now.Add(-time.Hour)
	}
	if l.NotAfter.IsZero() {
		l.NotAfter = now.Add(24 * time.Hour)
	}
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: serial(t), Subject: pkix.Name{CommonName: l.Name},
		NotBefore: l.NotBefore, NotAfter: l.NotAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: l.Usage,
		IPAddresses: loopbackIPs, DNSNames: loopbackNames,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatalf("testpki: certificate for %q: %v", l.Name, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("testpki: certificate for %q: %v", l.Name, err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// Server issues a server certificate for the loopback addresses.
func (ca *CA) Server(t testing.TB, name string) tls.Certificate {
	t.Helper()
	return ca.Issue(t, Leaf{Name: name, Usage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
}

// Client issues a client certificate.
func (ca *CA) Client(t testing.TB, name string) tls.Certificate {
	t.Helper()
	return ca.Issue(t, Leaf{Name: name, Usage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
}

// Node issues a certificate usable as both server and client, as a flume
// node presents one certificate to its followers and to its primary.
func (ca *CA) Node(t testing.TB, name string) tls.Certificate {
	t.Helper()
	return ca.Issue(t, Leaf{Name: name, Usage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}})
}

// WriteCA writes the CA certificate to dir/ca.pem and returns its path.
func (ca *CA) WriteCA(t testing.TB, dir string) string {
	t.Helper()
	return writePEM(t, filepath.Join(dir, "ca.pem"), "CERTIFICATE", ca.Cert.Raw)
}

// WriteCert writes c's certificate chain to dir/name.pem and its key to
// dir/name.key (mode 0600), and returns the two paths.
func WriteCert(t testing.TB, dir, name string, c tls.Certificate) (certFile, keyFile string) {
	t.Helper()
	var chain []byte
	for _, der := range c.Certificate {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	certFile = filepath.Join(dir, name+".pem")
	if err := os.WriteFile(certFile, chain, 0o600); err != nil {
		t.Fatalf("testpki: %v", err)
	}
	key, ok := c.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		t.Fatalf("testpki: WriteCert: key is %T, want *ecdsa.PrivateKey", c.PrivateKey)
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatalf("testpki: %v", err)
	}
	return certFile, writePEM(t, filepath.Join(dir, name+".key"), "EC PRIVATE KEY", der)
}

// NodeFiles makes a CA and one node certificate (server and client, for
// the loopback addresses) in a fresh t.TempDir(), and returns the paths of
// the certificate, its key and the CA certificate: what --tls-cert,
// --tls-key and --tls-ca take.
func NodeFiles(t testing.TB) (certFile, keyFile, caFile string) {
	t.Helper()
	dir := t.TempDir()
	ca := New(t)
	certFile, keyFile = WriteCert(t, dir, "node", ca.Node(t, "node"))
	return certFile, keyFile, ca.WriteCA(t, dir)
}

func writePEM(t testing.TB, path, typ string, der []byte) string {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatalf("testpki: %v", err)
	}
	return path
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testpki: key: %v", err)
	}
	return key
}

// serial returns a random 128-bit serial number, unique enough that no two
// certificates of one test run share one.
func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		t.Fatalf("testpki: serial: %v", err)
	}
	return n
}
