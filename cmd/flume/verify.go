package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// verifyResult is what verify reports, whatever the log implementation
// calls its fields.
type verifyResult struct {
	LogID   string
	Entries int64
	Bytes   int64
	Since   int64
	Hash    string
	Problem error // the first problem found, nil if none
	Detail  []string
}

func newVerifyCmd() *cobra.Command {
	var (
		data     string
		progress string
	)
	cmd := &cobra.Command{
		Use:   "verify --data DIR",
		Short: "Check a log offline: every entry's CRC and the chain hash",
		Long: `Walk the log in DIR (a server's data directory or a file log directory)
without a server: check every entry's CRC and recompute the chain hash.
Print the entries, bytes and the chain hash at the end, and the first problem
with its position. Exits 3 when the log is corrupt. The server must not be
running on DIR (the log is locked).`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if data == "" {
				return usageErrorf("verify: --data DIR is required")
			}
			if fi, err := os.Stat(data); err != nil || !fi.IsDir() {
				return fmt.Errorf("verify: %s is not a directory", data)
			}
			dir := data
			if fi, err := os.Stat(filepath.Join(data, "log")); err == nil && fi.IsDir() {
				dir = filepath.Join(data, "log")
			}
			out := cmd.OutOrStdout()
			showBar := false
			switch progress {
			case "auto":
				showBar = isTerminal(cmd.ErrOrStderr())
			case "always":
				showBar = true
			case "never":
			default:
				return usageErrorf("verify: --progress %q: want auto, always or never", progress)
			}
			var bar *progressBar
			var report func(done, total int64)
			if showBar {
				bar = &progressBar{w: cmd.ErrOrStderr(), start: time.Now()}
				report = bar.update
			}
			res, err := verifyLog(cmd.Context(), dir, report)
			if bar != nil {
				bar.finish()
			}
			if err != nil {
				return fmt.Errorf("verify %s: %w", dir, err)
			}
			fmt.Fprintf(out, "log:     %s\n", dir)
			if res.LogID != "" {
				fmt.Fprintf(out, "log id:  %s\n", res.LogID)
			}
			fmt.Fprintf(out, "entries: %d\n", res.Entries)
			fmt.Fprintf(out, "bytes:   %d\n", res.Bytes)
			fmt.Fprintf(out, "since:   %d\n", res.Since)
			fmt.Fprintf(out, "hash:    %s\n", res.Hash)
			for _, d := range res.Detail {
				fmt.Fprintln(out, d)
			}
			if res.Problem != nil {
				fmt.Fprintf(out, "problem: %v\n", res.Problem)
				return &codeError{code: exitCorrupt, err: fmt.Errorf("verify: %s is corrupt: %v", dir, res.Problem)}
			}
			fmt.Fprintln(out, "ok: every CRC and the chain hash check out")
			return nil
		},
	}
	cmd.Flags().StringVar(&data, "data", "", "data directory of a server, or a file log directory")
	cmd.Flags().StringVar(&progress, "progress", "auto", "progress bar on stderr: auto (on a terminal), always or never")
	return cmd
}

// progressBar draws a one-line progress bar, redrawn at most every 100ms.
type progressBar struct {
	w     io.Writer
	start time.Time
	last  time.Time
	drawn bool
}

func (b *progressBar) update(done, total int64) {
	now := time.Now()
	if now.Sub(b.last) < 100*time.Millisecond && done < total {
		return
	}
	b.last = now
	frac := 1.0
	if total > 0 {
		frac = min(1, float64(done)/float64(total))
	}
	const width = 40
	fill := int(frac * width)
	rate := float64(done) / max(now.Sub(b.start).Seconds(), 1e-9) / 1e6
	fmt.Fprintf(b.w, "\r[%s%s] %5.1f%% %d/%d MB %.0f MB/s", strings.Repeat("#", fill), strings.Repeat(".", width-fill),
		frac*100, done/1e6, total/1e6, rate)
	b.drawn = true
}

func (b *progressBar) finish() {
	if b.drawn {
		fmt.Fprintln(b.w)
	}
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
