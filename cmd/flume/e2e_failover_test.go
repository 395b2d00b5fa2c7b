package main

import (
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// flumeCLI runs the built binary and returns its exit code, stdout and
// stderr.
func flumeCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(flumeBinary(t), args...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("flume %v: %v", args, err)
	}
	return code, out.String(), errb.String()
}

// entryEpoch is the Flume-Epoch header of GET /log/{seq} on p.
func entryEpoch(t *testing.T, p *proc, token string, seq int64) string {
	t.Helper()
	req, _ := http.NewRequest("GET", fmt.Sprintf("%s/log/%d", p.url, seq), nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("%s GET /log/%d: %s", p.name, seq, resp.Status)
	}
	return resp.Header.Get("Flume-Epoch")
}

// TestE2EFailover is the manual failover of the README with real
// processes: a primary and two followers with --sync-replicas 1 and fsync
// always; f2 is killed and misses entries; the primary is killed -9. Promoting
// f2 is refused because its peer f1 has a longer log; f1 is promoted
// (the dead primary reported unreachable), f2 is repointed to it, an
// append through f2 follows the 421 to the new primary, and the old
// primary restarts as a follower of f1 and rejoins. All three end with the
// same log; the new entries carry epoch 1.
func TestE2EFailover(t *testing.T) {
	const token = "failover-secret"
	secret := writeSecret(t, token)
	pdir, f1dir, f2dir := t.TempDir(), t.TempDir(), t.TempDir()
	common := []string{"--secret-file", secret, "--fsync", "always", "--sync-replicas", "1", "--sync-timeout", "5s"}
	p := startServe(t, "p", append([]string{"--data", pdir}, common...)...)
	f1 := startServe(t, "f1", append([]string{"--data", f1dir, "--follow", p.replAddr, "--primary-http", p.url}, common...)...)
	f2 := startServe(t, "f2", append([]string{"--data", f2dir, "--follow", p.replAddr, "--primary-http", p.url}, common...)...)
	post := func(n *proc, v string) {
		t.Helper()
		if code, body := httpDo(t, "POST", n.url+"/log", token, "", v); code != 200 {
			t.Fatalf("POST %s to %s: %d %s", v, n.name, code, body)
		}
	}
	for i := range 20 {
		post(p, fmt.Sprintf(`{"i":%d}`, i))
	}
	waitFor(t, "both followers at seq 19", 20*time.Second, func() (bool, string) {
		s1, s2 := status(t, f1, token), status(t, f2, token)
		return s1.Since == 19 && s2.Since == 19, fmt.Sprintf("f1 %d f2 %d", s1.Since, s2.Since)
	})

	// f2 misses 20..29 (each acknowledged by f1), then the primary dies.
	f2.kill()
	for i := 20; i < 30; i++ {
		post(p, fmt.Sprintf(`{"i":%d}`, i))
	}
	p.kill()
	f2 = startServe(t, "f2", append([]string{"--data", f2dir, "--follow", p.replAddr, "--primary-http", p.url}, common...)...)

	// The shorter log cannot be promoted while f1 can be asked.
	peers := func(ns ...*proc) string {
		var u []string
		for _, n := range ns {
			u = append(u, n.url)
		}
		return strings.Join(u, ",")
	}
	code, out, stderr := flumeCLI(t, "promote", "--server", f2.url, "--secret-file", secret, "--peers", peers(f1, p))
	if code != 1 || !strings.Contains(stderr, "409") || !strings.Contains(stderr, f1.url) || !strings.Contains(stderr, "longer log (since 29 > ours 19)") {
		t.Fatalf("promote f2: exit %d\n%s%s", code, out, stderr)
	}
	if st := status(t, f2, token); st.Role != "follower" || st.EpochRecords != 0 {
		t.Fatalf("a refused promote changed f2: %+v", st)
	}

	code, out, stderr = flumeCLI(t, "promote", "--server", f1.url, "--secret-file", secret, "--peers", peers(f2, p))
	if code != 0 {
		t.Fatalf("promote f1: exit %d\n%s%s", code, out, stderr)
	}
	for _, want := range []string{"is the primary of epoch 1 from seq 30", "peer " + f2.url + ": ok", "peer " + p.url + ": unreachable"} {
		if !strings.Contains(out, want) {
			t.Errorf("promote output lacks %q:\n%s", want, out)
		}
	}
	f1st := status(t, f1, token)
	if f1st.Role != "primary" || f1st.Epoch != 1 || len(f1st.Epochs) != 1 || f1st.Epochs[0].Start != 30 || f1st.ReplAddr != f1.replAddr {
		t.Fatalf("f1 after promote: %+v", f1st)
	}

	code, out, stderr = flumeCLI(t, "repoint", f1.replAddr, "--server", f2.url, "--secret-file", secret, "--primary-http", f1.url)
	if code != 0 || !strings.Contains(out, "following "+f1.replAddr) {
		t.Fatalf("repoint f2: exit %d\n%s%s", code, out, stderr)
	}
	// Through the follower: the 421 names f1's HTTP URL and the client
	// retries there; f1 needs f2's ack (k=1).
	code, out, stderr = flumeCLI(t, "append", "--server", f2.url, "--secret-file", secret, `{"after":"failover"}`)
	if code != 0 || strings.TrimSpace(out) != `{"seq":30}` || !strings.Contains(stderr, "retrying at its primary "+f1.url) {
		t.Fatalf("append through f2: exit %d\n%s%s", code, out, stderr)
	}
	post(f1, `{"after":"direct"}`)

	// The old primary comes back as a follower of f1 and rejoins: it
	// holds nothing f1 lacks (every append it acknowledged reached f1).
	p = startServe(t, "p", append([]string{"--data", pdir, "--follow", f1.replAddr, "--primary-http", f1.url}, common...)...)
	waitFor(t, "f2 and the old primary at f1's end", 20*time.Second, func() (bool, string) {
		want := status(t, f1, token)
		var b strings.Builder
		ok := want.Since == 31
		for _, n := range []*proc{f2, p} {
			st := status(t, n, token)
			ok = ok && st.Since == want.Since && st.Hash == want.Hash && st.LogID == want.LogID
			fmt.Fprintf(&b, "%s since %d hash %s; ", n.name, st.Since, st.Hash)
		}
		return ok, fmt.Sprintf("f1 since %d hash %s; %s", want.Since, want.Hash, b.String())
	})
	for _, n := range []*proc{f1, f2, p} {
		if e29, e30 := entryEpoch(t, n, token, 29), entryEpoch(t, n, token, 30); e29 != "0" || e30 != "1" {
			t.Errorf("%s: epochs of seqs 29 and 30: %s, %s; want 0, 1", n.name, e29, e30)
		}
	}
	code, out, _ = flumeCLI(t, "status", "--server", f1.url, "--secret-file", secret)
	if code != 0 || !strings.Contains(out, "epoch history: 1 record(s)") || !strings.Contains(out, "f2") {
		t.Errorf("flume status of the new primary:\n%s", out)
	}
	code, out, _ = flumeCLI(t, "status", "--server", f2.url, "--secret-file", secret)
	if code != 0 || !strings.Contains(out, f1.replAddr) || !strings.Contains(out, "primary http") {
		t.Errorf("flume status of f2:\n%s", out)
	}

	f2.stop()
	p.stop()
	f1.stop()
	var hashes []string
	for _, dir := range []string{f1dir, f2dir, pdir} {
		code, out, stderr := flumeCLI(t, "verify", "--data", dir)
		if code != 0 || !strings.Contains(out, "entries: 32") {
			t.Fatalf("verify %s: exit %d\n%s%s", dir, code, out, stderr)
		}
		hashes = append(hashes, out[strings.Index(out, "hash:"):])
	}
	if hashes[0] != hashes[1] || hashes[0] != hashes[2] {
		t.Errorf("the three logs differ:\n%v", hashes)
	}
}
