package repl

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"testing"
	"testing/iotest"

	"github.com/flume-go/flume"
)

// sampleMessages returns one encoded message of every type and its decoded
// value.
func sampleMessages() []struct {
	t   MsgType
	enc []byte
	val any
} {
	id := flume.LogID{1, 2, 3}
	pos := Position{LogID: id, Epoch: 3, Since: 41, Hash: flume.Hash{9}}
	es := chainEntries(id, flume.GenesisHash(id), 0, "a", "bb", "")
	bm := batchMsg(5, es)
	var b batch
	b.PrimarySince, b.First, b.Count = 5, 0, 3
	b.Frames = bm[5+batchHeaderSize:]
	hello := Hello{Version: Version, Role: RoleFollower, NodeID: "n1", LogID: id, Epoch: 3, Since: 41, Hash: flume.Hash{9}}
	hello3 := Hello{Version: Version, Role: RolePrimary, NodeID: "p", LogID: id, Epoch: 2, Since: 50, Hash: flume.Hash{7},
		FencedEpoch: 2, CommittedHint: 48, Unclean: true, HTTP: "http://10.0.0.1:7600",
		Epochs: []flume.EpochRecord{{Epoch: 1, Start: 10, Prev: flume.Hash{1}, Promotion: flume.PromotionID{2}, When: 99, Promoter: 7},
			{Epoch: 2, Start: 30, Prev: flume.Hash{3}, Promotion: flume.PromotionID{4}, When: 100, Promoter: 8}}}
	tr := truncate{To: 29, Hash: flume.Hash{5}, PrimaryEpoch: 2}
	ai := authInit{HasSecret: true, Nonce: randomNonce()}
	ac := authChallenge{HasSecret: true, Nonce: randomNonce(), Proof: randomNonce()}
	ap := authProof{Proof: randomNonce()}
	em := errorMsg{Code: CodeDiverged, Sender: pos, Receiver: Position{Since: -1}, Message: "no"}
	return []struct {
		t   MsgType
		enc []byte
		val any
	}{
		{MsgAuthInit, appendAuthInit(nil, ai), ai},
		{MsgAuthChallenge, appendAuthChallenge(nil, ac), ac},
		{MsgAuthProof, appendAuthProof(nil, ap), ap},
		{MsgHello, appendHello(nil, hello), hello},
		{MsgHello, appendHello(nil, hello3), hello3},
		{MsgTruncate, appendTruncate(nil, tr), tr},
		{MsgAccept, appendAccept(nil, accept{From: 42}), accept{From: 42}},
		{MsgError, appendError(nil, em), em},
		{MsgEntries, bm, b},
		{MsgAck, appendAck(nil, ack{Durable: 3, Received: 7}), ack{Durable: 3, Received: 7}},
		{MsgHeartbeat, appendHeartbeat(nil, heartbeat{Since: -1, UnixNano: 12345, Through: 7, Committed: 5}), heartbeat{Since: -1, UnixNano: 12345, Through: 7, Committed: 5}},
	}
}

func TestMessageRoundTrip(t *testing.T) {
	for _, m := range sampleMessages() {
		t.Run(m.t.String(), func(t *testing.T) {
			mr := newMsgReader(bytes.NewReader(m.enc), 16)
			mr.max = maxMessage
			typ, body, err := mr.next(nil)
			if err != nil || typ != m.t {
				t.Fatalf("next: %v %v, want %v", typ, err, m.t)
			}
			got, err := decodeMessage(typ, body)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, m.val) {
				t.Fatalf("got %+v, want %+v", got, m.val)
			}
			// Every proper prefix of the body is an error, never a panic.
			for i := 0; i < len(body); i++ {
				if _, err := decodeMessage(typ, body[:i]); err == nil && m.t != MsgError {
					t.Fatalf("prefix of %d bytes decoded without error", i)
				}
			}
		})
	}
}

