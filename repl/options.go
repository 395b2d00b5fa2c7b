package repl

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flume-go/flume"
)

// Options configure a Primary or a Follower; nil means defaults. Both sides
// of a connection must agree on Secret (both nil, or the same bytes).
type Options struct {
	// NodeID names this node to its peers (status tables, logs). Default:
	// random. A follower that keeps its ID across restarts is shown as one
	// follower on its primary.
	NodeID string
	// Secret is the shared secret both sides prove by challenge-response
	// (HMAC-SHA256 over both sides' nonces); it is never sent. nil: no
	// authentication.
	Secret []byte
	// TLS is the server config on a Primary and the client config on a
	// Follower; nil: plain TCP. Require client certificates with
	// ClientAuth: tls.RequireAndVerifyClientCert on the Primary's config.
	TLS *tls.Config
	// Heartbeat is how often a quiet side sends a heartbeat. Default 500ms.
	Heartbeat time.Duration
	// DeadAfter is how long a peer may stay silent before the connection
	// is dropped as dead; it also bounds the handshake. Default 3s, six
	// heartbeats, so that one delayed packet does not kill a connection.
	DeadAfter time.Duration
	// Logger receives connection events (auth failures, refusals,
	// reconnects). Default: the DB's logger.
	Logger *slog.Logger

	// Dial (Follower only) opens a connection to the primary. Default: a
	// net.Dialer to the address given to NewFollower (then TLS, if set).
	Dial func(ctx context.Context) (net.Conn, error)
	// MinBackoff and MaxBackoff (Follower only) bound the reconnect delay,
	// which doubles after each failure and is jittered. Defaults 50ms, 2s.
	MinBackoff, MaxBackoff time.Duration

	// MaxInFlight (Primary only) bounds the bytes of entries sent to one
	// follower and not yet acknowledged as received. Default 8 MiB: about
	// 3 ms of loopback bandwidth, enough to keep the pipe full, small
	// enough that many slow followers cost little memory (the primary
	// never buffers more than one batch per follower itself).
	MaxInFlight int
	// MaxBatchBytes and MaxBatchEntries (Primary only) bound one Entries
	// message. Defaults 256 KiB and 1024 entries. A single larger entry is
	// sent alone.
	MaxBatchBytes, MaxBatchEntries int
}

func (o *Options) withDefaults(db *flume.DB) Options {
	var r Options
	if o != nil {
		r = *o
	}
	if r.NodeID == "" {
		var b [6]byte
		rand.Read(b[:])
		r.NodeID = "node-" + hex.EncodeToString(b[:])
	}
	if len(r.NodeID) > maxStringLen {
		r.NodeID = r.NodeID[:maxStringLen]
	}
	if r.Heartbeat <= 0 {
		r.Heartbeat = 500 * time.Millisecond
	}
	if r.DeadAfter <= 0 {
		r.DeadAfter = 3 * time.Second
	}
	if r.DeadAfter < 2*r.Heartbeat {
		r.DeadAfter = 2 * r.Heartbeat
	}
	if r.Logger == nil {
		if db != nil {
			r.Logger = db.Logger()
		} else {
			r.Logger = slog.New(slog.DiscardHandler)
		}
	}
	if r.MinBackoff <= 0 {
		r.MinBackoff = 50 * time.Millisecond
	}
	if r.MaxBackoff <= 0 {
		r.MaxBackoff = 2 * time.Second
	}
	if r.MaxBackoff < r.MinBackoff {
		r.MaxBackoff = r.MinBackoff
	}
	if r.MaxInFlight <= 0 {
		r.MaxInFlight = 8 << 20
	}
	if r.MaxBatchBytes <= 0 {
		r.MaxBatchBytes = 256 << 10
	}
	if r.MaxBatchEntries <= 0 {
		r.MaxBatchEntries = 1024
	}
	return r
}

// Stats are cumulative counters of a Primary or a Follower.
type Stats struct {
	Handshakes      int64 // handshakes that ended in streaming
	Refusals        int64 // handshakes refused (by either side)
	AuthFailures    int64 // peers that failed authentication (incl. TLS)
	Reconnects      int64 // follower: connection attempts after the first
	EntriesSent     int64
	BytesSent       int64 // bytes of entry frames sent
	EntriesReceived int64
	BytesReceived   int64 // bytes of entry frames received
}

type stats struct {
	handshakes, refusals, authFailures, reconnects atomic.Int64
	entriesSent, bytesSent                         atomic.Int64
	entriesReceived, bytesReceived                 atomic.Int64
}

func (s *stats) snapshot() Stats {
	return Stats{
		Handshakes: s.handshakes.Load(), Refusals: s.refusals.Load(), AuthFailures: s.authFailures.Load(),
		Reconnects: s.reconnects.Load(), EntriesSent: s.entriesSent.Load(), BytesSent: s.bytesSent.Load(),
		EntriesReceived: s.entriesReceived.Load(), BytesReceived: s.bytesReceived.Load(),
	}
}

