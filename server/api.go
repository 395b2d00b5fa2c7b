package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/flume-go/flume"
)

// api serves the HTTP API over one DB. It is the part of a Server that tests
// can build over a memlog without replication.
type api struct {
	db      *flume.DB
	secret  []byte
	maxBody int64
	logger  *slog.Logger
	status  func() Status
	metrics *metrics
	// drain is canceled when the server starts shutting down: live streams
	// end and /healthz reports 503. nil: never.
	drain context.Context
	// roles changes and reports the node's replication role; nil: no
	// /promote or /follow.
	roles roleControl
}

// roleControl is the part of a Server the HTTP API changes roles through.
type roleControl interface {
	Promote(ctx context.Context, req PromoteRequest) (PromoteResult, error)
	Follow(ctx context.Context, req FollowRequest) (FollowResult, error)
	demotions() uint64
	upstreamHTTP() string
}

// NDJSONType is the content type of newline-delimited JSON, for batches in
// POST /log and the stream of GET /log.
const NDJSONType = "application/x-ndjson"

func (a *api) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /log", a.postLog)
	mux.HandleFunc("GET /log", a.streamLog)
	mux.HandleFunc("GET /log/{seq}", a.getLog)
	mux.HandleFunc("GET /status", a.getStatus)
	mux.HandleFunc("GET /healthz", a.healthz)
	if a.roles != nil {
		mux.HandleFunc("POST /promote", a.promote)
		mux.HandleFunc("POST /follow", a.follow)
	}
	if a.metrics != nil {
		mux.Handle("GET /metrics", a.metrics.handler())
	}
	return a.auth(mux)
}

// auth requires the bearer token on every path but /healthz when a secret
// is configured.
func (a *api) auth(next http.Handler) http.Handler {
	if len(a.secret) == 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			next.ServeHTTP(w, r)
			return
		}
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(tok), a.secret) != 1 {
			if a.metrics != nil {
				a.metrics.httpAuthFailures.Inc()
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="flume"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong bearer token")
			return
		}
		next.ServeHTTP(w, r)
	})
}

