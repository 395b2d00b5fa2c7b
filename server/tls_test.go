package server

import (
	"testing"
	"time"

	"github.com/flume-go/flume/internal/testpki"
	"github.com/flume-go/flume/internal/testutil"
)

// TestTLSReplication: primary and follower with mutual TLS replicate; a
// follower without TLS is refused.
func TestTLSReplication(t *testing.T) {
	cert, key, ca := testpki.NodeFiles(t)
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
