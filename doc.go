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
//   - View: state derived from the log, fed in order, with its own since
//     persisted atomically with its state (package views).
//
// Replication (package repl) moves the log between DBs, in one process or
// over TCP; package server and the flume command build on it.
//
//	log, _ := filelog.Open(dir, nil)
//	db, _ := flume.Open(log, nil)
//	defer db.Close()
//	seq, _ := db.Append(ctx, []byte(`{"foo":"bar"}`))
package flume
