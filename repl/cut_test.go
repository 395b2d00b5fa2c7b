package repl

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"

	"pgregory.net/rapid"

	"github.com/flume-go/flume"
)

// tlog is a model log for cutPoint tests: entries with real chain hashes and
// the epoch records a log keeps, so every view it yields is consistent (a
// record's Prev is the chain hash before its start). Its methods return a
// new tlog and leave the receiver as it was, so histories fork by sharing a
// prefix.
type tlog struct {
	id      flume.LogID
	entries []tentry
	recs    []flume.EpochRecord
}

type tentry struct {
	epoch uint64
	promo flume.PromotionID // the promotion that wrote it; zero before any
	data  []byte
	hash  flume.Hash
}

var cutLogID = flume.LogID{0xc0, 0x7}

func newTLog() *tlog { return &tlog{id: cutLogID} }

func newTLogID(id flume.LogID) *tlog { return &tlog{id: id} }

func (l *tlog) clone() *tlog {
	return &tlog{id: l.id, entries: append([]tentry(nil), l.entries...), recs: append([]flume.EpochRecord(nil), l.recs...)}
}

func (l *tlog) since() int64 { return int64(len(l.entries)) - 1 }

// hashAt is the chain hash at seq s (the genesis hash at -1).
func (l *tlog) hashAt(s int64) flume.Hash {
	if s < 0 {
		return flume.GenesisHash(l.id)
	}
	return l.entries[s].hash
}

// current is the epoch and promotion entries are appended in.
func (l *tlog) current() (uint64, flume.PromotionID) {
	if len(l.recs) == 0 {
		return 0, flume.PromotionID{}
	}
	r := l.recs[len(l.recs)-1]
	return r.Epoch, r.Promotion
}

func (l *tlog) epoch() uint64 { e, _ := l.current(); return e }

// promote begins epoch e by promotion id at since+1.
func (l *tlog) promoteID(e uint64, id flume.PromotionID) *tlog {
	c := l.clone()
	c.recs = append(c.recs, flume.EpochRecord{Epoch: e, Start: l.since() + 1, Prev: l.hashAt(l.since()), Promotion: id})
	return c
}

func (l *tlog) promote(e uint64, id byte) *tlog { return l.promoteID(e, flume.PromotionID{id}) }

// append writes n entries in the current promotion; their payloads are a
// function of the promotion and seq, as one primary writes one entry per seq.
func (l *tlog) append(n int) *tlog {
	_, p := l.current()
	return l.appendData(n, func(s int64) []byte { return fmt.Appendf(nil, "%x/%d", p, s) })
}

// appendTagged writes n entries whose payloads carry tag: two logs with no
// epochs to tell them apart that were written by different primaries.
func (l *tlog) appendTagged(n int, tag string) *tlog {
	return l.appendData(n, func(s int64) []byte { return fmt.Appendf(nil, "%s/%d", tag, s) })
}

func (l *tlog) appendData(n int, data func(int64) []byte) *tlog {
	c := l.clone()
	e, p := c.current()
	for range n {
		s := c.since() + 1
		d := data(s)
		c.entries = append(c.entries, tentry{epoch: e, promo: p, data: d, hash: flume.ChainHash(c.hashAt(s-1), s, e, d)})
	}
	return c
}

// view is the log's Hello: fenced at its epoch, committed hint unknown.
func (l *tlog) view(opts ...func(*historyView)) historyView {
	v := historyView{
		Position:      Position{LogID: l.id, Epoch: l.epoch(), Since: l.since(), Hash: l.hashAt(l.since())},
		Epochs:        append([]flume.EpochRecord(nil), l.recs...),
		FencedEpoch:   l.epoch(),
		CommittedHint: -1,
	}
	for _, o := range opts {
		o(&v)
	}
	return v
}

func fenced(e uint64) func(*historyView) { return func(v *historyView) { v.FencedEpoch = e } }
func hint(s int64) func(*historyView)    { return func(v *historyView) { v.CommittedHint = s } }
func unclean(v *historyView)             { v.Unclean = true }
func since(s int64) func(*historyView)   { return func(v *historyView) { v.Since = s } }
func epochs(edit func(rs []flume.EpochRecord)) func(*historyView) {
	return func(v *historyView) { edit(v.Epochs) }
}

