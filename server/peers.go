package server

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
)

// PeerReport is what one peer said when Promote asked for its /status.
type PeerReport struct {
	URL string `json:"url"`
	// Result is "ok" (not ahead of this node), "longer-log",
	// "higher-epoch", "live-primary" (a primary of this log still answers:
	// promoting now would make two), "unreachable" (no answer, or an error status: not
	// checked, does not block), "self" (this node) or "other-log" (a
	// different log ID: not compared).
	Result string `json:"result"`
	NodeID string `json:"node_id,omitempty"`
	Role   string `json:"role,omitempty"`
	Since  *int64 `json:"since,omitempty"`
	// Epoch is the highest epoch the peer reports: its epoch, its fenced
	// epoch, its history's last record.
	Epoch *uint64 `json:"epoch,omitempty"`
	Error string  `json:"error,omitempty"`
}

// Peer results.
const (
	PeerOK          = "ok"
	PeerLongerLog   = "longer-log"
	PeerHigherEpoch = "higher-epoch"
	PeerLivePrimary = "live-primary"
	PeerUnreachable = "unreachable"
	PeerSelf        = "self"
	PeerOtherLog    = "other-log"
)

// aheadOf returns why p blocks the promotion of a node at since whose
// highest epoch is epoch, or "" if it does not.
func (p PeerReport) aheadOf(since int64, epoch uint64) string {
	switch p.Result {
	case PeerLongerLog:
		return fmt.Sprintf("longer log (since %d > ours %d)", *p.Since, since)
	case PeerHigherEpoch:
		return fmt.Sprintf("higher epoch (%d > ours %d)", *p.Epoch, epoch)
	case PeerLivePrimary:
		return fmt.Sprintf("live primary (epoch %d): two primaries would take appends; demote it first (flume repoint on it) or use --force", *p.Epoch)
	}
	return ""
}

// normalizeURL adds http:// to a URL without a scheme and drops trailing
// slashes; it refuses anything but an http(s) URL with a host.
func normalizeURL(raw string) (string, error) {
	s := strings.TrimRight(strings.TrimSpace(raw), "/")
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("%q is not an http(s) URL", raw)
	}
	return s, nil
}

func normalizePeers(peers []string) ([]string, error) {
	var out []string
	for _, p := range peers {
		if strings.TrimSpace(p) == "" {
			continue
		}
		u, err := normalizeURL(p)
		if err != nil {
			return nil, fmt.Errorf("%w: peer %v", ErrBadRequest, err)
		}
		out = append(out, u)
	}
	return out, nil
}

// peerClient is the HTTP client Promote asks peers with: each request is
// bounded by Config.PeerTimeout; an https:// peer is verified against the
// node's replication CA (--tls-ca) when it has one, else the system roots.
func (s *Server) peerClient() *http.Client {
	hc := &http.Client{Timeout: s.cfg.PeerTimeout}
	if s.cfg.TLS != nil && s.cfg.TLS.RootCAs != nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: s.cfg.TLS.RootCAs}
		hc.Transport = tr
	}
	return hc
}

// checkPeers asks every peer for its /status at once, with the node's
// bearer token, and compares each with this node's status, which it
// returns too.
func (s *Server) checkPeers(ctx context.Context, urls []string) (reports []PeerReport, self Status) {
	reports = make([]PeerReport, len(urls))
	self = s.Status()
	if len(urls) == 0 {
		return reports, self
	}
	hc := s.peerClient()
	defer hc.CloseIdleConnections()
	var wg sync.WaitGroup
	for i, u := range urls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reports[i] = s.checkPeer(ctx, hc, u, self)
		}()
	}
	wg.Wait()
	return reports, self
}

func (s *Server) checkPeer(ctx context.Context, hc *http.Client, u string, self Status) PeerReport {
	r := PeerReport{URL: u, Result: PeerUnreachable}
	st, err := s.fetchStatus(ctx, hc, u)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	top, ours := st.highestEpoch(), self.highestEpoch()
	r.NodeID, r.Role, r.Since, r.Epoch = st.NodeID, st.Role, &st.LogSince, &top
	switch {
	case st.NodeID == self.NodeID:
		r.Result = PeerSelf
	case st.LogID != self.LogID:
		r.Result = PeerOtherLog
		r.Error = fmt.Sprintf("log ID %s, ours %s: not compared", st.LogID, self.LogID)
	case st.LogSince > self.LogSince: // held entries count: they may be acknowledged
		r.Result = PeerLongerLog
	case top > ours:
		r.Result = PeerHigherEpoch
	case st.Role == "primary":
		r.Result = PeerLivePrimary
	default:
		r.Result = PeerOK
	}
	return r
}

func (s *Server) fetchStatus(ctx context.Context, hc *http.Client, base string) (Status, error) {
	var st Status
	req, err := http.NewRequestWithContext(ctx, "GET", base+"/status", nil)
	if err != nil {
		return st, err
	}
	if len(s.cfg.Secret) > 0 {
		req.Header.Set("Authorization", "Bearer "+string(s.cfg.Secret))
	}
	resp, err := hc.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return st, fmt.Errorf("GET %s/status: %w", base, err)
	}
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("GET %s/status: %s: %s", base, resp.Status, strings.TrimSpace(string(b)))
	}
	if err := json.Unmarshal(b, &st); err != nil || st.NodeID == "" {
		return st, fmt.Errorf("GET %s/status: not a flume status (%v)", base, err)
	}
	return st, nil
}
