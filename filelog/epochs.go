// The epoch history: the epochs file, its codec, BeginEpoch and its recovery.

package filelog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/internal/crc32c"
	"github.com/flume-go/flume/internal/epochs"
	"github.com/flume-go/flume/vfs"
)

// The epochs file (see the package doc for its layout).
const (
	epochsName       = "epochs"
	epochsMagic      = "FLUMEEPO"
	epochsHeaderSize = 16
	epochRecordSize  = 80
)

// EpochRecovery says what Open did with the epoch history (the epochs
// file) and with a TruncateAfter that a crash interrupted.
type EpochRecovery struct {
	// TornBytes bytes of a record whose write a crash cut short (the last
	// record, partial or failing its checksum, with nothing but zeros
	// after it) were cut off the epochs file; TornReason says why.
	TornBytes  int64
	TornReason string
	// Dropped are the records that started past the recovered log's end
	// (Since()+1), removed from the file: their epochs never got an entry
	// durable.
	Dropped []flume.EpochRecord
	// RolledForward is set when META's epoch was below the last record's:
	// a crash fell between BeginEpoch's record and its META update, and
	// Open completed the update.
	RolledForward bool
	// Truncated is set when Open completed a TruncateAfter that a crash
	// interrupted; TruncatedAfter is the seq the log was cut after.
	Truncated      bool
	TruncatedAfter int64
}

// encodeEpochsHeader returns the 16-byte header of the epochs file.
func encodeEpochsHeader() []byte {
	b := make([]byte, epochsHeaderSize)
	copy(b, epochsMagic)
	binary.LittleEndian.PutUint32(b[8:], formatV1)
	binary.LittleEndian.PutUint32(b[12:], crc32c.Checksum(b[:12]))
	return b
}

// appendEpochRecord appends the 80-byte encoding of r to dst.
func appendEpochRecord(dst []byte, r flume.EpochRecord) []byte {
	n := len(dst)
	dst = append(dst, make([]byte, epochRecordSize)...)
	b := dst[n:]
	binary.LittleEndian.PutUint64(b[4:], r.Epoch)
	binary.LittleEndian.PutUint64(b[12:], uint64(r.Start))
	copy(b[20:52], r.Prev[:])
	copy(b[52:68], r.Promotion[:])
	binary.LittleEndian.PutUint64(b[68:], uint64(r.When))
	binary.LittleEndian.PutUint32(b[76:], r.Promoter)
	binary.LittleEndian.PutUint32(b[0:], crc32c.Checksum(b[4:]))
	return dst
}

// decodeEpochRecord decodes an 80-byte record; false if its checksum fails.
func decodeEpochRecord(b []byte) (flume.EpochRecord, bool) {
	var r flume.EpochRecord
	if crc32c.Checksum(b[4:epochRecordSize]) != binary.LittleEndian.Uint32(b) {
		return r, false
	}
	r.Epoch = binary.LittleEndian.Uint64(b[4:])
	r.Start = int64(binary.LittleEndian.Uint64(b[12:]))
	copy(r.Prev[:], b[20:52])
	copy(r.Promotion[:], b[52:68])
	r.When = int64(binary.LittleEndian.Uint64(b[68:]))
	r.Promoter = binary.LittleEndian.Uint32(b[76:])
	return r, true
}

// epochsContent is a decoded epochs file.
type epochsContent struct {
	recs []flume.EpochRecord
	good int64  // bytes of the header and the valid records
	torn string // why the bytes after good are a torn tail; "" if there are none
}