var badHash = flume.Hash{0xba, 0xd}

func TestCutPoint(t *testing.T) {
	c5 := newTLog().promote(1, 'a').append(5)                       // epoch 1 from seq 0, seqs 0-4
	k1 := newTLog().promote(1, 'a').append(1)                       // KIP-101: m1 at seq 0
	three := c5.promote(2, 'b').append(3).promote(3, 'c').append(2) // records at 0, 5, 8; since 9
	other := flume.LogID{0xee}
	cases := []struct {
		name string
		p, f historyView
		want cutDecision
		code Code   // refusal code, 0 if none
		msg  string // part of the refusal's message: which rule refused
	}{
		// Nothing to cut.
		{name: "follower equal", p: c5.view(), f: c5.view(), want: cutDecision{To: 4, KeepEpochs: 1}},
		{name: "follower behind on the same history", p: c5.append(3).view(), f: c5.view(), want: cutDecision{To: 4, KeepEpochs: 1}},
		{name: "follower behind across two promotions", p: three.view(), f: c5.view(), want: cutDecision{To: 4, KeepEpochs: 1}},
		{name: "follower empty", p: c5.view(), f: newTLog().view(), want: cutDecision{To: -1}},
		{name: "follower empty with another log ID", p: c5.view(), f: newTLogID(other).view(), want: cutDecision{To: -1}},
		{name: "both empty", p: newTLog().view(), f: newTLog().view(), want: cutDecision{To: -1}},
		{name: "empty follower promoted while empty, then deposed", p: newTLog().promote(2, 'b').append(3).view(), f: newTLog().promote(1, 'z').view(),
			want: cutDecision{To: -1}},

		// KIP-101: truncating to a cached watermark lost acked data (scenario 1);
		// divergent entries at one offset in two epochs went unnoticed (scenario 2).
		{name: "KIP-101 scenario 1: old leader returns with a longer log, its tail acknowledged",
			p: k1.promote(2, 'b').append(1).view(), f: k1.append(2).view(hint(1)), code: CodeWouldLoseCommitted, msg: "below the follower's committed hint"},
		{name: "KIP-101 scenario 1: old leader returns with a longer log, its tail never acknowledged",
			p: k1.promote(2, 'b').append(1).view(), f: k1.append(2).view(hint(0)), want: cutDecision{To: 0, Cut: true, KeepEpochs: 1}},
		{name: "KIP-101 scenario 2: double hard failure, divergent entries at one seq in two epochs",
			p: k1.promote(2, 'b').append(1).view(), f: k1.append(1).view(hint(0)), want: cutDecision{To: 0, Cut: true, KeepEpochs: 1}},

		// KIP-279: fast double failover; the leader must answer with the end of
		// the largest epoch both know, and the follower cut at the earlier end.
		{name: "KIP-279: returning leader wrote in an epoch the primary never saw",
			p: k1.append(1).promote(3, 'c').append(1).view(), f: k1.promote(2, 'b').append(1).view(), want: cutDecision{To: 0, Cut: true, KeepEpochs: 1}},
		{name: "KIP-279: follower's epoch history lags two promotions",
			p: three.view(), f: c5.append(2).view(), want: cutDecision{To: 4, Cut: true, KeepEpochs: 1}},

		// KAFKA-10706: elections without data between leave records with one start.
		{name: "KAFKA-10706: follower holds an extra promotion that wrote nothing",
			p: c5.promote(3, 'c').append(5).view(), f: c5.promote(2, 'b').promote(3, 'c').append(5).view(hint(7)), want: cutDecision{To: 9, KeepEpochs: 3}},
		{name: "KAFKA-10706: primary holds an extra promotion that wrote nothing",
			p: c5.promote(2, 'b').promote(3, 'c').append(5).view(), f: c5.promote(3, 'c').append(5).view(hint(7)), want: cutDecision{To: 9, KeepEpochs: 2}},
		{name: "KAFKA-10706: old leader returns after two back-to-back promotions",
			p: c5.promote(2, 'b').promote(3, 'c').append(2).view(), f: c5.append(3).view(hint(4)), want: cutDecision{To: 4, Cut: true, KeepEpochs: 1}},
		{name: "KAFKA-10706: follower promoted without writing, then deposed: its record goes",
			p: c5.promote(3, 'c').append(5).view(), f: c5.promote(2, 'b').view(), want: cutDecision{To: 4, KeepEpochs: 1}},

		// PostgreSQL: two standbys promoted independently both pick TLI 2.
		{name: "PostgreSQL TLI collision: two promotions to epoch 2 at one seq",
			p: c5.promote(2, 'y').append(4).view(), f: c5.promote(2, 'x').append(3).view(), code: CodeDiverged, msg: "two promotions"},
		{name: "PostgreSQL TLI collision: two promotions to epoch 2 at different seqs",
			p: c5.promote(2, 'y').append(4).view(), f: c5.append(2).promote(2, 'x').append(1).view(), code: CodeDiverged, msg: "two promotions"},
		{name: "PostgreSQL TLI collision past the first differing records",
			p: c5.promote(3, 'c').append(2).promote(4, 'y').append(2).view(), f: c5.promote(2, 'b').append(2).promote(4, 'x').append(1).view(),
			code: CodeDiverged, msg: "two promotions"},
		{name: "PostgreSQL TLI collision, then a later promotion on the follower's side",
			p: c5.promote(2, 'y').append(3).promote(4, 'd').append(1).view(), f: c5.promote(2, 'x').append(2).promote(3, 'c').append(1).view(),
			code: CodeDiverged, msg: "epoch 2 was begun by two promotions"},
		{name: "PostgreSQL TLI collision: the follower's promotion wrote nothing",
			p: c5.promote(2, 'y').append(3).view(), f: c5.promote(2, 'x').view(), code: CodeDiverged, msg: "two promotions"},

		// The old primary's unacknowledged tail, and the committed hint.
		{name: "old primary whose tail holds only async entries: cut exactly that tail",
			p: c5.promote(2, 'b').append(8).view(hint(10)), f: c5.append(5).view(hint(4)), want: cutDecision{To: 4, Cut: true, KeepEpochs: 1}},
		{name: "cut below the committed hint",
			p: c5.promote(2, 'b').append(8).view(), f: c5.append(5).view(hint(5)), code: CodeWouldLoseCommitted, msg: "below the follower's committed hint 5"},
		{name: "primary promoted right after the old primary's last common entry",
			p: c5.promote(2, 'b').view(), f: c5.append(3).view(hint(4)), want: cutDecision{To: 4, Cut: true, KeepEpochs: 1}},

		// A primary that lost its unsynced tail in a power failure (parallel
		// fsyncs sent it; or SyncInterval published it) begins a new epoch
		// at its recovered head when it restarts (startEpoch), so a follower
		// that holds the tail is cut exactly there, unless it was committed.
		{name: "primary restarted after a power loss, lost tail held by the follower: cut at the restart epoch",
			p: c5.promote(2, 'r').view(), f: c5.append(2).view(hint(4)), want: cutDecision{To: 4, Cut: true, KeepEpochs: 1}},
		{name: "primary restarted after a power loss and wrote new entries at the lost seqs: cut at the restart epoch",
			p: c5.promote(2, 'r').append(3).view(), f: c5.append(2).view(hint(4)), want: cutDecision{To: 4, Cut: true, KeepEpochs: 1}},
		{name: "primary restarted after a power loss, the follower's hint covers the lost tail: refuse",
			p: c5.promote(2, 'r').append(3).view(), f: c5.append(2).view(hint(6)), code: CodeWouldLoseCommitted, msg: "below the follower's committed hint 6"},

		// Stale epoch (rows 5a, 5b).
		{name: "stale: primary's epoch below the follower's fenced epoch (5a)",
			p: c5.append(2).view(), f: c5.view(fenced(2)), code: CodeStaleEpoch, msg: "follower's fenced epoch 2"},
		{name: "stale: follower's history holds a newer epoch (5b)",
			p: c5.promote(2, 'b').append(4).view(), f: c5.promote(3, 'c').append(1).view(fenced(2)), code: CodeStaleEpoch, msg: "follower's newest epoch 3"},
		{name: "stale: primary fenced itself at a newer epoch",
			p: c5.append(2).view(fenced(2)), f: c5.view(), code: CodeStaleEpoch, msg: "has itself promised"},
		{name: "stale: primary empty, follower in epoch 1",
			p: newTLog().view(), f: c5.view(fenced(0)), code: CodeStaleEpoch, msg: "newest epoch 1"},

		// The primary lost entries of its own current promotion.
		{name: "KIP-966 last replica standing: primary lost its own tail",
			p: c5.view(), f: c5.append(3).view(), code: CodeAhead, msg: "own current epoch 1"},
		{name: "legacy logs, follower ahead of its primary",
			p: newTLog().append(3).view(), f: newTLog().append(5).view(), code: CodeAhead, msg: "own current epoch 0"},
		{name: "legacy logs, primary empty",
			p: newTLog().view(), f: newTLog().append(3).view(), code: CodeAhead, msg: "own current epoch 0"},

		// Logs written before epochs existed.
		{name: "legacy old primary kept writing after a promotion elsewhere",
			p: newTLog().append(5).promote(1, 'a').append(3).view(), f: newTLog().append(10).view(), want: cutDecision{To: 4, Cut: true}},
		{name: "legacy logs diverged at one seq: the chain says no, nothing is cut",
			p: newTLog().appendTagged(5, "y").view(), f: newTLog().appendTagged(5, "x").view(), code: CodeDiverged, msg: "states chain hash"},

		// Unclean nodes.
		{name: "KIP-966: an unclean primary makes no follower cut",
			p: c5.promote(2, 'b').append(4).view(unclean), f: c5.append(3).view(hint(4)), code: CodeWouldLoseCommitted, msg: "primary is unclean"},
		{name: "a primary whose committed hint is past its head is unclean",
			p: c5.promote(2, 'b').append(4).view(hint(20)), f: c5.append(3).view(hint(4)), code: CodeWouldLoseCommitted, msg: "primary is unclean"},
		{name: "unclean primary: a follower behind still follows",
			p: c5.append(3).view(unclean), f: c5.view(), want: cutDecision{To: 4, KeepEpochs: 1}},
		{name: "an unclean follower is not cut",
			p: c5.promote(2, 'b').append(4).view(), f: c5.append(3).view(hint(4), unclean), code: CodeWouldLoseCommitted, msg: "follower is unclean"},
		{name: "unclean follower behind still follows",
			p: c5.append(3).view(), f: c5.view(unclean), want: cutDecision{To: 4, KeepEpochs: 1}},
		{name: "follower whose hint is past its head (it lost entries) still follows",
			p: c5.append(5).view(), f: c5.view(hint(7)), want: cutDecision{To: 4, KeepEpochs: 1}},

		// Nothing provably common.
		{name: "no common promotion: both begin at seq 0 with different promotions",
			p: newTLog().promote(2, 'b').append(3).view(), f: newTLog().promote(1, 'a').append(3).view(), code: CodeDiverged, msg: "no entry is provably common"},
		{name: "primary promoted while empty, follower holds entries of an older epoch",
			p: newTLog().promote(2, 'b').view(), f: c5.view(), code: CodeDiverged, msg: "no entry is provably common"},
		{name: "different log IDs", p: c5.view(), f: newTLogID(other).promote(1, 'a').append(6).view(), code: CodeLogID, msg: "unrelated"},

		// Tables that contradict each other: a refusal, never a cut.
		{name: "tables contradict: a promotion only the follower holds covers entries below a common one",
			p: c5.append(2).promote(3, 'c').append(3).view(),
			f: c5.append(2).promote(3, 'c').append(3).view(func(v *historyView) {
				v.Epochs = append(v.Epochs[:1], flume.EpochRecord{Epoch: 2, Start: 5, Prev: c5.hashAt(4), Promotion: flume.PromotionID{'b'}}, v.Epochs[1])
			}),
			code: CodeDiverged, msg: "contradict"},
		{name: "tables contradict: both state h(t), differently",
			p: c5.promote(3, 'c').append(5).view(), f: c5.promote(2, 'b').append(3).view(epochs(func(rs []flume.EpochRecord) { rs[1].Prev = badHash })),
			code: CodeDiverged, msg: "at seq 4 the follower's history states chain hash"},

		// Damaged histories: refused, never cut.
		{name: "damaged: equal epochs", p: c5.view(), f: three.view(epochs(func(rs []flume.EpochRecord) { rs[2].Epoch = 2 })),
			code: CodeDiverged, msg: "follower's epoch history is damaged: record 2"},
		{name: "damaged: epochs going down", p: c5.view(), f: three.view(epochs(func(rs []flume.EpochRecord) { rs[1].Epoch = 5 })),
			code: CodeDiverged, msg: "epochs must strictly increase"},
		{name: "damaged: start going backwards", p: c5.view(), f: three.view(epochs(func(rs []flume.EpochRecord) { rs[2].Start = 3 })),
			code: CodeDiverged, msg: "starts must not go backwards"},
		{name: "damaged: record starting past since+1", p: c5.view(), f: three.view(epochs(func(rs []flume.EpochRecord) { rs[2].Start = 11 })),
			code: CodeDiverged, msg: "starts past the log's end"},
		{name: "damaged: record starting past since+1 (head lost)", p: c5.view(), f: three.view(since(6)),
			code: CodeDiverged, msg: "starts past the log's end"},
		{name: "damaged: a record in epoch 0", p: c5.view(), f: three.view(epochs(func(rs []flume.EpochRecord) { rs[0].Epoch = 0 })),
			code: CodeDiverged, msg: "implicit epoch"},
		{name: "damaged: negative start", p: c5.view(), f: three.view(epochs(func(rs []flume.EpochRecord) { rs[0].Start = -2 })),
			code: CodeDiverged, msg: "before seq 0"},
		{name: "damaged: two records at one start with different previous hashes", p: c5.view(),
			f: three.view(epochs(func(rs []flume.EpochRecord) { rs[2].Start = 5 })), code: CodeDiverged, msg: "different hashes before it"},
		{name: "damaged: record at since+1 does not name the head's hash", p: c5.view(),
			f: c5.promote(2, 'b').view(epochs(func(rs []flume.EpochRecord) { rs[1].Prev = badHash })), code: CodeDiverged, msg: "not the head's"},
		{name: "damaged: record at seq 0 does not name the genesis hash", p: c5.view(),
			f: three.view(epochs(func(rs []flume.EpochRecord) { rs[0].Prev = badHash })), code: CodeDiverged, msg: "genesis"},
		{name: "damaged: since below -1", p: c5.view(), f: newTLog().view(since(-3)), code: CodeDiverged, msg: "since -3"},
		{name: "damaged: committed hint below -1", p: c5.view(), f: c5.view(hint(-2)), code: CodeDiverged, msg: "committed hint -2"},
		{name: "damaged: the primary's history", p: three.view(epochs(func(rs []flume.EpochRecord) { rs[2].Start = 3 })), f: c5.append(2).view(),
			code: CodeDiverged, msg: "primary's epoch history is damaged"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := cutPoint(tc.p, tc.f)
			if tc.code == 0 {
				if err != nil || got != tc.want {
					t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
				}
				return
			}
			var re *RefusedError
			if !errors.As(err, &re) {
				t.Fatalf("got %+v, %v; want refusal %s", got, err, tc.code)
			}
			if re.Reason != tc.code || !strings.Contains(re.Message, tc.msg) {
				t.Fatalf("got refusal %s %q, want %s mentioning %q", re.Reason, re.Message, tc.code, tc.msg)
			}
			if re.Local != tc.p.Position || re.Remote != tc.f.Position {
				t.Fatalf("refusal names %v / %v, want the primary's and the follower's positions", re.Local, re.Remote)
			}
			if got != (cutDecision{}) {
				t.Fatalf("a refusal came with decision %+v", got)
			}
		})
	}
}

