// Verified cuts: TruncateAfter, its intent file and its completion at Open.

package filelog

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/frame"
	"github.com/flume-go/flume/internal/crc32c"
	"github.com/flume-go/flume/internal/epochs"
	"github.com/flume-go/flume/vfs"
)

var _ flume.TruncatableLog = (*Log)(nil)

// The truncation intent file (see the package doc for its layout).
const (
	truncName  = "truncate"
	truncMagic = "FLUMETRC"
	truncSize  = 92
	truncFix   = 1 // flags bit: fix holds the new first 8 bytes of frame seq
)

// truncIntent is what TruncateAfter makes durable before it changes
// anything, and what Open needs to finish the cut after a crash.
type truncIntent struct {
	seq    int64      // cut after this seq
	want   flume.Hash // h(seq): the log's head once cut
	base   int64      // first seq of the segment the cut falls in (it holds seq+1)
	cutOff int64      // offset in that segment where seq+1 begins: its new size
	// The frame of seq ends the log after the cut. If it carried the
	// "batch continues" flag (seq is inside a batch), its length word and
	// CRC are rewritten without it, else recovery would drop the batch's
	// surviving entries as a batch whose end was never written.
	hasFix bool
	fixOff int64   // offset of frame seq in the segment
	fix    [8]byte // its new length word and CRC
}

func encodeIntent(in truncIntent) []byte {
	b := make([]byte, truncSize)
	copy(b, truncMagic)
	binary.LittleEndian.PutUint32(b[8:], formatV1)
	if in.hasFix {
		binary.LittleEndian.PutUint32(b[12:], truncFix)
	}
	binary.LittleEndian.PutUint64(b[16:], uint64(in.seq))
	copy(b[24:56], in.want[:])
	binary.LittleEndian.PutUint64(b[56:], uint64(in.base))
	binary.LittleEndian.PutUint64(b[64:], uint64(in.cutOff))
	binary.LittleEndian.PutUint64(b[72:], uint64(in.fixOff))
	copy(b[80:88], in.fix[:])
	binary.LittleEndian.PutUint32(b[88:], crc32c.Checksum(b[:88]))
	return b
}

func decodeIntent(b []byte) (truncIntent, error) {
	var in truncIntent
	if len(b) != truncSize || string(b[:8]) != truncMagic {
		return in, errors.New("not a flume truncation intent")
	}
	if crc32c.Checksum(b[:88]) != binary.LittleEndian.Uint32(b[88:]) {
		return in, errors.New("truncation intent checksum mismatch")
	}
	if v := binary.LittleEndian.Uint32(b[8:]); v != formatV1 {
		return in, fmt.Errorf("unsupported truncation intent version %d", v)
	}
	flags := binary.LittleEndian.Uint32(b[12:])
	in.hasFix = flags&truncFix != 0
	in.seq = int64(binary.LittleEndian.Uint64(b[16:]))
	copy(in.want[:], b[24:56])
	in.base = int64(binary.LittleEndian.Uint64(b[56:]))
	in.cutOff = int64(binary.LittleEndian.Uint64(b[64:]))
	in.fixOff = int64(binary.LittleEndian.Uint64(b[72:]))
	copy(in.fix[:], b[80:88])
	switch {
	case flags&^truncFix != 0:
		return in, fmt.Errorf("unknown truncation intent flags %#x", flags)
	case in.seq < -1 || in.base < 0 || in.base > in.seq+1 || in.cutOff < 0:
		return in, fmt.Errorf("cut after seq %d in the segment of seq %d at offset %d is impossible", in.seq, in.base, in.cutOff)
	case in.hasFix && (in.fixOff < 0 || in.fixOff+frame.HeaderSize > in.cutOff):
		return in, fmt.Errorf("frame fix at offset %d is outside the %d bytes kept", in.fixOff, in.cutOff)
	}
	return in, nil
}

