// Package server runs a flume node: it opens the file log and the DB in a
// data directory, replicates (as a primary serving followers, or as a
// read-only follower of a primary) and serves the HTTP API with metrics.
// The role changes at runtime: Promote makes a follower the primary of a
// new epoch, Follow points a follower at another primary or demotes a
// primary.
//
// Its shape follows net/http: build a Server with New, hand it listeners
// with Serve (tests use 127.0.0.1:0), stop it with Shutdown (drain) or Close
// (immediate). After either, Serve returns ErrServerClosed.
//
// # HTTP API
//
//	POST /log           one JSON value → {"seq":N}; NDJSON (application/x-ndjson),
//	                    one value per line → {"first":N,"last":M}, one atomic batch.
//	                    400 invalid JSON (naming the line), 413 body too large,
//	                    421 on a follower ({"error","primary","primary_http"}), 503 sync
//	                    replication short of acks ({"error","acked","required",...}),
//	                    409 a sync append whose primary was deposed while it
//	                    waited ({"error":"deposed: now following ...",...}).
//	GET  /log/{seq}     the stored value (headers Flume-Seq, and Flume-Epoch: the
//	                    epoch it was written in); 404 if absent.
//	GET  /log?gt=&gte=&lt=&lte=&reverse=&limit=&live=
//	                    NDJSON lines {"seq":N,"value":V}, flushed as produced;
//	                    live=true keeps the response open for new entries.
//	GET  /status        role, node ID, log ID, epoch, since, chain hash, followers
//	                    or primary with lag, fencing and the epoch history's
//	                    last records.
//	POST /promote       {"force":bool,"peers":["http://..."]} on a follower →
//	                    {"epoch":E,"start":S,...}; 409 on a primary, on a log
//	                    without epochs, or when a peer is ahead ({"peer":...}).
//	POST /follow        {"primary":"HOST:PORT","primary_http":"http://..."} →
//	                    {"primary":...,"state":...,"demoted":bool}; 400 bad
//	                    address, 502 unreachable (nothing changed) or no
//	                    handshake in time, 409 refused by the handshake.
//	GET  /metrics       Prometheus text format.
//	GET  /healthz       200 while serving, 503 once shutting down.
//
// With a secret, every endpoint but /healthz requires
// "Authorization: Bearer <secret>" (401 otherwise).
package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/fork"
	"github.com/flume-go/flume/repl"
	"github.com/flume-go/flume/vfs"
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("server: closed")

// Server is one flume node. Build it with New.
type Server struct {
	cfg     Config
	logger  *slog.Logger
	db      *flume.DB
	ropts   repl.Options // for every Primary and Follower the node starts
	api     *api
	http    *http.Server
	metrics *metrics

	drainCtx context.Context
	drain    context.CancelFunc
	bgWG     sync.WaitGroup // background goroutines (catch-up progress); stop with drain
	connWG   sync.WaitGroup // replication connections handed to a Primary by serveRepl

	// changeMu serialises role changes (Promote, Follow) and teardown. It
	// is held for a whole change, never while waiting for a handshake, and
	// taken before mu.
	changeMu sync.Mutex
	// mu guards the current role, read by status, metrics and appends.
	mu struct {
		sync.Mutex
		primary     *repl.Primary  // the node serves replication; nil on a follower
		follower    *repl.Follower // the node follows a primary; nil on a primary
		primaryHTTP string         // the follower's primary's HTTP URL, when known
		demotions   uint64         // times the node stepped down from primary
		retired     repl.Stats     // counters of the Primaries and Followers closed so far
		replLns     []net.Listener // replication listeners given to Serve
		closed      bool           // teardown began: no more role changes or connections
	}

	teardownOnce sync.Once
	teardownErr  error
}