// FollowerStatus is a primary's view of one follower. Its JSON form is
// what a flume server reports for each follower in GET /status (and what
// `flume status` reads back): the tags are part of the HTTP API.
type FollowerStatus struct {
	NodeID      string `json:"node_id"`
	Addr        string `json:"addr"` // remote address of the connection
	Connected   bool   `json:"connected"`
	AckedSeq    int64  `json:"acked_seq"`    // last seq the follower reported durable
	ReceivedSeq int64  `json:"received_seq"` // last seq the follower reported received
	// LagEntries is the primary's since minus AckedSeq.
	LagEntries int64 `json:"lag_entries"`
	// LagBytes is the size of the entry frames after AckedSeq: exact for
	// frames sent and not yet acknowledged, estimated from the average
	// frame size for entries not yet sent.
	LagBytes int64 `json:"lag_bytes"`
	// LagSeconds is the age of the oldest entry the follower has not
	// acknowledged: time since it was published on the primary (0 when
	// caught up). For entries older than the Primary it counts from
	// NewPrimary.
	LagSeconds float64 `json:"lag_seconds"`
	// EntriesPerSec is the follower's recent acknowledgement rate.
	EntriesPerSec float64   `json:"entries_per_sec"`
	ConnectedAt   time.Time `json:"connected_at,omitzero"`
	LastSeen      time.Time `json:"last_seen,omitzero"` // last message received from it
}

// UpstreamStatus is a follower's view of its primary. Its JSON form is the
// "primary" object of a flume server's GET /status (and what `flume status`
// reads back): the tags are part of the HTTP API.
type UpstreamStatus struct {
	Primary string `json:"addr"` // address given to NewFollower
	// State is one of connecting, handshake, catching-up, streaming,
	// refused (the last handshake was refused or failed authentication;
	// retrying) and closed.
	State        string `json:"state"`
	Connected    bool   `json:"connected"`
	Since        int64  `json:"since"`         // the follower log's since
	PrimarySince int64  `json:"primary_since"` // the primary's since as last reported (-1 unknown)
	LagEntries   int64  `json:"lag_entries"`   // PrimarySince - Since, when known
	// LagBytes estimates the frame bytes of those entries from the average
	// frame size received so far (0 until an entry has been received).
	LagBytes int64 `json:"lag_bytes"`
	// LagSeconds is how long ago this follower first heard (handshake,
	// Entries or heartbeat) of the oldest entry the primary holds and it
	// does not: 0 when caught up. It is measured on the follower's clock.
	LagSeconds  float64   `json:"lag_seconds"`
	LastError   string    `json:"last_error,omitempty"`
	Reconnects  int64     `json:"reconnects"`
	ConnectedAt time.Time `json:"connected_at,omitzero"`
}

// Follower states.
const (
	StateConnecting = "connecting"
	StateHandshake  = "handshake"
	StateCatchingUp = "catching-up"
	StateStreaming  = "streaming"
	StateRefused    = "refused"
	StateClosed     = "closed"
)

// registry enforces one upstream per follower DB and one Primary per DB.
var registry struct {
	sync.Mutex
	followers map[*flume.DB]*Follower
	primaries map[*flume.DB]*Primary
}

func init() {
	registry.followers = make(map[*flume.DB]*Follower)
	registry.primaries = make(map[*flume.DB]*Primary)
}

// wire is one replication connection with its read and write buffers.
type wire struct {
	c         net.Conn
	mr        *msgReader
	out       []byte
	deadAfter time.Duration

	dl struct {
		sync.Mutex
		stopped bool      // reads were stopped; never extend the deadline again
		set     time.Time // when the read deadline was last set
	}
}

func newWire(c net.Conn, deadAfter time.Duration) *wire {
	return &wire{c: c, mr: newMsgReader(c, 64<<10), deadAfter: deadAfter}
}

// flush writes the buffered messages.
func (w *wire) flush() error {
	if len(w.out) == 0 {
		return nil
	}
	w.dl.Lock()
	if !w.dl.stopped { // after stopReads, writes fail at once
		w.c.SetWriteDeadline(time.Now().Add(w.deadAfter))
	}
	w.dl.Unlock()
	_, err := w.c.Write(w.out)
	w.out = w.out[:0]
	if err != nil {
		return fmt.Errorf("repl: write: %w", err)
	}
	return nil
}

// refreshRead pushes the read deadline to now+deadAfter, at most every
// deadAfter/8 (so a dead peer is noticed within deadAfter).
func (w *wire) refreshRead() {
	now := time.Now()
	w.dl.Lock()
	defer w.dl.Unlock()
	if w.dl.stopped || now.Sub(w.dl.set) < w.deadAfter/8 {
		return
	}
	w.dl.set = now
	w.c.SetReadDeadline(now.Add(w.deadAfter))
}

// clearDeadlines removes the handshake's deadlines; the next read sets a
// fresh read deadline.
func (w *wire) clearDeadlines() {
	w.dl.Lock()
	defer w.dl.Unlock()
	if !w.dl.stopped {
		w.c.SetDeadline(time.Time{})
		w.dl.set = time.Time{}
	}
}

// stopReads makes pending and future reads and writes fail at once (a
// writer blocked on a peer that does not read is released too). Only
// sendError writes after it.
func (w *wire) stopReads() {
	w.dl.Lock()
	defer w.dl.Unlock()
	w.dl.stopped = true
	w.c.SetDeadline(time.Unix(1, 0))
}

// read reads one message into buf (reused when large enough).
func (w *wire) read(buf []byte) (MsgType, []byte, error) {
	w.refreshRead()
	t, body, err := w.mr.next(buf)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			w.dl.Lock()
			stopped := w.dl.stopped
			w.dl.Unlock()
			if !stopped {
				return 0, body, fmt.Errorf("repl: peer silent for %v, considered dead: %w", w.deadAfter, err)
			}
		}
	}
	return t, body, err
}

// sendError sends an Error message best-effort, with a short deadline.
func (w *wire) sendError(m errorMsg) {
	w.out = appendError(w.out[:0], m)
	w.c.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	w.c.Write(w.out)
	w.out = w.out[:0]
}

func randomNonce() [nonceSize]byte {
	var n [nonceSize]byte
	rand.Read(n[:])
	return n
}