// TruncateAfter implements flume.TruncatableLog.
//
// It takes the write locks (sync, w), writes and fsyncs every pending
// append, checks h(seq) == want (else an error wrapping flume.ErrDiverged)
// and streams the frames of seq+1..Since() to fork exactly as stored,
// checking each frame's CRC and seq as it goes (a bad one is a
// *flume.CorruptionError; it and a failed write to fork cut nothing). A nil
// fork discards them. fork must not call back into the log. Then it cuts:
//
//  1. It writes the intent (the truncate file: seq, h(seq), where the cut
//     falls) by an atomic replace. From here a crash is finished by Open.
//  2. It publishes the cut: Since() is seq, Head() (seq, want), appends
//     continue from seq+1 on h(seq). Appends that raced with the cut and
//     were not yet written fail with an error.
//  3. It removes the segments (and index files) above the one holding
//     seq+1, truncates that one, which becomes the active segment, at
//     seq+1 (clearing the "batch continues" flag of frame seq if seq is
//     inside a batch), removes its index, fsyncs it and the directory.
//  4. It cuts the epoch records that start past seq+1 off the epochs file.
//  5. It removes the intent and fsyncs the directory.
//
// An error after step 1 is sticky (the log refuses writes until reopened;
// Open completes the cut), so a crash or failure at any point leaves the
// whole log or exactly [0, seq]. Epoch(), the fencing state and the
// committed hint are unchanged.
//
// Readers: an iterator opened before the cut sees no cut entry after
// TruncateAfter returns. One whose next seq is at most seq+1 goes on with
// what the log then holds there (the entries appended after the cut); one
// already past seq+1, which has yielded cut entries, stops with an error
// wrapping flume.ErrTruncated. A Get, Entry or Verify that races with the
// cut of its entry may fail. Files of cut segments stay open until Close
// for the readers still on them.
func (l *Log) TruncateAfter(seq int64, want flume.Hash, fork io.Writer) (flume.TruncateReport, error) {
	l.sync.Lock()
	defer l.sync.Unlock()
	l.w.Lock()
	defer l.w.Unlock()
	if err := l.quiesceLocked(); err != nil {
		return flume.TruncateReport{}, err
	}
	// With w held, the published state and the segment list do not change
	// (only w holders change them): read them without mu from here on.
	since := l.mu.since
	l.mu.Unlock()
	if seq < -1 || seq > since {
		return flume.TruncateReport{}, fmt.Errorf("filelog: truncate after %d: the log ends at %d: %w", seq, since, flume.ErrNotFound)
	}
	h, err := l.hashAtLocked(seq)
	if err != nil {
		return flume.TruncateReport{}, fmt.Errorf("filelog: truncate after %d: %w", seq, err)
	}
	if h != want {
		return flume.TruncateReport{}, fmt.Errorf("filelog: truncate after %d: the log's hash there is %s, not %s: %w",
			seq, h.Short(), want.Short(), flume.ErrDiverged)
	}
	rep := flume.TruncateReport{After: seq, From: seq + 1, To: since, Entries: since - seq}
	if seq == since {
		return rep, nil
	}
	in, err := l.planCut(seq, want)
	if err != nil {
		return flume.TruncateReport{}, err
	}
	if fork == nil {
		fork = io.Discard
	}
	if rep.Bytes, err = l.copyFrames(fork, seq+1, since); err != nil {
		return flume.TruncateReport{}, err
	}
	next, offs, err := l.cutSegment(in)
	if err != nil {
		return flume.TruncateReport{}, err
	}
	if err := l.writeIntent(in); err != nil {
		if next != l.mu.active {
			next.files.f.Close()
		}
		return flume.TruncateReport{}, err
	}
	l.publishCut(in, next, offs)
	if err := l.cutFiles(in); err != nil {
		l.setSticky(fmt.Errorf("%w (the log refuses writes until reopened; Open completes the cut)", err))
		return flume.TruncateReport{}, err
	}
	return rep, nil
}

// planCut finds where the cut after seq falls: the segment holding seq+1,
// the offset of seq+1 in it, and the fix of frame seq if it continues a
// batch. l.w is held; seq < since.
func (l *Log) planCut(seq int64, want flume.Hash) (truncIntent, error) {
	s := l.segmentLocked(seq + 1)
	in := truncIntent{seq: seq, want: want, base: s.base}
	var err error
	if in.cutOff, err = l.offsetLocked(s, seq+1); err != nil {
		return in, err
	}
	if seq < s.base {
		return in, nil // seq ends the previous segment: no batch spans segments
	}
	if in.fixOff, err = l.offsetLocked(s, seq); err != nil {
		return in, err
	}
	f, err := l.segFileLocked(s)
	if err != nil {
		return in, err
	}
	e, err := l.readFrame(s, f, seq, in.fixOff, in.cutOff)
	if err != nil {
		return in, err
	}
	var lw [4]byte
	if _, err := f.ReadAt(lw[:], in.fixOff); err != nil {
		return in, fmt.Errorf("filelog: read %s: %w", s.path, err)
	}
	if frame.Continues(lw[:]) {
		in.hasFix = true
		copy(in.fix[:], frame.AppendMore(nil, e, false))
	}
	return in, nil
}