// New opens the data directory (taking its lock: a second server on the
// same directory fails with flume.ErrLocked), the DB, and replication: a
// Primary, or with cfg.Follow a Follower that starts connecting at once.
// Serve starts the listeners; Close releases everything New opened.
func New(cfg Config) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.PrimaryHTTP != "" {
		cfg.PrimaryHTTP, _ = normalizeURL(cfg.PrimaryHTTP) // validated
	}
	s := &Server{cfg: cfg, logger: cfg.Logger}
	var err error
	if cfg.NodeID == "" {
		if cfg.NodeID, err = loadNodeID(vfs.Default, cfg.DataDir); err != nil {
			return nil, err
		}
		s.cfg.NodeID = cfg.NodeID
	}

	// The metrics come first: the file log fsyncs (recovery, the interval
	// syncer) from the moment it opens, into the fsync histogram.
	s.metrics = newMetrics(cfg.Log == nil)
	l := cfg.Log
	if l == nil {
		l, err = openFileLog(filepath.Join(cfg.DataDir, "log"), cfg, s.metrics.observeFsync)
		if err != nil {
			return nil, fmt.Errorf("server: open log in %s: %w", cfg.DataDir, err)
		}
	}
	s.db, err = flume.Open(l, &flume.Options{SyncReplicas: cfg.SyncReplicas, SyncTimeout: cfg.SyncTimeout, Logger: cfg.Logger})
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("server: open DB: %w", err)
	}

	s.ropts = repl.Options{NodeID: cfg.NodeID, Secret: cfg.Secret, TLS: cfg.TLS, Heartbeat: cfg.Heartbeat,
		DeadAfter: cfg.DeadAfter, MinBackoff: cfg.MinBackoff, MaxBackoff: cfg.MaxBackoff, Logger: cfg.Logger}
	if cfg.AdvertiseHTTP != "" {
		s.ropts.AdvertiseHTTP, _ = normalizeURL(cfg.AdvertiseHTTP) // validated
	}
	if cfg.DataDir != "" && cfg.Log == nil {
		// A rejoin by a verified cut keeps what it cuts here (flume forked).
		s.ropts.ForkDir = fork.Dir(cfg.DataDir)
		// A fork file sealed by a cut that a crash then kept from happening
		// would list entries the log still holds: withdraw it.
		if gone, err := fork.Reconcile(vfs.Default, s.ropts.ForkDir, s.db.Log()); err != nil {
			s.db.Close()
			return nil, fmt.Errorf("server: reconcile %s: %w", s.ropts.ForkDir, err)
		} else if len(gone) > 0 {
			s.logger.Warn("withdrew fork files of cuts that did not happen", "files", gone)
		}
	}
	if cfg.Follow != "" {
		var f *repl.Follower
		f, err = repl.NewFollower(s.db, cfg.Follow, &s.ropts)
		s.setRole(nil, f, cfg.PrimaryHTTP, false)
	} else {
		var p *repl.Primary
		p, err = repl.NewPrimary(s.db, &s.ropts)
		s.setRole(p, nil, "", false)
	}
	if err != nil {
		s.db.Close()
		return nil, fmt.Errorf("server: start replication: %w", err)
	}

	s.drainCtx, s.drain = context.WithCancel(context.Background())
	s.metrics.collectState(s.db, s.replState, l)
	s.api = &api{db: s.db, secret: cfg.Secret, maxBody: cfg.MaxBodyBytes, logger: cfg.Logger,
		status: s.Status, metrics: s.metrics, drain: s.drainCtx, roles: s}
	s.http = &http.Server{
		Handler:           s.api.routes(),
		ReadHeaderTimeout: 10 * time.Second, // slowloris; bodies are bounded by MaxBodyBytes
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}
	s.bgWG.Add(1)
	go s.logCatchUp()
	since, hash := l.Head()
	s.logger.Info("flume node open", "node", cfg.NodeID, "role", s.role(), "log_id", l.ID().String(),
		"since", since, "hash", hash.Short(), "fsync", cfg.Fsync, "sync_replicas", cfg.SyncReplicas, "follow", cfg.Follow)
	return s, nil
}