// TestCutPointHashAt checks the hashes a view states: its head and the
// previous hash of each record.
func TestCutPointHashAt(t *testing.T) {
	l := newTLog().promote(1, 'a').append(5).promote(2, 'b').append(3).promote(3, 'c')
	v := l.view()
	for s := int64(-1); s <= l.since(); s++ {
		h, ok := v.hashAt(s)
		wantOK := s == -1 || s == 4 || s == 7
		if ok != wantOK || ok && h != l.hashAt(s) {
			t.Errorf("hashAt(%d) = %s, %v; want %s, %v", s, h.Short(), ok, l.hashAt(s).Short(), wantOK)
		}
	}
}

// forkGen draws a common history (appends and promotions, possibly after
// entries written before epochs existed) and forks it into a primary's and
// a follower's branch with their own promotions and appends. Only the
// primary of the common history's last promotion can go on writing in it,
// so at most one branch appends before promoting. Promotion IDs are unique;
// epoch numbers may collide across branches.
type forkedLogs struct {
	common, p, f *tlog
	pv, fv       historyView
}

func drawFork(t *rapid.T) forkedLogs {
	var promos uint16
	next := func() flume.PromotionID {
		promos++
		var id flume.PromotionID
		binary.BigEndian.PutUint16(id[:], promos)
		return id
	}
	l := newTLog().append(rapid.IntRange(0, 3).Draw(t, "legacy entries"))
	for i, n := 0, rapid.IntRange(0, 6).Draw(t, "common steps"); i < n; i++ {
		if rapid.Bool().Draw(t, "common promotes") {
			l = l.promoteID(l.epoch()+uint64(rapid.IntRange(1, 2).Draw(t, "common epoch step")), next())
		} else {
			l = l.append(rapid.IntRange(1, 4).Draw(t, "common appends"))
		}
	}
	writer := rapid.SampledFrom([]string{"follower", "primary", "neither"}).Draw(t, "who writes on in the common epoch")
	branch := func(name string) *tlog {
		b := l
		for i, n := 0, rapid.IntRange(0, 5).Draw(t, name+" steps"); i < n; i++ {
			promote := rapid.Bool().Draw(t, name+" promotes")
			if i == 0 && writer != name {
				promote = true
			}
			if promote {
				b = b.promoteID(b.epoch()+uint64(rapid.IntRange(1, 3).Draw(t, name+" epoch step")), next())
			} else {
				b = b.append(rapid.IntRange(1, 4).Draw(t, name+" appends"))
			}
		}
		return b
	}
	fk := forkedLogs{common: l, f: branch("follower"), p: branch("primary")}
	// About one in twenty: rapid favours 0 and the ends of a range, so a
	// value in the middle is the rare one.
	rare := func(name string) bool { return rapid.IntRange(0, 15).Draw(t, name) == 9 }
	if fe := fk.f.epoch(); fe >= fk.p.epoch() && !rare("primary left in an older epoch") {
		// A current primary is usually the newest promotion; step 0 is a
		// second promotion to the follower's epoch number.
		step := uint64(1)
		if rare("primary's last promotion reuses the follower's epoch number") {
			step = 0
		}
		e := max(fe+step, fk.p.epoch()+1)
		fk.p = fk.p.promoteID(e, next()).append(rapid.IntRange(0, 3).Draw(t, "primary's last appends"))
	}
	fk.fv = fk.f.view(hint(rapid.Int64Range(-1, fk.f.since()+1).Draw(t, "follower hint")))
	if rare("follower fenced newer") {
		fk.fv.FencedEpoch += uint64(rapid.IntRange(1, 3).Draw(t, "follower fence step"))
	}
	fk.fv.Unclean = rare("follower unclean")
	fk.pv = fk.p.view(hint(rapid.Int64Range(-1, fk.p.since()+1).Draw(t, "primary hint")))
	if rare("primary fenced newer") {
		fk.pv.FencedEpoch++
	}
	fk.pv.Unclean = rare("primary unclean")
	return fk
}

