package server

import (
	"time"

	"github.com/flume-go/flume"
)

// Status is the body of GET /status.
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
	Followers []FollowerStatus `json:"followers,omitempty"`
	// Primary is a follower's view of its upstream. Absent on a primary.
	Primary *UpstreamStatus `json:"primary,omitempty"`
}

// FollowerStatus is one follower as its primary sees it.
type FollowerStatus struct {
	NodeID        string    `json:"node_id"`
	Addr          string    `json:"addr"`
	Connected     bool      `json:"connected"`
	AckedSeq      int64     `json:"acked_seq"`
	ReceivedSeq   int64     `json:"received_seq"`
	LagEntries    int64     `json:"lag_entries"`
	LagBytes      int64     `json:"lag_bytes"`
	LagSeconds    float64   `json:"lag_seconds"`
	EntriesPerSec float64   `json:"entries_per_sec"`
	ConnectedAt   time.Time `json:"connected_at,omitzero"`
	LastSeen      time.Time `json:"last_seen,omitzero"`
}

// UpstreamStatus is a follower's view of its primary.
type UpstreamStatus struct {
	Addr         string `json:"addr"`
	State        string `json:"state"`
	Connected    bool   `json:"connected"`
	Since        int64  `json:"since"`
	AckedSeq     int64  `json:"acked_seq"` // what this follower has acknowledged as durable: its since
	PrimarySince int64  `json:"primary_since"`
	LagEntries   int64  `json:"lag_entries"`
	// LagBytes estimates the bytes of those entries (average frame size).
	LagBytes int64 `json:"lag_bytes"`
	// LagSeconds is the age of the oldest entry the primary holds and this
	// follower does not, by when the follower heard of it (0: caught up).
	LagSeconds  float64   `json:"lag_seconds"`
	LastError   string    `json:"last_error,omitempty"`
	Reconnects  int64     `json:"reconnects"`
	ConnectedAt time.Time `json:"connected_at,omitzero"`
}

// ReplStats are replication counters since start.
type ReplStats struct {
	Handshakes, Refusals, AuthFailures, Reconnects int64
	EntriesSent, BytesSent                         int64
	EntriesReceived, BytesReceived                 int64
}

// replState is what the HTTP API and metrics read from replication at
// request or scrape time.
type replState struct {
	followers []FollowerStatus // primary
	upstream  *UpstreamStatus  // follower
	stats     ReplStats
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
