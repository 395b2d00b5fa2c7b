package repl

import (
	"encoding/binary"
	"fmt"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/frame"
	"github.com/flume-go/flume/internal/crc32c"
)

// Wire format (docs/protocol.md is the full description).
//
// Each direction of a connection starts with an 8-byte preamble:
//
//	"FLRP" | version uint16 LE | reserved uint16 (0)
//
// followed by messages:
//
//	length uint32 LE (of type+body) | type uint8 | body
//
// Integers are little endian; seqs are int64; strings are a uint16 length
// followed by UTF-8 bytes.
const (
	// Version is the protocol version this package speaks. A peer with a
	// different version is refused with ErrVersion on both sides.
	Version uint16 = 4

	preambleSize = 8
	// maxPreAuthMessage bounds a message before authentication succeeded,
	// so an unauthenticated peer cannot make us allocate much.
	maxPreAuthMessage = 4 << 10
	// maxMessage bounds any message: one maximal entry frame plus the batch
	// header, with room to spare.
	maxMessage = flume.MaxEntrySize + frame.HeaderSize + 1024
	// batchHeaderSize is the fixed part of an Entries message body.
	batchHeaderSize = 8 + 8 + 4
	nonceSize       = 32
	macSize         = 32
	positionSize    = 16 + 8 + 8 + 32
	maxStringLen    = 1024
)

var magic = [4]byte{'F', 'L', 'R', 'P'}

// MsgType identifies a message. Values are stable and append-only.
type MsgType uint8

// Message types.
const (
	MsgAuthInit      MsgType = 1  // follower → primary: nonce, flags
	MsgAuthChallenge MsgType = 2  // primary → follower: flags, nonce, proof
	MsgAuthProof     MsgType = 3  // follower → primary: proof
	MsgHello         MsgType = 4  // both: position and identity
	MsgAccept        MsgType = 5  // primary → follower: streaming starts at From
	MsgError         MsgType = 6  // either: refusal or failure, then close
	MsgEntries       MsgType = 7  // primary → follower: a batch of entry frames
	MsgAck           MsgType = 8  // follower → primary: durable and received seqs
	MsgHeartbeat     MsgType = 9  // both: liveness, and the sender's head
	MsgTruncate      MsgType = 10 // primary → follower: cut your log after To (verified), then follow
)

// String returns the message type's name.
func (t MsgType) String() string {
	switch t {
	case MsgAuthInit:
		return "AuthInit"
	case MsgAuthChallenge:
		return "AuthChallenge"
	case MsgAuthProof:
		return "AuthProof"
	case MsgHello:
		return "Hello"
	case MsgAccept:
		return "Accept"
	case MsgError:
		return "Error"
	case MsgEntries:
		return "Entries"
	case MsgAck:
		return "Ack"
	case MsgHeartbeat:
		return "Heartbeat"
	case MsgTruncate:
		return "Truncate"
	}
	return fmt.Sprintf("MsgType(%d)", uint8(t))
}

// Role is the part a node plays on a replication connection.
type Role uint8

// Roles.
const (
	RolePrimary  Role = 1
	RoleFollower Role = 2
)

// String returns "primary" or "follower".
func (r Role) String() string {
	switch r {
	case RolePrimary:
		return "primary"
	case RoleFollower:
		return "follower"
	}
	return fmt.Sprintf("role(%d)", uint8(r))
}

// Position identifies a point in a log's history: the log's ID and epoch,
// a seq and the chain hash at that seq.
type Position struct {
	LogID flume.LogID
	Epoch uint64
	Since int64
	Hash  flume.Hash
}

// String returns the position as "log <id prefix> since <seq> hash <prefix>".
func (p Position) String() string {
	if p.LogID.IsZero() && p.Since == 0 && p.Hash == (flume.Hash{}) {
		return "unknown position"
	}
	return fmt.Sprintf("log %s since %d hash %s", p.LogID.String()[:8], p.Since, p.Hash.Short())
}