// offsetLocked returns the offset of entry seq in segment s. l.w or l.mu
// is held.
func (l *Log) offsetLocked(s *segment, seq int64) (int64, error) {
	if s == l.mu.active {
		return l.mu.activeIdx[seq-s.base], nil
	}
	off, _, err := s.offsets(seq - s.base)
	return off, err
}

func (l *Log) segFileLocked(s *segment) (vfs.File, error) {
	if s == l.mu.active {
		return s.files.f, nil
	}
	return s.file()
}

// copyFrames writes the frames of from..to to w exactly as stored, checking
// each one's CRC and seq, and returns how many bytes it wrote. l.w is held.
func (l *Log) copyFrames(w io.Writer, from, to int64) (int64, error) {
	cw := &countWriter{w: w}
	bw := bufio.NewWriterSize(cw, readBufSize)
	var buf []byte
	seq := from
	for seq <= to {
		s := l.segmentLocked(seq)
		start, err := l.offsetLocked(s, seq)
		if err != nil {
			return 0, err
		}
		end := s.size
		if s == l.mu.active {
			end = l.mu.pubSize
		}
		f, err := l.segFileLocked(s)
		if err != nil {
			return 0, err
		}
		// Tee what the frame decoder reads into the fork: byte for byte.
		r := io.TeeReader(bufio.NewReaderSize(io.NewSectionReader(f, start, end-start), readBufSize), bw)
		off := start
		for seq <= to {
			var e flume.Entry
			e, buf, err = frame.Read(r, buf)
			if err == io.EOF {
				break
			}
			switch {
			case cw.err != nil:
				return 0, fmt.Errorf("filelog: write the fork (nothing was cut): %w", cw.err)
			case err != nil:
				var fe *frame.Error
				if errors.As(err, &fe) {
					return 0, &flume.CorruptionError{Path: s.path, Offset: off, Seq: seq, Reason: err.Error()}
				}
				return 0, fmt.Errorf("filelog: read %s: %w", s.path, err)
			case e.Seq != seq:
				return 0, &flume.CorruptionError{Path: s.path, Offset: off, Seq: seq, Reason: fmt.Sprintf("found seq %d, expected %d", e.Seq, seq)}
			}
			off += int64(len(buf))
			seq++
		}
		if off != end && seq <= to {
			return 0, &flume.CorruptionError{Path: s.path, Offset: off, Seq: seq, Reason: "segment ends before the log does"}
		}
	}
	if err := bw.Flush(); err != nil {
		return 0, fmt.Errorf("filelog: write the fork (nothing was cut): %w", err)
	}
	return cw.n, nil
}

type countWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	if err != nil && c.err == nil {
		c.err = err
	}
	return n, err
}

// cutSegment returns the segment that becomes the active one after the cut
// in, and the offsets of its entries that stay. If the cut falls in a
// sealed segment, that is a new segment value over the same file, opened
// for writing, whose offsets come from the sealed index; the old value
// stays with the readers on it. l.w is held.
func (l *Log) cutSegment(in truncIntent) (*segment, []int64, error) {
	n := in.seq + 1 - in.base // entries that stay
	if a := l.mu.active; a.base == in.base {
		return a, append([]int64(nil), l.mu.activeIdx[:n]...), nil
	}
	old := l.segmentLocked(in.base)
	offs := make([]int64, n)
	if n > 0 {
		f, err := old.idxFile()
		if err != nil {
			return nil, nil, err
		}
		b := make([]byte, 8*n)
		if _, err := f.ReadAt(b, 0); err != nil {
			return nil, nil, fmt.Errorf("filelog: read index of %s: %w", old.path, err)
		}
		for i := range offs {
			offs[i] = int64(binary.LittleEndian.Uint64(b[8*i:]))
		}
	}
	f, err := l.fs.OpenReadWrite(old.path)
	if err != nil {
		return nil, nil, fmt.Errorf("filelog: open %s: %w", old.path, err)
	}
	s := &segment{base: old.base, path: old.path, fsys: l.fs}
	s.files.f = f
	return s, offs, nil
}