// loadNodeID reads dir/node-id on fsys, creating it with a random ID on
// first start. The file is written with vfs.WriteFileAtomic (temp file,
// fsync, rename, directory fsync): an ID returned is durable, and a crash
// while creating it leaves no file (the next start draws a new ID, as
// nothing was announced under the lost one) or the whole ID.
func loadNodeID(fsys vfs.FS, dir string) (string, error) {
	if dir == "" {
		return "node-" + randomHex(6), nil
	}
	if err := fsys.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("server: create data directory: %w", err)
	}
	p := filepath.Join(dir, "node-id")
	b, err := vfs.ReadFile(fsys, p)
	if err == nil {
		if id := strings.TrimSpace(string(b)); id != "" {
			return id, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("server: read node ID: %w", err)
	}
	id := "node-" + randomHex(6)
	if err := vfs.WriteFileAtomic(fsys, p, []byte(id+"\n")); err != nil {
		return "", fmt.Errorf("server: write node ID: %w", err)
	}
	return id, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func (s *Server) role() string {
	if f, _ := s.db.Role(); f {
		return "follower"
	}
	return "primary"
}

// DB returns the server's DB.
func (s *Server) DB() *flume.DB { return s.db }

// NodeID returns the node's ID.
func (s *Server) NodeID() string { return s.cfg.NodeID }

// Handler returns the HTTP API handler (what Serve serves).
func (s *Server) Handler() http.Handler { return s.http.Handler }

// Status returns what GET /status reports.
func (s *Server) Status() Status {
	st := dbStatus(s.db)
	st.NodeID = s.cfg.NodeID
	st.Fsync = s.cfg.Fsync
	st.SyncReplicas = s.cfg.SyncReplicas
	st.ReplAddr = s.replAddr()
	rs := s.replState()
	if st.Role == "primary" {
		st.Followers = rs.followers
		if st.Followers == nil {
			st.Followers = []repl.FollowerStatus{}
		}
	}
	if u := rs.upstream; u != nil {
		st.Primary = &UpstreamStatus{UpstreamStatus: *u, AckedSeq: u.Since, HTTP: rs.primaryHTTP}
	}
	return st
}

// ReplStats returns the node's replication counters: those of its current
// Primary or Follower plus those of every one it closed in role changes.
func (s *Server) ReplStats() repl.Stats { return s.replState().stats }

// replState reads the current role's state. The Primary or Follower is
// read under mu and asked outside it (their locks come after ours).
func (s *Server) replState() replState {
	s.mu.Lock()
	p, f, rs := s.mu.primary, s.mu.follower, replState{stats: s.mu.retired, primaryHTTP: s.mu.primaryHTTP}
	s.mu.Unlock()
	switch {
	case p != nil:
		rs.followers = p.Followers()
		rs.stats = addStats(rs.stats, p.Stats())
	case f != nil:
		u := f.Status()
		rs.upstream = &u
		rs.stats = addStats(rs.stats, f.Stats())
	}
	return rs
}

// Serve serves the HTTP API on httpLn and replication on replLn, until
// Shutdown or Close (then it returns ErrServerClosed) or a listener fails
// (then it closes the server and returns that error). Either listener may
// be nil. replLn stays open whatever the role: a primary serves followers
// on it; a follower closes each connection at once (the peer retries) until
// it is promoted, and then serves on it with no restart. Serve closes the
// listeners it is given.
func (s *Server) Serve(httpLn, replLn net.Listener) error {
	if s.drainCtx.Err() != nil {
		for _, ln := range []net.Listener{httpLn, replLn} {
			if ln != nil {
				ln.Close()
			}
		}
		return ErrServerClosed
	}
	errc := make(chan error, 2)
	n := 0
	if replLn != nil {
		s.mu.Lock()
		closed := s.mu.closed
		if !closed {
			s.mu.replLns = append(s.mu.replLns, replLn)
		}
		s.mu.Unlock()
		if closed {
			replLn.Close()
		} else {
			n++
			s.logger.Info("serving replication", "addr", replLn.Addr().String(), "role", s.role())
			go func() { errc <- s.serveRepl(replLn) }()
		}
	}
	if httpLn != nil {
		n++
		if tc := s.cfg.HTTPTLS; tc != nil {
			s.logger.Info("serving HTTPS", "addr", httpLn.Addr().String())
			s.http.TLSConfig = tc.Clone()
			go func() { errc <- s.http.ServeTLS(httpLn, "", "") }()
		} else {
			s.logger.Info("serving HTTP", "addr", httpLn.Addr().String())
			go func() { errc <- s.http.Serve(httpLn) }()
		}
	}
	var first error
	for range n {
		err := <-errc
		if errors.Is(err, http.ErrServerClosed) || errors.Is(err, repl.ErrServerClosed) {
			err = ErrServerClosed
		}
		if first == nil {
			first = err
			if err != ErrServerClosed {
				s.logger.Error("listener failed; closing", "err", err)
				s.Close()
			}
		}
	}
	if first == nil {
		// Nothing to serve: wait for Shutdown or Close.
		<-s.drainCtx.Done()
		first = ErrServerClosed
	}
	return first
}

// ListenAndServe listens on cfg.HTTPAddr and, when set, cfg.ReplAddr (on
// a primary it defaults), and calls Serve.
func (s *Server) ListenAndServe() error {
	hl, err := net.Listen("tcp", s.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("server: listen HTTP: %w", err)
	}
	var rl net.Listener
	if s.cfg.ReplAddr != "" {
		if rl, err = net.Listen("tcp", s.cfg.ReplAddr); err != nil {
			hl.Close()
			return fmt.Errorf("server: listen replication: %w", err)
		}
	}
	return s.Serve(hl, rl)
}

// Shutdown stops the server gracefully: it ends live streams and stops
// accepting HTTP requests, waits for in-flight requests (appends, including
// their synchronous replication; role changes) to finish or ctx to end,
// then closes replication, flushes and closes the log. It returns ctx's error if the
// drain was cut short (the rest of the shutdown still happens).
func (s *Server) Shutdown(ctx context.Context) error {
	s.drain()
	err := s.http.Shutdown(ctx)
	if err != nil {
		s.http.Close()
	}
	return errors.Join(err, s.teardown())
}

// Close stops the server at once: open connections are closed, in-flight
// requests see errors. It is safe to call more than once (later calls
// return the first call's error) and concurrently with Shutdown.
func (s *Server) Close() error {
	s.drain()
	err := s.http.Close()
	return errors.Join(err, s.teardown())
}

func (s *Server) teardown() error {
	s.teardownOnce.Do(func() {
		s.bgWG.Wait()
		// After any role change under way; none starts after this.
		s.changeMu.Lock()
		defer s.changeMu.Unlock()
		s.mu.Lock()
		s.mu.closed = true
		p, f, lns := s.mu.primary, s.mu.follower, s.mu.replLns
		s.mu.Unlock()
		var errs []error
		for _, ln := range lns {
			ln.Close() // serveRepl returns; no connection is handed over any more
		}
		if p != nil {
			errs = append(errs, p.Close())
		}
		if f != nil {
			errs = append(errs, f.Close())
		}
		s.connWG.Wait()
		if err := s.db.Close(); err != nil {
			errs = append(errs, fmt.Errorf("server: close DB: %w", err))
		}
		s.teardownErr = errors.Join(errs...)
		s.logger.Info("flume node closed", "node", s.cfg.NodeID, "since", s.db.Since(), "err", s.teardownErr)
	})
	return s.teardownErr
}

// logCatchUp logs a follower's catch-up progress as a percentage, about
// once a second while it is behind, and once when it has caught up; on a
// primary it does nothing. It exits when the server drains.
func (s *Server) logCatchUp() {
	defer s.bgWG.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	catching := false
	lastSince, lastT := s.db.Since(), time.Now()
	for {
		select {
		case <-s.drainCtx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		f := s.mu.follower
		s.mu.Unlock()
		if f == nil {
			catching = false
			continue
		}
		u := f.Status()
		now := time.Now()
		switch {
		case u.PrimarySince >= 0 && u.LagEntries > 0 && u.Connected:
			pct := 100 * float64(u.Since+1) / float64(u.PrimarySince+1)
			rate := float64(u.Since-lastSince) / now.Sub(lastT).Seconds()
			s.logger.Info("follower catching up", "progress", fmt.Sprintf("%.1f%%", pct), "since", u.Since,
				"primary_since", u.PrimarySince, "behind", u.LagEntries, "entries_per_sec", int64(rate))
			catching = true
		case catching && u.Connected && u.LagEntries == 0:
			s.logger.Info("follower caught up", "progress", "100.0%", "since", u.Since)
			catching = false
		}
		lastSince, lastT = u.Since, now
	}
}
