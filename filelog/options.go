// Options and SyncMode, with their defaults.

package filelog

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/flume-go/flume/vfs"
)

// SyncMode is the fsync policy, chosen at Open. See the package doc for the
// guarantee of each mode.
type SyncMode int

const (
	// SyncAlways makes Append return only after its entries are fsynced.
	// Concurrent appenders share one write and one fsync (group commit).
	SyncAlways SyncMode = iota
	// SyncInterval fsyncs in the background every Options.SyncInterval.
	SyncInterval
	// SyncNever leaves fsync to the operating system (and to Sync/Close).
	SyncNever
)

// String returns "always", "interval" or "never".
func (m SyncMode) String() string {
	switch m {
	case SyncAlways:
		return "always"
	case SyncInterval:
		return "interval"
	case SyncNever:
		return "never"
	}
	return fmt.Sprintf("SyncMode(%d)", int(m))
}

// ParseSyncMode parses "always", "interval" or "never".
func ParseSyncMode(s string) (SyncMode, error) {
	switch s {
	case "always":
		return SyncAlways, nil
	case "interval":
		return SyncInterval, nil
	case "never":
		return SyncNever, nil
	}
	return 0, fmt.Errorf("filelog: unknown sync mode %q (want always, interval or never)", s)
}

// Options configure a Log. nil or the zero value means the defaults.
type Options struct {
	// FS is the filesystem the log lives on. Default vfs.Default (the OS);
	// tests use vfs.NewMem() or errorfs.
	FS vfs.FS
	// SegmentSize is the size at which the active segment is sealed and a
	// new one started (at the next Append boundary, so a segment may exceed
	// it by one batch). Default 64 MiB: large enough that per-segment costs
	// (an fsync, an index file, a descriptor) are negligible, small enough
	// that recovery scans little, as etcd's 64 MB WAL segments.
	SegmentSize int64
	// Sync is the fsync policy. Default SyncAlways: safe first; group
	// commit keeps it fast under concurrency.
	Sync SyncMode
	// SyncInterval is the period of background fsyncs under SyncInterval.
	// Default 100ms: bounds the loss window on power failure to about a
	// tenth of a second while costing ten fsyncs a second.
	SyncInterval time.Duration
	// SlowSync is the fsync duration above which a warning is logged.
	// Default 1s, as etcd's "slow fdatasync" warning.
	SlowSync time.Duration
	// OnSync, if set, is called after every successful fsync of a segment
	// with its duration (e.g. to feed a latency histogram). It runs on the
	// goroutine that did the fsync, before the operation that needed the
	// fsync returns. Under SyncAlways that is usually an append's group
	// commit, so appends wait for it; Sync and the SyncInterval syncer let
	// appends go on while they fsync and call it. Segment sealing and Close
	// call it too. Calls may overlap (a Sync can
	// fsync while a group commit does), so it must be safe for concurrent
	// use. Keep it fast, and do not call the Log's writing or syncing
	// methods (Append, AppendEntries, SetID, SetEpoch, Sync, Close) from
	// it: it may be running inside one of them.
	OnSync func(d time.Duration)
	// Logger receives open reports, truncations and slow-fsync warnings.
	// Default: discard.
	Logger *slog.Logger
	// ReadOnly opens the log for reading only (offline verify, inspection):
	// nothing on disk is changed, a torn tail is reported but not truncated,
	// and writes return ErrReadOnly. A read-only open takes the same
	// exclusive lock as a writer, so it fails with flume.ErrLocked while a
	// writer has the log open: offline means offline.
	ReadOnly bool
}

const (
	defaultSegmentSize  = 64 << 20
	defaultSyncInterval = 100 * time.Millisecond
	minSegmentSize      = 1 << 10
)

func (o *Options) withDefaults() (Options, error) {
	var r Options
	if o != nil {
		r = *o
	}
	if r.FS == nil {
		r.FS = vfs.Default
	}
	if r.SegmentSize == 0 {
		r.SegmentSize = defaultSegmentSize
	}
	if r.SegmentSize < minSegmentSize {
		return r, fmt.Errorf("filelog: segment size %d is below the minimum %d", r.SegmentSize, minSegmentSize)
	}
	if r.Sync < SyncAlways || r.Sync > SyncNever {
		return r, fmt.Errorf("filelog: unknown sync mode %d", int(r.Sync))
	}
	if r.SyncInterval <= 0 {
		r.SyncInterval = defaultSyncInterval
	}
	if r.SlowSync <= 0 {
		r.SlowSync = time.Second
	}
	if r.Logger == nil {
		r.Logger = slog.New(slog.DiscardHandler)
	}
	return r, nil
}
