// Recovery at Open: load META and sealed segments, scan the active segment, cut a torn tail.

package filelog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/frame"
	"github.com/flume-go/flume/vfs"
)

// recover rebuilds the log's state from its directory. Open calls it
// before the Log is shared, so it takes no locks. Its steps, in order:
// list the files, read (or create) META, load the sealed segments from
// their indexes, then scan the active segment, deciding whether a bad frame
// there is a torn tail to cut or corruption to refuse, and last load and
// check the epoch history against the recovered log (recoverEpochs). The
// fencing state (loadState) is read after META. A TruncateAfter that a
// crash interrupted (its intent file exists) is completed first: the
// segment files are cut (finishCut), the recovered log must then end at
// the intent's seq and hash (checkCut), recoverEpochs drops the epoch
// records past the cut, and the intent is removed last.
func (l *Log) recover() error {
	bases, idx, err := l.listDir()
	if err != nil {
		return err
	}
	if err := l.loadMeta(len(bases) > 0); err != nil {
		return err
	}
	if err := l.loadState(); err != nil {
		return err
	}
	in, err := l.readIntent()
	if err != nil {
		return err
	}
	if in != nil {
		if err := l.finishCut(in); err != nil {
			return err
		}
		if bases, idx, err = l.listDir(); err != nil {
			return err
		}
	}
	if err := l.recoverSegments(bases, idx); err != nil {
		return err
	}
	if in != nil {
		if err := l.checkCut(in); err != nil {
			return err
		}
	}
	if err := l.recoverEpochs(); err != nil {
		return err
	}
	if in != nil {
		return l.removeIntent()
	}
	return nil
}

// recoverSegments loads the segments listed (first seqs bases, idx: which
// have an index file) and recovers the active one.
func (l *Log) recoverSegments(bases []int64, idx map[int64]bool) error {
	if len(bases) == 0 {
		return l.startEmpty()
	}
	l.report.Segments = len(bases)
	if bases[0] != 0 {
		return &flume.CorruptionError{Path: filepath.Join(l.dir, segName(bases[0])), Offset: 0, Seq: 0,
			Reason: fmt.Sprintf("first segment starts at seq %d, not 0", bases[0])}
	}
	last := bases[len(bases)-1]
	next, err := l.loadSealedSegments(bases[:len(bases)-1], idx)
	if err != nil {
		return err
	}
	return l.recoverActive(last, next, idx[last])
}

// listDir returns the first seqs of the segment files in l.dir, in order,
// and which of them have an index file. It removes leftover temp files
// (unless read-only) and fails on a .seg file with an unexpected name.
func (l *Log) listDir() (bases []int64, idx map[int64]bool, err error) {
	names, err := l.fs.List(l.dir)
	if err != nil {
		return nil, nil, fmt.Errorf("filelog: list %s: %w", l.dir, err)
	}
	idx = map[int64]bool{}
	for _, n := range names {
		switch {
		case strings.HasSuffix(n, tmpExt):
			if !l.opts.ReadOnly {
				l.fs.Remove(filepath.Join(l.dir, n))
			}
		case strings.HasSuffix(n, segExt):
			b, err := strconv.ParseInt(strings.TrimSuffix(n, segExt), 10, 64)
			if err != nil || b < 0 || segName(b) != n {
				return nil, nil, fmt.Errorf("filelog: unexpected file %s in %s", n, l.dir)
			}
			bases = append(bases, b)
		case strings.HasSuffix(n, idxExt):
			b, err := strconv.ParseInt(strings.TrimSuffix(n, idxExt), 10, 64)
			if err == nil {
				idx[b] = true
			}
		}
	}
	sort.Slice(bases, func(i, j int) bool { return bases[i] < bases[j] })
	return bases, idx, nil
}

