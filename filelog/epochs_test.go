package filelog_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/filelog"
	"github.com/flume-go/flume/flumetest"
	"github.com/flume-go/flume/vfs"
)

var epochsPath = filepath.Join(dir, "epochs")

// beginEpoch begins epoch e at the log's head with a deterministic
// promotion ID.
func beginEpoch(t testing.TB, l *filelog.Log, e uint64) flume.EpochRecord {
	t.Helper()
	r := flumetest.NextEpochRecord(l, e)
	if err := l.BeginEpoch(r); err != nil {
		t.Fatalf("BeginEpoch(%d): %v", e, err)
	}
	return r
}

// epochLog writes a log with epochs 1 (from seq 0), 2 (from 5) and 3 (from
// 10, no entries yet) and entries 0..9, closes it and returns the FS, the
// records, and META as it was before epoch 3 began.
func epochLog(t testing.TB) (*vfs.MemFS, []flume.EpochRecord, []byte) {
	t.Helper()
	fs := vfs.NewMem()
	l, err := filelog.Open(dir, &filelog.Options{FS: fs, SegmentSize: 1024})
	if err != nil {
		t.Fatal(err)
	}
	var recs []flume.EpochRecord
	recs = append(recs, beginEpoch(t, l, 1))
	for i := int64(0); i < 10; i++ {
		if i == 5 {
			recs = append(recs, beginEpoch(t, l, 2))
		}
		if _, err := l.Append(payload(i)); err != nil {
			t.Fatal(err)
		}
	}
	meta2 := readAll(t, fs, filepath.Join(dir, "META"))
	recs = append(recs, beginEpoch(t, l, 3))
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return fs, recs, meta2
}

func sameRecords(a, b []flume.EpochRecord) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// recordBytes returns the encoding of record i in the epochs file b.
func recordBytes(b []byte, i int) []byte { return b[16+80*i : 16+80*(i+1)] }

