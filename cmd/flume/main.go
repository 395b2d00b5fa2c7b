// Command flume runs and talks to flume nodes: demo, serve (primary or
// follower), append, get, tail, status, promote, repoint, verify, forked
// and bench. Run "flume help" for the list.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