// loadMeta reads META, or writes a new one (a new log ID) for a new log. A
// missing META next to existing segments is corruption.
func (l *Log) loadMeta(haveSegments bool) error {
	m, err := readMeta(l.fs, l.dir)
	switch {
	case errors.Is(err, fs.ErrNotExist) && !haveSegments && !l.opts.ReadOnly:
		m = meta{id: flume.NewLogID()}
		if err := writeMeta(l.fs, l.dir, m); err != nil {
			return err
		}
		l.report.Created = true
	case errors.Is(err, fs.ErrNotExist) && haveSegments:
		return &flume.CorruptionError{Path: filepath.Join(l.dir, metaName), Offset: -1, Seq: -1, Reason: "META is missing but segments exist"}
	case err != nil:
		return err
	}
	l.mu.id, l.mu.epoch, l.mu.genesis = m.id, m.epoch, flume.GenesisHash(m.id)
	return nil
}

// startEmpty sets up a log with no segment files: it creates the first
// segment, or, read-only, stands in an empty one that is never opened.
func (l *Log) startEmpty() error {
	if l.opts.ReadOnly {
		l.mu.active = &segment{base: 0, path: filepath.Join(l.dir, segName(0)), fsys: l.fs}
		l.mu.segs = []*segment{l.mu.active}
		l.mu.since, l.mu.head = -1, l.mu.genesis
		return nil
	}
	s, err := l.createSegment(0)
	if err != nil {
		return err
	}
	l.mu.segs, l.mu.active = []*segment{s}, s
	l.mu.since, l.mu.head = -1, l.mu.genesis
	l.report.Segments = 1
	return nil
}

// loadSealedSegments adds the sealed segments (all but the last, by first
// seq) to l.mu.segs, trusting their index trailers (and file sizes) and
// rebuilding a missing or bad index by scanning. Each must start where the
// previous one ends. It returns the seq that follows the last of them.
func (l *Log) loadSealedSegments(bases []int64, idx map[int64]bool) (next int64, err error) {
	for _, b := range bases {
		s := &segment{base: b, path: filepath.Join(l.dir, segName(b)), fsys: l.fs, sealed: true}
		l.mu.segs = append(l.mu.segs, s)
		if b != next {
			return 0, &flume.CorruptionError{Path: s.path, Offset: 0, Seq: next,
				Reason: fmt.Sprintf("segment starts at seq %d but the previous one ends at %d", b, next-1)}
		}
		if err := l.loadSealed(s, idx[b]); err != nil {
			return 0, err
		}
		next = b + s.count
	}
	return next, nil
}

// recoverActive recovers the last segment, the active one, whose first seq
// is base; next is the seq the sealed segments end before. It scans what
// the segment's checkpoint index (if any) does not cover; a bad frame is
// either a torn tail, cut off with the frames of an unfinished batch, or
// corruption, which fails the open. Then it sets the published and write
// state.
func (l *Log) recoverActive(base, next int64, haveIdx bool) error {
	s := &segment{base: base, path: filepath.Join(l.dir, segName(base)), fsys: l.fs}
	l.mu.segs = append(l.mu.segs, s)
	l.mu.active = s
	if base != next {
		return &flume.CorruptionError{Path: s.path, Offset: 0, Seq: next,
			Reason: fmt.Sprintf("segment starts at seq %d but the previous one ends at %d", base, next-1)}
	}
	f, size, err := l.openActive(s)
	if err != nil {
		return err
	}
	res, err := l.scanActive(s, f, size, haveIdx)
	if err != nil {
		return err
	}
	if res.problem != nil {
		torn, err := isTornTail(f, size, base, &res)
		if err != nil {
			return fmt.Errorf("filelog: read %s: %w", s.path, err)
		}
		if !torn {
			return &flume.CorruptionError{Path: s.path, Offset: res.badOff, Seq: base + int64(len(res.offs)),
				Reason: res.problem.Error() + " (valid entries follow, so this is not a torn tail)"}
		}
	}
	if err := l.cutTail(s, f, size, &res); err != nil {
		return err
	}
	return l.setRecovered(base, &res)
}

