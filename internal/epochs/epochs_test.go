package epochs

import (
	"errors"
	"testing"

	"github.com/flume-go/flume"
)

func TestCheckBegin(t *testing.T) {
	head := flume.Hash{1}
	hist := []flume.EpochRecord{{Epoch: 2, Start: 0}, {Epoch: 4, Start: 3}}
	ok := flume.EpochRecord{Epoch: 5, Start: 10, Prev: head}
	cases := []struct {
		name  string
		hist  []flume.EpochRecord
		epoch uint64
		r     func(r flume.EpochRecord) flume.EpochRecord
		want  error // nil: accepted; errAny: any error
	}{
		{"next epoch", hist, 4, func(r flume.EpochRecord) flume.EpochRecord { return r }, nil},
		{"equal to Epoch() but above the last record", hist, 5, func(r flume.EpochRecord) flume.EpochRecord { return r }, nil},
		{"empty history", nil, 0, func(r flume.EpochRecord) flume.EpochRecord { r.Epoch = 0; return r }, nil},
		{"start past the end", hist, 4, func(r flume.EpochRecord) flume.EpochRecord { r.Start++; return r }, flume.ErrOutOfOrder},
		{"start at the end", hist, 4, func(r flume.EpochRecord) flume.EpochRecord { r.Start--; return r }, flume.ErrOutOfOrder},
		{"wrong previous hash", hist, 4, func(r flume.EpochRecord) flume.EpochRecord { r.Prev[0]++; return r }, flume.ErrDiverged},
		{"repeated epoch", hist, 4, func(r flume.EpochRecord) flume.EpochRecord { r.Epoch = 4; return r }, errAny},
		{"lower epoch", hist, 4, func(r flume.EpochRecord) flume.EpochRecord { r.Epoch = 3; return r }, errAny},
		{"below Epoch()", hist, 6, func(r flume.EpochRecord) flume.EpochRecord { return r }, errAny},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := CheckBegin(c.hist, c.epoch, 9, head, c.r(ok))
			switch {
			case c.want == nil && err != nil:
				t.Fatalf("refused: %v", err)
			case c.want == errAny && err == nil, c.want != nil && c.want != errAny && !errors.Is(err, c.want):
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
}

var errAny = errors.New("any error")

func TestCheckOrderAndKept(t *testing.T) {
	h := []flume.EpochRecord{{Epoch: 1, Start: 0}, {Epoch: 2, Start: 0}, {Epoch: 5, Start: 7}, {Epoch: 6, Start: 9}}
	if i, err := CheckOrder(h); err != nil || i != -1 {
		t.Fatalf("CheckOrder = %d, %v", i, err)
	}
	for _, c := range []struct {
		since int64
		want  int
	}{{-1, 2}, {5, 2}, {6, 3}, {7, 3}, {8, 4}, {100, 4}} {
		if got := Kept(h, c.since); got != c.want {
			t.Errorf("Kept(since %d) = %d, want %d", c.since, got, c.want)
		}
	}
	bad := append([]flume.EpochRecord(nil), h...)
	bad[3].Start = 6
	if i, err := CheckOrder(bad); i != 3 || !errors.Is(err, ErrOrder) {
		t.Fatalf("decreasing start: %d, %v", i, err)
	}
	bad[3] = flume.EpochRecord{Epoch: 5, Start: 9}
	if i, err := CheckOrder(bad); i != 3 || err == nil {
		t.Fatalf("repeated epoch: %d, %v", i, err)
	}
}
