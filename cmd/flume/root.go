package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Exit codes.
const (
	exitOK      = 0
	exitError   = 1 // the command failed; a one-line error on stderr
	exitUsage   = 2 // bad flags or arguments
	exitCorrupt = 3 // verify found corruption
)

// exitError carries a non-default exit code.
type codeError struct {
	code int
	err  error
}

func (e *codeError) Error() string { return e.err.Error() }
func (e *codeError) Unwrap() error { return e.err }

func usageErrorf(format string, a ...any) error {
	return &codeError{code: exitUsage, err: fmt.Errorf(format, a...)}
}

// lookupEnv is os.LookupEnv; tests replace it.
var lookupEnv = os.LookupEnv

// run runs the flume command with args and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return execute(ctx, args, os.Stdin, stdout, stderr)
}

func execute(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRootCmd()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	msg := strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; ")
	fmt.Fprintf(stderr, "flume: %s\n", msg)
	var ce *codeError
	if errors.As(err, &ce) {
		return ce.code
	}
	return exitError
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "flume",
		Short: "flume: a replicated append-only log database",
		Long: `flume is a replicated append-only log database.

Start with "flume demo". Run a primary with "flume serve --data DIR" and a
follower with "flume serve --data DIR2 --follow HOST:PORT"; talk to either
with append, get, tail and status; fail over with promote and repoint.
Every flag has an environment variable:
--sync-replicas is FLUME_SYNC_REPLICAS.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			return applyEnv(cmd.Flags())
		},
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageErrorf("%s: %v (see flume %s --help)", c.Name(), err, c.Name())
	})
	root.AddCommand(newDemoCmd(), newServeCmd(), newFollowCmd(), newAppendCmd(), newGetCmd(), newTailCmd(),
		newStatusCmd(), newPromoteCmd(), newRepointCmd(), newVerifyCmd(), newForkedCmd(), newBenchCmd())
	return root
}

// applyEnv sets every flag not given on the command line from FLUME_<NAME>
// (upper case, dashes as underscores) when that variable is set.
func applyEnv(fs *pflag.FlagSet) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed || f.Name == "help" {
			return
		}
		name := "FLUME_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := lookupEnv(name); ok {
			if serr := fs.Set(f.Name, v); serr != nil {
				err = usageErrorf("%s=%q: %v", name, v, serr)
			}
		}
	})
	return err
}

// exactArgs is cobra.ExactArgs with a usage exit code.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageErrorf("%s takes %d argument(s), got %d (usage: %s)", cmd.Name(), n, len(args), cmd.UseLine())
		}
		return nil
	}
}

func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) != 0 {
		return usageErrorf("%s takes no arguments, got %q", cmd.Name(), args)
	}
	return nil
}

// readSecret reads a secret file: its content without surrounding
// whitespace. An empty path is no secret.
func readSecret(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read secret file: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return nil, fmt.Errorf("secret file %s is empty", path)
	}
	return []byte(s), nil
}