type errorBody struct {
	Error string `json:"error"`
	Line  int    `json:"line,omitempty"`
	// Primary is the replication address of the primary a follower
	// follows; PrimaryHTTP its HTTP API URL, when the follower knows it.
	Primary     string `json:"primary,omitempty"`
	PrimaryHTTP string `json:"primary_http,omitempty"`
	Acked       *int   `json:"acked,omitempty"`
	Required    int    `json:"required,omitempty"`
	First       *int64 `json:"first,omitempty"`
	Last        *int64 `json:"last,omitempty"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	b, _ := json.Marshal(v)
	w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, errorBody{Error: msg})
}

// appendResult is the body of a successful POST /log.
type appendResult struct {
	Seq   *int64 `json:"seq,omitempty"`
	First *int64 `json:"first,omitempty"`
	Last  *int64 `json:"last,omitempty"`
}

func (a *api) postLog(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.maxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body exceeds %d bytes", mbe.Limit))
			return
		}
		writeError(w, http.StatusBadRequest, "reading request body: "+err.Error())
		return
	}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	batch := ct == NDJSONType || ct == "application/jsonl" || ct == "application/x-jsonlines"

	var values [][]byte
	if batch {
		values, err = splitNDJSON(body)
		if err != nil {
			var le *lineError
			if errors.As(err, &le) {
				writeJSON(w, http.StatusBadRequest, errorBody{Error: le.Error(), Line: le.line})
			} else {
				writeError(w, http.StatusBadRequest, err.Error())
			}
			return
		}
		if len(values) == 0 {
			writeError(w, http.StatusBadRequest, "empty batch: no JSON values in the request body")
			return
		}
	} else {
		v, err := compactJSON(body)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, errorBody{Error: "invalid JSON: " + err.Error(), Line: 1})
			return
		}
		values = [][]byte{v}
	}

	var demotions uint64
	if a.roles != nil {
		demotions = a.roles.demotions()
	}
	start := time.Now()
	first, last, err := a.db.AppendBatch(r.Context(), values)
	// A sync append whose primary stepped down while it waited for acks
	// (POST /follow on a primary): its entries stay in this node's log but
	// the node no longer speaks for the group.
	deposed := err != nil && isNotReplicated(err) && a.roles != nil && a.roles.demotions() != demotions
	if a.metrics != nil {
		reason := errorReason(err)
		if deposed {
			reason = "deposed"
		}
		a.metrics.observeAppend(values, time.Since(start), err, reason)
	}
	if deposed {
		a.deposedError(w, err)
		return
	}
	if err != nil {
		a.appendError(w, err)
		return
	}
	if batch {
		writeJSON(w, http.StatusOK, appendResult{First: &first, Last: &last})
	} else {
		writeJSON(w, http.StatusOK, appendResult{Seq: &last})
	}
}

func (a *api) appendError(w http.ResponseWriter, err error) {
	var np *flume.NotPrimaryError
	var nr *flume.NotReplicatedError
	switch {
	case errors.As(err, &np):
		var primaryHTTP string
		if a.roles != nil {
			primaryHTTP = a.roles.upstreamHTTP()
		}
		writeJSON(w, http.StatusMisdirectedRequest, errorBody{Error: err.Error(), Primary: np.Primary, PrimaryHTTP: primaryHTTP})
	case errors.As(err, &nr):
		acked := nr.Acked
		writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: err.Error(), Acked: &acked,
			Required: nr.Required, First: &nr.First, Last: &nr.Last})
	case errors.Is(err, flume.ErrClosed):
		writeError(w, http.StatusServiceUnavailable, "server is shutting down")
	case errors.Is(err, context.Canceled):
		writeError(w, http.StatusServiceUnavailable, "request canceled")
	default:
		a.logger.Error("append failed", "err", err)
		writeError(w, http.StatusInternalServerError, err.Error())
	}
}

// deposedError answers a sync append that was waiting for acks when its
// primary stepped down: 409, naming the new primary. The entries are in
// this node's log, unacknowledged by the group, and may be lost.
func (a *api) deposedError(w http.ResponseWriter, err error) {
	var nr *flume.NotReplicatedError
	errors.As(err, &nr)
	_, primary := a.db.Role()
	msg := fmt.Sprintf("deposed: now following %s: this node stopped being the primary while the append waited for acknowledgements; seqs %d-%d are in its log but were acknowledged by %d of %d required followers and may be lost",
		primary, nr.First, nr.Last, nr.Acked, nr.Required)
	acked := nr.Acked
	writeJSON(w, http.StatusConflict, errorBody{Error: msg, Primary: primary, PrimaryHTTP: a.roles.upstreamHTTP(),
		Acked: &acked, Required: nr.Required, First: &nr.First, Last: &nr.Last})
}

// lineError names the line of an NDJSON body that is not valid JSON.
type lineError struct {
	line int
	err  error
}

func (e *lineError) Error() string { return fmt.Sprintf("line %d: invalid JSON: %v", e.line, e.err) }

// splitNDJSON returns one compacted JSON value per non-blank line.
func splitNDJSON(body []byte) ([][]byte, error) {
	var values [][]byte
	for n := 1; len(body) > 0; n++ {
		line := body
		if i := bytes.IndexByte(body, '\n'); i >= 0 {
			line, body = body[:i], body[i+1:]
		} else {
			body = nil
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		v, err := compactJSON(line)
		if err != nil {
			return nil, &lineError{line: n, err: err}
		}
		values = append(values, v)
	}
	return values, nil
}

// compactJSON validates that b holds exactly one JSON value and returns it
// without insignificant whitespace, so that stored values fit on one NDJSON
// line.
func compactJSON(b []byte) ([]byte, error) {
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, errors.New("empty value")
	}
	var buf bytes.Buffer
	buf.Grow(len(b))
	if err := json.Compact(&buf, b); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func (a *api) getLog(w http.ResponseWriter, r *http.Request) {
	seq, err := strconv.ParseInt(r.PathValue("seq"), 10, 64)
	if err != nil || seq < 0 {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("bad seq %q: want a non-negative integer", r.PathValue("seq")))
		return
	}
	// Checked against the DB's published since as DB.Get does, then read
	// as a whole entry for its epoch (the Flume-Epoch header).
	var e flume.Entry
	since := a.db.Since()
	if seq > since {
		err = fmt.Errorf("flume: get %d (since %d): %w", seq, since, flume.ErrNotFound)
	} else {
		e, err = a.db.Log().Entry(seq)
	}
	v := e.Data
	switch {
	case errors.Is(err, flume.ErrNotFound):
		writeError(w, http.StatusNotFound, fmt.Sprintf("seq %d not found (since %d)", seq, a.db.Since()))
		return
	case errors.Is(err, flume.ErrClosed):
		writeError(w, http.StatusServiceUnavailable, "server is shutting down")
		return
	case err != nil:
		a.logger.Error("get failed", "seq", seq, "err", err)
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	if validJSON(v) {
		w.Header().Set("Content-Type", "application/json")
	} else {
		w.Header().Set("Content-Type", "application/octet-stream")
	}
	w.Header().Set("Flume-Seq", strconv.FormatInt(seq, 10))
	w.Header().Set("Flume-Epoch", strconv.FormatUint(e.Epoch, 10))
	w.Write(v)
}

func parseStreamOptions(q map[string][]string) (flume.StreamOptions, error) {
	var o flume.StreamOptions
	get := func(k string) (string, bool) {
		v, ok := q[k]
		if !ok || len(v) == 0 {
			return "", false
		}
		return v[len(v)-1], true
	}
	for _, b := range []struct {
		name string
		dst  **int64
	}{{"gt", &o.Gt}, {"gte", &o.Gte}, {"lt", &o.Lt}, {"lte", &o.Lte}} {
		if s, ok := get(b.name); ok {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return o, fmt.Errorf("bad %s=%q: want an integer", b.name, s)
			}
			*b.dst = flume.At(n)
		}
	}
	for _, b := range []struct {
		name string
		dst  *bool
	}{{"reverse", &o.Reverse}, {"live", &o.Live}} {
		if s, ok := get(b.name); ok {
			if s == "" { // ?live is live=true
				*b.dst = true
				continue
			}
			v, err := strconv.ParseBool(s)
			if err != nil {
				return o, fmt.Errorf("bad %s=%q: want true or false", b.name, s)
			}
			*b.dst = v
		}
	}
	if s, ok := get("limit"); ok {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return o, fmt.Errorf("bad limit=%q: want a non-negative integer", s)
		}
		o.Limit = n
	}
	if o.Reverse && o.Live {
		return o, errors.New("reverse and live cannot be combined")
	}
	// Keep gt+1 and lt-1 from overflowing (gt=MaxInt64 must select nothing,
	// not wrap around to everything).
	if o.Gt != nil && *o.Gt == math.MaxInt64 {
		o.Gt = flume.At(math.MaxInt64 - 1)
	}
	if o.Lt != nil && *o.Lt == math.MinInt64 {
		o.Lt = flume.At(math.MinInt64 + 1)
	}
	return o, nil
}

// streamLog writes the selected entries as NDJSON. Output is buffered and
// flushed whenever the stream has caught up with the log (so a live client
// sees each entry as it arrives) or the buffer fills.
func (a *api) streamLog(w http.ResponseWriter, r *http.Request) {
	opts, err := parseStreamOptions(r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	if a.drain != nil {
		stop := context.AfterFunc(a.drain, cancel)
		defer stop()
	}
	s := a.db.Stream(ctx, opts)
	defer s.Close()

	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", NDJSONType)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriterSize(w, 64<<10)
	flush := func() error {
		if err := bw.Flush(); err != nil {
			return err
		}
		if err := rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return err
		}
		return nil
	}
	if err := flush(); err != nil { // send headers now: a live client knows it is connected
		return
	}
	var line []byte
	for {
		if opts.Live && bw.Buffered() > 0 {
			// Flush before Next may block waiting for a new entry.
			if since := a.db.Since(); s.Entry().Seq >= since {
				if err := flush(); err != nil {
					return
				}
			}
		}
		if !s.Next() {
			break
		}
		e := s.Entry()
		line = appendStreamLine(line[:0], e)
		if _, err := bw.Write(line); err != nil {
			return
		}
	}
	if err := s.Err(); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, flume.ErrClosed) {
		// The status line is gone; report the error as a final line.
		a.logger.Error("stream failed", "err", err)
		b, _ := json.Marshal(errorBody{Error: err.Error()})
		bw.Write(append(b, '\n'))
	}
	flush()
}

// appendStreamLine appends e as one line of GET /log:
// {"seq":N,"value":V}. Values stored through the HTTP API are JSON; an
// entry that is not JSON (appended through the library) is carried as
// {"seq":N,"data":"<base64>"}.
func appendStreamLine(dst []byte, e flume.Entry) []byte {
	dst = append(dst, `{"seq":`...)
	dst = strconv.AppendInt(dst, e.Seq, 10)
	if validJSON(e.Data) {
		dst = append(dst, `,"value":`...)
		if bytes.IndexByte(e.Data, '\n') < 0 {
			dst = append(dst, e.Data...)
		} else { // written through the library with newlines: one line for NDJSON
			b := bytes.NewBuffer(dst)
			json.Compact(b, e.Data)
			dst = b.Bytes()
		}
	} else {
		dst = append(dst, `,"data":"`...)
		dst = base64.StdEncoding.AppendEncode(dst, e.Data)
		dst = append(dst, '"')
	}
	return append(dst, "}\n"...)
}

func (a *api) getStatus(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, a.status())
}

func (a *api) healthz(w http.ResponseWriter, r *http.Request) {
	if a.drain != nil && a.drain.Err() != nil {
		writeError(w, http.StatusServiceUnavailable, "shutting down")
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, "ok\n")
}

func isNotPrimary(err error) bool    { return errors.Is(err, flume.ErrNotPrimary) }
func isNotReplicated(err error) bool { return errors.Is(err, flume.ErrNotReplicated) }