// openActive opens the active segment's data file (read-write unless the
// log is read-only) and returns it with its size.
func (l *Log) openActive(s *segment) (vfs.File, int64, error) {
	var f vfs.File
	var err error
	if l.opts.ReadOnly {
		f, err = l.fs.Open(s.path)
	} else {
		f, err = l.fs.OpenReadWrite(s.path)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("filelog: open segment: %w", err)
	}
	s.files.f = f
	st, err := f.Stat()
	if err != nil {
		return nil, 0, fmt.Errorf("filelog: stat %s: %w", s.path, err)
	}
	return f, st.Size(), nil
}

// scanActive scans the active segment s (data file f of size bytes). A
// checkpoint index of the active segment (written by Close, or left by
// sealing just before a crash) covers a prefix of it: only what follows is
// scanned. Segments only grow past a checkpoint, so a stale one is still a
// valid prefix. The result covers the whole segment.
func (l *Log) scanActive(s *segment, f vfs.File, size int64, haveIdx bool) (scanResult, error) {
	var prefix []int64
	var start int64
	var prefixHash flume.Hash
	if haveIdx {
		prefix, start, prefixHash = l.loadCheckpoint(s, f, size)
	}
	res, err := scanSegmentFrom(f, s.base+int64(len(prefix)), start, size)
	if err != nil {
		return res, fmt.Errorf("filelog: read %s: %w", s.path, err)
	}
	if len(prefix) > 0 {
		if len(res.offs) == 0 {
			res.lastHash = prefixHash
		}
		if res.batchCount == 0 {
			res.batchHash = prefixHash
		}
		res.batchCount += len(prefix)
		res.offs = append(prefix, res.offs...)
	}
	l.report.ScannedBytes += size - start
	return res, nil
}

// isTornTail decides what the bad frame that a scan of the active segment
// stopped at is: a torn tail, the end of a write that a crash cut short,
// which recovery truncates and reports in OpenReport; or mid-log
// corruption, for which Open returns a *flume.CorruptionError and changes
// nothing. r reads the segment (size bytes), whose first seq is base; res
// is its scan, with res.problem set.
//
// A torn write leaves nothing valid after itself, so the bad frame is a
// torn tail only if no valid frame with a later seq than the last good one
// starts anywhere after its first byte: a flipped length can make a
// mid-log frame look cut short too. A well-formed frame with the wrong seq
// is never a torn write. The error is an I/O error reading the segment.
func isTornTail(r io.ReaderAt, size, base int64, res *scanResult) (bool, error) {
	if errors.Is(res.problem, errSeq) {
		return false, nil
	}
	rest := make([]byte, size-res.badOff-1)
	if _, err := r.ReadAt(rest, res.badOff+1); err != nil && err != io.EOF {
		return false, err
	}
	return !validFrameAfter(rest, base+int64(len(res.offs))-1), nil
}

// cutTail truncates the active segment s (f, size bytes) after the last
// complete batch that res found, if anything follows it: a torn tail, or
// whole frames of a batch whose last frame was never written (a batch is
// all-or-nothing, so its surviving frames go too). It records the cut in
// the open report and logs it; a read-only open only ignores the tail.
// res is updated to end at the cut.
func (l *Log) cutTail(s *segment, f vfs.File, size int64, res *scanResult) error {
	if res.problem == nil && !res.openBatch() {
		return nil
	}
	var reasons []string
	if res.problem != nil {
		reasons = append(reasons, res.problem.Error())
	}
	if res.openBatch() {
		reasons = append(reasons, fmt.Sprintf("%d entries (from seq %d) of a batch whose last entry was never written",
			len(res.offs)-res.batchCount, s.base+int64(res.batchCount)))
		res.offs, res.size, res.lastHash = res.offs[:res.batchCount], res.batchSize, res.batchHash
	}
	reason := strings.Join(reasons, "; ")
	l.report.TruncatedFile = s.path
	l.report.TruncatedAt = res.size
	l.report.TruncatedBytes = size - res.size
	l.report.TruncatedReason = reason
	l.logger.Warn("filelog: truncating torn tail", "file", s.path, "offset", res.size,
		"bytes", size-res.size, "reason", reason, "read_only", l.opts.ReadOnly)
	if !l.opts.ReadOnly {
		if err := f.Truncate(res.size); err != nil {
			return fmt.Errorf("filelog: truncate torn tail of %s: %w", s.path, err)
		}
		if err := f.Sync(); err != nil {
			return fmt.Errorf("filelog: sync %s: %w", s.path, err)
		}
	}
	return nil
}