func sameEntry(a, b tentry) bool {
	return a.epoch == b.epoch && a.promo == b.promo && bytes.Equal(a.data, b.data) && a.hash == b.hash
}

// commonEnd is the last seq at which the two logs hold the same entries,
// by comparing them one by one.
func commonEnd(a, b *tlog) int64 {
	t := int64(-1)
	for s := int64(0); s <= min(a.since(), b.since()) && sameEntry(a.entries[s], b.entries[s]); s++ {
		t = s
	}
	return t
}

// refCutPoint is the brute-force reference: the rules of cutPoint stated on
// the logs themselves, the fork point found entry by entry.
func refCutPoint(pl, fl *tlog, p, f historyView) (cutDecision, Code) {
	pe, pPromo := pl.current()
	if p.FencedEpoch > pe || f.FencedEpoch > pe || fl.epoch() > pe {
		return cutDecision{}, CodeStaleEpoch
	}
	for _, x := range fl.recs {
		for _, y := range pl.recs {
			if x.Epoch == y.Epoch && !x.Same(y) {
				return cutDecision{}, CodeDiverged
			}
		}
	}
	keep := 0
	for i, x := range fl.recs {
		for _, y := range pl.recs {
			if x.Same(y) {
				keep = i + 1
			}
		}
	}
	t := commonEnd(pl, fl)
	d := cutDecision{To: t, KeepEpochs: keep}
	switch {
	case t == f.Since:
		return d, 0
	case t == p.Since && fl.entries[t+1].promo == pPromo:
		return cutDecision{}, CodeAhead
	case t < 0:
		return cutDecision{}, CodeDiverged
	case p.Unclean || p.CommittedHint > p.Since || f.Unclean || f.CommittedHint > f.Since || t < f.CommittedHint:
		return cutDecision{}, CodeWouldLoseCommitted
	}
	d.Cut = true
	return d, 0
}

