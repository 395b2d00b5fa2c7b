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
	// On a follower it applies once the node is promoted.
	SyncReplicas int
	// SyncTimeout bounds the wait for those acknowledgements. Default 5s
	// (flume.Options' default).
	SyncTimeout time.Duration

	// Follow, when set, makes this server a read-only follower of the
	// primary's replication address (host:port). The role can change at
	// runtime (Server.Promote, Server.Follow).
	Follow string
	// PrimaryHTTP is the HTTP API URL of the primary a follower follows,
	// when known: 421 answers name it (primary_http) so that clients can
	// retry there. A Follow replaces it with its request's. Without it, a
	// follower names the URL its primary advertised in the replication
	// handshake (AdvertiseHTTP), if any.
	PrimaryHTTP string
	// AdvertiseHTTP is this node's own HTTP API URL, which it advertises to
	// its followers in the replication handshake while it is a primary, so
	// that their 421 answers can name it. Empty: not advertised.
	AdvertiseHTTP string
	// HTTPAddr and ReplAddr are the addresses ListenAndServe listens on.
	// Defaults 127.0.0.1:7600 and, on a primary, 127.0.0.1:7601 (loopback:
	// exposing a database is an explicit decision). A follower listens for
	// replication only when ReplAddr is set: the default port is likely
	// its primary's on the same machine, and a follower without a
	// listener can still be promoted (its followers then need a restart).
	HTTPAddr, ReplAddr string

	// ReadyTimeout bounds how long Follow (POST /follow) waits for the
	// first handshake with the new primary, and the dial that checks it is
	// reachable. Default 5s: a few reconnect backoffs.
	ReadyTimeout time.Duration
	// PeerTimeout bounds each peer's GET /status asked by Promote. Default
	// 2s: a failover should not wait long on a dead node.
	PeerTimeout time.Duration

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
	DefaultReadyTimeout = 5 * time.Second
	DefaultPeerTimeout  = 2 * time.Second
)

func (c Config) withDefaults() Config {
	if c.HTTPAddr == "" {
		c.HTTPAddr = DefaultHTTPAddr
	}
	if c.ReplAddr == "" && c.Follow == "" {
		c.ReplAddr = DefaultReplAddr
	}
	if c.ReadyTimeout <= 0 {
		c.ReadyTimeout = DefaultReadyTimeout
	}
	if c.PeerTimeout <= 0 {
		c.PeerTimeout = DefaultPeerTimeout
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
	if c.Follow != "" {
		if _, _, err := net.SplitHostPort(c.Follow); err != nil {
			return fmt.Errorf("server: follow address %q: %w", c.Follow, err)
		}
	}
	if c.AdvertiseHTTP != "" {
		if _, err := normalizeURL(c.AdvertiseHTTP); err != nil {
			return fmt.Errorf("server: advertised HTTP URL: %w", err)
		}
	}
	if c.PrimaryHTTP != "" {
		if c.Follow == "" {
			return errors.New("server: a primary HTTP URL is for a follower (with a follow address)")
		}
		if _, err := normalizeURL(c.PrimaryHTTP); err != nil {
			return fmt.Errorf("server: primary HTTP URL: %w", err)
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