// writeIntent makes in durable as the truncate file. If that fails, it
// removes the file again (the rename may have happened); if even that
// fails, the error is sticky. l.w is held, l.mu is not.
func (l *Log) writeIntent(in truncIntent) error {
	p := filepath.Join(l.dir, truncName)
	err := vfs.WriteFileAtomic(l.fs, p, encodeIntent(in))
	if err == nil {
		return nil
	}
	err = fmt.Errorf("filelog: truncate after %d: write %s (nothing was cut): %w", in.seq, p, err)
	if rerr := l.fs.Remove(p); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
		l.setSticky(fmt.Errorf("%w; removing it again failed too: %v", err, rerr))
	} else if serr := vfs.SyncDir(l.fs, l.dir); serr != nil {
		l.setSticky(fmt.Errorf("%w; syncing its removal failed too: %v", err, serr))
	}
	return err
}

// publishCut makes the cut in visible: the log ends at in.seq with head
// in.want, next (holding offs) is the active segment, the segments above
// it are retired, the epoch records past in.seq+1 dropped, pending appends
// failed, and iterators told. l.w is held.
func (l *Log) publishCut(in truncIntent, next *segment, offs []int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if p := l.mu.pend; p != nil {
		p.finish(fmt.Errorf("filelog: append raced with a TruncateAfter(%d) and was not written", in.seq))
		l.mu.pend = nil
	}
	segs := l.mu.segs
	k := 0
	for k < len(segs) && segs[k].base != in.base {
		k++
	}
	l.mu.retired = append(l.mu.retired, segs[k+1:]...)
	if segs[k] != next {
		l.mu.retired = append(l.mu.retired, segs[k])
	}
	l.mu.segs = append(segs[:k:k], next)
	l.mu.active, l.mu.activeIdx, l.mu.pubSize = next, offs, in.cutOff
	l.mu.since, l.mu.head = in.seq, in.want
	l.mu.enc = encState{since: in.seq, head: in.want, size: in.cutOff}
	l.sinceA.Store(in.seq)
	l.mu.epochs = l.mu.epochs[:epochs.Kept(l.mu.epochs, in.seq)]
	l.mu.cuts = append(l.mu.cuts, in.seq)
	l.cutGen.Store(int64(len(l.mu.cuts)))
	l.w.size = in.cutOff
}

// cutFiles does the cut in on disk (steps 3 to 5 of TruncateAfter). Open
// calls the same steps, through finishCut, when it finds an intent. l.w is
// held, l.mu is not.
func (l *Log) cutFiles(in truncIntent) error {
	names, err := l.fs.List(l.dir)
	if err != nil {
		return fmt.Errorf("filelog: list %s: %w", l.dir, err)
	}
	if err := l.cutSegmentFiles(in, names); err != nil {
		return err
	}
	l.w.unsynced = false
	if err := l.cutEpochsFile(); err != nil {
		return err
	}
	return l.removeIntent()
}

// cutSegmentFiles removes the segment and index files above the segment
// in.base, rewrites the fix of frame in.seq if any, truncates segment
// in.base at in.cutOff, removes its index and fsyncs it and the directory.
// names lists the directory. Every step can be repeated.
func (l *Log) cutSegmentFiles(in truncIntent, names []string) error {
	for i := len(names) - 1; i >= 0; i-- { // highest seqs first
		b, ok := parseSegFileName(names[i])
		if !ok || b <= in.base {
			continue
		}
		if err := l.fs.Remove(filepath.Join(l.dir, names[i])); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("filelog: truncate after %d: remove %s: %w", in.seq, names[i], err)
		}
	}
	p := filepath.Join(l.dir, segName(in.base))
	f, err := l.fs.OpenReadWrite(p)
	if err != nil {
		return fmt.Errorf("filelog: truncate after %d: open %s: %w", in.seq, p, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("filelog: stat %s: %w", p, err)
	}
	if st.Size() < in.cutOff {
		return &flume.CorruptionError{Path: p, Offset: st.Size(), Seq: in.seq,
			Reason: fmt.Sprintf("segment ends at %d, before the cut at %d: entries up to seq %d are missing", st.Size(), in.cutOff, in.seq)}
	}
	if in.hasFix {
		if _, err := f.WriteAt(in.fix[:], in.fixOff); err != nil {
			return fmt.Errorf("filelog: truncate after %d: write %s: %w", in.seq, p, err)
		}
	}
	if err := f.Truncate(in.cutOff); err != nil {
		return fmt.Errorf("filelog: truncate after %d: truncate %s: %w", in.seq, p, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("filelog: truncate after %d: fsync %s: %w", in.seq, p, err)
	}
	ip := filepath.Join(l.dir, idxName(in.base))
	if err := l.fs.Remove(ip); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("filelog: truncate after %d: remove %s: %w", in.seq, ip, err)
	}
	if err := vfs.SyncDir(l.fs, l.dir); err != nil {
		return fmt.Errorf("filelog: truncate after %d: sync %s: %w", in.seq, l.dir, err)
	}
	return nil
}

