// Package checker records what clients of a flume primary were told and
// checks the replicas against it afterwards, in the manner of a Jepsen
// checker: it never trusts the system under test, only the history of
// acknowledgements and the contents read back.
//
// A test records one Op per client append (History.Record) with the outcome
// the client saw:
//
//	OK             acknowledged, with its seq
//	NotReplicated  durable on the primary with its seq, but short of the
//	               required follower acks (*flume.NotReplicatedError, HTTP 503)
//	Failed         definitely not appended (e.g. refused before the write)
//	Unknown        maybe appended (timeout, connection lost, process killed)
//
// and takes snapshots of the replicas (Replica: every entry with seq, value
// and, where known, chain hash) and, for synchronous appends, Cuts: sets of
// follower positions observed after some instant. Check then asserts
// architecture.md §6:
//
//   - each log is dense: entry i has seq i, no gaps, the head matches;
//   - no value appears twice in a log (every client value is unique, so a
//     second copy is a duplicate append);
//   - every OK or NotReplicated append marked Durable is on the primary at
//     its seq with its value; a non-durable one may be missing but never at
//     another seq; a Failed one is nowhere; an Unknown one at most once;
//   - appends respect real time: if A was acknowledged before B started,
//     A's seq is lower;
//   - every follower is a prefix of the primary (same log ID, same value and
//     chain hash at every seq it holds, same head hash), and with
//     RequireCaughtUp it holds everything the primary holds;
//   - a synchronous append acknowledged OK with k replicas is held by at
//     least k followers in every Cut taken after it returned;
//   - when the log ID and epochs are known, every chain hash recomputes.
package checker

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/flume-go/flume"
)

// Outcome is what a client was told about one append.
type Outcome int

// Outcomes.
const (
	OK Outcome = iota
	NotReplicated
	Failed
	Unknown
)

func (o Outcome) String() string {
	switch o {
	case OK:
		return "ok"
	case NotReplicated:
		return "not-replicated"
	case Failed:
		return "failed"
	case Unknown:
		return "unknown"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// Op is one client append and its outcome.
type Op struct {
	Client  int
	Value   string // unique across the history
	Outcome Outcome
	// Seq is the seq the client was told (OK, NotReplicated); ignored
	// otherwise.
	Seq int64
	// SyncReplicas is the number of follower acks the append required (0:
	// asynchronous).
	SyncReplicas int
	// Durable means the acknowledgement promises the entry survives a crash
	// of the primary (fsync always). Non-durable acknowledged entries may be
	// lost by a crash, but never move to another seq.
	Durable bool
	// Batch names the atomic batch the op's value was appended in ("" for
	// a single append). A batch's values are all in the log at consecutive
	// seqs, or none is.
	Batch      string
	Start, End time.Time
}

func (op Op) String() string {
	return fmt.Sprintf("client %d append %q -> %s seq %d (k=%d durable=%v)", op.Client, op.Value, op.Outcome, op.Seq, op.SyncReplicas, op.Durable)
}

// History is a concurrent-safe record of Ops.
type History struct {
	mu  sync.Mutex
	ops []Op
}

// Record adds op to the history.
func (h *History) Record(op Op) {
	h.mu.Lock()
	h.ops = append(h.ops, op)
	h.mu.Unlock()
}

// Ops returns a copy of the recorded ops.
func (h *History) Ops() []Op {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Op(nil), h.ops...)
}

// Rewrite calls fn on every recorded op, in place (e.g. to downgrade
// acknowledgements that a simulated crash may have undone to Unknown).
func (h *History) Rewrite(fn func(op *Op)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := range h.ops {
		fn(&h.ops[i])
	}
}

// Len is the number of recorded ops.
func (h *History) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.ops)
}

// Count returns how many ops had outcome o.
func (h *History) Count(o Outcome) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, op := range h.ops {
		if op.Outcome == o {
			n++
		}
	}
	return n
}

// Entry is one entry of a replica as read back.
type Entry struct {
	Seq   int64
	Epoch uint64
	Value string
	Hash  string // chain hash in hex; "" when the reader cannot see it
}

// Replica is a snapshot of one log.
type Replica struct {
	Name  string
	LogID string // hex; "" if unknown
	Since int64
	Head  string // chain hash at Since in hex; "" if unknown
	// Entries must hold every entry from 0 to Since, in order.
	Entries []Entry
	// HashesComplete means every Entry.Hash and Epoch is set, so the chain
	// can be recomputed from the log ID.
	HashesComplete bool
}

