package main

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flume-go/flume/internal/testpki"
)

// TestServeTLSFlags: --tls-cert/--tls-key/--tls-ca secure replication
// (mutual TLS); a follower without TLS copies nothing.
func TestServeTLSFlags(t *testing.T) {
	cert, key, ca := testpki.NodeFiles(t)
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
	// Nothing may arrive: asserted once the primary has refused the plain
	// follower twice (its first attempt and a retry).
	waitFor(t, "the primary to refuse the plain follower twice", 20*time.Second, func() (bool, string) {
		_, m := httpDo(t, "GET", p.url+"/metrics", "", "", "")
		for _, l := range strings.Split(m, "\n") {
			if n, ok := strings.CutPrefix(l, "flume_repl_auth_failures_total "); ok {
				f, err := strconv.ParseFloat(n, 64)
				return err == nil && f >= 2, l
			}
		}
		return false, "no flume_repl_auth_failures_total in /metrics"
	})
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
	cert, key, ca := testpki.NodeFiles(t)
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
