package repl

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/vfs"
)

// Options configure a Primary or a Follower; nil means defaults, and so
// does every zero field. A value that has no meaning (negative, or bounds in
// the wrong order) is refused by NewPrimary, NewFollower and Replicate with
// an error naming the field. Both sides of a connection must agree on
// Secret (both nil, or the same bytes).
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
	// is dropped as dead; it also bounds the handshake. It must be at least
	// two heartbeats, so that one delayed packet does not kill a
	// connection. Default 3s (six default heartbeats), or two heartbeats if
	// that is longer.
	DeadAfter time.Duration
	// Logger receives connection events (auth failures, refusals,
	// reconnects). Default: the DB's logger.
	Logger *slog.Logger

	// AdvertiseHTTP (Primary) is this node's HTTP API URL, sent in the
	// handshake so that followers can send clients to it (their 421s name
	// it). Empty: not advertised.
	AdvertiseHTTP string
	// ForkDir (Follower) is the directory where a rejoin keeps the entries
	// it cuts (flume serve uses DIR/forked). Empty: a rejoin that needs a
	// cut is refused, and nothing is cut.
	ForkDir string
	// FS (Follower) is the filesystem ForkDir is written through. Default:
	// vfs.Default.
	FS vfs.FS

	// Dial (Follower only) opens a connection to the primary. Default: a
	// net.Dialer to the address given to NewFollower (then TLS, if set).
	Dial func(ctx context.Context) (net.Conn, error)
	// MinBackoff and MaxBackoff (Follower only) bound the reconnect delay,
	// which doubles after each failure and is jittered. Defaults 50ms, 2s;
	// MaxBackoff may not be less than MinBackoff.
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

	// SendAfterSync (Primary only) turns off parallel fsyncs: entries are
	// sent to followers only once the primary's own fsync has made them
	// durable, as before protocol version 4, so a synchronous append waits
	// for the two fsyncs one after the other. By default a primary whose
	// log syncs on append (filelog SyncAlways) sends each batch as soon as
	// it is written; followers hold such entries unexposed until the
	// primary publishes them (flume.DB.HoldAbove). Either way each start of
	// a Primary over a non-empty filelog begins a new epoch
	// (flume.DB.NewEpoch), so that entries it lost in a power failure are
	// cut from its followers at the exact seq where its new history begins.
	SendAfterSync bool
}

// validate reports the first option that has no meaning (a negative
// duration or size, a NodeID too long for the wire, bounds given in the
// wrong order), naming the field, as raft's ValidateConfig does. Zero
// values are always valid: they take the defaults.
func (o *Options) validate() error {
	if o == nil {
		return nil
	}
	bad := func(field string, format string, args ...any) error {
		return fmt.Errorf("repl: invalid Options.%s: %s", field, fmt.Sprintf(format, args...))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"Heartbeat", o.Heartbeat}, {"DeadAfter", o.DeadAfter}, {"MinBackoff", o.MinBackoff}, {"MaxBackoff", o.MaxBackoff}} {
		if d.v < 0 {
			return bad(d.name, "%v is negative", d.v)
		}
	}
	for _, n := range []struct {
		name string
		v    int
	}{{"MaxInFlight", o.MaxInFlight}, {"MaxBatchBytes", o.MaxBatchBytes}, {"MaxBatchEntries", o.MaxBatchEntries}} {
		if n.v < 0 {
			return bad(n.name, "%d is negative", n.v)
		}
	}
	if len(o.NodeID) > maxStringLen {
		return bad("NodeID", "%d bytes, at most %d", len(o.NodeID), maxStringLen)
	}
	if o.DeadAfter > 0 && o.DeadAfter < 2*o.heartbeat() {
		return bad("DeadAfter", "%v is less than two heartbeats (%v): one late heartbeat would drop the connection", o.DeadAfter, o.heartbeat())
	}
	if o.MinBackoff > 0 && o.MaxBackoff > 0 && o.MaxBackoff < o.MinBackoff {
		return bad("MaxBackoff", "%v is less than MinBackoff %v", o.MaxBackoff, o.MinBackoff)
	}
	return nil
}

func (o *Options) heartbeat() time.Duration {
	if o.Heartbeat > 0 {
		return o.Heartbeat
	}
	return 500 * time.Millisecond
}

// withDefaults validates o and fills in the defaults. A default that would
// contradict a value given (DeadAfter below two given heartbeats, MaxBackoff
// below a given MinBackoff) follows the given value instead.
func (o *Options) withDefaults(db *flume.DB) (Options, error) {
	if err := o.validate(); err != nil {
		return Options{}, err
	}
	var r Options
	if o != nil {
		r = *o
	}
	if r.NodeID == "" {
		var b [6]byte
		rand.Read(b[:])
		r.NodeID = "node-" + hex.EncodeToString(b[:])
	}
	r.Heartbeat = r.heartbeat()
	if r.DeadAfter == 0 {
		r.DeadAfter = max(3*time.Second, 2*r.Heartbeat)
	}
	if r.Logger == nil {
		if db != nil {
			r.Logger = db.Logger()
		} else {
			r.Logger = slog.New(slog.DiscardHandler)
		}
	}
	if r.MinBackoff == 0 {
		r.MinBackoff = min(50*time.Millisecond, max(r.MaxBackoff, time.Millisecond))
	}
	if r.MaxBackoff == 0 {
		r.MaxBackoff = max(2*time.Second, r.MinBackoff)
	}
	if r.MaxInFlight == 0 {
		r.MaxInFlight = 8 << 20
	}
	if r.MaxBatchBytes == 0 {
		r.MaxBatchBytes = 256 << 10
	}
	if r.MaxBatchEntries == 0 {
		r.MaxBatchEntries = 1024
	}
	if r.FS == nil {
		r.FS = vfs.Default
	}
	return r, nil
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
	Cuts            int64 // follower: rejoins that cut entries the primary lacked (kept in ForkDir)
	// EarlyBatches (primary) counts batches handed to the senders before
	// the primary's fsync (parallel fsyncs); EarlySent counts the Entries
	// messages sent that way, over all followers.
	EarlyBatches, EarlySent int64
}

type stats struct {
	handshakes, refusals, authFailures, reconnects atomic.Int64
	entriesSent, bytesSent                         atomic.Int64
	entriesReceived, bytesReceived                 atomic.Int64
	cuts                                           atomic.Int64
	earlyBatches, earlySent                        atomic.Int64
}

func (s *stats) snapshot() Stats {
	return Stats{
		Handshakes: s.handshakes.Load(), Refusals: s.refusals.Load(), AuthFailures: s.authFailures.Load(),
		Reconnects: s.reconnects.Load(), EntriesSent: s.entriesSent.Load(), BytesSent: s.bytesSent.Load(),
		EntriesReceived: s.entriesReceived.Load(), BytesReceived: s.bytesReceived.Load(), Cuts: s.cuts.Load(),
		EarlyBatches: s.earlyBatches.Load(), EarlySent: s.earlySent.Load(),
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
	State        State `json:"state"`
	Connected    bool  `json:"connected"`
	Since        int64 `json:"since"`         // the follower log's since
	PrimarySince int64 `json:"primary_since"` // the primary's since as last reported (-1 unknown)
	LagEntries   int64 `json:"lag_entries"`   // PrimarySince - Since, when known
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
	// PrimaryHTTP is the HTTP API URL the primary advertised in the
	// handshake (Options.AdvertiseHTTP), where clients should send appends.
	PrimaryHTTP string `json:"primary_http,omitempty"`
}
