package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/filelog"
)

// verifyLog opens the file log in dir read-only (nothing on disk changes;
// it fails with flume.ErrLocked while a server has it open) and walks it.
func verifyLog(ctx context.Context, dir string, progress func(done, total int64)) (verifyResult, error) {
	l, err := filelog.Open(dir, &filelog.Options{ReadOnly: true})
	if err != nil {
		if errors.Is(err, flume.ErrLocked) {
			return verifyResult{}, fmt.Errorf("%w: stop the server first (verify is offline)", err)
		}
		var ce *flume.CorruptionError
		if errors.As(err, &ce) {
			// The log does not even open: that is the first problem.
			return verifyResult{Since: -1, Problem: err}, nil
		}
		return verifyResult{}, err
	}
	defer l.Close()
	r := l.OpenReport()
	rep, err := l.Verify(ctx, progress)
	res := verifyResult{LogID: l.ID().String(), Entries: rep.Entries, Bytes: rep.Bytes, Since: rep.Since, Hash: rep.Head.String()}
	res.Detail = append(res.Detail, fmt.Sprintf("segments: %d", rep.Segments))
	if r.TruncatedBytes > 0 {
		res.Detail = append(res.Detail, fmt.Sprintf("torn tail: %d bytes at %s offset %d (ignored; a writable open cuts it)",
			r.TruncatedBytes, r.TruncatedFile, r.TruncatedAt))
	}
	if rep.Problem != nil {
		res.Problem = rep.Problem
		return res, nil
	}
	if err != nil {
		if errors.Is(err, flume.ErrCorrupt) {
			res.Problem = err
			return res, nil
		}
		return res, err
	}
	return res, nil
}
