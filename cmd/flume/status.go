package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/flume-go/flume/server"
	"github.com/spf13/cobra"
)

func newStatusCmd() *cobra.Command {
	var (
		cf     clientFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show a node's role, position and replication lag",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			var st server.Status
			if err := c.getJSON(cmd.Context(), "/status", &st); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				e := json.NewEncoder(out)
				e.SetIndent("", "  ")
				return e.Encode(st)
			}
			printStatus(out, st)
			return nil
		},
	}
	cf.register(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the raw JSON status")
	return cmd
}

func printStatus(out io.Writer, st server.Status) {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "role\t%s\n", st.Role)
	fmt.Fprintf(tw, "node\t%s\n", st.NodeID)
	fmt.Fprintf(tw, "log id\t%s\n", st.LogID)
	fmt.Fprintf(tw, "epoch\t%d\n", st.Epoch)
	if st.FencedEpoch != nil {
		fmt.Fprintf(tw, "fenced epoch\t%d\n", *st.FencedEpoch)
	}
	if st.CommittedHint != nil {
		hint := "unknown"
		if *st.CommittedHint >= 0 {
			hint = strconv.FormatInt(*st.CommittedHint, 10)
		}
		fmt.Fprintf(tw, "committed hint\t%s\n", hint)
	}
	fmt.Fprintf(tw, "since\t%d\n", st.Since)
	if st.Held > 0 {
		fmt.Fprintf(tw, "held\t%d (in the log through %d, not yet published by the primary)\n", st.Held, st.LogSince)
	}
	fmt.Fprintf(tw, "hash\t%s\n", st.Hash)
	if st.Fsync != "" {
		fmt.Fprintf(tw, "fsync\t%s\n", st.Fsync)
	}
	if st.ReplAddr != "" {
		fmt.Fprintf(tw, "repl addr\t%s\n", st.ReplAddr)
	}
	if st.Role == "primary" {
		mode := "async"
		if st.SyncReplicas > 0 {
			mode = fmt.Sprintf("sync, %d follower ack(s) per append", st.SyncReplicas)
		}
		fmt.Fprintf(tw, "replication\t%s\n", mode)
	}
	if p := st.Primary; p != nil {
		fmt.Fprintf(tw, "primary\t%s\n", p.Primary)
		if p.HTTP != "" {
			fmt.Fprintf(tw, "primary http\t%s\n", p.HTTP)
		}
		fmt.Fprintf(tw, "state\t%s (connected: %v)\n", p.State, p.Connected)
		primarySince := "unknown"
		if p.PrimarySince >= 0 {
			primarySince = strconv.FormatInt(p.PrimarySince, 10)
		}
		fmt.Fprintf(tw, "primary since\t%s\n", primarySince)
		fmt.Fprintf(tw, "lag\t%d entries, %d bytes, %.3fs\n", p.LagEntries, p.LagBytes, p.LagSeconds)
		fmt.Fprintf(tw, "reconnects\t%d\n", p.Reconnects)
		if p.LastError != "" {
			fmt.Fprintf(tw, "last error\t%s\n", p.LastError)
		}
	}
	tw.Flush()
	printEpochs(out, st)
	if st.Role != "primary" {
		return
	}
	fmt.Fprintln(out)
	if len(st.Followers) == 0 {
		fmt.Fprintln(out, "no followers")
		return
	}
	tw = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FOLLOWER\tADDR\tCONNECTED\tACKED\tLAG ENTRIES\tLAG BYTES\tLAG SECONDS\tENTRIES/S\tLAST SEEN")
	for _, f := range st.Followers {
		seen := "-"
		if !f.LastSeen.IsZero() {
			seen = time.Since(f.LastSeen).Round(time.Millisecond).String() + " ago"
		}
		fmt.Fprintf(tw, "%s\t%s\t%v\t%d\t%d\t%d\t%.3f\t%.0f\t%s\n", f.NodeID, f.Addr, f.Connected, f.AckedSeq,
			f.LagEntries, f.LagBytes, f.LagSeconds, f.EntriesPerSec, seen)
	}
	tw.Flush()
}

// printEpochs prints the epoch history's last records, when the node's log
// keeps one.
func printEpochs(out io.Writer, st server.Status) {
	if st.Epochs == nil {
		return
	}
	fmt.Fprintln(out)
	if len(st.Epochs) == 0 {
		fmt.Fprintln(out, "epoch history: no records")
		return
	}
	if n := len(st.Epochs); st.EpochRecords > n {
		fmt.Fprintf(out, "epoch history: last %d of %d records\n", n, st.EpochRecords)
	} else {
		fmt.Fprintf(out, "epoch history: %d record(s)\n", n)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "EPOCH\tSTART\tPREV HASH\tPROMOTION\tTIME")
	for _, e := range st.Epochs {
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\n", e.Epoch, e.Start, e.Prev, e.Promotion, e.Time.Format(time.RFC3339))
	}
	tw.Flush()
}
