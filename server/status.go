package server

import (
	"time"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/repl"
)

// Status is the body of GET /status. The replication parts are repl's
// own status types, whose JSON tags name the fields: a field added there
// shows up here (and in `flume status --json`) with no change in this
// package.
type Status struct {
	Role   string `json:"role"` // "primary" or "follower"
	NodeID string `json:"node_id"`
	LogID  string `json:"log_id"`
	// Epoch is the epoch of entries appended from now on (on a primary,
	// the epoch it serves).
	Epoch uint64 `json:"epoch"`
	Since int64  `json:"since"` // seq of the last entry readers see, -1 when empty
	Hash  string `json:"hash"`  // chain hash at Since
	// LogSince is the last seq in the log: Since plus the entries a
	// follower holds (Held), received before its primary had made them
	// durable and not shown to readers until it has (parallel fsyncs).
	// It is what a promotion compares: the longest log holds every
	// acknowledged append.
	LogSince     int64  `json:"log_since"`
	Held         int64  `json:"held"`
	Fsync        string `json:"fsync,omitempty"`
	SyncReplicas int    `json:"sync_replicas"`
	// ReplAddr is the node's replication listener: where followers connect
	// once it is the primary. Absent when it has none.
	ReplAddr string `json:"repl_addr,omitempty"`

	// The epoch history and fencing state, present when the log keeps them
	// (a flume.EpochLog: memlog and filelog do).

	// FencedEpoch is the highest epoch the node has promised to honour.
	FencedEpoch *uint64 `json:"fenced_epoch,omitempty"`
	// CommittedHint is the last persisted lower bound of the group's
	// committed watermark; -1 unknown.
	CommittedHint *int64 `json:"committed_hint,omitempty"`
	// EpochRecords is the number of records in the epoch history; Epochs
	// holds the last of them (at most StatusEpochs), oldest first.
	EpochRecords int           `json:"epoch_records"`
	Epochs       []EpochStatus `json:"epochs,omitzero"`

	// Followers lists the followers of a primary (connected or recently
	// seen). Absent on a follower.
	Followers []repl.FollowerStatus `json:"followers,omitempty"`
	// Primary is a follower's view of its upstream. Absent on a primary.
	Primary *UpstreamStatus `json:"primary,omitempty"`
}

// StatusEpochs is how many of the epoch history's last records /status
// shows.
const StatusEpochs = 5

// EpochStatus is one record of the epoch history as /status shows it.
type EpochStatus struct {
	Epoch     uint64    `json:"epoch"`
	Start     int64     `json:"start"`     // first seq of the epoch
	Prev      string    `json:"prev"`      // chain hash before Start, short form
	Promotion string    `json:"promotion"` // promotion ID, hex
	Time      time.Time `json:"time"`      // when promoted (the promoter's clock)
}

// highestEpoch is the highest epoch st reports: its epoch, its fenced
// epoch, its history's last record.
func (st Status) highestEpoch() uint64 {
	e := st.Epoch
	if st.FencedEpoch != nil {
		e = max(e, *st.FencedEpoch)
	}
	for _, r := range st.Epochs {
		e = max(e, r.Epoch)
	}
	return e
}

// UpstreamStatus is a follower's view of its primary as GET /status
// reports it: repl.UpstreamStatus (Primary is the "addr" field) plus
// AckedSeq.
type UpstreamStatus struct {
	repl.UpstreamStatus
	// AckedSeq is what this follower has acknowledged to its primary as
	// durable: its Since.
	AckedSeq int64 `json:"acked_seq"`
	// HTTP is the primary's HTTP API URL when this node knows it (serve
	// --primary-http, or the primary_http of POST /follow); 421 answers
	// carry it as primary_http.
	HTTP string `json:"http,omitempty"`
}

// replState is what the HTTP API and metrics read from replication at
// request or scrape time.
type replState struct {
	followers   []repl.FollowerStatus // primary
	upstream    *repl.UpstreamStatus  // follower
	primaryHTTP string                // follower: its primary's HTTP URL, if known
	stats       repl.Stats
}

// replSource reads the current replication state; nil means none.
type replSource func() replState

func dbStatus(db *flume.DB) Status {
	l := db.Log()
	since, hash := l.Head()
	logSince := since
	// Head reads the log; the DB's published since is what readers see and
	// never runs ahead of the log, so report the lower of the two.
	if s := db.Since(); s < since {
		if e, err := l.Entry(s); err == nil {
			since, hash = s, e.Hash
		} else if s < 0 {
			since, hash = -1, flume.GenesisHash(l.ID())
		}
	}
	st := Status{Role: "primary", LogID: l.ID().String(), Epoch: l.Epoch(), Since: since, Hash: hash.String(),
		LogSince: logSince, Held: logSince - since}
	if f, _ := db.Role(); f {
		st.Role = "follower"
	}
	if el, ok := l.(flume.EpochLog); ok {
		fenced, hint := el.FencedEpoch(), el.CommittedHint()
		st.FencedEpoch, st.CommittedHint = &fenced, &hint
		h := el.Epochs()
		st.EpochRecords = len(h)
		st.Epochs = make([]EpochStatus, 0, min(len(h), StatusEpochs))
		for _, r := range h[max(0, len(h)-StatusEpochs):] {
			st.Epochs = append(st.Epochs, EpochStatus{Epoch: r.Epoch, Start: r.Start, Prev: r.Prev.Short(),
				Promotion: r.Promotion.String(), Time: time.Unix(0, r.When).UTC()})
		}
	}
	return st
}
