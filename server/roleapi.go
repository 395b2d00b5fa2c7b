package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/flume-go/flume"
)

// maxRoleBody bounds the body of POST /promote and POST /follow.
const maxRoleBody = 64 << 10

// roleErrorBody is the error answer of POST /promote and POST /follow.
type roleErrorBody struct {
	Error string `json:"error"`
	// Peer is the URL of the peer that made a promotion refuse; Peers is
	// what every peer reported.
	Peer  string       `json:"peer,omitempty"`
	Peers []PeerReport `json:"peers,omitempty"`
	// Primary is the address a Follow switched to without a handshake
	// (the node follows it and retries); State its upstream state.
	Primary string `json:"primary,omitempty"`
	State   string `json:"state,omitempty"`
	Demoted bool   `json:"demoted,omitempty"`
}

// decodeRoleBody decodes a role-change request: one JSON object with no
// unknown fields (a misspelt "force" must not be ignored). An empty body is
// the zero request.
func decodeRoleBody(w http.ResponseWriter, r *http.Request, v any) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRoleBody))
	if err != nil {
		return fmt.Errorf("%w: reading the request body: %v", ErrBadRequest, err)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: request body: %v", ErrBadRequest, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: request body: more than one JSON value", ErrBadRequest)
	}
	return nil
}

func (a *api) promote(w http.ResponseWriter, r *http.Request) {
	var req PromoteRequest
	if err := decodeRoleBody(w, r, &req); err != nil {
		a.metrics.roleChange("promote", outcomeBadRequest)
		a.roleError(w, "promote", err)
		return
	}
	res, err := a.roles.Promote(r.Context(), req)
	if err != nil {
		a.roleError(w, "promote", err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (a *api) follow(w http.ResponseWriter, r *http.Request) {
	var req FollowRequest
	if err := decodeRoleBody(w, r, &req); err != nil {
		a.metrics.roleChange("follow", outcomeBadRequest)
		a.roleError(w, "follow", err)
		return
	}
	res, err := a.roles.Follow(r.Context(), req)
	if err != nil {
		a.roleError(w, "follow", err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// roleError answers a failed role change with the status its error calls
// for (see the errors in role.go).
func (a *api) roleError(w http.ResponseWriter, op string, err error) {
	body := roleErrorBody{Error: err.Error()}
	var pa *PeerAheadError
	var fe *FollowError
	if errors.As(err, &pa) {
		body.Peer, body.Peers = pa.Peer.URL, pa.Peers
	}
	if errors.As(err, &fe) {
		body.Primary, body.State, body.Demoted = fe.Primary, string(fe.State), fe.Demoted
	}
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrBadRequest):
		code = http.StatusBadRequest
	case errors.Is(err, ErrUnreachable), errors.Is(err, ErrNotReady):
		code = http.StatusBadGateway
	case errors.Is(err, ErrIsPrimary), errors.Is(err, flume.ErrNoEpochs), errors.Is(err, ErrPeerAhead),
		errors.Is(err, ErrReplaced), fe != nil:
		code = http.StatusConflict
	case errors.Is(err, ErrServerClosed), errors.Is(err, flume.ErrClosed):
		code, body.Error = http.StatusServiceUnavailable, "server is shutting down"
	case errors.Is(err, context.Canceled):
		code = http.StatusServiceUnavailable
	default:
		a.logger.Error(op+" failed", "err", err)
	}
	writeJSON(w, code, body)
}