// TestReadMessageTornAndSlowReaders reads a stream of every message through
// readers that return one byte at a time, half reads, or cut the stream.
func TestReadMessageTornAndSlowReaders(t *testing.T) {
	var stream []byte
	stream = appendPreamble(stream, Version)
	msgs := sampleMessages()
	for _, m := range msgs {
		stream = append(stream, m.enc...)
	}
	for name, wrap := range map[string]func(io.Reader) io.Reader{
		"onebyte": iotest.OneByteReader, "half": iotest.HalfReader, "dataerr": iotest.DataErrReader,
	} {
		t.Run(name, func(t *testing.T) {
			mr := newMsgReader(wrap(bytes.NewReader(stream)), 16)
			if v, err := mr.readPreamble(); err != nil || v != Version {
				t.Fatalf("preamble: %v %v", v, err)
			}
			mr.max = maxMessage
			for _, m := range msgs {
				typ, body, err := mr.next(nil)
				if err != nil || typ != m.t {
					t.Fatalf("got %v %v, want %v", typ, err, m.t)
				}
				if _, err := decodeMessage(typ, body); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
	// Cut at every offset: a truncated message is a ProtocolError, a cut
	// exactly between messages is a clean EOF.
	for cut := preambleSize; cut < len(stream); cut++ {
		mr := newMsgReader(bytes.NewReader(stream[:cut]), 16)
		mr.readPreamble()
		mr.max = maxMessage
		var err error
		for err == nil {
			_, _, err = mr.next(nil)
		}
		var pe *ProtocolError
		if !errors.As(err, &pe) && !errors.Is(err, io.EOF) {
			t.Fatalf("cut at %d: %v", cut, err)
		}
	}
}

func TestReadMessageLimits(t *testing.T) {
	huge := binary.LittleEndian.AppendUint32(nil, 1<<30)
	huge = append(huge, byte(MsgEntries))
	mr := newMsgReader(bytes.NewReader(huge), 16)
	if _, _, err := mr.next(nil); err == nil {
		t.Fatal("a 1 GiB message before auth was accepted")
	}
	mr = newMsgReader(bytes.NewReader(append(binary.LittleEndian.AppendUint32(nil, maxPreAuthMessage+1), 4)), 16)
	if _, _, err := mr.next(nil); err == nil {
		t.Fatal("a message over the pre-auth limit was accepted")
	}
	if _, err := decodePreamble([]byte("GET / HT")); err == nil {
		t.Fatal("an HTTP request passed as a preamble")
	}
}

func TestDecodeBatchRejects(t *testing.T) {
	id := flume.LogID{1}
	es := chainEntries(id, flume.GenesisHash(id), 0, "a", "b", "c")
	good := batchMsg(2, es)[5:]
	mutate := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	cases := map[string][]byte{
		"flipped payload byte":   mutate(func(b []byte) []byte { b[len(b)-1] ^= 1; return b }),
		"count too high":         mutate(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[16:], 4); return b }),
		"count too low":          mutate(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[16:], 2); return b }),
		"count zero":             mutate(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[16:], 0); return b }),
		"first mismatch":         mutate(func(b []byte) []byte { binary.LittleEndian.PutUint64(b[8:], 1); return b }),
		"primary since below -1": mutate(func(b []byte) []byte { binary.LittleEndian.PutUint64(b[0:], ^uint64(1)); return b }),
		"negative first":         mutate(func(b []byte) []byte { binary.LittleEndian.PutUint64(b[8:], ^uint64(4)); return b }),
		"truncated":              good[:len(good)-1],
		"trailing garbage":       append(append([]byte(nil), good...), 0),
		"huge count small body":  mutate(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[16:], 1<<31); return b }),
		"header only":            good[:batchHeaderSize],
		"frame length corrupted": mutate(func(b []byte) []byte { b[batchHeaderSize] ^= 0x40; return b }),
	}
	for name, body := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := decodeMessage(MsgEntries, body); err == nil {
				t.Fatal("decoded without error")
			} else if pe := (*ProtocolError)(nil); !errors.As(err, &pe) {
				t.Fatalf("got %T %v, want *ProtocolError", err, err)
			}
		})
	}
	if _, err := decodeMessage(MsgEntries, good); err != nil {
		t.Fatal(err)
	}
}