// decodeEpochs decodes the content of an epochs file. Bytes after the last
// valid record are a torn tail, the trace of a record write that a crash
// cut short, if they are a partial record, or a record failing its
// checksum with nothing but zeros after it (a file extended but not yet
// written, as ext4 leaves it); the caller cuts them. Anything else that is
// wrong is corruption: a bad header, or a bad record followed by more data.
// The error is a *flume.CorruptionError without Path. decodeEpochs does not
// check the order of the records (see epochs.CheckOrder).
func decodeEpochs(b []byte) (epochsContent, error) {
	corrupt := func(off int, format string, args ...any) (epochsContent, error) {
		return epochsContent{}, &flume.CorruptionError{Offset: int64(off), Seq: -1, Reason: fmt.Sprintf(format, args...)}
	}
	// The file is created with its first record by an atomic replace, so
	// even a crash never leaves a short header.
	if len(b) < epochsHeaderSize {
		return corrupt(0, "epochs file of %d bytes is shorter than its header", len(b))
	}
	if string(b[:8]) != epochsMagic {
		return corrupt(0, "not a flume epochs file")
	}
	if crc32c.Checksum(b[:12]) != binary.LittleEndian.Uint32(b[12:]) {
		return corrupt(0, "epochs file header checksum mismatch")
	}
	if v := binary.LittleEndian.Uint32(b[8:]); v != formatV1 {
		return corrupt(0, "unsupported epochs file version %d", v)
	}
	c := epochsContent{good: epochsHeaderSize}
	off := epochsHeaderSize
	for ; off+epochRecordSize <= len(b); off += epochRecordSize {
		r, ok := decodeEpochRecord(b[off:])
		if !ok {
			if end := off + epochRecordSize; !allZero(b[end:]) {
				return corrupt(off, "epoch record %d: checksum mismatch, and data follows it (not a torn write)", len(c.recs))
			}
			c.torn = fmt.Sprintf("epoch record %d fails its checksum and is the last", len(c.recs))
			return c, nil
		}
		c.recs = append(c.recs, r)
		c.good = int64(off + epochRecordSize)
	}
	if off < len(b) {
		c.torn = fmt.Sprintf("epoch record %d is cut short: %d of %d bytes", len(c.recs), len(b)-off, epochRecordSize)
	}
	return c, nil
}

func allZero(b []byte) bool { return len(bytes.TrimLeft(b, "\x00")) == 0 }

// Epochs implements flume.EpochLog: a copy of the history, oldest first.
func (l *Log) Epochs() []flume.EpochRecord {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return append([]flume.EpochRecord(nil), l.mu.epochs...)
}

// BeginEpoch implements flume.EpochLog. It first makes every appended entry
// durable (so that r.Prev is), then appends r to the epochs file and fsyncs
// it (creating the file by an atomic replace the first time): that fsync is
// the commit point. Then it records r.Epoch in META, which is the source of
// truth for Epoch(). A crash between the two leaves META behind the last
// record; Open rolls it forward (EpochRecovery.RolledForward). If only that
// META update fails, the epoch is begun nonetheless (Epochs shows r) and the
// error says so; the next Open completes the update.
//
// Appends that race with BeginEpoch are written before it decides, so that
// r.Start no longer matches and r is refused; none is ever encoded with the
// old epoch after r's start.
func (l *Log) BeginEpoch(r flume.EpochRecord) error {
	l.sync.Lock()
	defer l.sync.Unlock()
	l.w.Lock()
	defer l.w.Unlock()
	if err := l.quiesceLocked(); err != nil {
		return err
	}
	defer l.mu.Unlock()
	if err := epochs.CheckBegin(l.mu.epochs, l.mu.epoch, l.mu.since, l.mu.head, r); err != nil {
		return fmt.Errorf("filelog: begin epoch: %w", err)
	}
	if err := l.writeEpochRecord(r); err != nil {
		return err
	}
	l.mu.epochs = append(l.mu.epochs, r)
	if r.Epoch == l.mu.epoch {
		return nil
	}
	l.mu.epoch = r.Epoch
	if err := writeMeta(l.fs, l.dir, meta{id: l.mu.id, epoch: r.Epoch}); err != nil {
		return fmt.Errorf("filelog: epoch %d is begun (its record is durable) but recording it in META failed; the next open completes it: %w", r.Epoch, err)
	}
	return nil
}

// quiesceLocked writes and fsyncs every pending append and returns with
// l.mu held and nothing pending: from then on, until l.mu is released, the
// published state is everything appended and durable. l.w is held (and
// l.sync, so that no fsync of the active segment runs aside). On error l.mu
// is not held.
func (l *Log) quiesceLocked() error {
	for {
		l.mu.Lock()
		if err := l.writableLocked(); err != nil {
			l.mu.Unlock()
			return err
		}
		if l.mu.pend == nil && !l.w.unsynced {
			return nil
		}
		l.mu.Unlock()
		l.flushLocked()
		if err := l.syncLocked(); err != nil {
			return err
		}
	}
}