// Cut is a set of follower positions, each observed at or after At. Since
// a follower's durable position never goes back, a follower whose position
// in a Cut is below seq did not hold seq at At.
//
// A Cut may observe only some followers (e.g. the one just killed, read from
// its data directory): Total is then the number of followers, and the ones
// not observed are assumed to hold everything.
type Cut struct {
	At    time.Time
	Since map[string]int64 // follower name → observed since
	Total int              // followers in all; 0 means len(Since)
}

// Options tune Check.
type Options struct {
	// RequireCaughtUp: every follower must hold exactly what the primary
	// holds (use after healing and waiting).
	RequireCaughtUp bool
	// AllowForeign: entries whose value is in no recorded op are allowed
	// (written by a client the history does not cover).
	AllowForeign bool
}

// Violation is one broken invariant.
type Violation struct {
	Kind   string // dense, duplicate, lost, moved, present-failed, order, prefix, log-id, caught-up, sync, chain
	Detail string
}

func (v Violation) String() string { return v.Kind + ": " + v.Detail }

// Report is the result of Check.
type Report struct {
	Violations []Violation
	// EntriesVerified counts entries compared (the primary's against the
	// history, each follower's against the primary).
	EntriesVerified int
	// AcksVerified counts OK/NotReplicated ops checked on the primary.
	AcksVerified int
}

// OK reports whether no invariant was broken.
func (r *Report) OK() bool { return len(r.Violations) == 0 }

// Err returns nil or an error listing the violations (at most 20).
func (r *Report) Err() error {
	if r.OK() {
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "checker: %d violation(s):", len(r.Violations))
	for i, v := range r.Violations {
		if i == 20 {
			fmt.Fprintf(&b, "\n  ... and %d more", len(r.Violations)-20)
			break
		}
		b.WriteString("\n  ")
		b.WriteString(v.String())
	}
	return errors.New(b.String())
}

// Has reports whether a violation of kind was found.
func (r *Report) Has(kind string) bool {
	for _, v := range r.Violations {
		if v.Kind == kind {
			return true
		}
	}
	return false
}

func (r *Report) add(kind, format string, args ...any) {
	r.Violations = append(r.Violations, Violation{Kind: kind, Detail: fmt.Sprintf(format, args...)})
}

// Check checks the history ops against the primary and followers and the
// sync cuts. See the package comment for what it asserts.
func Check(ops []Op, primary Replica, followers []Replica, cuts []Cut, o Options) *Report {
	r := &Report{}
	checkLog(r, primary)
	checkValues(r, ops, primary, o)
	checkBatches(r, ops, primary)
	checkOrder(r, ops)
	for _, f := range followers {
		checkLog(r, f)
		checkPrefix(r, primary, f, o)
	}
	checkSync(r, ops, cuts)
	return r
}

// checkLog checks one log's shape: dense seqs, head, chain.
func checkLog(r *Report, l Replica) {
	if int64(len(l.Entries)) != l.Since+1 {
		r.add("dense", "%s: since %d but %d entries read", l.Name, l.Since, len(l.Entries))
	}
	for i, e := range l.Entries {
		if e.Seq != int64(i) {
			r.add("dense", "%s: entry %d has seq %d (gap or duplicate seq)", l.Name, i, e.Seq)
			return
		}
	}
	if l.Head != "" && len(l.Entries) > 0 && int64(len(l.Entries)) == l.Since+1 {
		if h := l.Entries[len(l.Entries)-1].Hash; h != "" && h != l.Head {
			r.add("chain", "%s: head hash %s at since %d, but entry %d has hash %s", l.Name, short(l.Head), l.Since, l.Since, short(h))
		}
	}
	if l.HashesComplete && l.LogID != "" {
		id, err := flume.ParseLogID(l.LogID)
		if err != nil {
			r.add("chain", "%s: bad log ID %q", l.Name, l.LogID)
			return
		}
		prev := flume.GenesisHash(id)
		for _, e := range l.Entries {
			want := flume.ChainHash(prev, e.Seq, e.Epoch, []byte(e.Value))
			if want.String() != e.Hash {
				r.add("chain", "%s: entry %d hash %s, recomputed %s", l.Name, e.Seq, short(e.Hash), want.Short())
				return
			}
			prev = want
		}
	}
}

