package flume_test

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"testing"

	"pgregory.net/rapid"

	"github.com/flume-go/flume"
)

// refChainHash is the chain hash as the Hash doc defines it, laid out the
// plainest way.
func refChainHash(prev flume.Hash, seq int64, epoch uint64, data []byte) flume.Hash {
	in := append([]byte(nil), prev[:]...)
	in = binary.LittleEndian.AppendUint64(in, uint64(seq))
	in = binary.LittleEndian.AppendUint64(in, epoch)
	in = append(in, data...)
	return sha256.Sum256(in)
}

// TestChainHashMatchesReference: the hash of a random chain (random seqs,
// epochs and payloads from empty to several SHA-256 blocks past 512 bytes)
// equals the reference at every link.
func TestChainHashMatchesReference(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var id flume.LogID
		copy(id[:], rapid.SliceOfN(rapid.Byte(), 16, 16).Draw(t, "id"))
		h := flume.GenesisHash(id)
		ref := h
		n := rapid.IntRange(1, 20).Draw(t, "entries")
		for i := range n {
			seq := rapid.Int64().Draw(t, fmt.Sprintf("seq%d", i))
			epoch := rapid.Uint64().Draw(t, fmt.Sprintf("epoch%d", i))
			size := rapid.IntRange(0, 3000).Draw(t, fmt.Sprintf("size%d", i))
			data := rapid.SliceOfN(rapid.Byte(), size, size).Draw(t, fmt.Sprintf("data%d", i))
			h = flume.ChainHash(h, seq, epoch, data)
			ref = refChainHash(ref, seq, epoch, data)
			if h != ref {
				t.Fatalf("link %d (%d bytes): ChainHash %s, reference %s", i, len(data), h, ref)
			}
		}
	})
}

// TestChainHashVector pins h of a fixed chain to the value the previous
// implementation (a stack buffer up to 512 bytes, a digest above) computed.
func TestChainHashVector(t *testing.T) {
	h := flume.GenesisHash(flume.LogID{1, 2, 3})
	for i, n := range []int{0, 1, 47, 48, 511, 512, 513, 1000, 4096, 100000} {
		d := make([]byte, n)
		for j := range d {
			d[j] = byte(i*31 + j)
		}
		h = flume.ChainHash(h, int64(i)*1000-1, uint64(i)<<60, d)
	}
	if want := "94c778ef658fd2cf66b9fa63a006922c4a1c81b702cc2652868d40204fbf5a59"; h.String() != want {
		t.Fatalf("got %s, want %s", h, want)
	}
}

// TestChainHashAllocs: ChainHash allocates nothing, for small payloads and
// for payloads that span many SHA-256 blocks. It relies on the compiler
// keeping sha256.New's digest on the stack.
func TestChainHashAllocs(t *testing.T) {
	for _, n := range []int{0, 64, 512, 513, 4096, 1 << 20} {
		data := make([]byte, n)
		var h flume.Hash
		if a := testing.AllocsPerRun(50, func() { h = flume.ChainHash(h, 7, 1, data) }); a != 0 {
			t.Errorf("%d-byte payload: %v allocations per ChainHash, want 0", n, a)
		}
	}
}

func BenchmarkChainHash(b *testing.B) {
	for _, n := range []int{0, 64, 512, 513, 4096, 64 << 10} {
		b.Run(fmt.Sprintf("size=%d", n), func(b *testing.B) {
			data := make([]byte, n)
			var h flume.Hash
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				h = flume.ChainHash(h, 7, 1, data)
			}
		})
	}
}
