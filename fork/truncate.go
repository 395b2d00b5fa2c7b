package fork

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"time"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/vfs"
)

// Result says what Truncate did.
type Result struct {
	// Info describes the new fork file; zero when nothing was cut.
	Info Info
	// Report is TruncateAfter's report.
	Report flume.TruncateReport
	// Withdrawn names the files Reconcile removed before the cut.
	Withdrawn []string
}

// Truncate is the rejoin's verified cut with its copy: it makes l end at
// seq after saving the entries (seq, Since()] to a new fork file in dir, so
// that they are durable in dir before anything is cut.
//
//  1. It checks that l's chain hash at seq is want (GenesisHash(l.ID()) for
//     seq -1), else returns an error wrapping flume.ErrDiverged and changes
//     nothing.
//  2. It runs Reconcile, removing leftovers of earlier cuts that never took
//     effect.
//  3. It creates the file (Create) with the log's ID and head, the epoch
//     records covering the cut (if l is a flume.EpochLog), primary, reason
//     and the current time, and calls l.TruncateAfter(seq, want, w): the
//     Write that completes the last frame seals the file, and only then
//     does TruncateAfter cut.
//  4. If TruncateAfter fails and the log still holds the cut entries, the
//     file is removed (Abort): no file describes a cut that did not happen.
//     If the log no longer holds them, the file is kept and the error
//     returned with Result.Info set.
//
// With nothing to cut (seq == Since()), it verifies the hash and returns a
// zero Info. The log must not be appended to during the call (a rejoining
// follower's log is not); if it is, TruncateAfter sees more frames than the
// file announced, the Writer refuses them and nothing is cut.
func Truncate(fsys vfs.FS, dir string, l flume.TruncatableLog, seq int64, want flume.Hash, primary Position, reason string) (Result, error) {
	var res Result
	since, head := l.Head()
	if seq < -1 || seq > since {
		return res, fmt.Errorf("fork: cut after seq %d of a log ending at %d", seq, since)
	}
	got := head
	if seq == -1 {
		got = flume.GenesisHash(l.ID())
	} else if seq < since {
		e, err := l.Entry(seq)
		if err != nil {
			return res, fmt.Errorf("fork: read entry %d: %w", seq, err)
		}
		got = e.Hash
	}
	if got != want {
		return res, fmt.Errorf("%w: the chain hash at seq %d is %s, the cut expects %s: nothing cut", flume.ErrDiverged, seq, got.Short(), want.Short())
	}
	if seq == since {
		rep, err := l.TruncateAfter(seq, want, refuseWriter{})
		res.Report = rep
		return res, err
	}
	withdrawn, err := Reconcile(fsys, dir, l)
	res.Withdrawn = withdrawn
	if err != nil {
		return res, err
	}
	h := Header{LogID: l.ID(), After: seq, AfterHash: want, Since: since, SinceHash: head,
		Primary: primary, Reason: reason, Time: time.Now()}
	if el, ok := l.(flume.EpochLog); ok {
		h.Epochs = CutEpochs(el.Epochs(), seq, since)
	}
	w, err := Create(fsys, dir, h)
	if err != nil {
		return res, err
	}
	rep, err := l.TruncateAfter(seq, want, w)
	res.Report = rep
	if err != nil {
		if holds(l, since, head) {
			if aerr := w.Abort(); aerr != nil {
				return res, errors.Join(err, aerr)
			}
			return res, err
		}
		if w.Commit() == nil {
			res.Info = w.Info()
		}
		return res, fmt.Errorf("fork: %w (the log no longer holds entries %d..%d; %s keeps them)", err, seq+1, since, w.Info().Path)
	}
	if err := w.Commit(); err != nil {
		// The log cut entries the file did not get whole: a log that broke
		// TruncateAfter's contract. Keep whatever the file holds.
		return res, fmt.Errorf("fork: the log was cut after seq %d but the fork file is not complete (%s kept): %w", seq, w.Info().Path, err)
	}
	res.Info = w.Info()
	return res, nil
}

// holds reports whether l still holds entry seq with chain hash h.
func holds(l flume.Log, seq int64, h flume.Hash) bool {
	if seq < 0 || l.Since() < seq {
		return false
	}
	e, err := l.Entry(seq)
	return err == nil && e.Hash == h
}

// refuseWriter fails every non-empty write: TruncateAfter with nothing to
// cut must write nothing.
type refuseWriter struct{}

func (refuseWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	return 0, fmt.Errorf("%w: the log grew during the cut", ErrStream)
}

// Reconcile removes the files in dir that do not record a cut of l: every
// temporary file (its cut never happened: a cut happens only after its file
// is sealed), and every complete file of l's log ID whose last entry l
// still holds with the same chain hash (a crash or failure came between
// sealing it and the cut; the log holds exactly those entries, so removing
// the file loses nothing). Damaged files and files of other logs are left
// alone. It returns the names removed and syncs dir if it removed any.
//
// Call it only while no Writer is active in dir (the node owning the log
// is the only writer; Truncate calls it before creating its file). Readers
// running meanwhile may see a file disappear; Entries skips it.
func Reconcile(fsys vfs.FS, dir string, l flume.Log) ([]string, error) {
	infos, err := List(fsys, dir)
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, i := range infos {
		stale := i.State == Temp ||
			i.State == Complete && i.Header.LogID == l.ID() && holds(l, i.Header.Since, i.Header.SinceHash)
		if !stale {
			continue
		}
		if err := fsys.Remove(i.Path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return removed, fmt.Errorf("fork: remove %s: %w", i.Path, err)
		}
		removed = append(removed, i.Name)
	}
	if len(removed) > 0 {
		if err := vfs.SyncDir(fsys, dir); err != nil {
			return removed, fmt.Errorf("fork: sync %s: %w", dir, err)
		}
	}
	return removed, nil
}

// CutEpochs returns the records of history (oldest first, as
// flume.EpochLog.Epochs returns it) that describe the cut of (after,
// since]: the record in effect at after+1 (the last one starting at or
// before it) and every record starting after it, up to since+1 (a record
// starting at since+1 began an epoch that has no entry yet; TruncateAfter
// removes it with the entries). The result is a new slice.
func CutEpochs(history []flume.EpochRecord, after, since int64) []flume.EpochRecord {
	var out []flume.EpochRecord
	for i, r := range history {
		if r.Start > since+1 {
			break
		}
		inEffect := r.Start <= after+1 && (i+1 == len(history) || history[i+1].Start > after+1)
		if inEffect || r.Start > after+1 {
			out = append(out, r)
		}
	}
	return out
}

// Dir is the forked/ directory of a server data directory.
func Dir(dataDir string) string { return filepath.Join(dataDir, "forked") }
