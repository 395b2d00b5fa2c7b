package filelog

import (
	"bytes"
	"testing"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/frame"
)

// TestIsTornTail scans an active segment of five frames (seqs 0..4) with
// one defect each and checks isTornTail's verdict on the bad frame: torn
// (truncate and report) only when nothing valid with a later seq follows
// it and its seq is not simply wrong.
func TestIsTornTail(t *testing.T) {
	var seg []byte
	var offs []int
	var head flume.Hash
	for i := int64(0); i < 5; i++ {
		d := bytes.Repeat([]byte{byte('a' + i)}, 40)
		head = flume.ChainHash(head, i, 1, d)
		offs = append(offs, len(seg))
		seg = frame.Append(seg, flume.Entry{Seq: i, Epoch: 1, Hash: head, Data: d})
	}
	frameAt := func(i int) []byte { return seg[offs[i] : offs[i]+frame.HeaderSize+40] }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	flip := func(i int, x byte) []byte {
		b := cat(seg)
		b[i] ^= x
		return b
	}
	cases := []struct {
		name string
		seg  []byte
		torn bool
	}{
		{"last frame cut in its payload", seg[:len(seg)-10], true},
		{"last frame cut in its header", seg[:offs[4]+20], true},
		{"last frame's payload flipped", flip(len(seg)-1, 1), true},
		{"last frame's length flipped", flip(offs[4]+1, 0xff), true},
		{"zeros after the last frame", cat(seg, make([]byte, 300)), true},
		{"earlier seq's frame after a cut one", cat(seg[:len(seg)-10], frameAt(1)), true},
		{"mid frame's payload flipped", flip(offs[2]+frame.HeaderSize+3, 1), false},
		{"mid frame's length flipped huge", flip(offs[2]+2, 0x7f), false},
		{"mid frame cut short", cat(seg[:offs[2]+30], seg[offs[3]:]), false},
		{"seq skipped", cat(seg[:offs[2]], seg[offs[3]:]), false},
		{"last frame duplicated", cat(seg, frameAt(4)), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := bytes.NewReader(c.seg)
			size := int64(len(c.seg))
			res, err := scanSegment(r, 0, size)
			if err != nil {
				t.Fatal(err)
			}
			if res.problem == nil {
				t.Fatalf("scan found no bad frame")
			}
			torn, err := isTornTail(r, size, 0, &res)
			if err != nil {
				t.Fatal(err)
			}
			if torn != c.torn {
				t.Errorf("isTornTail = %v, want %v (bad frame at %d: %v)", torn, c.torn, res.badOff, res.problem)
			}
		})
	}
}
