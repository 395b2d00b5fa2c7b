// Package fork keeps the entries a node cut from its log when it rejoined a
// new primary (a verified cut: flume.TruncatableLog.TruncateAfter), one
// file per cut in the node's forked/ directory, and reads them back.
// Nothing in a fork file is ever replayed automatically: the entries were
// acknowledged by nobody the new primary knows, and only the application
// can say whether to append them again (flume forked replay).
//
// Writing: Truncate does the whole cut (check the hash at the cut point,
// save, cut). The lower level is Create, a Writer handed to TruncateAfter,
// then Commit, or Abort on failure:
//
//	w, err := fork.Create(fsys, fork.Dir(dataDir), header)
//	rep, err := log.TruncateAfter(seq, want, w) // w seals the file before the cut
//	err = w.Commit()                            // nil: the file is complete and durable
//
// Reading: List describes every file (oldest first, damaged and temporary
// ones included, with what is wrong and where); Entries calls a function
// with every cut entry, oldest file first, after checking every file;
// Scan reads one file. Readers only read and are safe while the node runs.
//
// # Durability: the file is durable before anything is cut
//
// TruncateAfter writes the cut frames to an io.Writer and then cuts, with
// no hook in between. The Writer therefore seals the file itself, in the
// Write call that completes the frame of Header.Since (the header says
// which seq ends the cut): it writes the trailer, fsyncs the file, renames
// it from its temporary name to its final name and fsyncs the directory,
// and only then returns. A Write that fails (a bad frame, a frame out of
// place, an I/O error) makes TruncateAfter cut nothing. So:
//
//   - a file under its final name is complete and was fsynced before its
//     rename, and the rename was fsynced before the cut began;
//   - a crash before the seal leaves a temporary file (or none) and the
//     whole log: readers skip temporary files, Reconcile removes them;
//   - a crash between the seal and the cut leaves a complete file and the
//     whole log; Reconcile (run by Truncate before every cut) recognises
//     such a file because the log still holds its last entry with the same
//     chain hash, and removes it, so no file describes a cut that did not
//     happen, and a retried cut does not save the entries twice.
//
// Create also creates the directory and fsyncs its parent.
//
// # File names
//
//	forked/00000001-1733154000123456789.fork      sealed: complete and durable
//	forked/00000002-1733154999000000000.fork.tmp  being written (or abandoned by a crash)
//
// A zero-padded counter (one more than the highest in the directory), a
// dash, the creation time in Unix nanoseconds, ".fork". Lexical order is
// creation order, which is cut order. ".tmp" is appended until sealed.
//
// # File format (version 1)
//
// All integers are little endian; CRCs are CRC32C (Castagnoli).
//
//	+-----------------------------------------------------------------+
//	| header prefix, 20 bytes                                         |
//	|   0   8  magic "FLUMEFRK"                                       |
//	|   8   2  version (1)                                            |
//	|  10   2  flags (0)                                              |
//	|  12   4  body length N (176 + 76*K + R)                         |
//	|  16   4  CRC32C of prefix bytes [0,16) and the body             |
//	+-----------------------------------------------------------------+
//	| header body, N bytes (offsets from the body's start, file 20)   |
//	|   0  16  log ID                                                 |
//	|  16   8  After: last seq kept (int64, -1 if all was cut)        |
//	|  24  32  chain hash at After                                    |
//	|  56   8  Since: last seq before the cut (int64, > After)         |
//	|  64  32  chain hash at Since                                    |
//	|  96   8  time, Unix nanoseconds (int64)                         |
//	| 104  16  new primary: log ID                                    |
//	| 120   8  new primary: epoch                                     |
//	| 128   8  new primary: since (int64)                             |
//	| 136  32  new primary: chain hash at its since                   |
//	| 168   4  K, number of epoch records (<= 65536)                  |
//	| 172   4  R, reason length in bytes (<= 4096)                    |
//	| 176  76*K epoch records, each:                                  |
//	|          epoch u64, start i64, prev hash [32],                  |
//	|          promotion ID [16], when i64, promoter u32              |
//	| ...   R  reason, UTF-8                                          |
//	+-----------------------------------------------------------------+
//	| frames: Since-After entry frames, seqs After+1..Since, exactly  |
//	| the bytes the log stores (the stream TruncateAfter writes):     |
//	|   len u32 | crc u32 | seq i64 | epoch u64 | hash [32] | payload |
//	+-----------------------------------------------------------------+
//	| trailer, 32 bytes, written last                                 |
//	|   0   8  magic "FLUMEEND"                                       |
//	|   8   8  number of frames (= Since-After)                       |
//	|  16   8  number of frame bytes                                  |
//	|  24   4  CRC32C of the frame bytes                              |
//	|  28   4  CRC32C of trailer bytes [0,28)                         |
//	+-----------------------------------------------------------------+
//	nothing follows the trailer
//
// A reader checks the header CRC (version and flags only under it, so a
// flipped version byte is damage, not a newer format), each frame's CRC,
// that the seqs run After+1..Since, that the chain hash continues from
// the header's hash at After and ends at its hash at Since, and the
// trailer. A file that ends early is ErrIncomplete; any other failed check
// is flume.ErrCorrupt; both as a *FileError naming the file and offset.
// testdata/v1.fork freezes the format.
package fork