// Hello is the handshake message: who the sender is and where its log ends.
type Hello struct {
	Version uint16
	Role    Role
	NodeID  string
	LogID   flume.LogID
	Epoch   uint64
	Since   int64      // last seq, -1 when empty
	Hash    flume.Hash // chain hash at Since (GenesisHash(LogID) when empty)

	// Version 3: the sender's fencing state and epoch history, so that
	// both sides can tell a deposed primary (stale epoch) and compute where
	// a rejoining node's history parts from its primary's (cutPoint).
	FencedEpoch   uint64              // highest epoch the sender promised to honour
	CommittedHint int64               // lower bound of the committed watermark it knows; -1 unknown
	Unclean       bool                // the sender lost entries it held or found corruption at open
	Epochs        []flume.EpochRecord // the sender's epoch history, oldest first
	HTTP          string              // the sender's HTTP API URL, if it advertises one (Options.AdvertiseHTTP)

	// Anchor is not sent. On the primary it is the primary's own position
	// at the follower's since (when it has that seq), against which the
	// handshake checks that the follower's history is a prefix of its own.
	Anchor *Position
}

// Position returns the Hello's position.
func (h Hello) Position() Position {
	return Position{LogID: h.LogID, Epoch: h.Epoch, Since: h.Since, Hash: h.Hash}
}

// authInit opens authentication (follower → primary).
type authInit struct {
	HasSecret bool
	Nonce     [nonceSize]byte
}

// authChallenge answers it (primary → follower) and proves the primary
// knows the secret (Proof is zero when it has none).
type authChallenge struct {
	HasSecret bool
	Nonce     [nonceSize]byte
	Proof     [macSize]byte
}

// authProof proves the follower knows the secret.
type authProof struct {
	Proof [macSize]byte
}

// accept tells the follower the handshake succeeded and the first seq the
// primary will send.
type accept struct {
	From int64
}

// errorMsg carries a refusal or failure. Sender is the position of the node
// that sends it, Receiver the position it saw for the other side.
type errorMsg struct {
	Code     Code
	Sender   Position
	Receiver Position
	Message  string
}

// batch is an Entries message: frames of consecutive entries.
type batch struct {
	PrimarySince int64 // the primary's published since when it sent this
	First        int64 // seq of the first frame
	Count        uint32
	Frames       []byte // Count concatenated entry frames
}

// ack reports the follower's progress.
type ack struct {
	Durable  int64 // last seq appended and durable per the follower log's policy
	Received int64 // last seq received and verified (>= Durable)
}

// heartbeat keeps a quiet connection alive and reports the sender's head.
type heartbeat struct {
	Since    int64
	UnixNano int64
	// Through is the last seq the sender has sent on this connection
	// (primary) or received on it (follower). A follower that has received
	// less than a primary's heartbeat says was sent lost a message in
	// transit; it drops the connection and resumes from what it holds.
	Through int64
	// Committed (version 3, primary → follower) is the committed
	// watermark: the highest seq acknowledged as durable by the number of
	// synchronous followers the primary requires (-1 when none is required
	// or none acked yet). Followers keep it as their committed hint; a
	// rejoin never cuts at or below it.
	Committed int64
}

// ---- encoding ----

func appendPreamble(dst []byte, version uint16) []byte {
	dst = append(dst, magic[:]...)
	dst = binary.LittleEndian.AppendUint16(dst, version)
	return binary.LittleEndian.AppendUint16(dst, 0)
}

// decodePreamble checks the magic and returns the peer's version.
func decodePreamble(b []byte) (uint16, error) {
	if len(b) != preambleSize {
		return 0, protoErr("preamble has %d bytes, want %d", len(b), preambleSize)
	}
	if [4]byte(b[:4]) != magic {
		return 0, protoErr("peer is not a flume replication peer (bad magic %q)", b[:4])
	}
	return binary.LittleEndian.Uint16(b[4:]), nil
}

func appendAuthInit(dst []byte, m authInit) []byte {
	dst, s := beginMsg(dst, MsgAuthInit)
	dst = append(dst, boolByte(m.HasSecret))
	dst = append(dst, m.Nonce[:]...)
	return endMsg(dst, s)
}

func appendAuthChallenge(dst []byte, m authChallenge) []byte {
	dst, s := beginMsg(dst, MsgAuthChallenge)
	dst = append(dst, boolByte(m.HasSecret))
	dst = append(dst, m.Nonce[:]...)
	dst = append(dst, m.Proof[:]...)
	return endMsg(dst, s)
}

