// Verify: a full walk of every frame, checking CRCs, seqs and the chain hash.

package filelog

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/frame"
)

// VerifyReport is the result of Verify.
type VerifyReport struct {
	Segments int        // segment files walked
	Entries  int64      // entries checked
	Bytes    int64      // frame bytes checked
	Since    int64      // last good seq (-1 if none)
	Head     flume.Hash // chain hash at Since, recomputed from GenesisHash(ID)
	// Problem is the first bad entry, nil when the log is sound. Verify
	// also returns it as its error.
	Problem *flume.CorruptionError
}

// progressEvery is how many bytes Verify reads between progress calls.
const progressEvery = 4 << 20

// Verify walks every published entry of every segment, checking each
// frame's CRC, the seq density and the chain hash recomputed from
// GenesisHash(ID). It stops at the first problem and returns it as a
// *flume.CorruptionError (also in the report), or ctx's error. progress, if
// not nil, is called as bytes are checked and once at the end.
func (l *Log) Verify(ctx context.Context, progress func(doneBytes, totalBytes int64)) (VerifyReport, error) {
	type segView struct {
		s     *segment
		limit int64
	}
	l.mu.RLock()
	if l.mu.closed {
		l.mu.RUnlock()
		return VerifyReport{}, flume.ErrClosed
	}
	var segs []segView
	var total int64
	for _, s := range l.mu.segs {
		lim := s.size
		if s == l.mu.active {
			lim = l.mu.pubSize
		}
		segs = append(segs, segView{s, lim})
		total += lim
	}
	since, genesis := l.mu.since, l.mu.genesis
	l.mu.RUnlock()

	rep := VerifyReport{Since: -1, Head: genesis}
	r := newFrameReader()
	defer r.release()
	var done, nextProgress int64
	want := int64(0)
	for _, sv := range segs {
		if want > since {
			break
		}
		rep.Segments++
		if sv.s.base != want {
			p := &flume.CorruptionError{Path: sv.s.path, Offset: 0, Seq: want,
				Reason: fmt.Sprintf("segment starts at seq %d, expected %d", sv.s.base, want)}
			rep.Problem = p
			return rep, p
		}
		f, err := sv.s.file()
		if err != nil {
			return rep, l.readErr(err)
		}
		r.reset(f, 0, sv.limit)
		for {
			if err := ctx.Err(); err != nil && done >= nextProgress {
				return rep, err
			}
			off := r.off
			e, n, err := r.next()
			if err == io.EOF {
				break
			}
			var reason string
			if err != nil {
				var fe *frame.Error
				if !errors.As(err, &fe) {
					return rep, l.readErr(fmt.Errorf("filelog: verify %s: %w", sv.s.path, err))
				}
				reason = err.Error()
			} else if e.Seq != want {
				reason = fmt.Sprintf("found seq %d, expected %d", e.Seq, want)
			} else if hh := flume.ChainHash(rep.Head, e.Seq, e.Epoch, e.Data); hh != e.Hash {
				reason = fmt.Sprintf("chain hash mismatch: stored %s, recomputed %s", e.Hash.Short(), hh.Short())
			}
			if reason != "" {
				p := &flume.CorruptionError{Path: sv.s.path, Offset: off, Seq: want, Reason: reason}
				rep.Problem = p
				return rep, p
			}
			rep.Entries++
			rep.Bytes += int64(n)
			rep.Since, rep.Head = e.Seq, e.Hash
			want++
			done += int64(n)
			if done >= nextProgress {
				nextProgress = done + progressEvery
				if progress != nil {
					progress(done, total)
				}
			}
		}
	}
	if progress != nil {
		progress(done, total)
	}
	return rep, nil
}