// writeEpochRecord makes r durable at the end of the epochs file. On
// failure it takes back what it may have written; if that fails too, what
// is on disk is unknown and the error is made sticky (the log refuses
// writes until reopened, and Open then recovers from the file as it is).
// l.w and l.mu are held.
func (l *Log) writeEpochRecord(r flume.EpochRecord) error {
	p := filepath.Join(l.dir, epochsName)
	rec := appendEpochRecord(nil, r)
	if l.w.epochsSize == 0 {
		b := append(encodeEpochsHeader(), rec...)
		if err := vfs.WriteFileAtomic(l.fs, p, b); err != nil {
			err = fmt.Errorf("filelog: create %s: %w", p, err)
			// The rename may have happened (only the directory sync
			// failed): remove the file again, durably.
			if rerr := l.fs.Remove(p); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
				l.stickyLocked(fmt.Errorf("%w; removing it again failed too: %v", err, rerr))
			} else if serr := vfs.SyncDir(l.fs, l.dir); serr != nil {
				l.stickyLocked(fmt.Errorf("%w; syncing its removal failed too: %v", err, serr))
			}
			return err
		}
		l.w.epochsSize = int64(len(b))
		return nil
	}
	f, err := l.fs.OpenReadWrite(p)
	if err != nil {
		return fmt.Errorf("filelog: open %s: %w", p, err)
	}
	defer f.Close()
	undo := func(err error) error {
		terr := f.Truncate(l.w.epochsSize)
		if terr == nil {
			terr = f.Sync()
		}
		if terr != nil {
			l.stickyLocked(fmt.Errorf("%w; taking the record back failed too: %v", err, terr))
		}
		return err
	}
	if _, err := f.WriteAt(rec, l.w.epochsSize); err != nil {
		return undo(fmt.Errorf("filelog: write %s: %w", p, err))
	}
	if err := f.Sync(); err != nil {
		return undo(fmt.Errorf("filelog: fsync %s: %w", p, err))
	}
	l.w.epochsSize += epochRecordSize
	return nil
}

// stickyLocked is setSticky for a caller that holds l.mu as well as l.w.
func (l *Log) stickyLocked(err error) {
	if l.w.err == nil {
		l.w.err = err
		l.logger.Error("filelog: write failure, log is read-only until reopened", "err", err)
	}
}

// hashAtLocked returns the chain hash h(seq) for -1 <= seq <= since. l.mu
// is held (or the log is not shared yet); a read of a sealed segment is
// made under it.
func (l *Log) hashAtLocked(seq int64) (flume.Hash, error) {
	switch {
	case seq == -1:
		return l.mu.genesis, nil
	case seq == l.mu.since:
		return l.mu.head, nil
	case seq < -1 || seq > l.mu.since:
		return flume.Hash{}, fmt.Errorf("filelog: hash at %d (log ends at %d): %w", seq, l.mu.since, flume.ErrNotFound)
	}
	s := l.segmentLocked(seq)
	if s != l.mu.active {
		e, err := l.readEntry(s, seq)
		return e.Hash, err
	}
	i := seq - s.base
	end := l.mu.pubSize
	if i+1 < int64(len(l.mu.activeIdx)) {
		end = l.mu.activeIdx[i+1]
	}
	e, err := l.readFrame(s, s.files.f, seq, l.mu.activeIdx[i], end)
	return e.Hash, err
}