func appendAuthProof(dst []byte, m authProof) []byte {
	dst, s := beginMsg(dst, MsgAuthProof)
	dst = append(dst, m.Proof[:]...)
	return endMsg(dst, s)
}

func appendHello(dst []byte, h Hello) []byte {
	dst, s := beginMsg(dst, MsgHello)
	dst = binary.LittleEndian.AppendUint16(dst, h.Version)
	var flags byte
	if h.Unclean {
		flags |= helloUnclean
	}
	dst = append(dst, byte(h.Role), flags)
	dst = appendPosition(dst, h.Position())
	dst = appendString(dst, h.NodeID)
	dst = binary.LittleEndian.AppendUint64(dst, h.FencedEpoch)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(h.CommittedHint))
	dst = appendString(dst, h.HTTP)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(h.Epochs)))
	for _, r := range h.Epochs {
		dst = appendEpochRecord(dst, r)
	}
	return endSealed(dst, s)
}

func appendAccept(dst []byte, m accept) []byte {
	dst, s := beginMsg(dst, MsgAccept)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(m.From))
	return endMsg(dst, s)
}

func appendError(dst []byte, m errorMsg) []byte {
	dst, s := beginMsg(dst, MsgError)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(m.Code))
	dst = appendPosition(dst, m.Sender)
	dst = appendPosition(dst, m.Receiver)
	dst = appendString(dst, m.Message)
	return endMsg(dst, s)
}

// appendBatchHeader starts an Entries message; the caller appends frames and
// then calls finishBatch with the count.
func appendBatchHeader(dst []byte, primarySince, first int64) ([]byte, int) {
	dst, s := beginMsg(dst, MsgEntries)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(primarySince))
	dst = binary.LittleEndian.AppendUint64(dst, uint64(first))
	dst = binary.LittleEndian.AppendUint32(dst, 0)
	return dst, s
}

func finishBatch(dst []byte, start int, count uint32) []byte {
	binary.LittleEndian.PutUint32(dst[start+5+16:], count)
	return endMsg(dst, start)
}

func appendBatch(dst []byte, m batch) []byte {
	dst, s := appendBatchHeader(dst, m.PrimarySince, m.First)
	dst = append(dst, m.Frames...)
	return finishBatch(dst, s, m.Count)
}

// appendAck encodes an ack with a CRC32C of its seqs, so that a corrupted
// ack can never make the primary count an entry as replicated.
func appendAck(dst []byte, m ack) []byte {
	dst, s := beginMsg(dst, MsgAck)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(m.Durable))
	dst = binary.LittleEndian.AppendUint64(dst, uint64(m.Received))
	dst = binary.LittleEndian.AppendUint32(dst, crc32c.Checksum(dst[len(dst)-16:]))
	return endMsg(dst, s)
}

func appendHeartbeat(dst []byte, m heartbeat) []byte {
	dst, s := beginMsg(dst, MsgHeartbeat)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(m.Since))
	dst = binary.LittleEndian.AppendUint64(dst, uint64(m.UnixNano))
	dst = binary.LittleEndian.AppendUint64(dst, uint64(m.Through))
	dst = binary.LittleEndian.AppendUint64(dst, uint64(m.Committed))
	return endSealed(dst, s)
}

// ---- decoding ----

func decodeAuthInit(b []byte) (authInit, error) {
	r := reader{b: b, msg: MsgAuthInit}
	var m authInit
	m.HasSecret = r.boolean("secret")
	copy(m.Nonce[:], r.bytes(nonceSize, "nonce"))
	return m, r.done()
}

func decodeAuthChallenge(b []byte) (authChallenge, error) {
	r := reader{b: b, msg: MsgAuthChallenge}
	var m authChallenge
	m.HasSecret = r.boolean("secret")
	copy(m.Nonce[:], r.bytes(nonceSize, "nonce"))
	copy(m.Proof[:], r.bytes(macSize, "proof"))
	return m, r.done()
}

func decodeAuthProof(b []byte) (authProof, error) {
	r := reader{b: b, msg: MsgAuthProof}
	var m authProof
	copy(m.Proof[:], r.bytes(macSize, "proof"))
	return m, r.done()
}

