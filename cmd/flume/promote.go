package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/flume-go/flume/server"
	"github.com/spf13/cobra"
)

func newPromoteCmd() *cobra.Command {
	var (
		cf     clientFlags
		force  bool
		peers  []string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "promote [--server URL] [--peers URL,URL] [--force]",
		Short: "Make a follower the primary of a new epoch (manual failover)",
		Long: `Make the follower at --server the primary of a new epoch (POST /promote).

It stops following, starts an epoch one higher than any it has seen (the
epoch record is durable before the first entry of the epoch), and takes
appends from the next seq on. Followers then follow it with
"flume repoint <its replication address>", which the answer prints.

With --peers (the HTTP URLs of the other nodes), the node first asks each
for its /status and refuses (409) if one it can reach has a longer log or a
higher epoch: promote the node with the longest log. A peer that cannot be
reached (the failed primary) is reported and does not block. --force
promotes anyway.`,
		Example: `  flume promote --server http://10.0.0.2:7600 --peers http://10.0.0.3:7600,http://10.0.0.1:7600`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			var res server.PromoteResult
			if err := c.postJSON(cmd.Context(), "/promote", server.PromoteRequest{Force: force, Peers: peers}, &res); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				e := json.NewEncoder(out)
				e.SetIndent("", "  ")
				return e.Encode(res)
			}
			printPromote(out, res, c.base)
			return nil
		},
	}
	cf.register(cmd)
	cmd.Flags().BoolVar(&force, "force", false, "promote even if a peer reports a longer log or a higher epoch")
	cmd.Flags().StringSliceVar(&peers, "peers", nil, "HTTP URLs of the other nodes, checked before promoting (comma-separated)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the raw JSON answer")
	return cmd
}

func printPromote(out io.Writer, res server.PromoteResult, base string) {
	fmt.Fprintf(out, "promoted: %s is the primary of epoch %d from seq %d (promotion %s)\n", base, res.Epoch, res.Start, res.Promotion)
	if len(res.Peers) == 0 {
		fmt.Fprintln(out, "peers: none named, nothing checked (--peers)")
	}
	for _, p := range res.Peers {
		fmt.Fprintf(out, "peer %s: %s", p.URL, p.Result)
		if p.NodeID != "" {
			fmt.Fprintf(out, " (node %s, %s", p.NodeID, p.Role)
			if p.Since != nil {
				fmt.Fprintf(out, ", since %d", *p.Since)
			}
			if p.Epoch != nil {
				fmt.Fprintf(out, ", epoch %d", *p.Epoch)
			}
			fmt.Fprint(out, ")")
		}
		switch p.Result {
		case server.PeerUnreachable:
			fmt.Fprint(out, ": not checked")
		case server.PeerLongerLog, server.PeerHigherEpoch:
			fmt.Fprint(out, ": overridden by --force")
		}
		if p.Error != "" {
			fmt.Fprintf(out, ": %s", strings.TrimSpace(p.Error))
		}
		fmt.Fprintln(out)
	}
	if res.ReplAddr != "" {
		fmt.Fprintf(out, "followers: flume repoint %s --primary-http %s --server <follower URL>\n", res.ReplAddr, base)
	}
	if res.Warning != "" {
		fmt.Fprintf(out, "warning: %s\n", res.Warning)
	}
}