func TestEpochsRecovery(t *testing.T) {
	base, recs, meta2 := epochLog(t)
	good := readAll(t, base, epochsPath)
	if len(good) != 16+3*80 {
		t.Fatalf("epochs file of %d bytes, want %d", len(good), 16+3*80)
	}
	type tc struct {
		name      string
		mutate    func(t *testing.T, fs *vfs.MemFS)
		want      []flume.EpochRecord
		wantEpoch uint64
		wantTorn  int64
		wantDrop  int
		wantRoll  bool
		wantErrIn string // substring of a *flume.CorruptionError naming the epochs file
		wantOff   int64
	}
	write := func(b []byte) func(*testing.T, *vfs.MemFS) {
		return func(t *testing.T, fs *vfs.MemFS) { writeAll(t, fs, epochsPath, b) }
	}
	flip := func(pos int) []byte { b := bytes.Clone(good); b[pos] ^= 0x10; return b }
	cases := []tc{
		{name: "clean", mutate: func(*testing.T, *vfs.MemFS) {}, want: recs, wantEpoch: 3},
		{name: "last record cut short", mutate: write(good[:len(good)-30]), want: recs[:2], wantEpoch: 3, wantTorn: 50},
		{name: "last record cut after its checksum", mutate: write(good[:len(good)-76]), want: recs[:2], wantEpoch: 3, wantTorn: 4},
		{name: "last record fails its checksum", mutate: write(flip(len(good) - 5)), want: recs[:2], wantEpoch: 3, wantTorn: 80},
		{name: "zeros after the last record", mutate: write(append(bytes.Clone(good), make([]byte, 200)...)), want: recs, wantEpoch: 3, wantTorn: 200},
		{name: "bad last record then zeros", mutate: write(append(flip(len(good)-5), make([]byte, 100)...)), want: recs[:2], wantEpoch: 3, wantTorn: 180},
		{name: "header only", mutate: write(good[:16]), want: nil, wantEpoch: 3},
		{name: "middle record fails its checksum", mutate: write(flip(16 + 80 + 10)), wantErrIn: "epoch record 1: checksum mismatch", wantOff: 96},
		{name: "first record fails its checksum", mutate: write(flip(16 + 30)), wantErrIn: "epoch record 0", wantOff: 16},
		{name: "bad record followed by garbage", mutate: write(append(flip(len(good)-5), 1, 2, 3)), wantErrIn: "epoch record 2", wantOff: 176},
		{name: "bad magic", mutate: write(flip(2)), wantErrIn: "not a flume epochs file"},
		{name: "bad header checksum", mutate: write(flip(9)), wantErrIn: "header checksum"},
		{name: "shorter than the header", mutate: write(good[:10]), wantErrIn: "shorter than its header"},
		{name: "epochs not increasing", mutate: write(bytes.Join([][]byte{good[:16], recordBytes(good, 1), recordBytes(good, 0)}, nil)),
			wantErrIn: "record 1 has epoch 1, not greater", wantOff: 96},
		{name: "record repeated", mutate: write(bytes.Join([][]byte{good[:16], recordBytes(good, 0), recordBytes(good, 0)}, nil)),
			wantErrIn: "not greater", wantOff: 96},
		{name: "previous hash does not match the chain", mutate: write(func() []byte {
			r := recs[1]
			r.Prev[3] ^= 1
			return filelog.AppendEpochRecord(bytes.Clone(good[:16+80]), r)
		}()), wantErrIn: "epoch record 1 (epoch 2 from seq 5", wantOff: 96},
		{name: "record starts at a negative seq", mutate: write(func() []byte {
			r := recs[0]
			r.Start = -4
			return filelog.AppendEpochRecord(bytes.Clone(good[:16]), r)
		}()), wantErrIn: "negative", wantOff: 16},
		{name: "starts decrease", mutate: write(func() []byte {
			r := recs[0]
			r.Epoch = 9
			return filelog.AppendEpochRecord(bytes.Clone(good[:16+2*80]), r)
		}()), wantErrIn: "record 2 starts at seq 0, before record 1's start 5", wantOff: 176},
		{name: "META behind the last record is rolled forward", mutate: func(t *testing.T, fs *vfs.MemFS) {
			writeAll(t, fs, filepath.Join(dir, "META"), meta2)
		}, want: recs, wantEpoch: 3, wantRoll: true},
		{name: "records past the end are dropped", mutate: func(t *testing.T, fs *vfs.MemFS) {
			// The segment loses its last five entries: epochs 2 (from 5)
			// and 3 (from 10) start past the log's end.
			seg := segments(t, fs)[0]
			b := readAll(t, fs, seg)
			offs := frameOffsets(t, b)
			writeAll(t, fs, seg, b[:offs[4]])
			fs.Remove(strings.TrimSuffix(seg, ".seg") + ".idx")
		}, want: recs[:1], wantEpoch: 3, wantDrop: 2},
		{name: "record starting right after the end is kept", mutate: func(t *testing.T, fs *vfs.MemFS) {
			seg := segments(t, fs)[0]
			b := readAll(t, fs, seg)
			offs := frameOffsets(t, b)
			writeAll(t, fs, seg, b[:offs[5]])
			fs.Remove(strings.TrimSuffix(seg, ".seg") + ".idx")
		}, want: recs[:2], wantEpoch: 3, wantDrop: 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fs := base.CrashClone(vfs.CrashConfig{})
			c.mutate(t, fs)
			before := readAll(t, fs, epochsPath)
			// A read-only open reports the same and changes nothing.
			for _, ro := range []bool{true, false} {
				l, err := filelog.Open(dir, &filelog.Options{FS: fs, ReadOnly: ro})
				if c.wantErrIn != "" {
					if err == nil {
						l.Close()
						t.Fatal("open succeeded")
					}
					var ce *flume.CorruptionError
					if !errors.As(err, &ce) || ce.Path != epochsPath || ce.Offset != c.wantOff || !strings.Contains(err.Error(), c.wantErrIn) {
						t.Fatalf("open: %v, want a CorruptionError in %s at %d containing %q", err, epochsPath, c.wantOff, c.wantErrIn)
					}
					continue
				}
				if err != nil {
					t.Fatalf("open (read-only %v): %v", ro, err)
				}
				rep := l.OpenReport().Epochs
				if got := l.Epochs(); !sameRecords(got, c.want) || l.Epoch() != c.wantEpoch {
					t.Fatalf("read-only %v: epochs %v epoch %d, want %v epoch %d", ro, got, l.Epoch(), c.want, c.wantEpoch)
				}
				if rep.TornBytes != c.wantTorn || len(rep.Dropped) != c.wantDrop || rep.RolledForward != c.wantRoll {
					t.Fatalf("read-only %v: report %+v, want torn %d dropped %d rolled %v", ro, rep, c.wantTorn, c.wantDrop, c.wantRoll)
				}
				flumetest.CheckLog(t, l, payload)
				l.Close()
				if after := readAll(t, fs, epochsPath); ro && !bytes.Equal(after, before) {
					t.Fatal("a read-only open changed the epochs file")
				}
			}
			if c.wantErrIn != "" {
				return
			}
			// The read-write open repaired the file: a second open finds
			// nothing to report, and the log takes a new epoch.
			l, err := filelog.Open(dir, &filelog.Options{FS: fs})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			if rep := l.OpenReport().Epochs; rep.TornBytes != 0 || len(rep.Dropped) != 0 || rep.RolledForward {
				t.Fatalf("second open: report %+v", rep)
			}
			if got := l.Epochs(); !sameRecords(got, c.want) {
				t.Fatalf("second open: epochs %v", got)
			}
			r := beginEpoch(t, l, 4)
			if got := l.Epochs(); !sameRecords(got, append(append([]flume.EpochRecord(nil), c.want...), r)) {
				t.Fatalf("after BeginEpoch: epochs %v", got)
			}
		})
	}
}

