package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/flume-go/flume/server"
	"github.com/spf13/cobra"
)

// appendBatchBytes bounds one NDJSON batch read from stdin; each batch is
// one atomic append, well under the server's default body limit.
const appendBatchBytes = 4 << 20

func newAppendCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "append [JSON...]",
		Short: "Append JSON values to the log",
		Long: `Append JSON values to the log of a flume primary.

One argument is appended as one entry and prints {"seq":N}. Several
arguments are appended as one atomic batch and print {"first":N,"last":M}.
Without arguments, NDJSON (one value per line) is read from stdin and
appended in atomic batches of up to 4 MiB, printing one result per batch.`,
		Example: `  flume append '{"foo":"bar"}'
  flume append '{"a":1}' '{"b":2}'
  printf '{"a":1}\n{"b":2}\n' | flume append`,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			post := func(ctype string, body []byte) error {
				resp, err := c.do(cmd.Context(), "POST", "/log", ctype, body)
				if err != nil {
					return err
				}
				defer resp.Body.Close()
				_, err = io.Copy(cmd.OutOrStdout(), resp.Body)
				return err
			}
			switch len(args) {
			case 0:
			case 1:
				return post("application/json", []byte(args[0]))
			default:
				var b bytes.Buffer
				for i, a := range args {
					if !json.Valid([]byte(a)) {
						return usageErrorf("argument %d is not valid JSON: %q", i+1, a)
					}
					var c bytes.Buffer
					json.Compact(&c, []byte(a))
					b.Write(c.Bytes())
					b.WriteByte('\n')
				}
				return post(server.NDJSONType, b.Bytes())
			}
			// NDJSON from stdin, in batches cut at line ends.
			r := bufio.NewReaderSize(cmd.InOrStdin(), 64<<10)
			var batch bytes.Buffer
			sent := 0
			for {
				line, err := r.ReadBytes('\n')
				if len(strings.TrimSpace(string(line))) > 0 {
					if batch.Len() > 0 && batch.Len()+len(line) > appendBatchBytes {
						if perr := post(server.NDJSONType, batch.Bytes()); perr != nil {
							return perr
						}
						batch.Reset()
						sent++
					}
					batch.Write(line)
					if line[len(line)-1] != '\n' {
						batch.WriteByte('\n')
					}
				}
				if err == io.EOF {
					break
				}
				if err != nil {
					return fmt.Errorf("read stdin: %w", err)
				}
			}
			if batch.Len() == 0 {
				if sent == 0 {
					return usageErrorf("append: nothing to append (give JSON arguments or NDJSON on stdin)")
				}
				return nil
			}
			return post(server.NDJSONType, batch.Bytes())
		},
	}
	cf.register(cmd)
	return cmd
}
