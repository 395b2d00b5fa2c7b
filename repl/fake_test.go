package repl

import (
	"net"
	"testing"
	"time"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/frame"
)

// rawPeer speaks the protocol by hand, for tests that misbehave on purpose.
type rawPeer struct {
	t *testing.T
	w *wire
}

func newRawPeer(t *testing.T, c net.Conn) *rawPeer {
	t.Cleanup(func() { c.Close() })
	return &rawPeer{t: t, w: newWire(c, 5*time.Second)}
}

func (r *rawPeer) send(b []byte) error {
	r.w.out = append(r.w.out, b...)
	return r.w.flush()
}

func (r *rawPeer) read() (MsgType, []byte, error) {
	r.w.mr.max = maxMessage
	return r.w.read(nil)
}

// followerHandshake runs the follower side of auth and Hello against a real
// Primary and returns the primary's Hello and the Accept or error.
func (r *rawPeer) followerHandshake(secret []byte, h Hello) (Hello, *accept, error) {
	r.t.Helper()
	return r.followerHandshakeNoT(secret, h)
}

func (r *rawPeer) followerHandshakeNoT(secret []byte, h Hello) (Hello, *accept, error) {
	nonce := randomNonce()
	out := appendPreamble(nil, Version)
	out = appendAuthInit(out, authInit{HasSecret: len(secret) > 0, Nonce: nonce})
	if err := r.send(out); err != nil {
		return Hello{}, nil, err
	}
	if _, err := r.w.mr.readPreamble(); err != nil {
		return Hello{}, nil, err
	}
	typ, body, err := r.read()
	if err != nil {
		return Hello{}, nil, err
	}
	if typ == MsgError {
		m, _ := decodeError(body)
		return Hello{}, nil, peerError(m)
	}
	ch, err := decodeAuthChallenge(body)
	if err != nil {
		return Hello{}, nil, err
	}
	var proof authProof
	if len(secret) > 0 {
		proof.Proof = authMAC(secret, RoleFollower, nonce, ch.Nonce)
	}
	h.Version, h.Role = Version, RoleFollower
	out = appendAuthProof(nil, proof)
	out = appendHello(out, h)
	if err := r.send(out); err != nil {
		return Hello{}, nil, err
	}
	typ, body, err = r.read()
	if err != nil {
		return Hello{}, nil, err
	}
	if typ == MsgError {
		m, _ := decodeError(body)
		return Hello{}, nil, peerError(m)
	}
	ph, err := decodeHello(body)
	if err != nil {
		return Hello{}, nil, err
	}
	typ, body, err = r.read()
	if err != nil {
		return ph, nil, err
	}
	if typ == MsgError {
		m, _ := decodeError(body)
		return ph, nil, peerError(m)
	}
	a, err := decodeAccept(body)
	return ph, &a, err
}

// primaryHandshake runs the primary side against a real Follower and
// accepts it from its since+1, claiming primarySince.
func (r *rawPeer) primaryHandshake(h Hello) (Hello, error) {
	r.t.Helper()
	return r.primaryHandshakeNoT(h)
}

func (r *rawPeer) primaryHandshakeNoT(h Hello) (Hello, error) {
	if _, err := r.w.mr.readPreamble(); err != nil {
		return Hello{}, err
	}
	_, body, err := r.read()
	if err != nil {
		return Hello{}, err
	}
	if _, err := decodeAuthInit(body); err != nil {
		return Hello{}, err
	}
	out := appendPreamble(nil, Version)
	out = appendAuthChallenge(out, authChallenge{Nonce: randomNonce()})
	if err := r.send(out); err != nil {
		return Hello{}, err
	}
	if _, _, err := r.read(); err != nil { // proof
		return Hello{}, err
	}
	_, body, err = r.read()
	if err != nil {
		return Hello{}, err
	}
	fh, err := decodeHello(body)
	if err != nil {
		return Hello{}, err
	}
	h.Version, h.Role = Version, RolePrimary
	out = appendHello(nil, h)
	out = appendAccept(out, accept{From: fh.Since + 1})
	return fh, r.send(out)
}

// fakePrimary listens on loopback and hands each connection to serve.
func fakePrimary(t *testing.T, serve func(c net.Conn)) string {
	ln := listen(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			serve(c)
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

// frames encodes entries seq from..to of a fresh chain for id.
func chainEntries(id flume.LogID, prev flume.Hash, from int64, data ...string) []flume.Entry {
	var es []flume.Entry
	for i, d := range data {
		seq := from + int64(i)
		prev = flume.ChainHash(prev, seq, 0, []byte(d))
		es = append(es, flume.Entry{Seq: seq, Hash: prev, Data: []byte(d)})
	}
	return es
}

func batchMsg(primarySince int64, es []flume.Entry) []byte {
	b, s := appendBatchHeader(nil, primarySince, es[0].Seq)
	for _, e := range es {
		b = frame.Append(b, e)
	}
	return finishBatch(b, s, uint32(len(es)))
}
