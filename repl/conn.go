package repl

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// wire is one replication connection with its read and write buffers.
type wire struct {
	c         net.Conn
	mr        *msgReader
	out       []byte
	deadAfter time.Duration

	dl struct {
		sync.Mutex
		stopped bool      // reads were stopped; never extend the deadline again
		set     time.Time // when the read deadline was last set
	}
}

func newWire(c net.Conn, deadAfter time.Duration) *wire {
	return &wire{c: c, mr: newMsgReader(c, 64<<10), deadAfter: deadAfter}
}

// flush writes the buffered messages.
func (w *wire) flush() error {
	if len(w.out) == 0 {
		return nil
	}
	w.dl.Lock()
	if !w.dl.stopped { // after stopReads, writes fail at once
		w.c.SetWriteDeadline(time.Now().Add(w.deadAfter))
	}
	w.dl.Unlock()
	_, err := w.c.Write(w.out)
	w.out = w.out[:0]
	if err != nil {
		return fmt.Errorf("repl: write: %w", err)
	}
	return nil
}

// refreshRead pushes the read deadline to now+deadAfter, at most every
// deadAfter/8 (so a dead peer is noticed within deadAfter).
func (w *wire) refreshRead() {
	now := time.Now()
	w.dl.Lock()
	defer w.dl.Unlock()
	if w.dl.stopped || now.Sub(w.dl.set) < w.deadAfter/8 {
		return
	}
	w.dl.set = now
	w.c.SetReadDeadline(now.Add(w.deadAfter))
}

// clearDeadlines removes the handshake's deadlines; the next read sets a
// fresh read deadline.
func (w *wire) clearDeadlines() {
	w.dl.Lock()
	defer w.dl.Unlock()
	if !w.dl.stopped {
		w.c.SetDeadline(time.Time{})
		w.dl.set = time.Time{}
	}
}

// stopReads makes pending and future reads and writes fail at once (a
// writer blocked on a peer that does not read is released too). Only
// sendError writes after it.
func (w *wire) stopReads() {
	w.dl.Lock()
	defer w.dl.Unlock()
	w.dl.stopped = true
	w.c.SetDeadline(time.Unix(1, 0))
}

// read reads one message into buf (reused when large enough).
func (w *wire) read(buf []byte) (MsgType, []byte, error) {
	w.refreshRead()
	t, body, err := w.mr.next(buf)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			w.dl.Lock()
			stopped := w.dl.stopped
			w.dl.Unlock()
			if !stopped {
				return 0, body, fmt.Errorf("%w: silent for %v: %w", errPeerDead, w.deadAfter, err)
			}
		}
	}
	return t, body, err
}

// errPeerDead marks a connection dropped because the peer sent nothing for
// DeadAfter. The peer is told (CodeDead) in case only one direction died.
var errPeerDead = errors.New("repl: peer considered dead")

// sendCause tells the peer, best-effort, why this side ends the connection:
// a protocol violation it found (not one the peer reported), or the peer's
// silence. Other causes (shutdown, network errors) are not sent.
func (w *wire) sendCause(err error) {
	var pe *ProtocolError
	switch {
	case errors.As(err, &pe) && !pe.FromPeer:
		w.sendError(errorMsg{Code: pe.Code, Message: err.Error()})
	case errors.Is(err, errPeerDead):
		w.sendError(errorMsg{Code: CodeDead, Message: err.Error()})
	}
}

// sendError sends an Error message best-effort, with a short deadline.
func (w *wire) sendError(m errorMsg) {
	w.out = appendError(w.out[:0], m)
	w.c.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	w.c.Write(w.out)
	w.out = w.out[:0]
}

// msgReader reads messages from a buffered stream.
type msgReader struct {
	br  *bufio.Reader
	max int // current bound on a message's length
	hdr [5]byte
}

func newMsgReader(r io.Reader, size int) *msgReader {
	return &msgReader{br: bufio.NewReaderSize(r, size), max: maxPreAuthMessage}
}

// readPreamble reads and checks the peer's preamble.
func (mr *msgReader) readPreamble() (uint16, error) {
	var b [preambleSize]byte
	if _, err := io.ReadFull(mr.br, b[:]); err != nil {
		return 0, readErr("preamble", err)
	}
	return decodePreamble(b[:])
}

// next reads one message. buf is reused for the body when large enough;
// the returned body aliases it.
func (mr *msgReader) next(buf []byte) (MsgType, []byte, error) {
	if _, err := io.ReadFull(mr.br, mr.hdr[:]); err != nil {
		return 0, buf, readErr("message header", err)
	}
	n := binary.LittleEndian.Uint32(mr.hdr[:4])
	t := MsgType(mr.hdr[4])
	if n < 1 {
		return 0, buf, protoErr("message length 0")
	}
	if int64(n) > int64(mr.max) {
		return 0, buf, protoErr("%s message of %d bytes exceeds the limit of %d", t, n, mr.max)
	}
	body := int(n) - 1
	if cap(buf) < body {
		buf = make([]byte, body)
	}
	buf = buf[:body]
	if _, err := io.ReadFull(mr.br, buf); err != nil {
		return 0, buf, readErr(t.String()+" message", err)
	}
	return t, buf, nil
}

// readErr turns a read failure into a protocol error when the stream was
// cut inside a message, and keeps network errors as they are.
func readErr(what string, err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return &ProtocolError{Code: CodeProtocol, Reason: what + " cut short (truncated)", Err: io.ErrUnexpectedEOF}
	}
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("repl: connection closed by peer while reading %s: %w", what, err)
	}
	return fmt.Errorf("repl: reading %s: %w", what, err)
}

// tlsHandshake wraps conn in TLS with cfg (as the server when server is
// true) and completes the handshake within timeout or until ctx ends. A conn
// that already is a *tls.Conn is returned as it is. On failure the caller
// still owns (and closes) conn; the error is TLS's own, for the caller to
// classify (authentication failure, shutdown).
func tlsHandshake(ctx context.Context, conn net.Conn, cfg *tls.Config, server bool, timeout time.Duration) (net.Conn, error) {
	if _, ok := conn.(*tls.Conn); ok {
		return conn, nil
	}
	var tc *tls.Conn
	if server {
		tc = tls.Server(conn, cfg)
	} else {
		tc = tls.Client(conn, cfg)
	}
	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		return nil, err
	}
	return tc, nil
}

// errUnexpected marks a message of another type than the one expected.
var errUnexpected = errors.New("unexpected message")

// expect reads one message into buf and returns its body if it has type
// want. An Error message from the peer comes back as the matching local
// error (peerError) with fromPeer set; a message of any other type is a
// *ProtocolError wrapping errUnexpected; read failures are returned as they
// are. Every handshake step of both sides reads through it.
func (w *wire) expect(buf []byte, want MsgType) (body []byte, fromPeer bool, err error) {
	t, body, err := w.read(buf)
	if err != nil {
		return body, false, err
	}
	if t == MsgError && want != MsgError {
		m, err := decodeError(body)
		if err != nil {
			return body, false, err
		}
		return body, true, peerError(m)
	}
	if t != want {
		return body, false, &ProtocolError{Code: CodeProtocol, Reason: fmt.Sprintf("expected %s, got %s", want, t), Err: errUnexpected}
	}
	return body, false, nil
}