// TestBeginEpochSyncsFirst: under SyncNever, BeginEpoch makes the entries
// before the epoch durable before its record, so that a power loss never
// keeps a record whose previous hash is lost.
func TestBeginEpochSyncsFirst(t *testing.T) {
	fs := vfs.NewMem()
	l, err := filelog.Open(dir, &filelog.Options{FS: fs, Sync: filelog.SyncNever})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i := int64(0); i < 20; i++ {
		if _, err := l.Append(payload(i)); err != nil {
			t.Fatal(err)
		}
	}
	r := beginEpoch(t, l, 7)
	crash := fs.CrashClone(vfs.CrashConfig{})
	c, err := filelog.Open(dir, &filelog.Options{FS: crash})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Since() != 19 || !sameRecords(c.Epochs(), []flume.EpochRecord{r}) || c.Epoch() != 7 {
		t.Fatalf("after power loss: since %d epochs %v epoch %d", c.Since(), c.Epochs(), c.Epoch())
	}
}

// TestGoldenHasNoHistory: a log written before epoch histories existed (the
// golden fixture: no epochs or state file) opens with an empty history,
// fenced epoch 0 and no committed hint, and opening it writes no new file.
func TestGoldenHasNoHistory(t *testing.T) {
	d := t.TempDir()
	ents, err := os.ReadDir(goldenDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(goldenDir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	l, err := filelog.Open(d, nil)
	if err != nil {
		t.Fatal(err)
	}
	if h := l.Epochs(); len(h) != 0 || l.Epoch() != 1 || l.FencedEpoch() != 0 || l.CommittedHint() != -1 {
		t.Fatalf("golden fixture: history %v epoch %d fenced %d hint %d, want none, 1, 0, -1",
			h, l.Epoch(), l.FencedEpoch(), l.CommittedHint())
	}
	if rep := l.OpenReport().Epochs; fmt.Sprint(rep) != fmt.Sprint(filelog.EpochRecovery{}) {
		t.Fatalf("golden fixture: epoch recovery %+v", rep)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadDir(d)
	for _, e := range after {
		switch e.Name() {
		case "epochs", "state", "truncate":
			t.Fatalf("opening the golden fixture created %s", e.Name())
		}
	}
}

// TestSetIDWithHistory: an empty log with an epoch history keeps its ID
// (the records' prev hashes pin its genesis hash, which Open checks).
func TestSetIDWithHistory(t *testing.T) {
	fs := vfs.NewMem()
	l, err := filelog.Open(dir, &filelog.Options{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	beginEpoch(t, l, 1)
	if err := l.SetID(flume.NewLogID()); !errors.Is(err, flume.ErrNotEmpty) {
		t.Fatalf("SetID: %v, want ErrNotEmpty", err)
	}
	l.Close()
	if l, err = filelog.Open(dir, &filelog.Options{FS: fs}); err != nil {
		t.Fatal(err)
	}
	l.Close()
}
