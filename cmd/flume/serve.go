package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/flume-go/flume/server"
	"github.com/spf13/cobra"
)

// shutdownTimeout bounds the graceful drain after SIGINT/SIGTERM: in-flight
// appends (with their sync replication timeout) finish well within it.
const shutdownTimeout = 30 * time.Second

type serveFlags struct {
	data, follow, httpAddr, replAddr string
	// replSet: --repl was given (flag or environment); a follower listens
	// for replication only then.
	replSet                bool
	primaryHTTP            string
	advertiseHTTP          string
	fsync                  string
	fsyncInterval          time.Duration
	syncReplicas           int
	syncTimeout            time.Duration
	secretFile             string
	tlsCert, tlsKey, tlsCA string
	httpTLS                bool
	logFormat, logLevel    string
	nodeID                 string
}

func newServeCmd() *cobra.Command {
	var f serveFlags
	cmd := &cobra.Command{
		Use:   "serve --data DIR [--follow HOST:PORT]",
		Short: "Run a flume node: a primary, or with --follow a read-only follower",
		Long: `Run a flume node with its data in DIR.

Without --follow the node is a primary: clients append through the HTTP API
(--http) and followers replicate from --repl. With --follow HOST:PORT (the
primary's --repl address) it is a read-only follower: it copies the
primary's log, serves reads, and answers appends with 421 and the primary's
address (and its HTTP URL with --primary-http, which client commands then
retry at).

The role changes at runtime: "flume promote" makes a follower the primary
of a new epoch, "flume repoint" points a node at another primary (a primary
steps down first). A follower listens on --repl only when it is given, so
that it can serve followers as soon as it is promoted.

Every flag can be set in the environment: --sync-replicas as
FLUME_SYNC_REPLICAS, --data as FLUME_DATA. SIGINT or SIGTERM drains and
exits 0.`,
		Example: `  flume serve --data /var/lib/flume/p1
  flume serve --data /var/lib/flume/f1 --follow 127.0.0.1:7601 --http 127.0.0.1:7610`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			f.replSet = cmd.Flags().Changed("repl")
			return runServe(cmd.Context(), f, cmd.ErrOrStderr(), nil)
		},
	}
	f.register(cmd, true)
	return cmd
}

// register defines serve's flags on cmd; withFollow adds --follow.
func (f *serveFlags) register(cmd *cobra.Command, withFollow bool) {
	fl := cmd.Flags()
	if withFollow {
		fl.StringVar(&f.follow, "follow", "", "run as a follower of the primary's replication address HOST:PORT")
	}
	fl.StringVar(&f.data, "data", "", "data directory (required)")
	fl.StringVar(&f.httpAddr, "http", server.DefaultHTTPAddr, "HTTP API listen address")
	fl.StringVar(&f.replAddr, "repl", server.DefaultReplAddr, "replication listen address (a follower listens only when it is given: to serve once promoted)")
	fl.StringVar(&f.primaryHTTP, "primary-http", "", "a follower's primary's HTTP API URL, named in 421 answers so that clients retry there (default: the URL the primary advertises)")
	fl.StringVar(&f.advertiseHTTP, "advertise-http", "", "this node's HTTP API URL, advertised to followers in the replication handshake so that their 421 answers name it")
	fl.StringVar(&f.fsync, "fsync", "always", "fsync policy: always, interval or never")
	fl.DurationVar(&f.fsyncInterval, "fsync-interval", 0, "flush period for --fsync interval (0: the log's default)")
	fl.IntVar(&f.syncReplicas, "sync-replicas", 0, "followers that must acknowledge each append (0: asynchronous)")
	fl.DurationVar(&f.syncTimeout, "sync-timeout", 5*time.Second, "how long an append waits for follower acks before 503")
	fl.StringVar(&f.secretFile, "secret-file", "", "file with the shared secret (replication auth and HTTP bearer token)")
	fl.StringVar(&f.tlsCert, "tls-cert", "", "PEM certificate for replication TLS")
	fl.StringVar(&f.tlsKey, "tls-key", "", "PEM key for --tls-cert")
	fl.StringVar(&f.tlsCA, "tls-ca", "", "PEM CA that verifies the replication peer (a primary then requires client certificates)")
	fl.BoolVar(&f.httpTLS, "http-tls", false, "serve the HTTP API over HTTPS with --tls-cert/--tls-key")
	fl.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	fl.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fl.StringVar(&f.nodeID, "node-id", "", "node name (default: random, kept in DIR/node-id)")
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, usageErrorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, usageErrorf("--log-format %q: want text or json", format)
	}
}

// runServe runs a node until ctx ends, then shuts it down gracefully.
// ready, if not nil, is called with the server and its HTTP and
// replication addresses once it is listening.
func runServe(ctx context.Context, f serveFlags, logOut io.Writer, ready func(s *server.Server, httpAddr, replAddr string)) error {
	if f.data == "" {
		return usageErrorf("serve: --data DIR is required")
	}
	switch f.fsync {
	case "always", "interval", "never":
	default:
		return usageErrorf("serve: --fsync %q: want always, interval or never", f.fsync)
	}
	logger, err := newLogger(logOut, f.logFormat, f.logLevel)
	if err != nil {
		return err
	}
	secret, err := readSecret(f.secretFile)
	if err != nil {
		return err
	}
	tlsCfg, err := server.LoadTLS(f.tlsCert, f.tlsKey, f.tlsCA)
	if err != nil {
		return err
	}
	var httpTLS *tls.Config
	if f.httpTLS {
		if httpTLS = server.HTTPTLSConfig(tlsCfg); httpTLS == nil {
			return usageErrorf("serve: --http-tls needs --tls-cert and --tls-key")
		}
	}
	srv, err := server.New(server.Config{
		DataDir: f.data, NodeID: f.nodeID, Fsync: f.fsync, FsyncInterval: f.fsyncInterval,
		SyncReplicas: f.syncReplicas, SyncTimeout: f.syncTimeout, Follow: f.follow, PrimaryHTTP: f.primaryHTTP, AdvertiseHTTP: f.advertiseHTTP,
		HTTPAddr: f.httpAddr, ReplAddr: f.replAddr, Secret: secret, TLS: tlsCfg, HTTPTLS: httpTLS, Logger: logger,
	})
	if err != nil {
		return err
	}
	hl, err := net.Listen("tcp", f.httpAddr)
	if err != nil {
		srv.Close()
		return fmt.Errorf("serve: listen on --http %s: %w", f.httpAddr, err)
	}
	var rl net.Listener
	if f.follow == "" || f.replSet {
		if rl, err = net.Listen("tcp", f.replAddr); err != nil {
			hl.Close()
			srv.Close()
			return fmt.Errorf("serve: listen on --repl %s: %w", f.replAddr, err)
		}
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(hl, rl) }()
	if ready != nil {
		replAddr := ""
		if rl != nil {
			replAddr = rl.Addr().String()
		}
		ready(srv, hl.Addr().String(), replAddr)
	}
	select {
	case err := <-served:
		// A listener failed; Serve has closed the server.
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	logger.Info("shutting down: draining in-flight requests", "timeout", shutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	serr := srv.Shutdown(sctx)
	if err := <-served; !errors.Is(err, server.ErrServerClosed) {
		serr = errors.Join(serr, err)
	}
	if serr != nil {
		return fmt.Errorf("serve: shutdown: %w", serr)
	}
	logger.Info("shutdown complete")
	return nil
}
