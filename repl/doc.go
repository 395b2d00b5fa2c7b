// Package repl replicates a flume log from a primary to followers, in one
// process (Replicate, over net.Pipe) or across processes (Primary.Serve and
// NewFollower over TCP, optionally TLS), with one implementation of one
// protocol. docs/protocol.md describes the protocol.
//
// The core types:
//
//   - Primary serves a DB's log: it authenticates followers (a shared secret
//     proven by HMAC challenge-response, and/or TLS client certificates), runs
//     the handshake (same history → stream from the follower's since+1;
//     unrelated, diverged or ahead → refuse, changing nothing), streams batches of entry frames read from the log with a
//     bounded in-flight window, and answers synchronous appends as the DB's
//     flume.Replicator (WaitAcked).
//   - Follower keeps one connection to its primary, verifies every frame's
//     CRC and the chain, appends only since+1 (flume.DB.AppendReplicated),
//     acks after the append is durable, and reconnects with backoff, always
//     resuming from its open log's end. Its DB refuses client appends.
//   - Link is an in-process Primary/Follower pair (the seed's example).
//
// Guarantees: a follower's log is always a prefix of its primary's; no gaps,
// no duplicates; divergence is detected and refused, never merged; memory
// does not depend on log length or follower lag; bad input from the network
// is a *ProtocolError that closes the connection, never a panic or a change
// to stored data.
//
//	pdb, _ := flume.Open(memlog.New(), nil)
//	fdb, _ := flume.Open(memlog.New(), nil)
//	link, _ := repl.Replicate(pdb, fdb, nil)
//	defer link.Close()
//	seq, _ := pdb.Append(ctx, []byte(`{"foo":"bar"}`))
//	fdb.WaitSince(ctx, seq) // now on the follower too
//
// Over TCP:
//
//	p, _ := repl.NewPrimary(pdb, &repl.Options{Secret: secret})
//	go p.Serve(ln)                                               // primary
//	f, _ := repl.NewFollower(fdb, "host:7601", &repl.Options{Secret: secret}) // follower
package repl

// The files, one concern each:
//
//	primary.go    Primary: accepting connections, serving one, the followers it knows
//	sender.go     sendSession: streaming entries to one follower, its flow-control window, its acks
//	acks.go       WaitAcked: counting durable acks, the committed watermark, deposing
//	lag.go        lag in entries, bytes and seconds on both sides; Followers and Status
//	follower.go   Follower: the reconnect loop, dialing, states, Ready, Close
//	receiver.go   recvSession: reading, verifying and appending entries, adopting epochs, acking
//	handshake.go  both sides' handshake conversations, decide, fencing, the rejoin, the auth MAC
//	cut.go        cutPoint: where a rejoining node's history parts from its primary's
//	conn.go       wire: one connection's buffered reads and writes, deadlines, TLS
//	protocol.go   message types, encoders and decoders
//	encoding.go   framing, sealing and the field-level reader the messages are built from
//	link.go       Replicate: an in-process primary/follower pair
//	options.go    Options and their defaults; counters and status types
//	errors.go     error values, codes and types
//
// Lock order and goroutines: LOCKS.md.