// recoverEpochs loads the epochs file, once the segments are recovered. A
// torn last record is cut off; bad order, a bad record before the last or
// a record whose previous hash is not the log's chain hash there is
// corruption (a *flume.CorruptionError naming the file, the record's
// offset and index). Records that start past Since()+1 are dropped from the
// file, and META's epoch is rolled forward to the last record's. All of it
// is reported in OpenReport.Epochs; a read-only open changes nothing on
// disk.
func (l *Log) recoverEpochs() error {
	p := filepath.Join(l.dir, epochsName)
	b, err := vfs.ReadFile(l.fs, p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("filelog: read %s: %w", p, err)
	}
	c, err := decodeEpochs(b)
	if err != nil {
		ce := err.(*flume.CorruptionError)
		ce.Path = p
		return ce
	}
	corrupt := func(i int, reason string) error {
		return &flume.CorruptionError{Path: p, Offset: int64(epochsHeaderSize + i*epochRecordSize), Seq: -1, Reason: reason}
	}
	if i, err := epochs.CheckOrder(c.recs); err != nil {
		return corrupt(i, err.Error())
	}
	kept := epochs.Kept(c.recs, l.mu.since)
	for i, r := range c.recs[:kept] {
		h, err := l.hashAtLocked(r.Start - 1)
		if err != nil {
			return fmt.Errorf("filelog: check epoch record %d of %s: %w", i, p, err)
		}
		if h != r.Prev {
			return corrupt(i, fmt.Sprintf("epoch record %d (%s) says the hash at seq %d is %s, the log's is %s",
				i, r, r.Start-1, r.Prev.Short(), h.Short()))
		}
	}
	rep := &l.report.Epochs
	size := int64(epochsHeaderSize + kept*epochRecordSize)
	if c.torn != "" {
		rep.TornBytes, rep.TornReason = int64(len(b))-c.good, c.torn
		l.logger.Warn("filelog: cutting a torn epoch record", "file", p, "bytes", rep.TornBytes, "reason", c.torn)
	}
	if d := c.recs[kept:]; len(d) > 0 {
		rep.Dropped = append([]flume.EpochRecord(nil), d...)
		l.logger.Warn("filelog: dropping epoch records that start past the log's end", "file", p,
			"since", l.mu.since, "records", len(d), "first", d[0].String())
	}
	if size < int64(len(b)) && !l.opts.ReadOnly {
		if err := truncateFile(l.fs, p, size); err != nil {
			return err
		}
	}
	l.mu.epochs, l.w.epochsSize = c.recs[:kept:kept], size
	if kept > 0 && c.recs[kept-1].Epoch > l.mu.epoch {
		e := c.recs[kept-1].Epoch
		l.logger.Warn("filelog: META's epoch is behind the last epoch record; rolling it forward",
			"meta_epoch", l.mu.epoch, "epoch", e)
		if !l.opts.ReadOnly {
			if err := writeMeta(l.fs, l.dir, meta{id: l.mu.id, epoch: e}); err != nil {
				return err
			}
		}
		l.mu.epoch, rep.RolledForward = e, true
	}
	return nil
}

// truncateFile cuts the file p to size bytes and fsyncs it.
func truncateFile(fsys vfs.FS, p string, size int64) error {
	f, err := fsys.OpenReadWrite(p)
	if err != nil {
		return fmt.Errorf("filelog: open %s: %w", p, err)
	}
	err = f.Truncate(size)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("filelog: truncate %s to %d bytes: %w", p, size, err)
	}
	return nil
}

// DropEmptyEpochs implements flume.EpochLog. META takes the newest kept
// record's epoch first, then the epochs file is cut: a crash between the
// two leaves META behind the file's last record, which Open rolls forward
// (the old history, whole); after both, the new one.
func (l *Log) DropEmptyEpochs(keep int) error {
	l.sync.Lock()
	defer l.sync.Unlock()
	l.w.Lock()
	defer l.w.Unlock()
	if err := l.quiesceLocked(); err != nil {
		return err
	}
	if keep < 0 || keep >= len(l.mu.epochs) {
		l.mu.Unlock()
		return nil
	}
	if r := l.mu.epochs[keep]; r.Start <= l.mu.since {
		l.mu.Unlock()
		return fmt.Errorf("filelog: drop epochs: %s covers entries (the log ends at %d)", r, l.mu.since)
	}
	var epoch uint64
	if keep > 0 {
		epoch = l.mu.epochs[keep-1].Epoch
	}
	id := l.mu.id
	l.mu.Unlock()
	if err := writeMeta(l.fs, l.dir, meta{id: id, epoch: epoch}); err != nil {
		return fmt.Errorf("filelog: drop epochs: %w", err)
	}
	l.mu.Lock()
	l.mu.epochs = l.mu.epochs[:keep:keep]
	l.mu.epoch = epoch
	l.mu.Unlock()
	if err := l.cutEpochsFile(); err != nil {
		// META is ahead of nothing it should not be; the file still holds
		// the dropped records, which the next Open rolls META forward to.
		l.setSticky(fmt.Errorf("filelog: drop epochs: %w", err))
		return fmt.Errorf("filelog: drop epochs: %w", err)
	}
	return nil
}
