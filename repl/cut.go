package repl

import (
	"fmt"

	"github.com/flume-go/flume"
)

// historyView is what one side states about its log in a version 3 Hello:
// where it ends, its epoch history and its fencing state. cutPoint reads
// nothing else, so it stays a pure function of the two Hellos.
type historyView struct {
	// Position is the Hello's position: LogID, Since and Hash = h(Since)
	// (GenesisHash(LogID) when Since is -1). Its Epoch is only reported:
	// the epoch that counts is the newest record's (see epoch).
	Position
	// Epochs is the epoch history, oldest first (flume.EpochLog.Epochs).
	// Empty for a log written before epochs existed: all of it is then
	// the implicit epoch 0 from seq 0. A log whose first record starts
	// past 0 has that implicit epoch below it too.
	Epochs []flume.EpochRecord
	// FencedEpoch is the highest epoch the node promised to honour.
	FencedEpoch uint64
	// CommittedHint is a lower bound of the committed watermark the node
	// knows of (a follower's persisted hint; on the primary, the highest
	// seq acknowledged by the required number of followers); -1 if unknown.
	CommittedHint int64
	// Unclean: the node lost entries it held (its head is below its
	// committed hint) or found corruption below its tail when it opened.
	Unclean bool
}

// epoch is the epoch the side is in: that of its newest record, 0 when it
// has none. A promotion exists only as a record, so a primary with no
// record is in epoch 0 whatever its Hello's Epoch says.
func (v historyView) epoch() uint64 {
	if len(v.Epochs) == 0 {
		return 0
	}
	return v.Epochs[len(v.Epochs)-1].Epoch
}

// end is the last seq covered by record i on this side (-1 names the
// implicit epoch 0): one before the next record's start, or Since for the
// newest record. It is Start-1 for a record that covers no entry.
func (v historyView) end(i int) int64 {
	if i+1 < len(v.Epochs) {
		return v.Epochs[i+1].Start - 1
	}
	return v.Since
}

// cover is the index of the record that covers seq s on this side (the
// newest one starting at or before s), -1 for the implicit epoch 0.
func (v historyView) cover(s int64) int {
	i := len(v.Epochs) - 1
	for i >= 0 && v.Epochs[i].Start > s {
		i--
	}
	return i
}

// unclean reports whether the node may have lost entries it held: it says
// so, or its committed hint is past its head.
func (v historyView) unclean() bool { return v.Unclean || v.CommittedHint > v.Since }

// hashAt returns h(seq) when the view states it: Hash at Since, and the
// Prev of every record starting at seq+1. The caller of cutPoint on the
// primary can compare follower.hashAt(To) with its own log's h(To) before
// it sends anything (today's anchor check, generalised).
func (v historyView) hashAt(seq int64) (flume.Hash, bool) {
	if seq == v.Since {
		return v.Hash, true
	}
	for _, r := range v.Epochs {
		if r.Start == seq+1 {
			return r.Prev, true
		}
	}
	return flume.Hash{}, false
}

// damage returns why the view cannot be the state of a log ("" if it can):
// the rules every log's epoch history keeps (flume.EpochLog) and that tie
// it to the log's head.
func (v historyView) damage() string {
	if v.Since < -1 {
		return fmt.Sprintf("since %d is below -1", v.Since)
	}
	if v.CommittedHint < -1 {
		return fmt.Sprintf("committed hint %d is below -1", v.CommittedHint)
	}
	var prevEpoch uint64 // the implicit epoch 0 from seq 0
	var prevStart int64
	for i, r := range v.Epochs {
		switch {
		case r.Epoch <= prevEpoch && i == 0:
			return fmt.Sprintf("record 0 (%s) has epoch 0, the implicit epoch of the history before any promotion", r)
		case r.Epoch <= prevEpoch:
			return fmt.Sprintf("record %d (%s) does not have a greater epoch than record %d (epoch %d): epochs must strictly increase", i, r, i-1, prevEpoch)
		case r.Start < prevStart && i == 0:
			return fmt.Sprintf("record 0 (%s) starts before seq 0", r)
		case r.Start < prevStart:
			return fmt.Sprintf("record %d (%s) starts before record %d (seq %d): starts must not go backwards", i, r, i-1, prevStart)
		case r.Start > v.Since+1:
			return fmt.Sprintf("record %d (%s) starts past the log's end (since %d): an epoch begins at most at since+1", i, r, v.Since)
		case i > 0 && r.Start == prevStart && r.Prev != v.Epochs[i-1].Prev:
			return fmt.Sprintf("records %d and %d both start at seq %d but name different hashes before it (%s, %s)", i-1, i, r.Start, v.Epochs[i-1].Prev.Short(), r.Prev.Short())
		case r.Start == v.Since+1 && r.Prev != v.Hash:
			return fmt.Sprintf("record %d (%s) starts right after the head (since %d) but names hash %s before it, not the head's %s", i, r, v.Since, r.Prev.Short(), v.Hash.Short())
		case r.Start == 0 && r.Prev != flume.GenesisHash(v.LogID):
			return fmt.Sprintf("record %d (%s) starts at seq 0 but its previous hash is not the log's genesis hash", i, r)
		}
		prevEpoch, prevStart = r.Epoch, r.Start
	}
	return ""
}