// rejoin applies d to the follower as a rejoin does: keep [0, To] and the
// first KeepEpochs records, then replicate the primary's entries after To,
// adopting its records from the one after the last common one.
func rejoin(pl, fl *tlog, d cutDecision) *tlog {
	r := &tlog{id: pl.id, entries: append([]tentry(nil), fl.entries[:d.To+1]...), recs: append([]flume.EpochRecord(nil), fl.recs[:d.KeepEpochs]...)}
	from := 0
	if d.KeepEpochs > 0 {
		last := fl.recs[d.KeepEpochs-1]
		for j, y := range pl.recs {
			if y.Same(last) {
				from = j + 1
			}
		}
	}
	r.recs = append(r.recs, pl.recs[from:]...)
	r.entries = append(r.entries, pl.entries[d.To+1:]...)
	return r
}

// TestCutPointFork compares cutPoint with the brute-force reference on
// random forked histories, and checks that an accepted decision passes the
// chain check and, once applied, leaves nothing to cut.
func TestCutPointFork(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		fk := drawFork(t)
		got, err := cutPoint(fk.pv, fk.fv)
		want, code := refCutPoint(fk.p, fk.f, fk.pv, fk.fv)

		// The first records the branches do not share: equal numbers, two
		// promotions, must be refused.
		n := len(fk.common.recs)
		if n < len(fk.p.recs) && n < len(fk.f.recs) && fk.p.recs[n].Epoch == fk.f.recs[n].Epoch && err == nil {
			t.Fatalf("branches both begin epoch %d by different promotions, but got %+v", fk.p.recs[n].Epoch, got)
		}
		if code != 0 {
			var re *RefusedError
			if !errors.As(err, &re) || re.Reason != code {
				t.Fatalf("got %+v, %v; want refusal %s", got, err, code)
			}
			return
		}
		if err != nil || got != want {
			t.Fatalf("got %+v, %v; want %+v", got, err, want)
		}
		if at := commonEnd(fk.p, fk.f); got.To > at {
			t.Fatalf("cut at %d, past the fork point %d", got.To, at)
		}
		// The caller's chain check accepts a right answer.
		if fk.f.hashAt(got.To) != fk.p.hashAt(got.To) {
			t.Fatalf("h(%d) differs on the two logs: the follower would refuse a right cut", got.To)
		}
		// After the rejoin the two logs are the same, and stay so.
		r := rejoin(fk.p, fk.f, got)
		rv := r.view(fenced(fk.pv.epoch()))
		if why := rv.damage(); why != "" {
			t.Fatalf("the follower's history after the rejoin is damaged: %s", why)
		}
		if commonEnd(fk.p, r) != fk.p.since() || r.since() != fk.p.since() {
			t.Fatalf("after the rejoin the follower holds %d entries, %d common; the primary %d", r.since()+1, commonEnd(fk.p, r)+1, fk.p.since()+1)
		}
		again, err := cutPoint(fk.pv, rv)
		if wantAgain := (cutDecision{To: fk.p.since(), KeepEpochs: len(r.recs)}); err != nil || again != wantAgain {
			t.Fatalf("after the rejoin: got %+v, %v; want %+v", again, err, wantAgain)
		}
	})
}

