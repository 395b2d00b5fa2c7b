package main

import (
	"fmt"
	"io"
	"strconv"

	"github.com/spf13/cobra"
)

func newGetCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "get SEQ",
		Short: "Print the value stored at SEQ",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			seq, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil || seq < 0 {
				return usageErrorf("get: SEQ must be a non-negative integer, got %q", args[0])
			}
			c, err := cf.client(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			resp, err := c.do(cmd.Context(), "GET", fmt.Sprintf("/log/%d", seq), "", nil)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if _, err := io.Copy(cmd.OutOrStdout(), resp.Body); err != nil {
				return fmt.Errorf("get %d: %w", seq, err)
			}
			fmt.Fprintln(cmd.OutOrStdout())
			return nil
		},
	}
	cf.register(cmd)
	return cmd
}
