// Package views holds flume's built-in views: Reduce, which folds the log
// into one state value, and Index, which maps entries to keys in a bbolt
// file and answers exact-key and key-range queries, optionally live.
//
// Both follow flume's view contract (flume.View): the DB feeds them every
// entry in order from their own since; they persist their state together
// with that since atomically, so a restart resumes exactly where the last
// save left off without reapplying or skipping an entry; a changed version
// string, a view ahead of its log, or a view whose recorded chain hash is
// not the log's (both implement flume.ChainView) rebuilds from the start of
// the log. Their read methods wait, through flume.ViewHost.Sync, until the
// view has applied every entry published when the read began
// (read-your-writes), bounded by the caller's context.
//
//	count := views.NewReduce("count.state", "v1", nil,
//		func(n int, e flume.Entry) (int, error) { return n + 1, nil }, nil)
//	if err := db.Use("count", count); err != nil { ... }
//	n, err := count.Get(ctx) // includes every append that returned before
package views
