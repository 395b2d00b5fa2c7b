package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeTestCerts writes a CA and a certificate for 127.0.0.1 signed by it.
func writeTestCerts(t *testing.T) (cert, key, ca string) {
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
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "node"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(k)
	write := func(name, typ string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return write("node.pem", "CERTIFICATE", der), write("node.key", "EC PRIVATE KEY", keyDER), write("ca.pem", "CERTIFICATE", caDER)
}

// TestServeTLSFlags: --tls-cert/--tls-key/--tls-ca secure replication
// (mutual TLS); a follower without TLS copies nothing.
func TestServeTLSFlags(t *testing.T) {
	cert, key, ca := writeTestCerts(t)
	p := startServeInProc(t, serveFlags{data: t.TempDir(), fsync: "never", tlsCert: cert, tlsKey: key, tlsCA: ca})
	if code, _ := httpDo(t, "POST", p.url+"/log", "", "", `{"tls":1}`); code != 200 {
		t.Fatal("POST failed")
	}
	f := startServeInProc(t, serveFlags{data: t.TempDir(), fsync: "never", follow: p.repl, tlsCert: cert, tlsKey: key, tlsCA: ca})
	waitFor(t, "TLS follower has seq 0", 20*time.Second, func() (bool, string) {
		resp, err := http.Get(f.url + "/log/0")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == 200, resp.Status
	})
	plain := startServeInProc(t, serveFlags{data: t.TempDir(), fsync: "never", follow: p.repl})
	time.Sleep(300 * time.Millisecond) // a few refused attempts; nothing may arrive
	if code, _ := httpDo(t, "GET", plain.url+"/log/0", "", "", ""); code != 404 {
		t.Errorf("plain follower of a TLS primary has seq 0 (status %d)", code)
	}
	if code, _, stderr := runCmd(t, "", "serve", "--data", t.TempDir(), "--tls-cert", cert); code != exitError {
		t.Errorf("--tls-cert without --tls-key: exit %d %s", code, stderr)
	}
}

// TestServeHTTPS: with --http-tls the HTTP API is served over HTTPS with
// the node's certificate; client commands reach it with --tls-ca, and fail
// with a clear error without it (unknown authority) or over plain HTTP.
func TestServeHTTPS(t *testing.T) {
	cert, key, ca := writeTestCerts(t)
	p := startServeInProc(t, serveFlags{data: t.TempDir(), fsync: "never", tlsCert: cert, tlsKey: key, httpTLS: true})
	url := "https://" + strings.TrimPrefix(p.url, "http://")
	code, out, stderr := runCmd(t, "", "append", "--server", url, "--tls-ca", ca, `{"over":"tls"}`)
	if code != 0 || !strings.Contains(out, `"seq":0`) {
		t.Fatalf("append over HTTPS: exit %d, %q, %q", code, out, stderr)
	}
	if code, out, stderr := runCmd(t, "", "get", "--server", url, "--tls-ca", ca, "0"); code != 0 || strings.TrimSpace(out) != `{"over":"tls"}` {
		t.Fatalf("get over HTTPS: exit %d, %q, %q", code, out, stderr)
	}
	if code, _, stderr := runCmd(t, "", "get", "--server", url, "0"); code == 0 || !strings.Contains(stderr, "certificate") {
		t.Errorf("get without --tls-ca: exit %d, %q (want a certificate error)", code, stderr)
	}
	if code, _, stderr := runCmd(t, "", "get", "--server", p.url, "0"); code == 0 {
		t.Errorf("plain HTTP to the HTTPS port succeeded: %q", stderr)
	}
	if code, _, stderr := runCmd(t, "", "serve", "--data", t.TempDir(), "--http-tls"); code != exitUsage {
		t.Errorf("--http-tls without a certificate: exit %d %s", code, stderr)
	}
}
