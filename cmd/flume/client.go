package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/flume-go/flume/server"
	"github.com/spf13/cobra"
)

// clientFlags are the flags of the commands that talk to a server.
type clientFlags struct {
	server     string
	secretFile string
	tlsCA      string
}

func (f *clientFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.server, "server", "http://127.0.0.1:7600", "URL of the flume server's HTTP API (env FLUME_SERVER)")
	cmd.Flags().StringVar(&f.secretFile, "secret-file", "", "file holding the server's bearer token (env FLUME_SECRET_FILE)")
	cmd.Flags().StringVar(&f.tlsCA, "tls-ca", "", "PEM CA that verifies an https:// server (default: the system roots)")
}

// client is a minimal client of the HTTP API.
type client struct {
	base   string
	secret string
	http   *http.Client
	// notes receives what the client does on its own (following a 421 to
	// the primary); nil: io.Discard.
	notes io.Writer
	// followed is set once a 421 was followed: the client follows one.
	followed bool
}

// client builds the client; notes receives what it does on its own
// (following a 421), normally stderr.
func (f *clientFlags) client(notes io.Writer) (*client, error) {
	secret, err := readSecret(f.secretFile)
	if err != nil {
		return nil, err
	}
	base := strings.TrimRight(f.server, "/")
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	hc := &http.Client{}
	if f.tlsCA != "" {
		// The CA that verifies a follower's primary verifies the server.
		tc, err := server.LoadTLS("", "", f.tlsCA)
		if err != nil {
			return nil, fmt.Errorf("--tls-ca: %w", err)
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = tc
		hc.Transport = tr
	}
	return &client{base: base, secret: string(secret), http: hc, notes: notes}, nil
}

// apiError is the error body of the HTTP API.
type apiError struct {
	Error       string `json:"error"`
	Primary     string `json:"primary"`
	PrimaryHTTP string `json:"primary_http"`
	Acked       *int   `json:"acked"`
	Required    int    `json:"required"`
	Peer        string `json:"peer"`
}

// do sends a request and returns the response if its status is 2xx, else
// an error built from the server's {"error": ...} body. A 421 from a
// follower that names its primary's HTTP URL (primary_http) is followed
// once: the request is sent there, the client keeps that server for its
// later requests, and says so on notes.
func (c *client) do(ctx context.Context, method, path, ctype string, body []byte) (*http.Response, error) {
	resp, err := c.send(ctx, method, path, ctype, body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var e apiError
	msg := strings.TrimSpace(string(b))
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		msg = e.Error
	}
	if resp.StatusCode == http.StatusMisdirectedRequest && e.PrimaryHTTP != "" && !c.followed {
		c.followed = true
		if c.notes != nil {
			fmt.Fprintf(c.notes, "flume: %s is a follower; retrying at its primary %s\n", c.base, e.PrimaryHTTP)
		}
		c.base = strings.TrimRight(e.PrimaryHTTP, "/")
		return c.do(ctx, method, path, ctype, body)
	}
	if e.Primary != "" && !strings.Contains(msg, e.Primary) {
		msg += " (primary: " + e.Primary + ")"
	}
	return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, msg)
}

// send sends one request.
func (c *client) send(ctx context.Context, method, path, ctype string, body []byte) (*http.Response, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, r)
	if err != nil {
		return nil, fmt.Errorf("bad server URL %q: %w", c.base, err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if c.secret != "" {
		req.Header.Set("Authorization", "Bearer "+c.secret)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, c.base+path, err)
	}
	return resp, nil
}

// postJSON posts v as JSON and decodes a 2xx answer into out.
func (c *client) postJSON(ctx context.Context, path string, v, out any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	resp, err := c.do(ctx, "POST", path, "application/json", b)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("POST %s: decode response: %w", path, err)
	}
	return nil
}

func (c *client) getJSON(ctx context.Context, path string, v any) error {
	resp, err := c.do(ctx, "GET", path, "", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("GET %s: decode response: %w", path, err)
	}
	return nil
}