// cutDecision is where a follower's history parts from its primary's.
type cutDecision struct {
	// To is the last seq both logs hold: the follower keeps [0, To] and
	// follows from To+1. -1 when it keeps no entry (it is empty).
	To int64
	// Cut is true when To < the follower's Since: the follower checks that
	// its own h(To) equals the primary's (sent with the Truncate), copies
	// (To, Since] to forked/ and cuts them.
	Cut bool
	// KeepEpochs is how many of the follower's epoch records, oldest first,
	// are part of the common history. The ones after them name promotions
	// the primary never saw; they all start at To+1 or later and must go
	// with the cut, also when no entry is cut, or adopting the primary's
	// records from To+1 on would not extend the history.
	KeepEpochs int
}

// cutPoint is the pure decision of where a rejoining follower's history
// parts from its primary's (rows 5a–5c of the version 3 handshake), sibling
// of decide and called from it with both sides' Hellos. It works the same
// on both sides, so the follower can recompute the primary's answer.
//
// Algorithm (PostgreSQL's findCommonAncestorTimeline over epoch records):
//
//  1. Both histories must be well formed (damage), else refuse with
//     CodeDiverged; a follower that holds entries must have the primary's
//     log ID (CodeLogID).
//  2. Stale epoch — refuse with CodeStaleEpoch when the primary's epoch (its
//     newest record's) is below the follower's fenced epoch, below the
//     follower's newest record's epoch, or below the primary's own fenced
//     epoch (it has learned it is deposed).
//  3. Match the records of both sides by epoch number. A number present on
//     both sides must name the same promotion (EpochRecord.Same), else two
//     promotions chose it independently (PostgreSQL's timeline collision):
//     refuse, CodeDiverged, whatever the cut would be; an operator decides.
//  4. r is the newest record both sides hold (the implicit epoch 0 from
//     seq 0 if none). Its Prev pins [0, r.Start-1] as common, and one
//     primary wrote r's entries on both sides, so t = min over both sides
//     of the last seq r covers there: the next record's start - 1, or
//     since. This is the design's "t = min(next_F, next_P) - 1, capped at
//     both sinces", with records matched by promotion rather than by
//     position in the list, so that a record covering no entry that only
//     one side holds (two promotions without data between, KAFKA-10706)
//     does not move the cut back on every rejoin.
//  5. The tables must agree with each other: wherever both state a hash
//     at a seq <= t (a head, or a record's Prev) it must be the same, and
//     a record only one side holds below r must cover no entry (r's Prev
//     says the histories are equal there). Else refuse, CodeDiverged.
//  6. t == follower's since: nothing to cut, follow from t+1 (the caller
//     still checks h(t), as decide does today). In every outcome the
//     follower keeps only its records up to r (KeepEpochs).
//  7. Otherwise the follower holds entries the primary lacks, and the cut
//     is refused when the entries after t were written in the primary's own
//     current promotion (the primary lost them: CodeAhead; KIP-101 scenario
//     1, KIP-966's last replica standing), when t is -1 (no entry is
//     provably common, and h(-1) verifies nothing: CodeDiverged; a rejoin
//     never cuts a whole log, KAFKA-2143), when either node is unclean, or
//     when t is below the follower's committed hint (CodeWouldLoseCommitted).
//
// Unclean nodes. An unclean primary lost entries it held; it must not be
// the node others cut to (KIP-966), so it makes no follower cut anything.
// An unclean follower cannot vouch for what it holds (its committed hint
// and table may be stale), so it is never cut either. Both may still pair
// when nothing is cut: catching up is how an unclean follower becomes clean.
// The primary's committed watermark is not compared with t: a follower's
// tail at seqs where the primary holds committed entries of a newer epoch is
// exactly what a rejoin cuts. It does mark the primary unclean when it is
// past the primary's head.
//
// Why a wrong table is a refusal, not a wrong cut. The tables only propose
// t; the chain decides. The caller sends the primary's h(t), and the
// follower cuts only if its own h(t) is equal, which proves [0, t] common.
// A t past the real fork point fails that check (refusal, CodeDiverged,
// nothing cut). A t below it passes but cuts only entries the primary also
// holds (sent again) and the ones the right cut removes too; the committed
// hint bounds it. Only t = -1 has nothing to check, hence step 7.
//
// The refusal is a *RefusedError whose Local is the primary's position and
// Remote the follower's.
func cutPoint(primary, follower historyView) (cutDecision, error) {
	p, f := primary, follower
	refuse := func(code Code, format string, args ...any) (cutDecision, error) {
		return cutDecision{}, &RefusedError{Reason: code, Local: p.Position, Remote: f.Position, Message: fmt.Sprintf(format, args...)}
	}

	// 1. Well-formed histories.
	if why := f.damage(); why != "" {
		return refuse(CodeDiverged, "the follower's epoch history is damaged: %s", why)
	}
	if why := p.damage(); why != "" {
		return refuse(CodeDiverged, "the primary's epoch history is damaged: %s", why)
	}
	if f.Since >= 0 && f.LogID != p.LogID {
		return refuse(CodeLogID, "follower log %s and primary log %s are unrelated histories", f.LogID, p.LogID)
	}

	// 2. Stale epoch (rows 5a, 5b).
	if err := staleEpoch(p, f); err != nil {
		return cutDecision{}, err
	}

	// 3. Match records by epoch number; one number, one promotion.
	sharedF := make([]bool, len(f.Epochs))
	sharedP := make([]bool, len(p.Epochs))
	lastF, lastP := -1, -1 // newest common record on each side; -1: implicit epoch 0
	for i, j := 0, 0; i < len(f.Epochs) && j < len(p.Epochs); {
		a, b := f.Epochs[i], p.Epochs[j]
		switch {
		case a.Epoch < b.Epoch:
			i++
		case a.Epoch > b.Epoch:
			j++
		case !a.Same(b):
			return refuse(CodeDiverged, "epoch %d was begun by two promotions: the follower's %s, the primary's %s; their histories are not ordered by epoch and neither is cut for the other", a.Epoch, a, b)
		default:
			sharedF[i], sharedP[j] = true, true
			lastF, lastP = i, j
			i++
			j++
		}
	}

	// 4. The last seq the newest common record covers on both sides.
	t := min(f.end(lastF), p.end(lastP))

	// 5. The tables must agree with each other up to t.
	for _, side := range []struct {
		v      historyView
		shared []bool
		last   int
		name   string
	}{{f, sharedF, lastF, "follower"}, {p, sharedP, lastP, "primary"}} {
		for i := 0; i < side.last; i++ {
			if r := side.v.Epochs[i]; !side.shared[i] && side.v.end(i) >= r.Start {
				return refuse(CodeDiverged, "the epoch tables contradict each other: the %s's %s covers seqs %d-%d, below %s which both hold", side.name, r, r.Start, side.v.end(i), side.v.Epochs[side.last])
			}
		}
	}
	for i := -1; i < len(f.Epochs); i++ {
		s, hf := f.Since, f.Hash // i = -1: the head; then each record's Prev
		if i >= 0 {
			s, hf = f.Epochs[i].Start-1, f.Epochs[i].Prev
		}
		if s < 0 || s > t {
			continue // h(-1) is the genesis hash, a function of the log ID
		}
		if hp, ok := p.hashAt(s); ok && hp != hf {
			return refuse(CodeDiverged, "at seq %d the follower's history states chain hash %s and the primary's %s, though their epoch tables agree up to seq %d", s, hf.Short(), hp.Short(), t)
		}
	}

	d := cutDecision{To: t, KeepEpochs: lastF + 1}
	// 6. Nothing to cut.
	if t == f.Since {
		return d, nil
	}
	// 7. The follower holds entries (t, f.Since] that the primary lacks.
	if k, n := f.cover(t+1), len(p.Epochs)-1; t == p.Since && (k < 0 && n < 0 || k >= 0 && n >= 0 && f.Epochs[k].Same(p.Epochs[n])) {
		return refuse(CodeAhead, "the follower holds seqs %d-%d of the primary's own current epoch %d, which the primary lacks: the primary lost entries it wrote, which may have been acknowledged", t+1, f.Since, p.epoch())
	}
	if t < 0 {
		return refuse(CodeDiverged, "no entry is provably common (the histories part at seq 0); a rejoin never cuts a whole log")
	}
	switch {
	case p.unclean():
		return refuse(CodeWouldLoseCommitted, "the primary is unclean (it lost entries it held; committed hint %d, since %d): it makes no follower cut seqs %d-%d", p.CommittedHint, p.Since, t+1, f.Since)
	case f.unclean():
		return refuse(CodeWouldLoseCommitted, "the follower is unclean (it lost entries it held; committed hint %d, since %d): it is not cut to seq %d", f.CommittedHint, f.Since, t)
	case t < f.CommittedHint:
		return refuse(CodeWouldLoseCommitted, "the histories part after seq %d, below the follower's committed hint %d: cutting would lose committed entries", t, f.CommittedHint)
	}
	d.Cut = true
	return d, nil
}