// checkValues checks the primary's values against the history.
func checkValues(r *Report, ops []Op, p Replica, o Options) {
	pos := make(map[string]int64, len(p.Entries))
	for _, e := range p.Entries {
		if prev, dup := pos[e.Value]; dup {
			r.add("duplicate", "%s: value %q at seq %d and at seq %d", p.Name, e.Value, prev, e.Seq)
			continue
		}
		pos[e.Value] = e.Seq
	}
	known := make(map[string]bool, len(ops))
	for _, op := range ops {
		if known[op.Value] {
			r.add("history", "value %q recorded twice: the test must use unique values", op.Value)
		}
		known[op.Value] = true
		seq, present := pos[op.Value]
		switch op.Outcome {
		case OK, NotReplicated:
			r.AcksVerified++
			switch {
			case present && seq != op.Seq:
				r.add("moved", "%s: %v, but the value is at seq %d", p.Name, op, seq)
			case !present && op.Durable:
				at := "beyond the log's end"
				if op.Seq >= 0 && op.Seq < int64(len(p.Entries)) {
					at = fmt.Sprintf("holding %q", p.Entries[op.Seq].Value)
				}
				r.add("lost", "%s: %v, but the value is missing (seq %d is %s; since %d)", p.Name, op, op.Seq, at, p.Since)
			}
		case Failed:
			if present {
				r.add("present-failed", "%s: %v, but the value is at seq %d", p.Name, op, seq)
			}
		}
	}
	if !o.AllowForeign {
		for _, e := range p.Entries {
			if !known[e.Value] {
				r.add("foreign", "%s: seq %d holds %q, which no client appended", p.Name, e.Seq, e.Value)
			}
		}
	}
	r.EntriesVerified += len(p.Entries)
}

// checkBatches: every batch is in the log whole, at consecutive seqs, or
// not at all (a crash never leaves part of a batch).
func checkBatches(r *Report, ops []Op, p Replica) {
	pos := make(map[string]int64, len(p.Entries))
	for _, e := range p.Entries {
		pos[e.Value] = e.Seq
	}
	type batch struct {
		values []string
	}
	batches := make(map[string]*batch)
	var order []string
	for _, op := range ops {
		if op.Batch == "" {
			continue
		}
		b := batches[op.Batch]
		if b == nil {
			b = &batch{}
			batches[op.Batch] = b
			order = append(order, op.Batch)
		}
		b.values = append(b.values, op.Value)
	}
	for _, id := range order {
		b := batches[id]
		present, first := 0, int64(-1)
		consecutive := true
		for i, v := range b.values {
			s, ok := pos[v]
			if !ok {
				continue
			}
			present++
			if first < 0 {
				first = s - int64(i)
			}
			if s != first+int64(i) {
				consecutive = false
			}
		}
		switch {
		case present > 0 && present < len(b.values):
			r.add("torn-batch", "%s: batch %s has %d of its %d values in the log", p.Name, id, present, len(b.values))
		case present == len(b.values) && !consecutive:
			r.add("torn-batch", "%s: batch %s is not at consecutive seqs", p.Name, id)
		}
	}
}

// checkOrder: an append acknowledged (durably) before another started has a
// lower seq (appends are linearizable in seq order). A non-durable append
// may be lost in a crash and its seq reused, so only durable ones count as
// predecessors.
func checkOrder(r *Report, ops []Op) {
	var acked, durable []Op
	for _, op := range ops {
		if op.Outcome == OK || op.Outcome == NotReplicated {
			acked = append(acked, op)
			if op.Durable {
				durable = append(durable, op)
			}
		}
	}
	byEnd := durable
	sort.Slice(byEnd, func(i, j int) bool { return byEnd[i].End.Before(byEnd[j].End) })
	byStart := append([]Op(nil), acked...)
	sort.Slice(byStart, func(i, j int) bool { return byStart[i].Start.Before(byStart[j].Start) })
	j := 0
	var maxOp *Op // highest seq among ops that ended before the current start
	for i := range byStart {
		b := byStart[i]
		for j < len(byEnd) && byEnd[j].End.Before(b.Start) {
			if maxOp == nil || byEnd[j].Seq > maxOp.Seq {
				maxOp = &byEnd[j]
			}
			j++
		}
		if maxOp != nil && b.Seq <= maxOp.Seq {
			r.add("order", "%v started after %v was acknowledged, but got a seq not above it", b, *maxOp)
		}
	}
}