func decodeHello(b []byte) (Hello, error) {
	b, err := unseal(b, MsgHello)
	if err != nil {
		return Hello{}, err
	}
	r := reader{b: b, msg: MsgHello}
	var h Hello
	h.Version = r.u16("version")
	h.Role = Role(r.u8("role"))
	flags := r.u8("flags")
	h.Unclean = flags&helloUnclean != 0
	p := r.position("position")
	h.LogID, h.Epoch, h.Since, h.Hash = p.LogID, p.Epoch, p.Since, p.Hash
	h.NodeID = r.str("node ID")
	h.FencedEpoch = r.u64("fenced epoch")
	h.CommittedHint = int64(r.u64("committed hint"))
	h.HTTP = r.str("HTTP URL")
	n := int(r.u16("epoch count"))
	if r.err == nil && n*epochRecordSize > len(r.b) {
		r.fail(fmt.Sprintf("%d epoch records", n))
	}
	if r.err == nil && n > 0 {
		h.Epochs = make([]flume.EpochRecord, n)
		for i := range h.Epochs {
			h.Epochs[i] = r.epochRecord("epoch record")
		}
	}
	if r.err == nil && (h.CommittedHint < -1 || flags&^helloUnclean != 0) {
		return Hello{}, protoErr("Hello message: committed hint %d or flags %#x out of range", h.CommittedHint, flags)
	}
	if err := r.done(); err != nil {
		return Hello{}, err
	}
	if h.Role != RolePrimary && h.Role != RoleFollower {
		return Hello{}, protoErr("Hello message: unknown role %d", uint8(h.Role))
	}
	return h, nil
}

func decodeAccept(b []byte) (accept, error) {
	r := reader{b: b, msg: MsgAccept}
	m := accept{From: r.seq("from")}
	if err := r.done(); err != nil {
		return accept{}, err
	}
	if m.From < 0 {
		return accept{}, &ProtocolError{Code: CodeBadPosition, Reason: fmt.Sprintf("Accept message: from %d is not an entry", m.From)}
	}
	return m, nil
}

func decodeError(b []byte) (errorMsg, error) {
	r := reader{b: b, msg: MsgError}
	var m errorMsg
	m.Code = Code(r.u16("code"))
	m.Sender = r.position("sender")
	m.Receiver = r.position("receiver")
	m.Message = r.str("message")
	return m, r.done()
}

// decodeBatch decodes an Entries message header and checks that Frames
// holds exactly Count frames (the frames themselves are decoded and
// CRC-checked by decodeFrames). Frames aliases b.
func decodeBatch(b []byte) (batch, error) {
	r := reader{b: b, msg: MsgEntries}
	var m batch
	m.PrimarySince = r.seq("primary since")
	m.First = r.seq("first")
	m.Count = r.u32("count")
	if r.err != nil {
		return batch{}, r.err
	}
	m.Frames = r.b
	if m.Count == 0 {
		return batch{}, protoErr("Entries message: empty batch")
	}
	if m.First < 0 {
		return batch{}, &ProtocolError{Code: CodeBadPosition, Reason: fmt.Sprintf("Entries message: first seq %d is not an entry", m.First)}
	}
	if uint64(len(m.Frames)) < uint64(m.Count)*frame.HeaderSize {
		return batch{}, protoErr("Entries message: %d bytes cannot hold %d frames", len(m.Frames), m.Count)
	}
	if m.PrimarySince < -1 {
		return batch{}, &ProtocolError{Code: CodeBadPosition, Reason: fmt.Sprintf("Entries message: primary since %d is below -1", m.PrimarySince)}
	}
	return m, nil
}

// decodeFrames decodes the frames of m into dst (reused), checking each
// frame's CRC, that seqs are dense from m.First, and that nothing trails.
// Entry data aliases m.Frames.
func decodeFrames(dst []flume.Entry, m batch) ([]flume.Entry, error) {
	dst = dst[:0]
	b := m.Frames
	for i := uint32(0); i < m.Count; i++ {
		e, n, err := frame.Decode(b)
		if err != nil {
			return dst, &ProtocolError{Code: CodeCorrupt, Reason: fmt.Sprintf("Entries message: frame %d of %d (seq %d)", i, m.Count, m.First+int64(i)), Err: err}
		}
		if want := m.First + int64(i); e.Seq != want {
			return dst, &ProtocolError{Code: CodeBadPosition, Reason: fmt.Sprintf("Entries message: frame %d has seq %d, want %d", i, e.Seq, want)}
		}
		dst = append(dst, e)
		b = b[n:]
	}
	if len(b) != 0 {
		return dst, protoErr("Entries message: %d bytes after the last of %d frames", len(b), m.Count)
	}
	return dst, nil
}