// parseSegFileName returns the first seq named by a segment or index
// file's name.
func parseSegFileName(n string) (base int64, ok bool) {
	for _, ext := range []string{segExt, idxExt} {
		if strings.HasSuffix(n, ext) {
			b, err := strconv.ParseInt(strings.TrimSuffix(n, ext), 10, 64)
			return b, err == nil && b >= 0
		}
	}
	return 0, false
}

// cutEpochsFile cuts the epochs file to the records in l.mu.epochs (those
// a cut kept). l.w is held.
func (l *Log) cutEpochsFile() error {
	l.mu.RLock()
	size := int64(epochsHeaderSize + len(l.mu.epochs)*epochRecordSize)
	l.mu.RUnlock()
	if l.w.epochsSize == 0 || size >= l.w.epochsSize {
		return nil
	}
	if err := truncateFile(l.fs, filepath.Join(l.dir, epochsName), size); err != nil {
		return err
	}
	l.w.epochsSize = size
	return nil
}

// removeIntent removes the truncate file durably.
func (l *Log) removeIntent() error {
	p := filepath.Join(l.dir, truncName)
	if err := l.fs.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("filelog: remove %s: %w", p, err)
	}
	if err := vfs.SyncDir(l.fs, l.dir); err != nil {
		return fmt.Errorf("filelog: sync %s: %w", l.dir, err)
	}
	return nil
}

// readIntent reads the truncate file at Open: nil if there is none.
func (l *Log) readIntent() (*truncIntent, error) {
	p := filepath.Join(l.dir, truncName)
	b, err := vfs.ReadFile(l.fs, p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("filelog: read %s: %w", p, err)
	}
	in, err := decodeIntent(b)
	if err != nil {
		return nil, &flume.CorruptionError{Path: p, Offset: 0, Seq: -1, Reason: err.Error()}
	}
	return &in, nil
}

// finishCut completes, at Open, the cut of a TruncateAfter that a crash
// interrupted after its intent was durable: it redoes the segment steps
// (each can be repeated) before the segments are recovered. The epochs
// file is cut by recoverEpochs (records past Since()+1 go), and
// checkCut then verifies the result and removes the intent. A read-only
// open cannot finish the cut and fails.
func (l *Log) finishCut(in *truncIntent) error {
	if l.opts.ReadOnly {
		return fmt.Errorf("filelog: %s: a TruncateAfter(%d) was interrupted; open the log read-write to complete it",
			filepath.Join(l.dir, truncName), in.seq)
	}
	l.logger.Warn("filelog: completing an interrupted truncation", "dir", l.dir, "after", in.seq)
	names, err := l.fs.List(l.dir)
	if err != nil {
		return fmt.Errorf("filelog: list %s: %w", l.dir, err)
	}
	return l.cutSegmentFiles(*in, names)
}

// checkCut verifies, after recovery, that the log ends where the
// interrupted cut in says, and records it in the open report.
func (l *Log) checkCut(in *truncIntent) error {
	if l.mu.since != in.seq || l.mu.head != in.want {
		return &flume.CorruptionError{Path: filepath.Join(l.dir, truncName), Offset: 0, Seq: in.seq,
			Reason: fmt.Sprintf("after completing the cut after seq %d (hash %s) the log ends at %d with hash %s",
				in.seq, in.want.Short(), l.mu.since, l.mu.head.Short())}
	}
	l.report.Epochs.Truncated, l.report.Epochs.TruncatedAfter = true, in.seq
	return nil
}

// afterCut brings the iterator up to date with the cuts made since it last
// looked (gen is the log's count of cuts): an error if one of them removed
// an entry it may have yielded (its next seq is past the cut's seq+1),
// else it repositions at its next seq, dropping buffered bytes.
func (it *iter) afterCut(gen int64) error {
	l := it.l
	l.mu.RLock()
	cuts := l.mu.cuts[it.gen:gen]
	l.mu.RUnlock()
	low := cuts[0]
	for _, c := range cuts {
		low = min(low, c)
	}
	if it.next > low+1 {
		return fmt.Errorf("filelog: iterator at seq %d: the log was cut after seq %d, below it: %w", it.next, low, flume.ErrTruncated)
	}
	it.gen, it.seg = gen, nil
	return nil
}
