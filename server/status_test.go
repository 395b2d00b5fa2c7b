package server

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/flume-go/flume/repl"
)

// The golden files freeze the JSON of GET /status: field names, which
// fields are omitted when empty, and the encoding of times and durations.
// Renaming a field (or a json tag in repl's status types) fails here.
// Regenerate deliberately with
//
//	FLUME_UPDATE_GOLDEN=1 go test ./server -run TestStatusJSONGolden
const statusGoldenDir = "testdata/status"

// goldenStatuses are Status values with every field set (and with every
// field zero), so that no field hides behind omitempty.
func goldenStatuses() map[string]Status {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 6000000, time.UTC)
	fenced, hint := uint64(3), int64(39)
	return map[string]Status{
		"primary.json": {Role: "primary", NodeID: "p1", LogID: "L", Epoch: 3, Since: 41, Hash: "H", Fsync: "always", SyncReplicas: 1,
			ReplAddr: "10.0.0.1:7601", FencedEpoch: &fenced, CommittedHint: &hint, EpochRecords: 7,
			Epochs: []EpochStatus{{Epoch: 3, Start: 40, Prev: "0123456789abcdef", Promotion: "00112233445566778899aabbccddeeff", Time: t0}},
			Followers: []repl.FollowerStatus{{NodeID: "f1", Addr: "10.0.0.2:5000", Connected: true, AckedSeq: 40, ReceivedSeq: 41,
				LagEntries: 1, LagBytes: 128, LagSeconds: 0.25, EntriesPerSec: 1000.5, ConnectedAt: t0, LastSeen: t0.Add(time.Second)}}},
		"follower.json": {Role: "follower", NodeID: "f1", LogID: "L", Epoch: 3, Since: 40, Hash: "H", Fsync: "batch",
			ReplAddr: "10.0.0.2:7601", FencedEpoch: &fenced, CommittedHint: &hint, EpochRecords: 1,
			Epochs: []EpochStatus{{Epoch: 3, Start: 40, Prev: "0123456789abcdef", Promotion: "00112233445566778899aabbccddeeff", Time: t0}},
			Primary: &UpstreamStatus{AckedSeq: 40, HTTP: "http://10.0.0.1:7600", UpstreamStatus: repl.UpstreamStatus{Primary: "10.0.0.1:7601", State: "streaming",
				Connected: true, Since: 40, PrimarySince: 41, LagEntries: 1, LagBytes: 128, LagSeconds: 0.5, LastError: "boom",
				Reconnects: 2, ConnectedAt: t0}}},
		"primary-zero.json":  {Role: "primary", Followers: []repl.FollowerStatus{{}}},
		"follower-zero.json": {Role: "follower", Primary: &UpstreamStatus{}},
	}
}

func TestStatusJSONGolden(t *testing.T) {
	update := os.Getenv("FLUME_UPDATE_GOLDEN") != ""
	for name, st := range goldenStatuses() {
		t.Run(name, func(t *testing.T) {
			got, err := json.MarshalIndent(st, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			path := filepath.Join(statusGoldenDir, name)
			if update {
				if err := os.MkdirAll(statusGoldenDir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (generate with FLUME_UPDATE_GOLDEN=1)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("GET /status JSON changed:\ngot\n%s\nwant (%s)\n%s", got, path, want)
			}
			// What `flume status` decodes is what was sent.
			var back Status
			if err := json.Unmarshal(want, &back); err != nil {
				t.Fatal(err)
			}
			again, _ := json.MarshalIndent(back, "", "  ")
			if !bytes.Equal(append(again, '\n'), want) {
				t.Errorf("decode and re-encode changed the JSON:\ngot\n%s\nwant\n%s", again, want)
			}
		})
	}
}

// jsonKeys returns the key paths of a JSON object: "since",
// "primary.addr", "followers[].acked_seq".
func jsonKeys(t *testing.T, b []byte) []string {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%v in %s", err, b)
	}
	var keys []string
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, e := range v {
				keys = append(keys, prefix+k)
				walk(prefix+k+".", e)
			}
		case []any:
			for _, e := range v {
				walk(prefix[:len(prefix)-1]+"[].", e)
			}
		}
	}
	walk("", v)
	sort.Strings(keys)
	return slices.Compact(keys)
}

// checkLiveStatusKeys checks that a live server's /status body has the
// golden file's fields, apart from those allowed to be omitted.
func checkLiveStatusKeys(t *testing.T, body, golden string, omitted ...string) {
	t.Helper()
	want, err := os.ReadFile(filepath.Join(statusGoldenDir, golden))
	if err != nil {
		t.Fatal(err)
	}
	wantKeys := slices.DeleteFunc(jsonKeys(t, want), func(k string) bool { return slices.Contains(omitted, k) })
	if got := jsonKeys(t, []byte(body)); !slices.Equal(got, wantKeys) {
		t.Errorf("GET /status fields:\ngot  %q\nwant %q (%s without %q)", got, wantKeys, golden, omitted)
	}
}
