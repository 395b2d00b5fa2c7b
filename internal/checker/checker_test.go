package checker

import (
	"fmt"
	"testing"
	"time"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/memlog"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

// build makes a real log holding values and reads it back.
func build(t *testing.T, name string, id flume.LogID, values ...string) Replica {
	t.Helper()
	l := memlog.New()
	defer l.Close()
	if err := l.SetID(id); err != nil {
		t.Fatal(err)
	}
	for _, v := range values {
		if _, err := l.Append([]byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	r, err := FromLog(name, l)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// okOps are sequential durable acknowledged appends of v0..v(n-1).
func okOps(n int) []Op {
	var ops []Op
	for i := 0; i < n; i++ {
		ops = append(ops, Op{Client: 1, Value: fmt.Sprintf("v%d", i), Outcome: OK, Seq: int64(i), Durable: true,
			Start: at(10 * i), End: at(10*i + 5)})
	}
	return ops
}

func vals(n int) []string {
	var v []string
	for i := 0; i < n; i++ {
		v = append(v, fmt.Sprintf("v%d", i))
	}
	return v
}

func TestHealthyHistoryPasses(t *testing.T) {
	id := flume.NewLogID()
	p := build(t, "p", id, vals(5)...)
	f1 := build(t, "f1", id, vals(5)...)
	f2 := build(t, "f2", id, vals(3)...) // behind but a prefix
	ops := okOps(5)
	ops[4].SyncReplicas = 1
	cut := Cut{At: at(100), Since: map[string]int64{"f1": 4, "f2": 2}}
	r := Check(ops, p, []Replica{f1, f2}, []Cut{cut}, Options{})
	if !r.OK() {
		t.Fatal(r.Err())
	}
	if r.EntriesVerified != 5+5+3 || r.AcksVerified != 5 {
		t.Fatalf("verified entries=%d acks=%d, want 13 and 5", r.EntriesVerified, r.AcksVerified)
	}
	if r := Check(ops, p, []Replica{f1, f2}, nil, Options{RequireCaughtUp: true}); !r.Has("caught-up") {
		t.Fatalf("behind follower passed RequireCaughtUp: %v", r.Err())
	}
}

// Each case is a history or replica set that breaks one invariant; the
// checker must report it (so it cannot pass whatever happens).
func TestBrokenHistoriesFail(t *testing.T) {
	id := flume.NewLogID()
	cases := []struct {
		name string
		kind string
		run  func() *Report
	}{
		{"lost acknowledged append", "lost", func() *Report {
			return Check(okOps(5), build(t, "p", id, vals(4)...), nil, nil, Options{})
		}},
		{"acknowledged append at another seq", "moved", func() *Report {
			p := build(t, "p", id, "v0", "v2", "v1")
			return Check(okOps(3), p, nil, nil, Options{})
		}},
		{"lost non-durable append whose seq was reused is fine but moved is not", "moved", func() *Report {
			ops := okOps(2)
			ops[1].Durable = false
			p := build(t, "p", id, "v1", "v0") // v1 moved to seq 0
			return Check(ops, p, nil, nil, Options{})
		}},
		{"duplicate value", "duplicate", func() *Report {
			p := build(t, "p", id, "v0", "v1", "v1")
			return Check(okOps(2), p, nil, nil, Options{AllowForeign: true})
		}},
		{"unknown append applied twice", "duplicate", func() *Report {
			ops := []Op{{Client: 1, Value: "u", Outcome: Unknown, Start: at(0), End: at(1)}}
			return Check(ops, build(t, "p", id, "u", "u"), nil, nil, Options{})
		}},
		{"failed append present", "present-failed", func() *Report {
			ops := append(okOps(1), Op{Client: 2, Value: "x", Outcome: Failed, Start: at(20), End: at(21)})
			return Check(ops, build(t, "p", id, "v0", "x"), nil, nil, Options{})
		}},
		{"not-replicated durable append missing", "lost", func() *Report {
			ops := okOps(2)
			ops[1].Outcome, ops[1].SyncReplicas = NotReplicated, 1
			return Check(ops, build(t, "p", id, "v0"), nil, nil, Options{})
		}},
		{"not-replicated append at another seq", "moved", func() *Report {
			ops := []Op{{Client: 1, Value: "n", Outcome: NotReplicated, Seq: 0, SyncReplicas: 1, Start: at(0), End: at(1)}}
			return Check(ops, build(t, "p", id, "other", "n"), nil, nil, Options{AllowForeign: true})
		}},
		{"entry nobody appended", "foreign", func() *Report {
			return Check(okOps(1), build(t, "p", id, "v0", "ghost"), nil, nil, Options{})
		}},
		{"real-time order broken", "order", func() *Report {
			ops := okOps(2)
			ops[0].Seq, ops[1].Seq = 1, 0 // v0 acked with seq 1 before v1 started, v1 got 0
			p := build(t, "p", id, "v1", "v0")
			return Check(ops, p, nil, nil, Options{})
		}},
		{"gap in a log", "dense", func() *Report {
			p := build(t, "p", id, vals(3)...)
			p.Entries = append(p.Entries[:1], p.Entries[2:]...)
			return Check(okOps(3)[:1], p, nil, nil, Options{AllowForeign: true})
		}},
		{"since does not match the entries", "dense", func() *Report {
			p := build(t, "p", id, vals(3)...)
			p.Since = 5
			return Check(okOps(3), p, nil, nil, Options{})
		}},
		{"follower diverged value", "prefix", func() *Report {
			f := build(t, "f", id, "v0", "zz")
			return Check(okOps(3), build(t, "p", id, vals(3)...), []Replica{f}, nil, Options{})
		}},
		{"follower same values but different chain (other epoch)", "prefix", func() *Report {
			f := build(t, "f", id, vals(3)...)
			f.Entries[1].Hash = flume.Hash{1}.String()
			f.HashesComplete = false
			return Check(okOps(3), build(t, "p", id, vals(3)...), []Replica{f}, nil, Options{})
		}},
		{"follower head hash does not match the primary at its since", "prefix", func() *Report {
			f := build(t, "f", id, vals(2)...)
			f.Entries, f.HashesComplete = nil, false // only since and head known (e.g. /status)
			f.Since, f.Head = 1, flume.Hash{9}.String()
			return Check(okOps(3), build(t, "p", id, vals(3)...), []Replica{f}, nil, Options{})
		}},
		{"follower ahead of primary", "prefix", func() *Report {
			f := build(t, "f", id, vals(4)...)
			return Check(okOps(4)[:3], build(t, "p", id, vals(3)...), []Replica{f}, nil, Options{AllowForeign: true})
		}},
		{"follower of another log", "log-id", func() *Report {
			f := build(t, "f", flume.NewLogID(), vals(3)...)
			return Check(okOps(3), build(t, "p", id, vals(3)...), []Replica{f}, nil, Options{})
		}},
		{"tampered chain hash", "chain", func() *Report {
			p := build(t, "p", id, vals(3)...)
			p.Entries[1].Value = "v9" // value changed under an unchanged hash
			ops := okOps(3)
			ops[1].Value = "v9"
			return Check(ops, p, nil, nil, Options{})
		}},
		{"sync append succeeded without k followers", "sync", func() *Report {
			ops := okOps(3)
			ops[2].SyncReplicas = 2
			cut := Cut{At: at(26), Since: map[string]int64{"f1": 2, "f2": 1}}
			return Check(ops, build(t, "p", id, vals(3)...), nil, []Cut{cut}, Options{})
		}},
		{"part of a batch survived", "torn-batch", func() *Report {
			ops := okOps(1)
			for i := 0; i < 3; i++ {
				ops = append(ops, Op{Client: 2, Value: fmt.Sprintf("b%d", i), Outcome: Unknown, Batch: "B", Start: at(20), End: at(30)})
			}
			return Check(ops, build(t, "p", id, "v0", "b0", "b1"), nil, nil, Options{})
		}},
		{"batch split apart", "torn-batch", func() *Report {
			ops := okOps(2)
			for i := 0; i < 2; i++ {
				ops = append(ops, Op{Client: 2, Value: fmt.Sprintf("b%d", i), Outcome: Unknown, Batch: "B", Start: at(0), End: at(30)})
			}
			return Check(ops, build(t, "p", id, "b0", "v0", "b1", "v1"), nil, nil, Options{})
		}},
		{"sync append lost by a follower in a middle cut", "sync", func() *Report {
			ops := okOps(3)
			ops[2].SyncReplicas = 1
			cuts := []Cut{
				{At: at(40), Since: map[string]int64{"f": 2}},
				{At: at(30), Since: map[string]int64{"f": 1}}, // e.g. read after a crash
				{At: at(26), Since: map[string]int64{"f": 2}},
			}
			return Check(ops, build(t, "p", id, vals(3)...), nil, cuts, Options{})
		}},
		{"sync k=2 append missing on a follower read alone after a crash", "sync", func() *Report {
			ops := okOps(3)
			ops[2].SyncReplicas = 2
			cut := Cut{At: at(26), Since: map[string]int64{"f2": 1}, Total: 2}
			return Check(ops, build(t, "p", id, vals(3)...), nil, []Cut{cut}, Options{})
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.run()
			if !r.Has(tc.kind) {
				t.Fatalf("got %v, want a %q violation", r.Err(), tc.kind)
			}
		})
	}
}

// Outcomes that allow absence must not be reported.
func TestAllowedAbsences(t *testing.T) {
	id := flume.NewLogID()
	ops := okOps(2)
	ops = append(ops,
		Op{Client: 2, Value: "nd", Outcome: OK, Seq: 2, Durable: false, Start: at(30), End: at(31)},             // lost in a crash
		Op{Client: 3, Value: "u", Outcome: Unknown, Start: at(30), End: at(35)},                                 // never applied
		Op{Client: 4, Value: "u2", Outcome: Unknown, Start: at(30), End: at(35)},                                // applied
		Op{Client: 5, Value: "f", Outcome: Failed, Start: at(30), End: at(35)},                                  // refused
		Op{Client: 6, Value: "nr", Outcome: NotReplicated, Seq: 3, SyncReplicas: 1, Start: at(40), End: at(45)}, // non-durable, absent
	)
	p := build(t, "p", id, "v0", "v1", "u2")
	// A sync cut taken before the sync append ended does not count.
	ops[1].SyncReplicas = 1
	cut := Cut{At: at(14), Since: map[string]int64{"f": 0}}
	if r := Check(ops, p, nil, []Cut{cut}, Options{}); !r.OK() {
		t.Fatal(r.Err())
	}
}

func TestHistoryConcurrentRecord(t *testing.T) {
	var h History
	done := make(chan struct{})
	for c := 0; c < 4; c++ {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := 0; i < 100; i++ {
				h.Record(Op{Client: c, Value: fmt.Sprintf("%d-%d", c, i), Outcome: Outcome(i % 4)})
			}
		}()
	}
	for range 4 {
		<-done
	}
	if h.Len() != 400 || h.Count(OK) != 100 || len(h.Ops()) != 400 {
		t.Fatalf("len=%d ok=%d", h.Len(), h.Count(OK))
	}
}
