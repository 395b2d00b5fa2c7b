package flume

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
)

// Hash is a chain hash: h(s) = SHA-256(h(s-1) || le64(s) || le64(epoch(s)) || payload(s)),
// with h(-1) = GenesisHash(logID). Equal (log ID, seq, h(seq)) on two logs
// means equal histories up to seq; the handshake compares it and Verify
// recomputes it. SHA-256 runs on the CPU's SHA extensions on amd64 and arm64.
type Hash [32]byte

// String returns the hash in hex.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// Short returns the first 8 bytes in hex, for logs and tables.
func (h Hash) Short() string { return hex.EncodeToString(h[:8]) }

// ParseHash parses the hex form produced by String.
func ParseHash(s string) (Hash, error) {
	var h Hash
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(h) {
		return h, fmt.Errorf("flume: bad hash %q", s)
	}
	copy(h[:], b)
	return h, nil
}

const genesisDomain = "flume/chain/v1\x00"

// GenesisHash is h(-1), the chain hash of an empty log with this ID.
func GenesisHash(id LogID) Hash {
	d := sha256.New()
	d.Write([]byte(genesisDomain))
	d.Write(id[:])
	var h Hash
	d.Sum(h[:0])
	return h
}

// ChainHash returns h(seq) given h(seq-1). It does not allocate, whatever
// the payload's size, so a log can call it for every entry it writes or
// checks.
func ChainHash(prev Hash, seq int64, epoch uint64, data []byte) Hash {
	// The hash input, laid out here and nowhere else:
	// h(seq-1) || le64(seq) || le64(epoch) || payload.
	var hdr [32 + 8 + 8]byte
	copy(hdr[:32], prev[:])
	binary.LittleEndian.PutUint64(hdr[32:], uint64(seq))
	binary.LittleEndian.PutUint64(hdr[40:], epoch)
	// sha256.New is inlined and its calls devirtualized, so the digest, hdr
	// and h stay on the stack for any payload size; streaming the payload
	// also avoids copying it (TestChainHashAllocs, BenchmarkChainHash).
	d := sha256.New()
	d.Write(hdr[:])
	d.Write(data)
	var h Hash
	d.Sum(h[:0])
	return h
}

// CheckNext verifies that e continues a log whose last entry is since with
// chain hash prev: e.Seq must be since+1 (else ErrOutOfOrder) and e.Hash must
// equal ChainHash(prev, ...) (else ErrDiverged). Logs call it in
// AppendEntries so that every implementation enforces the same rule.
func CheckNext(since int64, prev Hash, e Entry) error {
	if e.Seq != since+1 {
		return fmt.Errorf("%w: got seq %d, log ends at %d (expected %d)", ErrOutOfOrder, e.Seq, since, since+1)
	}
	if want := ChainHash(prev, e.Seq, e.Epoch, e.Data); want != e.Hash {
		return fmt.Errorf("%w: entry %d has chain hash %s, this log computes %s", ErrDiverged, e.Seq, e.Hash.Short(), want.Short())
	}
	return nil
}