// TestCutPointWrongTables feeds cutPoint random edits of honest epoch
// tables: whatever it answers must be well formed, and an answer the
// chain check accepts never keeps an entry past the fork point nor cuts
// below the committed hint.
func TestCutPointWrongTables(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		fk := drawFork(t)
		for i, n := 0, rapid.IntRange(1, 3).Draw(t, "edits"); i < n; i++ {
			v := &fk.fv
			if rapid.Bool().Draw(t, "edit the primary") {
				v = &fk.pv
			}
			v.Epochs = editEpochs(t, v.Epochs, v.Since)
		}
		d, err := cutPoint(fk.pv, fk.fv)
		if err != nil {
			var re *RefusedError
			if !errors.As(err, &re) {
				t.Fatalf("not a refusal: %v", err)
			}
			return
		}
		f, p := fk.fv, fk.pv
		switch {
		case d.To < -1 || d.To > f.Since || d.To > p.Since:
			t.Fatalf("To %d outside [-1, min(%d, %d)]", d.To, f.Since, p.Since)
		case d.Cut != (d.To < f.Since):
			t.Fatalf("Cut %v with To %d and follower since %d", d.Cut, d.To, f.Since)
		case d.KeepEpochs < 0 || d.KeepEpochs > len(f.Epochs):
			t.Fatalf("KeepEpochs %d of %d", d.KeepEpochs, len(f.Epochs))
		case d.Cut && (d.To < 0 || d.To < f.CommittedHint || f.unclean() || p.unclean()):
			t.Fatalf("cut to %d: hint %d, unclean %v/%v", d.To, f.CommittedHint, f.unclean(), p.unclean())
		}
		for _, r := range f.Epochs[d.KeepEpochs:] {
			if r.Start <= d.To {
				t.Fatalf("dropped record %s starts at or before the kept seq %d", r, d.To)
			}
		}
		if fk.f.hashAt(d.To) == fk.p.hashAt(d.To) && d.To > commonEnd(fk.p, fk.f) {
			t.Fatalf("the chain check accepts To %d past the fork point %d", d.To, commonEnd(fk.p, fk.f))
		}
	})
}

