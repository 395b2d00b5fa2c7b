package main

import (
	"encoding/json"
	"fmt"

	"github.com/flume-go/flume/server"
	"github.com/spf13/cobra"
)

func newRepointCmd() *cobra.Command {
	var (
		cf          clientFlags
		primaryHTTP string
		asJSON      bool
	)
	cmd := &cobra.Command{
		Use:   "repoint HOST:PORT [--server URL] [--primary-http URL]",
		Short: "Make a node follow the primary at HOST:PORT, without a restart",
		Long: `Make the node at --server follow the primary whose replication address is
HOST:PORT (POST /follow; Redis's REPLICAOF). A follower switches upstream;
a primary steps down first: it stops taking appends (421), and its sync
appends still waiting for acknowledgements fail with 409 "deposed".

The address is dialled first: if it cannot be reached nothing changes.
Otherwise the command waits a few seconds for the first handshake with the
new primary; if the handshake is refused or does not happen, the node still
follows HOST:PORT and keeps retrying, and the error says why.

--primary-http is the new primary's HTTP URL: the node names it in its 421
answers, and client commands retry there.`,
		Example: `  flume repoint 10.0.0.2:7601 --server http://10.0.0.3:7600 --primary-http http://10.0.0.2:7600`,
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			var res server.FollowResult
			req := server.FollowRequest{Primary: args[0], PrimaryHTTP: primaryHTTP}
			if err := c.postJSON(cmd.Context(), "/follow", req, &res); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				e := json.NewEncoder(out)
				e.SetIndent("", "  ")
				return e.Encode(res)
			}
			if res.Demoted {
				fmt.Fprintf(out, "demoted: %s is no longer a primary\n", c.base)
			}
			fmt.Fprintf(out, "following %s: %s, since %d, primary since %d\n", res.Primary, res.State, res.Since, res.PrimarySince)
			return nil
		},
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&primaryHTTP, "primary-http", "", "the new primary's HTTP URL, named in the node's 421 answers")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the raw JSON answer")
	return cmd
}
