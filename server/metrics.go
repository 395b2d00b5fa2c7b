package server

import (
	"net/http"
	"time"

	"github.com/flume-go/flume"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics is the server's Prometheus registry. Counters that the server
// itself drives are ordinary metrics; everything owned by the DB, the log
// or replication is read at scrape time by the collectors collectState
// registers.
type metrics struct {
	reg              *prometheus.Registry
	appends          prometheus.Counter
	appendBytes      prometheus.Counter
	appendErrors     *prometheus.CounterVec
	appendLatency    prometheus.Histogram
	fsyncLatency     prometheus.Histogram // nil unless the log reports fsyncs
	httpAuthFailures prometheus.Counter
	roleChanges      *prometheus.CounterVec
}

// latencyBuckets span a group-committed fsync (~0.2 ms) to a sync append
// that waits out a follower reconnect (seconds).
var latencyBuckets = []float64{50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1, 2.5, 5, 10}

// newMetrics builds the metrics the server drives, with the fsync
// histogram if withFsync. It needs nothing else, so New builds it before
// the log: the log observes its fsyncs from the moment it opens.
func newMetrics(withFsync bool) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.appends = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "flume_appends_total", Help: "Entries appended through the HTTP API."})
	m.appendBytes = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "flume_append_bytes_total", Help: "Payload bytes appended through the HTTP API."})
	m.appendErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flume_append_errors_total", Help: "Failed append requests by reason."}, []string{"reason"})
	m.appendLatency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "flume_append_duration_seconds",
		Help:    "Latency of successful append requests (one value or one NDJSON batch) through the HTTP API: durable on the primary and, in sync mode, acknowledged by the required followers.",
		Buckets: latencyBuckets})
	m.httpAuthFailures = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "flume_http_auth_failures_total", Help: "HTTP requests refused for a missing or wrong bearer token."})
	m.roleChanges = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flume_role_changes_total",
		Help: "Role-change requests (op: promote, follow) by outcome: ok, bad_request, is_primary, no_epochs, peer_ahead, unreachable, refused, not_ready, closed, error."},
		[]string{"op", "outcome"})
	m.reg.MustRegister(m.appends, m.appendBytes, m.appendErrors, m.appendLatency, m.httpAuthFailures, m.roleChanges)
	if withFsync {
		m.fsyncLatency = prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "flume_fsync_duration_seconds", Help: "Latency of the file log's fsyncs.", Buckets: latencyBuckets})
		m.reg.MustRegister(m.fsyncLatency)
	}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// collectState registers the collectors that read db, replication and l's
