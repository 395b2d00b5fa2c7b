package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/fork"
	"github.com/flume-go/flume/server"
	"github.com/flume-go/flume/vfs"
	"github.com/spf13/cobra"
)

func newForkedCmd() *cobra.Command {
	var data string
	cmd := &cobra.Command{
		Use:   "forked --data DIR",
		Short: "Print the entries this node cut from its log when it rejoined a new primary",
		Long: `Print every entry ever cut from the log in DIR (a server's data directory)
as NDJSON lines {"seq":N,"epoch":E,"value":V}, oldest cut first, each cut in
seq order. A value that is not JSON is printed as {"seq":N,"epoch":E,"data":"<base64>"},
as "flume tail" does. seq and epoch are the entry's position in the history
it was cut from.

A node cuts entries when it rejoins a new primary that lacks them; it saves
them first in DIR/forked/, one file per cut. Every file is checked (CRCs,
the chain hash, the trailer) before anything is printed: a damaged file is
an error naming the file and offset (exit 3) and nothing is printed. Files
still being written are skipped with a note. Reading is safe while the
node runs.

"flume forked list" describes the cuts; "flume forked replay" appends the
values to a primary again.`,
		Example: `  flume forked --data data/p1
  flume forked list --data data/p1
  flume forked replay --data data/p1 --to http://127.0.0.1:7600`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			infos, err := checkedForks(cmd, data)
			if err != nil {
				return err
			}
			out := bufio.NewWriter(cmd.OutOrStdout())
			var line []byte
			for _, info := range infos {
				err := scanFork(info, func(e flume.Entry) error {
					line = appendForkedLine(line[:0], e)
					_, err := out.Write(line)
					return err
				})
				if err != nil {
					return fmt.Errorf("forked: %w", err)
				}
			}
			return out.Flush()
		},
	}
	cmd.PersistentFlags().StringVar(&data, "data", "", "data directory of the node (its forked/ subdirectory is read)")
	cmd.AddCommand(newForkedListCmd(&data), newForkedReplayCmd(&data))
	return cmd
}

func newForkedListCmd(data *string) *cobra.Command {
	return &cobra.Command{
		Use:   "list --data DIR",
		Short: "Describe each cut saved in DIR/forked/",
		Long: `Print one row per file in DIR/forked/, oldest first: the file, its state,
when the cut was made, the seqs cut, the number of entries, the new primary's
position that caused the cut, and the reason. Every file is checked whole;
a damaged file is listed with its state (incomplete, corrupt) and the
problem is printed after the table (exit 3). A "temp" file is a cut being
written, or one a crash interrupted before anything was cut.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := forkedDir(*data)
			if err != nil {
				return err
			}
			infos, err := fork.List(vfs.Default, dir)
			if err != nil {
				return fmt.Errorf("forked list: %w", err)
			}
			out := cmd.OutOrStdout()
			if len(infos) == 0 {
				fmt.Fprintf(out, "no forked files in %s: nothing was ever cut from this log\n", dir)
				return nil
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "FILE\tSTATE\tTIME\tCUT\tENTRIES\tNEW PRIMARY\tREASON")
			var bad []error
			for _, i := range infos {
				h := i.Header
				when, cut, entries, primary := "-", "-", "-", "-"
				if h.Since > h.After { // the header was read
					when = h.Time.Format(time.RFC3339)
					cut = fmt.Sprintf("%d..%d", h.After+1, h.Since)
					primary = h.Primary.String()
					entries = strconv.FormatInt(h.Entries(), 10)
				}
				if i.State != fork.Complete {
					entries = "?"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", i.Name, i.State, when, cut, entries, primary, strconv.Quote(h.Reason))
				if i.Err != nil {
					bad = append(bad, i.Err)
				}
			}
			tw.Flush()
			for _, err := range bad {
				fmt.Fprintf(out, "problem: %v\n", err)
			}
			if len(bad) > 0 {
				return &codeError{code: exitCorrupt, err: fmt.Errorf("forked list: %d damaged file(s) in %s, first: %v", len(bad), dir, bad[0])}
			}
			return nil
		},
	}
}

func newForkedReplayCmd(data *string) *cobra.Command {
	var to, secretFile, tlsCA string
	cmd := &cobra.Command{
		Use:   "replay --data DIR --to URL",
		Short: "Append the values of the forked entries to a primary again (at-least-once)",
		Long: `Append the value of every entry in DIR/forked/ to the primary at URL, as new
entries (new seqs, the primary's epoch), in the order "flume forked" prints
them, in atomic batches of up to 4 MiB. Prints {"appended":N,"first":F,"last":L}.

Replay is at-least-once: if it fails or is interrupted, the batches sent
before may have been appended, and running it again appends them again. It
does not remove or mark the forked files. Whether the cut entries should be
appended again at all is the application's decision: they were never
acknowledged by the replicas that the new primary's history is built on.

Before sending anything, every file is checked and every value must be JSON
(the HTTP API stores JSON): a damaged file or a value that is not JSON is an
error and nothing is appended.`,
		Example: `  flume forked replay --data data/p1 --to http://127.0.0.1:7600 --secret-file token`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if to == "" {
				return usageErrorf("forked replay: --to URL is required (the primary's HTTP API)")
			}
			infos, err := checkedForks(cmd, *data)
			if err != nil {
				return err
			}
			// Every value must be JSON before anything is sent.
			total := 0
			for _, info := range infos {
				err := scanFork(info, func(e flume.Entry) error {
					if !json.Valid(e.Data) {
						return fmt.Errorf("entry %d of %s is not JSON (%d bytes): the HTTP API appends JSON values only; nothing appended", e.Seq, info.Path, len(e.Data))
					}
					total++
					return nil
				})
				if err != nil {
					return fmt.Errorf("forked replay: %w", err)
				}
			}
			c, err := (&clientFlags{server: to, secretFile: secretFile, tlsCA: tlsCA}).client(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			var (
				batch             bytes.Buffer
				inBatch, appended int
				first, last       int64 = -1, -1
			)
			send := func() error {
				if inBatch == 0 {
					return nil
				}
				resp, err := c.do(cmd.Context(), "POST", "/log", server.NDJSONType, batch.Bytes())
				if err != nil {
					return err
				}
				defer resp.Body.Close()
				var r struct{ First, Last int64 }
				if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
					return fmt.Errorf("POST /log: decode response: %w", err)
				}
				if first < 0 {
					first = r.First
				}
				last = r.Last
				appended += inBatch
				batch.Reset()
				inBatch = 0
				return nil
			}
			for _, info := range infos {
				err := scanFork(info, func(e flume.Entry) error {
					var v bytes.Buffer
					if err := json.Compact(&v, e.Data); err != nil {
						return fmt.Errorf("entry %d of %s: %w", e.Seq, info.Path, err)
					}
					if inBatch > 0 && batch.Len()+v.Len()+1 > appendBatchBytes {
						if err := send(); err != nil {
							return err
						}
					}
					batch.Write(v.Bytes())
					batch.WriteByte('\n')
					inBatch++
					return nil
				})
				if err == nil {
					err = send() // a batch never spans two cuts
				}
				if err != nil {
					done := ""
					if appended > 0 {
						done = fmt.Sprintf(" (seqs %d..%d on the primary)", first, last)
					}
					return fmt.Errorf("forked replay: %d of %d entries appended%s, then: %w; the failed batch of %d may or may not have been appended; replaying again appends everything again (at-least-once)",
						appended, total, done, err, inBatch)
				}
			}
			res := struct {
				Appended int    `json:"appended"`
				First    *int64 `json:"first,omitempty"`
				Last     *int64 `json:"last,omitempty"`
			}{Appended: appended}
			if appended > 0 {
				res.First, res.Last = &first, &last
			}
			b, _ := json.Marshal(res)
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s\n", b)
			return err
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "URL of the primary's HTTP API to append to (env FLUME_TO)")
	cmd.Flags().StringVar(&secretFile, "secret-file", "", "file holding the primary's bearer token (env FLUME_SECRET_FILE)")
	cmd.Flags().StringVar(&tlsCA, "tls-ca", "", "PEM CA that verifies an https:// primary (default: the system roots)")
	return cmd
}

