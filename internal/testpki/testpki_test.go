package testpki

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"testing"
	"time"
)

func TestLeafVerifies(t *testing.T) {
	ca := New(t)
	other := New(t)
	now := time.Now()
	server, client, node := ca.Server(t, "s"), ca.Client(t, "c"), ca.Node(t, "n")
	expired := ca.Issue(t, Leaf{Name: "old", Usage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-24 * time.Hour)})
	foreign := other.Server(t, "f")
	serverAuth, clientAuth := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	for _, tc := range []struct {
		name  string
		cert  tls.Certificate
		host  string
		usage []x509.ExtKeyUsage
		ok    bool
	}{
		{"server for 127.0.0.1", server, "127.0.0.1", serverAuth, true},
		{"server for ::1", server, "::1", serverAuth, true},
		{"server for localhost", server, "localhost", serverAuth, true},
		{"server for another host", server, "example.com", serverAuth, false},
		{"server as client", server, "", clientAuth, false},
		{"client", client, "", clientAuth, true},
		{"client as server", client, "127.0.0.1", serverAuth, false},
		{"node as server", node, "127.0.0.1", serverAuth, true},
		{"node as client", node, "", clientAuth, true},
		{"expired", expired, "", clientAuth, false},
		{"another CA's", foreign, "127.0.0.1", serverAuth, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.cert.Leaf.Verify(x509.VerifyOptions{Roots: ca.Pool, DNSName: tc.host, KeyUsages: tc.usage})
			if (err == nil) != tc.ok {
				t.Fatalf("Verify: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// The files NodeFiles writes load as a key pair and a CA, and make a mutual
// TLS handshake over a pipe succeed.
func TestNodeFiles(t *testing.T) {
	certFile, keyFile, caFile := NodeFiles(t)
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatalf("no certificate in %s", caFile)
	}
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v; want 0600", fi.Mode(), err)
	}
	c1, c2 := net.Pipe()
	defer c1.Close() // not tls.Conn.Close: its close_notify would wait for a reader
	defer c2.Close()
	srv := tls.Server(c1, &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert})
	cli := tls.Client(c2, &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool, ServerName: "127.0.0.1"})
	errc := make(chan error, 1)
	go func() { errc <- srv.Handshake() }()
	if err := cli.Handshake(); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	if got := srv.ConnectionState().PeerCertificates; len(got) != 1 || got[0].Subject.CommonName != "node" {
		t.Fatalf("server saw client certificates %v", got)
	}
}