func decodeAck(b []byte) (ack, error) {
	r := reader{b: b, msg: MsgAck}
	m := ack{Durable: r.seq("durable"), Received: r.seq("received")}
	sum := r.u32("checksum")
	if err := r.done(); err != nil {
		return ack{}, err
	}
	if want := crc32c.Checksum(b[:16]); sum != want {
		return ack{}, &ProtocolError{Code: CodeCorrupt, Reason: fmt.Sprintf("Ack message: checksum mismatch: stored %08x, computed %08x", sum, want)}
	}
	if m.Received < m.Durable {
		return ack{}, &ProtocolError{Code: CodeBadPosition, Reason: fmt.Sprintf("Ack message: received %d is behind durable %d", m.Received, m.Durable)}
	}
	return m, nil
}

func decodeHeartbeat(b []byte) (heartbeat, error) {
	b, err := unseal(b, MsgHeartbeat)
	if err != nil {
		return heartbeat{}, err
	}
	r := reader{b: b, msg: MsgHeartbeat}
	m := heartbeat{Since: r.seq("since"), UnixNano: int64(r.u64("time")), Through: r.seq("through"), Committed: r.seq("committed")}
	return m, r.done()
}

// decodeMessage decodes a body of type t into its message struct. It is the
// single entry point the fuzzers drive; the connection code calls the typed
// decoders directly.
func decodeMessage(t MsgType, body []byte) (any, error) {
	switch t {
	case MsgAuthInit:
		return decodeAuthInit(body)
	case MsgAuthChallenge:
		return decodeAuthChallenge(body)
	case MsgAuthProof:
		return decodeAuthProof(body)
	case MsgHello:
		return decodeHello(body)
	case MsgAccept:
		return decodeAccept(body)
	case MsgError:
		return decodeError(body)
	case MsgEntries:
		m, err := decodeBatch(body)
		if err != nil {
			return nil, err
		}
		if _, err := decodeFrames(nil, m); err != nil {
			return nil, err
		}
		return m, nil
	case MsgAck:
		return decodeAck(body)
	case MsgHeartbeat:
		return decodeHeartbeat(body)
	case MsgTruncate:
		return decodeTruncate(body)
	}
	return nil, protoErr("unknown message type %d", uint8(t))
}

// ---- reading from a stream ----

// helloUnclean is the Hello flag of a node that lost entries it held or
// found corruption below its tail when it opened.
const helloUnclean = 1 << 0

// epochRecordSize is an EpochRecord on the wire: epoch, start, prev hash,
// promotion ID, unix nanos, promoter.
const epochRecordSize = 8 + 8 + 32 + 16 + 8 + 4

// truncate tells a rejoining follower to cut its log after To (primary →
// follower, after the Hellos, before Accept). Hash is the primary's h(To):
// the follower cuts only if its own h(To) is the same.
type truncate struct {
	To           int64
	Hash         flume.Hash
	PrimaryEpoch uint64
}

func appendTruncate(dst []byte, m truncate) []byte {
	dst, s := beginMsg(dst, MsgTruncate)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(m.To))
	dst = append(dst, m.Hash[:]...)
	dst = binary.LittleEndian.AppendUint64(dst, m.PrimaryEpoch)
	return endSealed(dst, s)
}

func decodeTruncate(b []byte) (truncate, error) {
	b, err := unseal(b, MsgTruncate)
	if err != nil {
		return truncate{}, err
	}
	r := reader{b: b, msg: MsgTruncate}
	var m truncate
	m.To = r.seq("to")
	copy(m.Hash[:], r.bytes(32, "hash"))
	m.PrimaryEpoch = r.u64("primary epoch")
	if err := r.done(); err != nil {
		return truncate{}, err
	}
	if m.To < 0 {
		return truncate{}, &ProtocolError{Code: CodeBadPosition, Reason: fmt.Sprintf("Truncate message: to %d: a rejoin never cuts a whole log", m.To)}
	}
	return m, nil
}