// forkedDir returns DIR/forked for --data DIR.
func forkedDir(data string) (string, error) {
	if data == "" {
		return "", usageErrorf("forked: --data DIR is required")
	}
	if fi, err := os.Stat(data); err != nil || !fi.IsDir() {
		return "", fmt.Errorf("forked: %s is not a directory", data)
	}
	return fork.Dir(data), nil
}

// checkedForks lists the forked files of --data DIR and returns the
// complete ones, oldest first. A damaged file is an error (exit 3) before
// anything is printed or sent; temp files are skipped with a note.
func checkedForks(cmd *cobra.Command, data string) ([]fork.Info, error) {
	dir, err := forkedDir(data)
	if err != nil {
		return nil, err
	}
	infos, err := fork.List(vfs.Default, dir)
	if err != nil {
		return nil, fmt.Errorf("forked: %w", err)
	}
	if len(infos) == 0 {
		fmt.Fprintf(cmd.ErrOrStderr(), "flume: note: no forked files in %s: nothing was ever cut from this log\n", dir)
	}
	var complete []fork.Info
	var bad []error
	for _, i := range infos {
		switch {
		case i.Err != nil:
			bad = append(bad, i.Err)
		case i.State == fork.Temp:
			fmt.Fprintf(cmd.ErrOrStderr(), "flume: note: skipping %s: a cut being written, or one a crash interrupted before anything was cut\n", i.Path)
		default:
			complete = append(complete, i)
		}
	}
	if len(bad) > 0 {
		more := ""
		if len(bad) > 1 {
			more = fmt.Sprintf(" (and %d more damaged file(s); see flume forked list)", len(bad)-1)
		}
		return nil, &codeError{code: exitCorrupt, err: fmt.Errorf("%w%s; nothing printed or appended", bad[0], more)}
	}
	return complete, nil
}

// scanFork reads a complete file listed by checkedForks.
func scanFork(info fork.Info, fn func(flume.Entry) error) error {
	_, err := fork.Scan(vfs.Default, info.Path, fn)
	return err
}

// appendForkedLine appends e as {"seq":N,"epoch":E,"value":V}, or with
// "data" and the payload in base64 when it is not JSON (as GET /log and
// flume tail carry such entries).
func appendForkedLine(dst []byte, e flume.Entry) []byte {
	dst = append(dst, `{"seq":`...)
	dst = strconv.AppendInt(dst, e.Seq, 10)
	dst = append(dst, `,"epoch":`...)
	dst = strconv.AppendUint(dst, e.Epoch, 10)
	if json.Valid(e.Data) {
		dst = append(dst, `,"value":`...)
		b := bytes.NewBuffer(dst)
		json.Compact(b, e.Data) // one line, whatever the stored whitespace
		dst = b.Bytes()
	} else {
		dst = append(dst, `,"data":"`...)
		dst = base64.StdEncoding.AppendEncode(dst, e.Data)
		dst = append(dst, '"')
	}
	return append(dst, "}\n"...)
}