// setRecovered sets the published, encoding-ready and write state from
// res, the scan of the active segment (first seq base) after any cut. With
// the active segment empty, the head is the last entry of the previous
// segment, or the genesis hash.
func (l *Log) setRecovered(base int64, res *scanResult) error {
	l.mu.activeIdx = res.offs
	l.mu.pubSize = res.size
	l.w.size = res.size
	l.mu.since = base + int64(len(res.offs)) - 1
	switch {
	case len(res.offs) > 0:
		l.mu.head = res.lastHash
	case len(l.mu.segs) > 1:
		e, err := l.readEntry(l.mu.segs[len(l.mu.segs)-2], base-1)
		if err != nil {
			return err
		}
		l.mu.head = e.Hash
	default:
		l.mu.head = l.mu.genesis
	}
	return nil
}

// loadSealed reads the index trailer of a sealed segment, or rebuilds the
// index by scanning the segment.
func (l *Log) loadSealed(s *segment, haveIdx bool) error {
	st, err := l.fs.Stat(s.path)
	if err != nil {
		return fmt.Errorf("filelog: stat %s: %w", s.path, err)
	}
	if haveIdx {
		count, size, err := readIndexTrailer(s)
		if err == nil && size == st.Size() {
			s.count, s.size = count, size
			return nil
		}
		reason := "segment size does not match its index"
		if err != nil {
			reason = err.Error()
		}
		l.logger.Warn("filelog: rebuilding index", "segment", s.path, "reason", reason)
	}
	f, err := s.file()
	if err != nil {
		return err
	}
	res, err := scanSegment(f, s.base, st.Size())
	if err != nil {
		return fmt.Errorf("filelog: read %s: %w", s.path, err)
	}
	l.report.ScannedBytes += st.Size()
	if res.problem != nil {
		return &flume.CorruptionError{Path: s.path, Offset: res.badOff, Seq: s.base + int64(len(res.offs)),
			Reason: res.problem.Error() + " (in a sealed segment)"}
	}
	s.count, s.size = int64(len(res.offs)), res.size
	l.report.RebuiltIndexes = append(l.report.RebuiltIndexes, s.path)
	if !l.opts.ReadOnly {
		if err := vfs.WriteFileAtomic(l.fs, filepath.Join(l.dir, idxName(s.base)), encodeIndex(s.base, res.offs, res.size)); err != nil {
			return fmt.Errorf("filelog: write index: %w", err)
		}
	} else {
		return fmt.Errorf("filelog: %s has no valid index; open it read-write once to rebuild it", s.path)
	}
	return nil
}

// readIndexTrailer reads the trailer of sealed segment s's index file and
// returns the entry count and segment size it records.
func readIndexTrailer(s *segment) (int64, int64, error) {
	f, err := s.idxFile()
	if err != nil {
		return 0, 0, err
	}
	st, err := f.Stat()
	if err != nil {
		return 0, 0, err
	}
	if st.Size() < idxTrail {
		return 0, 0, errors.New("index file too short")
	}
	t := make([]byte, idxTrail)
	if _, err := f.ReadAt(t, st.Size()-idxTrail); err != nil {
		return 0, 0, err
	}
	return decodeIndexTrailer(t, s.base, st.Size())
}