// checkPrefix: follower f is a prefix of primary p.
func checkPrefix(r *Report, p, f Replica, o Options) {
	if p.LogID != "" && f.LogID != "" && p.LogID != f.LogID {
		r.add("log-id", "%s has log ID %s, primary %s has %s", f.Name, f.LogID, p.Name, p.LogID)
	}
	if f.Since > p.Since {
		r.add("prefix", "%s is ahead of primary %s: since %d > %d", f.Name, p.Name, f.Since, p.Since)
	}
	if o.RequireCaughtUp && f.Since != p.Since {
		r.add("caught-up", "%s at since %d, primary %s at %d", f.Name, f.Since, p.Name, p.Since)
	}
	n := min(len(f.Entries), len(p.Entries))
	for i := 0; i < n; i++ {
		fe, pe := f.Entries[i], p.Entries[i]
		if fe.Value != pe.Value {
			r.add("prefix", "%s seq %d holds %q, primary %s holds %q", f.Name, i, fe.Value, p.Name, pe.Value)
			return
		}
		if fe.Hash != "" && pe.Hash != "" && fe.Hash != pe.Hash {
			r.add("prefix", "%s seq %d has chain hash %s, primary %s has %s", f.Name, i, short(fe.Hash), p.Name, short(pe.Hash))
			return
		}
	}
	r.EntriesVerified += n
	if f.Head != "" && f.Since >= 0 && f.Since < int64(len(p.Entries)) {
		if ph := p.Entries[f.Since].Hash; ph != "" && ph != f.Head {
			r.add("prefix", "%s head hash %s at since %d, primary %s has %s there", f.Name, short(f.Head), f.Since, p.Name, short(ph))
		}
	}
	if f.Head != "" && f.Since == p.Since && p.Head != "" && f.Head != p.Head {
		r.add("prefix", "%s and primary %s both at since %d with different head hashes %s and %s", f.Name, p.Name, f.Since, short(f.Head), short(p.Head))
	}
}

// checkSync: an OK append with k > 0 is held by >= k followers in every cut
// taken after it returned. Holding is monotone in seq (a follower at since
// s holds every seq <= s), so for each cut it is enough to check, per k, the
// highest seq acknowledged before the cut: one sweep over ops and cuts in
// time order.
func checkSync(r *Report, ops []Op, cuts []Cut) {
	var syncOps []Op
	for _, op := range ops {
		if op.Outcome == OK && op.SyncReplicas > 0 {
			syncOps = append(syncOps, op)
		}
	}
	sort.SliceStable(syncOps, func(i, j int) bool { return syncOps[i].End.Before(syncOps[j].End) })
	cuts = append([]Cut(nil), cuts...)
	sort.SliceStable(cuts, func(i, j int) bool { return cuts[i].At.Before(cuts[j].At) })
	highest := make(map[int]Op) // k → the op with the highest seq acknowledged so far
	reported := make(map[string]bool)
	j := 0
	for _, c := range cuts {
		for ; j < len(syncOps) && !syncOps[j].End.After(c.At); j++ {
			op := syncOps[j]
			if h, ok := highest[op.SyncReplicas]; !ok || op.Seq > h.Seq {
				highest[op.SyncReplicas] = op
			}
		}
		for k, op := range highest {
			held := max(c.Total-len(c.Since), 0)
			for _, s := range c.Since {
				if s >= op.Seq {
					held++
				}
			}
			if held < k && !reported[op.Value] {
				reported[op.Value] = true
				r.add("sync", "%v returned success, but a cut at %s shows only %d follower(s) holding it: %v",
					op, c.At.Format("15:04:05.000000"), held, c.Since)
			}
		}
	}
}

func short(h string) string {
	if len(h) > 16 {
		return h[:16]
	}
	return h
}

// FromLog reads every entry of l into a Replica with complete hashes.
func FromLog(name string, l flume.Log) (Replica, error) {
	since, head := l.Head()
	rep := Replica{Name: name, LogID: l.ID().String(), Since: since, Head: head.String(), HashesComplete: true}
	if since < 0 {
		return rep, nil
	}
	rep.Entries = make([]Entry, 0, since+1)
	it := l.Iter(0)
	defer it.Close()
	for it.Next() {
		e := it.Entry()
		if e.Seq > since {
			break
		}
		rep.Entries = append(rep.Entries, Entry{Seq: e.Seq, Epoch: e.Epoch, Value: string(e.Data), Hash: e.Hash.String()})
	}
	if err := it.Err(); err != nil {
		return rep, fmt.Errorf("checker: read %s: %w", name, err)
	}
	return rep, nil
}