// own counters (a file log's) at scrape time.
func (m *metrics) collectState(db *flume.DB, repl replSource, l flume.Log) {
	m.reg.MustRegister(&stateCollector{db: db, repl: repl})
	if c := logCollector(l); c != nil {
		m.reg.MustRegister(c)
	}
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// observeAppend records one append request; reason labels a failed one.
func (m *metrics) observeAppend(values [][]byte, d time.Duration, err error, reason string) {
	if err != nil {
		m.appendErrors.WithLabelValues(reason).Inc()
		return
	}
	n := 0
	for _, v := range values {
		n += len(v)
	}
	m.appends.Add(float64(len(values)))
	m.appendBytes.Add(float64(n))
	m.appendLatency.Observe(d.Seconds())
}

// roleChange counts one role-change request; nil m counts nothing.
func (m *metrics) roleChange(op, outcome string) {
	if m != nil {
		m.roleChanges.WithLabelValues(op, outcome).Inc()
	}
}

// observeFsync records one fsync of the file log (its OnSync hook). Only
// for metrics built withFsync.
func (m *metrics) observeFsync(d time.Duration) { m.fsyncLatency.Observe(d.Seconds()) }

func errorReason(err error) string {
	switch {
	case err == nil:
		return ""
	case isNotPrimary(err):
		return "not_primary"
	case isNotReplicated(err):
		return "not_replicated"
	default:
		return "other"
	}
}

var (
	descSince = prometheus.NewDesc("flume_since", "Seq of the last entry in the log (-1 when empty).", nil, nil)
	descEpoch = prometheus.NewDesc("flume_epoch", "Current epoch of the log: the epoch of entries appended from now on.", nil, nil)
	descFence = prometheus.NewDesc("flume_fenced_epoch", "Highest epoch this node has promised to honour (logs with an epoch history).", nil, nil)
	descHint  = prometheus.NewDesc("flume_committed_hint", "Persisted lower bound of the group's committed watermark, -1 unknown (logs with an epoch history).", nil, nil)
	descEpRec = prometheus.NewDesc("flume_epoch_records", "Records in the log's epoch history (promotions).", nil, nil)
	descRole  = prometheus.NewDesc("flume_role", "1 for this node's role.", []string{"role"}, nil)

	fl           = []string{"follower", "addr"}
	descFConn    = prometheus.NewDesc("flume_follower_connected", "1 if the follower is connected.", fl, nil)
	descFAcked   = prometheus.NewDesc("flume_follower_acked_seq", "Last seq the follower acknowledged as durable.", fl, nil)
	descFLagE    = prometheus.NewDesc("flume_follower_lag_entries", "Entries the follower has not acknowledged.", fl, nil)
	descFLagB    = prometheus.NewDesc("flume_follower_lag_bytes", "Payload bytes the follower has not acknowledged.", fl, nil)
	descFLagS    = prometheus.NewDesc("flume_follower_lag_seconds", "Age of the oldest entry the follower has not acknowledged.", fl, nil)
	descFRate    = prometheus.NewDesc("flume_follower_entries_per_second", "Recent rate of entries acknowledged by the follower.", fl, nil)
	descUConn    = prometheus.NewDesc("flume_upstream_connected", "1 if this follower is connected to its primary.", []string{"primary"}, nil)
	descULag     = prometheus.NewDesc("flume_upstream_lag_entries", "Entries this follower is behind its primary, as last reported.", []string{"primary"}, nil)
	descULagB    = prometheus.NewDesc("flume_upstream_lag_bytes", "Estimated bytes of the entries this follower is behind (average frame size).", []string{"primary"}, nil)
	descULagS    = prometheus.NewDesc("flume_upstream_lag_seconds", "Age of the oldest entry the primary holds and this follower does not (0: caught up).", []string{"primary"}, nil)
	descHS       = prometheus.NewDesc("flume_repl_handshakes_total", "Replication handshakes completed.", nil, nil)
	descRefusals = prometheus.NewDesc("flume_repl_handshake_refusals_total", "Replication handshakes refused (unrelated or diverged logs, duplicate upstream, version).", nil, nil)
	descAuthF    = prometheus.NewDesc("flume_repl_auth_failures_total", "Replication peers that failed authentication.", nil, nil)
	descRecon    = prometheus.NewDesc("flume_repl_reconnects_total", "Follower reconnects to its primary.", nil, nil)
	descESent    = prometheus.NewDesc("flume_repl_entries_sent_total", "Entries sent to followers.", nil, nil)
	descBSent    = prometheus.NewDesc("flume_repl_bytes_sent_total", "Bytes sent to followers.", nil, nil)
	descERecv    = prometheus.NewDesc("flume_repl_entries_received_total", "Entries received from the primary.", nil, nil)
	descBRecv    = prometheus.NewDesc("flume_repl_bytes_received_total", "Bytes received from the primary.", nil, nil)
)

// stateCollector reads the DB and replication state at scrape time.
type stateCollector struct {
	db   *flume.DB
	repl replSource
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSince, descEpoch, descFence, descHint, descEpRec, descRole, descFConn, descFAcked, descFLagE, descFLagB,
		descFLagS, descFRate, descUConn, descULag, descULagB, descULagS, descHS, descRefusals, descAuthF, descRecon, descESent, descBSent, descERecv, descBRecv} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v int64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	gauge(descSince, float64(c.db.Since()))
	gauge(descEpoch, float64(c.db.Log().Epoch()))
	if el, ok := c.db.Log().(flume.EpochLog); ok {
		gauge(descFence, float64(el.FencedEpoch()))
		gauge(descHint, float64(el.CommittedHint()))
		gauge(descEpRec, float64(len(el.Epochs())))
	}
	role := "primary"
	if f, _ := c.db.Role(); f {
		role = "follower"
	}
	gauge(descRole, 1, role)
	var st replState
	if c.repl != nil {
		st = c.repl()
	}
	for _, f := range st.followers {
		gauge(descFConn, b2f(f.Connected), f.NodeID, f.Addr)
		gauge(descFAcked, float64(f.AckedSeq), f.NodeID, f.Addr)
		gauge(descFLagE, float64(f.LagEntries), f.NodeID, f.Addr)
		gauge(descFLagB, float64(f.LagBytes), f.NodeID, f.Addr)
		gauge(descFLagS, f.LagSeconds, f.NodeID, f.Addr)
		gauge(descFRate, f.EntriesPerSec, f.NodeID, f.Addr)
	}
	if u := st.upstream; u != nil {
		gauge(descUConn, b2f(u.Connected), u.Primary)
		gauge(descULag, float64(u.LagEntries), u.Primary)
		gauge(descULagB, float64(u.LagBytes), u.Primary)
		gauge(descULagS, u.LagSeconds, u.Primary)
	}
	s := st.stats
	counter(descHS, s.Handshakes)
	counter(descRefusals, s.Refusals)
	counter(descAuthF, s.AuthFailures)
	counter(descRecon, s.Reconnects)
	counter(descESent, s.EntriesSent)
	counter(descBSent, s.BytesSent)
	counter(descERecv, s.EntriesReceived)
	counter(descBRecv, s.BytesReceived)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