// editEpochs makes one random edit to a copy of rs.
func editEpochs(t *rapid.T, rs []flume.EpochRecord, since int64) []flume.EpochRecord {
	rs = append([]flume.EpochRecord(nil), rs...)
	op := rapid.IntRange(0, 5).Draw(t, "edit")
	if len(rs) == 0 {
		op = 5
	}
	i := 0
	if len(rs) > 0 {
		i = rapid.IntRange(0, len(rs)-1).Draw(t, "record")
	}
	switch op {
	case 0:
		rs = append(rs[:i], rs[i+1:]...)
	case 1:
		rs[i].Start = rapid.Int64Range(-1, since+2).Draw(t, "start")
	case 2:
		rs[i].Epoch = uint64(rapid.IntRange(0, 12).Draw(t, "epoch"))
	case 3:
		rs[i].Promotion[15] ^= 1
	case 4:
		rs[i].Prev[0] ^= 1
	case 5:
		r := flume.EpochRecord{Epoch: uint64(rapid.IntRange(1, 12).Draw(t, "new epoch")), Start: rapid.Int64Range(0, since+1).Draw(t, "new start")}
		j := rapid.IntRange(0, len(rs)).Draw(t, "at")
		rs = append(rs[:j], append([]flume.EpochRecord{r}, rs[j:]...)...)
	}
	return rs
}
