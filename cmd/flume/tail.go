package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"

	"github.com/spf13/cobra"
)

func newTailCmd() *cobra.Command {
	var (
		cf      clientFlags
		gt      int64
		limit   int
		live    bool
		reverse bool
	)
	cmd := &cobra.Command{
		Use:   "tail",
		Short: "Print log entries as NDJSON, optionally following new ones",
		Long: `Print log entries as NDJSON lines {"seq":N,"value":V}.

--gt N starts after seq N (default: from the start), --limit stops after
that many entries, --live keeps printing new entries as they are appended
until interrupted.`,
		Example: `  flume tail --gt 41 --live`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if reverse && live {
				return usageErrorf("tail: --reverse and --live cannot be combined")
			}
			c, err := cf.client(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			q := url.Values{}
			if cmd.Flags().Changed("gt") {
				q.Set("gt", strconv.FormatInt(gt, 10))
			}
			if limit > 0 {
				q.Set("limit", strconv.Itoa(limit))
			}
			if live {
				q.Set("live", "true")
			}
			if reverse {
				q.Set("reverse", "true")
			}
			resp, err := c.do(cmd.Context(), "GET", "/log?"+q.Encode(), "", nil)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			sc := bufio.NewScanner(resp.Body)
			sc.Buffer(make([]byte, 64<<10), 64<<20)
			out := cmd.OutOrStdout()
			for sc.Scan() {
				if _, err := fmt.Fprintf(out, "%s\n", sc.Bytes()); err != nil {
					return err
				}
			}
			if err := sc.Err(); err != nil && !errors.Is(cmd.Context().Err(), context.Canceled) {
				return fmt.Errorf("tail: %w", err)
			}
			return nil
		},
	}
	cf.register(cmd)
	cmd.Flags().Int64Var(&gt, "gt", -1, "print entries after this seq")
	cmd.Flags().IntVar(&limit, "limit", 0, "stop after this many entries (0: no limit)")
	cmd.Flags().BoolVar(&live, "live", false, "keep printing new entries as they arrive")
	cmd.Flags().BoolVar(&reverse, "reverse", false, "newest first")
	return cmd
}
