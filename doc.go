// Package flume is an append-only log database with views derived from the
// log and replication of the log from a primary to followers: a Go
// implementation of JavaScript's flumedb plus the replication its seed
// document asks for.
//
// The core types:
//
//   - Log: an append-only sequence of entries numbered densely from 0, with a
//     CRC per entry and a chain hash over the whole history. memlog and
//     filelog implement it.
//   - DB: a Log plus views. Append returns each entry's own seq; Since is
//     observable (WaitSince, Changed, Watch); Stream reads ranges, live.
//     Cursor tails the published log without blocking (the caller chooses
//     how to wait); streams and view feeds read through it.
//   - View: state derived from the log, fed in order, with its own since
//     persisted atomically with its state (package views: Reduce, Index).
//
// Package codec stores typed JSON values on top of a DB; replication (package
// repl) moves the log between DBs, in one process or over TCP; package server
// and the flume command build on them.
//
// # Guarantees
//
// Appends. Append, AppendBatch and AppendWith return each entry's own seq
// (a batch gets consecutive seqs, all or nothing) once the log's Append has
// returned, that is once the entries are durable per the log's sync policy.
// Only then is Since raised: every entry a reader can see (Get, Stream,
// views) is durable. With synchronous replication, Append also waits for k
// followers and otherwise returns a *NotReplicatedError with the seqs (the
// entries stay in the log). A follower DB refuses appends with a
// *NotPrimaryError naming its primary.
//
// Since. Since is -1 for an empty log and known as soon as Open returns.
// WaitSince releases each waiter as soon as its own target is published,
// for any number of waiters with any targets in any order; Changed and Watch
// let observers follow it without polling or missing the latest value.
//
// Streams. A Stream yields the entries of its range exactly once, in order
// (descending with Reverse), with flumedb's Gt/Gte/Lt/Lte/Reverse/Limit/Live
// and SkipOld (old: false). A non-live stream is a snapshot of the range as
// of its opening; a live one continues with new entries until ctx ends, the
// DB closes, the upper bound or Limit is reached. A stream reads the log as
// it goes (memory independent of the log's length) and a slow reader never
// blocks appends.
//
// Views. DB.Use feeds a view every entry in order from the view's own since,
// in batches, catching up and then live. A view ahead of its log, or (for a
// ChainView) holding another history, is reset and rebuilt. View reads wait
// through ViewHost.Sync until the view has applied everything published when
// the read began (read-your-writes), bounded by the caller's context.
//
// Lifecycle. Close waits for appends in progress, stops and waits for every
// goroutine the DB started, ends waits (sync appends, WaitSince, live
// streams, view reads), closes the views and then the log. After Close every
// method returns ErrClosed; Close itself returns nil when called again.
//
// # Example
//
//	log, _ := filelog.Open(dir, nil)
//	db, _ := flume.Open(log, nil)
//	defer db.Close()
//	seq, _ := db.Append(ctx, []byte(`{"foo":"bar"}`))
//	s := db.Stream(ctx, flume.StreamOptions{Gt: flume.At(seq - 1), Live: true})
//	defer s.Close()
//	for s.Next() {
//		fmt.Println(s.Entry().Seq, string(s.Entry().Data))
//	}
package flume