func fuzzSeeds(f *testing.F) {
	for _, m := range sampleMessages() {
		f.Add(byte(m.t), m.enc[5:])
	}
	f.Add(byte(0), []byte{})
	f.Add(byte(MsgEntries), make([]byte, 40))
}

// FuzzDecodeMessage drives every message decoder: no panic, and whatever
// decodes re-encodes to a message that decodes to the same value.
func FuzzDecodeMessage(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, typ byte, body []byte) {
		v, err := decodeMessage(MsgType(typ), body)
		if err != nil {
			return
		}
		var enc []byte
		switch m := v.(type) {
		case authInit:
			enc = appendAuthInit(nil, m)
		case authChallenge:
			enc = appendAuthChallenge(nil, m)
		case authProof:
			enc = appendAuthProof(nil, m)
		case Hello:
			enc = appendHello(nil, m)
		case accept:
			enc = appendAccept(nil, m)
		case errorMsg:
			enc = appendError(nil, m)
		case batch:
			enc = appendBatch(nil, m)
		case ack:
			enc = appendAck(nil, m)
		case heartbeat:
			enc = appendHeartbeat(nil, m)
		case truncate:
			enc = appendTruncate(nil, m)
		default:
			t.Fatalf("unexpected %T", v)
		}
		v2, err := decodeMessage(MsgType(enc[4]), enc[5:])
		if err != nil || !reflect.DeepEqual(v, v2) {
			t.Fatalf("re-encoded %T does not round-trip: %v", v, err)
		}
	})
}

// FuzzReadMessage feeds arbitrary bytes to the stream reader after auth.
func FuzzReadMessage(f *testing.F) {
	for _, m := range sampleMessages() {
		f.Add(m.enc)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		mr := newMsgReader(bytes.NewReader(b), 16)
		mr.max = 1 << 20
		for i := 0; i < 100; i++ {
			typ, body, err := mr.next(nil)
			if err != nil {
				return
			}
			decodeMessage(typ, body)
		}
	})
}

// FuzzDecodeHello, FuzzDecodeBatch, FuzzDecodeError and FuzzDecodeAck
// target one decoder each.
func FuzzDecodeHello(f *testing.F) {
	f.Add(appendHello(nil, Hello{Role: RolePrimary, NodeID: "x", Since: -1})[5:])
	f.Fuzz(func(t *testing.T, b []byte) { decodeHello(b) })
}

func FuzzDecodeBatch(f *testing.F) {
	id := flume.LogID{1}
	f.Add(batchMsg(9, chainEntries(id, flume.GenesisHash(id), 0, "a", "b"))[5:])
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeBatch(b)
		if err != nil {
			return
		}
		es, err := decodeFrames(nil, m)
		if err != nil {
			return
		}
		if len(es) != int(m.Count) || es[0].Seq != m.First {
			t.Fatalf("decoded %d entries from %d at %d", len(es), m.Count, m.First)
		}
	})
}

func FuzzDecodeError(f *testing.F) {
	f.Add(appendError(nil, errorMsg{Code: CodeAuth, Message: "x"})[5:])
	f.Fuzz(func(t *testing.T, b []byte) {
		if m, err := decodeError(b); err == nil {
			_ = peerError(m).Error()
		}
	})
}

func FuzzDecodeAck(f *testing.F) {
	f.Add(appendAck(nil, ack{Durable: 1, Received: 2})[5:])
	f.Add(appendHeartbeat(nil, heartbeat{Since: 1})[5:])
	f.Fuzz(func(t *testing.T, b []byte) {
		decodeAck(b)
		decodeHeartbeat(b)
		decodeAccept(b)
		decodeAuthInit(b)
		decodeAuthChallenge(b)
		decodeAuthProof(b)
	})
}
