package filelog

import "github.com/flume-go/flume"

var _ flume.AppendSyncer = (*Log)(nil)

// SyncsOnAppend implements flume.AppendSyncer: true only under SyncAlways,
// where Append returns after the fsync that covers its entries.
func (l *Log) SyncsOnAppend() bool { return l.opts.Sync == SyncAlways }