// loadCheckpoint reads the index file of the active segment s (data file
// f of size bytes). It returns the offsets it holds, the end of the last
// indexed frame and that frame's hash, or nothing if the index is unusable
// (which it then removes).
func (l *Log) loadCheckpoint(s *segment, f vfs.File, size int64) ([]int64, int64, flume.Hash) {
	p := filepath.Join(l.dir, idxName(s.base))
	drop := func(why string) ([]int64, int64, flume.Hash) {
		l.logger.Warn("filelog: ignoring checkpoint index of the active segment", "file", p, "reason", why)
		if !l.opts.ReadOnly {
			l.fs.Remove(p)
		}
		return nil, 0, flume.Hash{}
	}
	b, err := vfs.ReadFile(l.fs, p)
	if err != nil {
		return drop(err.Error())
	}
	if len(b) < idxTrail {
		return drop("too short")
	}
	count, isize, err := decodeIndexTrailer(b[len(b)-idxTrail:], s.base, int64(len(b)))
	if err != nil {
		return drop(err.Error())
	}
	if isize > size {
		return drop("index covers more than the segment holds")
	}
	if count == 0 {
		return nil, 0, flume.Hash{}
	}
	offs := make([]int64, count)
	for i := range offs {
		offs[i] = int64(binary.LittleEndian.Uint64(b[8*i:]))
	}
	last := offs[count-1]
	e, err := l.readFrame(s, f, s.base+count-1, last, isize)
	if err != nil {
		return drop(err.Error())
	}
	return offs, isize, e.Hash
}

// scanResult is what scanning a segment found.
type scanResult struct {
	offs     []int64 // offset of each good frame
	size     int64   // end of the last good frame
	lastHash flume.Hash
	problem  error // first bad frame (*frame.Error, or seq mismatch), nil if clean
	badOff   int64
	torn     bool // problem is a frame cut by the end of the file

	// The end of the last complete batch: the good frames after it (at
	// most one batch's worth) carry the "batch continues" flag, and a
	// crash cut the batch before its last frame was written.
	batchCount int        // good frames up to the batch end
	batchSize  int64      // offset of the batch end
	batchHash  flume.Hash // hash of the frame that ends it
}

// openBatch reports whether the scan ended inside a batch whose last frame
// is missing.
func (r *scanResult) openBatch() bool { return r.batchCount < len(r.offs) }

var errSeq = errors.New("seq out of sequence")

// scanSegment reads every frame of f (size bytes, first seq base), checking
// CRCs and seq density. I/O errors are returned as err; bad data is reported
// in the result.
func scanSegment(f io.ReaderAt, base, size int64) (scanResult, error) {
	return scanSegmentFrom(f, base, 0, size)
}

// scanSegmentFrom scans from offset start, where the frame of seq first
// begins.
func scanSegmentFrom(f io.ReaderAt, first, start, size int64) (scanResult, error) {
	res := scanResult{size: start, batchSize: start}
	r := newFrameReader()
	defer r.release()
	r.reset(f, start, size)
	want := first
	for {
		off := r.off
		e, _, err := r.next()
		if err == io.EOF {
			return res, nil
		}
		if err != nil {
			var fe *frame.Error
			if !errors.As(err, &fe) {
				return res, err
			}
			res.problem, res.badOff, res.torn = err, off, fe.Truncated
			return res, nil
		}
		if e.Seq != want {
			res.problem, res.badOff = fmt.Errorf("%w: found seq %d, expected %d", errSeq, e.Seq, want), off
			return res, nil
		}
		res.offs = append(res.offs, off)
		res.size = r.off
		res.lastHash = e.Hash
		if !r.more {
			res.batchCount, res.batchSize, res.batchHash = len(res.offs), res.size, e.Hash
		}
		want++
	}
}

// validFrameAfter reports whether a valid frame with a seq above after
// starts anywhere in b: the sign that a bad frame is mid-log corruption
// rather than a torn tail.
func validFrameAfter(b []byte, after int64) bool {
	maxSeq := after + int64(len(b)/frame.HeaderSize) + 1
	for i := 0; i+frame.HeaderSize <= len(b); i++ {
		l := frame.PayloadLen(b[i:])
		if int(l) > len(b)-i-frame.HeaderSize {
			continue
		}
		s := int64(binary.LittleEndian.Uint64(b[i+8:]))
		if s <= after || s > maxSeq {
			continue
		}
		if _, _, err := frame.Decode(b[i:]); err == nil {
			return true
		}
	}
	return false
}
