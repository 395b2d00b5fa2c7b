package server

import (
	"fmt"
	"time"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/filelog"
	"github.com/prometheus/client_golang/prometheus"
)

// openFileLog opens the file log in dir with cfg's fsync policy; onFsync
// (if not nil) receives the duration of every fsync of a segment file.
func openFileLog(dir string, cfg Config, onFsync func(time.Duration)) (flume.Log, error) {
	mode, err := filelog.ParseSyncMode(cfg.Fsync)
	if err != nil {
		return nil, err
	}
	l, err := filelog.Open(dir, &filelog.Options{Sync: mode, SyncInterval: cfg.FsyncInterval, Logger: cfg.Logger, OnSync: onFsync})
	if err != nil {
		return nil, err
	}
	r := l.OpenReport()
	cfg.Logger.Info("log open", "dir", dir, "created", r.Created, "segments", r.Segments, "since", r.LastSeq,
		"scanned_bytes", r.ScannedBytes, "truncated_bytes", r.TruncatedBytes)
	return l, nil
}

// OpenLog opens (creating if needed) the file log in dir with an fsync
// policy ("always", "interval", "never"; "" is "always"), as a server
// does. It is for tools (demo, bench) that run DBs without a Server.
func OpenLog(dir, fsync string) (flume.Log, error) {
	l, err := openFileLog(dir, Config{Fsync: fsync}.withDefaults(), nil)
	if err != nil {
		return nil, fmt.Errorf("server: open log %s: %w", dir, err)
	}
	return l, nil
}

var (
	descLogEntries = prometheus.NewDesc("flume_log_entries_total", "Entries written to the file log since start (appends and replicated).", nil, nil)
	descLogBytes   = prometheus.NewDesc("flume_log_bytes_total", "Frame bytes written to the file log since start.", nil, nil)
	descLogWrites  = prometheus.NewDesc("flume_log_writes_total", "Write calls to segment files since start (group commit makes them fewer than appends).", nil, nil)
	descLogSyncs   = prometheus.NewDesc("flume_log_fsyncs_total", "Fsyncs of segment files since start.", nil, nil)
)

// logStatsCollector exports a file log's counters at scrape time.
type logStatsCollector struct{ l *filelog.Log }

func (c logStatsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descLogEntries
	ch <- descLogBytes
	ch <- descLogWrites
	ch <- descLogSyncs
}

func (c logStatsCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.l.Stats()
	for _, m := range []struct {
		d *prometheus.Desc
		v int64
	}{{descLogEntries, s.Entries}, {descLogBytes, s.Bytes}, {descLogWrites, s.Writes}, {descLogSyncs, s.Syncs}} {
		ch <- prometheus.MustNewConstMetric(m.d, prometheus.CounterValue, float64(m.v))
	}
}

// logCollector returns a collector for l's own counters, nil if it has none.
func logCollector(l flume.Log) prometheus.Collector {
	if fl, ok := l.(*filelog.Log); ok {
		return logStatsCollector{fl}
	}
	return nil
}
