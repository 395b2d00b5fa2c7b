package server

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/flume-go/flume"
)

// Config configures a Server. The zero value is not usable: DataDir (or Log)
// is required. Fields left zero take the defaults documented on them.
type Config struct {
	// DataDir is the server's data directory. The log lives in DataDir/log
	// (a filelog directory); the node ID in DataDir/node-id.
	DataDir string
	// Log, when set, is used instead of opening a file log in DataDir (tests
	// use a memlog). The Server closes it.
	Log flume.Log

	// NodeID names this node in replication and /status. Default: read from
	// DataDir/node-id, created at random on first start, so that a node keeps
	// its name across restarts.
	NodeID string

	// Fsync is the file log's fsync policy: "always" (default: safe first,
	// fast through group commit), "interval" or "never".
	Fsync string
	// FsyncInterval is the flush period for Fsync "interval". Default: the
	// file log's own default.
	FsyncInterval time.Duration

	// SyncReplicas is the number of followers that must acknowledge an
	// append before it is reported successful; 0 (default) is asynchronous.
	SyncReplicas int
	// SyncTimeout bounds the wait for those acknowledgements. Default 5s
	// (flume.Options' default).
	SyncTimeout time.Duration

	// Follow, when set, makes this server a read-only follower of the
	// primary's replication address (host:port).
	Follow string
	// HTTPAddr and ReplAddr are the addresses ListenAndServe listens on.
	// Defaults 127.0.0.1:7600 and 127.0.0.1:7601 (loopback: exposing a
	// database is an explicit decision).
	HTTPAddr, ReplAddr string

	// Secret is the shared secret for replication (challenge-response) and
	// the bearer token of the HTTP API. Empty: no authentication.
	Secret []byte
	// TLS secures replication connections (both listener and dialer), see
	// LoadTLS. nil: plain TCP.
	TLS *tls.Config
	// HTTPTLS serves the HTTP API over HTTPS with this configuration (its
	// Certificates are the server's; see HTTPTLSConfig). nil: plain HTTP.
	// Clients authenticate with the bearer token either way.
	HTTPTLS *tls.Config

	// MaxBodyBytes bounds the body of POST /log. Default 32 MiB.
	MaxBodyBytes int64
	// Heartbeat and DeadAfter tune replication liveness; zero takes repl's
	// defaults.
	Heartbeat, DeadAfter time.Duration
	// MinBackoff and MaxBackoff bound a follower's reconnect delay; zero
	// takes repl's defaults.
	MinBackoff, MaxBackoff time.Duration

	// Logger receives the server's events. Default: discard.
	Logger *slog.Logger
}

// Defaults.
const (
	DefaultHTTPAddr     = "127.0.0.1:7600"
	DefaultReplAddr     = "127.0.0.1:7601"
	DefaultMaxBodyBytes = 32 << 20 // large NDJSON batches, small enough to bound memory per request
)

func (c Config) withDefaults() Config {
	if c.HTTPAddr == "" {
		c.HTTPAddr = DefaultHTTPAddr
	}
	if c.ReplAddr == "" {
		c.ReplAddr = DefaultReplAddr
	}
	if c.Fsync == "" {
		c.Fsync = "always"
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c Config) validate() error {
	if c.DataDir == "" && c.Log == nil {
		return errors.New("server: a data directory is required")
	}
	if c.SyncReplicas < 0 {
		return fmt.Errorf("server: sync replicas must be >= 0, got %d", c.SyncReplicas)
	}
	if c.Follow != "" && c.SyncReplicas > 0 {
		return errors.New("server: sync replicas apply to a primary; a follower cannot have them")
	}
	if c.Follow != "" {
		if _, _, err := net.SplitHostPort(c.Follow); err != nil {
			return fmt.Errorf("server: follow address %q: %w", c.Follow, err)
		}
	}
	return nil
}

// HTTPTLSConfig derives the HTTP API's TLS configuration from a replication
// configuration made by LoadTLS: the same certificate, but no client
// certificates required (HTTP clients authenticate with the bearer token).
// It returns nil if repl is nil or has no certificate.
func HTTPTLSConfig(repl *tls.Config) *tls.Config {
	if repl == nil || len(repl.Certificates) == 0 {
		return nil
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: repl.Certificates}
}

// LoadTLS builds the TLS configuration for replication from PEM files.
// certFile/keyFile are this node's certificate (served by a primary,
// presented as a client certificate by a follower); caFile, when set, is the
// CA that verifies the peer: a primary then requires and verifies client
// certificates, a follower verifies the primary against it instead of the
// system roots. All three empty returns nil (no TLS).
func LoadTLS(certFile, keyFile, caFile string) (*tls.Config, error) {
	if certFile == "" && keyFile == "" && caFile == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("server: --tls-cert and --tls-key go together")
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("server: load TLS key pair: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("server: read TLS CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("server: no certificates in %s", caFile)
		}
		cfg.RootCAs = pool
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}
