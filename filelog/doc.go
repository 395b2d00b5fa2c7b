// Package filelog is the durable flume.Log: segmented files of CRC-checked,
// hash-chained frames, an index that makes Get O(1) and open time
// independent of the log's length, a configurable fsync policy with group
// commit, and recovery that truncates a torn tail and reports it, while
// corruption anywhere before the tail is an error naming file, offset and
// seq.
//
// # On-disk layout
//
//	dir/
//	  LOCK                      flock'ed by the opener (flume.ErrLocked for a second one)
//	  META                      log ID and epoch (44 bytes, written tmp+fsync+rename+dir fsync)
//	  epochs                    epoch history, one record per promotion (appended, fsynced)
//	  state                     fencing state: fenced epoch, committed hint (36 bytes, replaced atomically)
//	  truncate                  intent of a TruncateAfter in progress (92 bytes; exists only during a cut)
//	  00000000000000000000.seg  segment: frames of seqs 0..k-1 (name = first seq, 20 digits)
//	  00000000000000000000.idx  index of a sealed segment
//	  0000000000000000000k.seg  the active (last) segment
//	  0000000000000000000k.idx  checkpoint index of the active segment, written by Close
//
// A segment is a plain sequence of entry frames, the same bytes the
// replication protocol sends (package frame):
//
//	+--------+--------+--------+--------+------------+-------------+
//	| len u32| crc u32| seq i64|epoch u64| hash [32]  | payload[len]|
//	+--------+--------+--------+--------+------------+-------------+
//	  crc = CRC32C(len || seq || epoch || hash || payload), little endian
//	  bit 31 of len: more entries of this entry's batch follow
//
// An index file holds one uint64 offset per entry of its segment, then a
// 40-byte trailer: "FLUMEIDX", base seq, count, segment size (u64 each),
// version u32, CRC32C of the trailer. META is "FLUMEMET", version u32,
// 4 reserved bytes, the 16-byte log ID, epoch u64, CRC32C u32. All integers
// are little endian. testdata/golden freezes this format.
//
// The epochs file, created by the first BeginEpoch (a log without one has
// an empty history), is a 16-byte header, "FLUMEEPO", version u32, CRC32C
// u32 of the 12 bytes before it, then one 80-byte record per promotion,
// oldest first:
//
//	offset size field
//	0      4    CRC32C of bytes [4, 80)
//	4      8    epoch u64           strictly greater than the previous record's
//	12     8    start i64           first seq of the epoch (Since()+1 at promotion)
//	20     32   prev hash           chain hash h(start-1); the genesis hash for start 0
//	52     16   promotion ID
//	68     8    unix nanos i64      when promoted (informative)
//	76     4    promoter u32        first 4 bytes of SHA-256(node ID) (informative)
//
// BeginEpoch fsyncs the log, then appends the record and fsyncs the file
// (the first record creates the file with header and record by an atomic
// replace), then writes the new epoch to META. META's epoch is the source
// of truth for Epoch(); Open rolls it forward to the last record's epoch if
// a crash fell between the two writes, so it is never below a record.
//
// The state file holds the fencing state of the node (flume.EpochLog):
// "FLUMESTA", version u32, 4 reserved bytes, fenced epoch u64, committed
// hint i64, CRC32C u32 of the 32 bytes before it. Fence and
// SetCommittedHint replace it (temp file, fsync, rename, directory fsync)
// before they return; without one (every log before its first Fence) the
// fenced epoch is 0 and the hint -1. A damaged state file fails Open with a
// *flume.CorruptionError.
//
// # Verified cuts
//
// TruncateAfter(seq, want, fork) removes the entries after seq, for the
// rejoin of a node whose log holds entries its new primary lacks. With the
// write locks held it fsyncs what is pending, checks h(seq) == want (else
// flume.ErrDiverged), streams the frames after seq to fork as stored
// (checking each; a failure cuts nothing), then:
//
//  1. writes the intent file truncate by an atomic replace: "FLUMETRC",
//     version u32, flags u32 (bit 0: a frame fix follows), seq i64, h(seq)
//     [32], first seq of the segment holding seq+1 i64, offset of seq+1 in
//     it i64, offset of frame seq i64, the fix: the new first 8 bytes of
//     frame seq [8], CRC32C u32 of the 88 bytes before it;
//  2. publishes the cut in memory (Since() is seq);
//  3. removes the segments and index files above the segment holding
//     seq+1, truncates that segment at seq+1 (it becomes the active one),
//     removes its index, fsyncs it and the directory. If seq is inside a
//     batch, frame seq carries the "batch continues" flag: the fix
//     rewrites its length word and CRC without it, else recovery would
//     drop the batch's remaining frames as an unfinished batch;
//  4. cuts the epoch records that start past seq+1 off the epochs file;
//  5. removes the intent and fsyncs the directory.
//
// Open finds an intent after a crash in steps 2 to 5 and completes the cut
// before recovering the segments: it redoes step 3 (every part of it can
// be repeated), checks that the log then ends at (seq, h(seq)) (else
// corruption), cuts the epochs file by the rule above (records past
// Since()+1 go) and removes the intent, reporting it in
// OpenReport.Epochs.Truncated. A crash at any point thus leaves the whole
// log or exactly [0, seq]. A read-only open cannot complete a cut and
// fails. An I/O error after step 1 is sticky until the log is reopened.
//
// An iterator sees no cut entry once TruncateAfter has returned: the cut
// is published before any file changes, and an iterator checks for cuts
// before and after each read. One whose next seq is at most seq+1 goes on
// with the entries appended after the cut; one past seq+1, which has
// yielded cut entries, stops with an error wrapping flume.ErrDiverged.
//
// A segment is sealed once it reaches Options.SegmentSize (at an Append
// boundary): it is fsynced, its index is written (temp file, fsync, rename)
// and the next segment is created and the directory fsynced. So only the
// last segment can ever have a torn tail, under every sync mode.
//
// # Open and recovery
//
// Open reads META, the trailers of the sealed segments' indexes (checking
// them against the segment sizes) and scans only the active segment,
// checking each frame's CRC and seq. After a clean Close the active segment
// has a checkpoint index too and only what follows it is scanned (nothing,
// unless the log was appended to after and crashed: segments only grow, so
// an older checkpoint is still a valid prefix). Open time therefore does
// not depend on the log's length: 8 ms for 10M entries after a clean
// shutdown, at most one segment's scan (about 0.1 s for 64 MiB) after a
// crash. A bad frame at the end of the active
// segment with nothing valid after it is a torn tail: it is truncated and
// described in OpenReport (and logged). A bad frame followed by a valid one,
// a well-formed frame with the wrong seq, a missing segment or META, or a
// sealed segment whose size disagrees with its index is corruption: Open
// returns a *flume.CorruptionError and changes nothing. A missing or bad
// index of a sealed segment is rebuilt by scanning that segment.
//
// Open then checks the epochs file. A partial last record, or a last record
// failing its CRC with only zero bytes after it, is a torn write: cut and
// reported in OpenReport.Epochs. A bad header, a bad record followed by
// more data, epochs that do not strictly increase, starts that decrease,
// or a record whose prev hash is not the log's chain hash at start-1 is
// corruption: Open fails with a *flume.CorruptionError naming the file, the
// record's offset and its index. Records that start past Since()+1 (their
// epoch never got an entry durable) are cut from the file and reported; a
// record starting at Since()+1 is the current epoch, still without entries.
// Corruption inside sealed segments is found when read: Get, Entry and
// iterators return a *flume.CorruptionError for a bad frame and never
// serve it; Verify walks everything, including the chain hash.
//
// # Sync modes and their guarantees
//
//   - SyncAlways (default): Append returns after its entries are written
//     and fsynced; an acknowledged append survives power loss. Concurrent
//     appenders are group-committed: one write and one fsync for all
//     entries pending when a flush starts; a lone writer pays one write and
//     one fsync per Append.
//   - SyncInterval: Append returns after the write reaches the OS; a
//     background goroutine fsyncs every Options.SyncInterval. A process crash
//     loses nothing acknowledged; a power loss loses at most about one
//     interval of acknowledged appends.
//   - SyncNever: Append returns after the write; the OS decides when to
//     write back (and Sync, segment sealing and Close fsync). A process
//     crash loses nothing acknowledged; a power loss may lose any suffix
//     that was not synced.
//
// In every mode an entry is published (visible to Since, Head, Get and
// iterators) only after its data is written, and under SyncAlways only
// after it is fsynced; readers never see an entry that a crash could take
// back under the chosen policy. After any crash the log is a prefix of
// what was appended: entries are never reordered or gapped, and a batch
// (one Append or AppendEntries call) survives whole or not at all: every
// frame of a batch but the last carries a "batch continues" bit, and
// recovery drops the frames of a batch whose last frame is missing,
// reporting them in OpenReport like a torn tail.
//
// # Write failures
//
// A failed write (EIO, ENOSPC) fails the Append (and any appends grouped
// with it), truncates the partial write back to the last good frame and
// leaves the log usable: when space returns, appends succeed again. A
// failed fsync is sticky (fsyncgate: the kernel may have dropped the dirty
// pages and a retried fsync would falsely succeed): every later write
// returns that error until the log is closed and reopened, which recovers
// from what is actually on disk. Reads keep working. The outcome of an
// append that failed at fsync is unknown; after reopen it may or may not be
// present, like an append whose caller timed out.
//
// # Concurrency
//
// Sealed segments' files are opened lazily on first read and kept open
// until Close (two descriptors per segment read).
//
// All methods are safe for concurrent use. Iterators read sequentially
// through their own 256 KiB buffer (pooled), so memory does not depend on
// the log's length, and they never block appends.
package filelog

// Lock order and goroutines: LOCKS.md.
