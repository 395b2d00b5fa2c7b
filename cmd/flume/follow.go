package main

import (
	"github.com/spf13/cobra"
)

func newFollowCmd() *cobra.Command {
	var f serveFlags
	cmd := &cobra.Command{
		Use:   "follow HOST:PORT --data DIR",
		Short: "Run a read-only follower of the primary at HOST:PORT (serve --follow)",
		Long: `Run a follower node: the same as "flume serve --data DIR --follow HOST:PORT",
where HOST:PORT is the primary's replication address (its --repl).`,
		Example: `  flume follow 127.0.0.1:7601 --data /var/lib/flume/f1 --http 127.0.0.1:7610`,
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f.follow = args[0]
			f.replSet = cmd.Flags().Changed("repl")
			return runServe(cmd.Context(), f, cmd.ErrOrStderr(), nil)
		},
	}
	f.register(cmd, false)
	return cmd
}
