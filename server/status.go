package server

import (
	"github.com/flume-go/flume"
	"github.com/flume-go/flume/repl"
)

// Status is the body of GET /status. The replication parts are repl's
// own status types, whose JSON tags name the fields: a field added there
// shows up here (and in `flume status --json`) with no change in this
// package.
type Status struct {
	Role         string `json:"role"` // "primary" or "follower"
	NodeID       string `json:"node_id"`
	LogID        string `json:"log_id"`
	Epoch        uint64 `json:"epoch"`
	Since        int64  `json:"since"` // seq of the last entry, -1 when empty
	Hash         string `json:"hash"`  // chain hash at Since
	Fsync        string `json:"fsync,omitempty"`
	SyncReplicas int    `json:"sync_replicas"`
	// Followers lists the followers of a primary (connected or recently
	// seen). Absent on a follower.
	Followers []repl.FollowerStatus `json:"followers,omitempty"`
	// Primary is a follower's view of its upstream. Absent on a primary.
	Primary *UpstreamStatus `json:"primary,omitempty"`
}

// UpstreamStatus is a follower's view of its primary as GET /status
// reports it: repl.UpstreamStatus (Primary is the "addr" field) plus
// AckedSeq.
type UpstreamStatus struct {
	repl.UpstreamStatus
	// AckedSeq is what this follower has acknowledged to its primary as
	// durable: its Since.
	AckedSeq int64 `json:"acked_seq"`
}

// replState is what the HTTP API and metrics read from replication at
// request or scrape time.
type replState struct {
	followers []repl.FollowerStatus // primary
	upstream  *repl.UpstreamStatus  // follower
	stats     repl.Stats
}

// replSource reads the current replication state; nil means none.
type replSource func() replState

func dbStatus(db *flume.DB) Status {
	l := db.Log()
	since, hash := l.Head()
	// Head reads the log; the DB's published since is what readers see and
	// never runs ahead of the log, so report the lower of the two.
	if s := db.Since(); s < since {
		if e, err := l.Entry(s); err == nil {
			since, hash = s, e.Hash
		} else if s < 0 {
			since, hash = -1, flume.GenesisHash(l.ID())
		}
	}
	st := Status{Role: "primary", LogID: l.ID().String(), Epoch: l.Epoch(), Since: since, Hash: hash.String()}
	if f, _ := db.Role(); f {
		st.Role = "follower"
	}
	return st
}
