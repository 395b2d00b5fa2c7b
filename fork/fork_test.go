package fork_test

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/fork"
	"github.com/flume-go/flume/vfs"
)

// TestRoundTrip: the frames written come back as the same entries, the
// file holds them byte for byte as given, and the header reads back equal,
// however TruncateAfter chunks its writes.
func TestRoundTrip(t *testing.T) {
	es := chainLog(testID, 12)
	cases := []struct {
		name  string
		after int64
		chunk int // 0: one Write with every frame
	}{
		{"all at once", 5, 0},
		{"one byte at a time", 5, 1},
		{"odd chunks", 5, 7},
		{"chunks larger than frames", 5, 1000},
		{"everything cut", -1, 0},
		{"one entry", 10, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fsys := vfs.NewMem()
			h := header(es, tc.after, "rejoin: diverged from the new primary")
			h.Epochs = fork.CutEpochs(newFakeLog(es, 0, 0).epochs, tc.after, h.Since)
			stream := frames(es[tc.after+1:], tc.after+2, tc.after+4) // with a batch of three
			w, err := fork.Create(fsys, dir, h)
			if err != nil {
				t.Fatal(err)
			}
			for b := stream; len(b) > 0; {
				n := len(b)
				if tc.chunk > 0 {
					n = min(n, tc.chunk)
				}
				if got, err := w.Write(b[:n]); err != nil || got != n {
					t.Fatalf("Write: %d, %v", got, err)
				}
				b = b[n:]
			}
			if err := w.Commit(); err != nil {
				t.Fatal(err)
			}
			infos, err := fork.List(fsys, dir)
			if err != nil {
				t.Fatal(err)
			}
			if len(infos) != 1 {
				t.Fatalf("List: %d files, want 1", len(infos))
			}
			i := infos[0]
			if i.State != fork.Complete || i.Err != nil {
				t.Fatalf("state %v err %v, want complete", i.State, i.Err)
			}
			if !reflect.DeepEqual(i.Header, h) {
				t.Errorf("header:\ngot  %+v\nwant %+v", i.Header, h)
			}
			if !reflect.DeepEqual(i, w.Info()) {
				t.Errorf("List info %+v, Writer info %+v", i, w.Info())
			}
			if i.Entries != h.Entries() || i.Bytes != int64(len(stream)) {
				t.Errorf("entries %d bytes %d, want %d and %d", i.Entries, i.Bytes, h.Entries(), len(stream))
			}
			file := readAll(t, fsys, i.Path)
			if int64(len(file)) != i.Size || !bytes.Contains(file, stream) {
				t.Error("the file does not hold the frames byte for byte")
			}
			got, _, err := collect(t, fsys)
			if err != nil {
				t.Fatal(err)
			}
			sameEntries(t, got, es[tc.after+1:])
		})
	}
}

// TestCrashBeforeCommit: a power loss at any point before the Write that
// completes the cut returns leaves no file that looks complete; one after
// it leaves the complete file.
func TestCrashBeforeCommit(t *testing.T) {
	es := chainLog(testID, 10)
	const after = 3
	stream := frames(es[after+1:], 0, 0)
	for cut := 0; cut < len(stream); cut += 17 {
		for _, pct := range []int{0, 50, 100} {
			fsys := vfs.NewMem()
			w, err := fork.Create(fsys, dir, header(es, after, "crash"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write(stream[:cut]); err != nil {
				t.Fatal(err)
			}
			for seed := range uint64(4) {
				crashed := fsys.CrashClone(vfs.CrashConfig{UnsyncedDataPercent: pct, Rand: rand.New(rand.NewPCG(seed, uint64(cut)))})
				infos, err := fork.List(crashed, dir)
				if err != nil {
					t.Fatal(err)
				}
				for _, i := range infos {
					if i.State != fork.Temp {
						t.Fatalf("crash after %d bytes (unsynced kept %d%%): %s is %v, want only temp files", cut, pct, i.Name, i.State)
					}
				}
				if got, _, err := collect(t, crashed); err != nil || len(got) != 0 {
					t.Fatalf("crash after %d bytes: Entries gave %d entries, %v", cut, len(got), err)
				}
			}
		}
	}
	// The Write that completes the cut returns with the file durable.
	fsys := vfs.NewMem()
	w, err := fork.Create(fsys, dir, header(es, after, "crash"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(stream); err != nil {
		t.Fatal(err)
	}
	crashed := fsys.CrashClone(vfs.CrashConfig{})
	got, _, err := collect(t, crashed)
	if err != nil {
		t.Fatal(err)
	}
	sameEntries(t, got, es[after+1:])
}

// sample writes one complete file with a batch and three epoch records and
// returns the filesystem, its path, its bytes and the header length.
func sample(t testing.TB) (*vfs.MemFS, string, []byte, int) {
	es := chainLog(testID, 9)
	fsys := vfs.NewMem()
	h := header(es, 2, "diverged")
	h.Epochs = fork.CutEpochs(newFakeLog(es, 0, 0).epochs, 2, h.Since)
	w, err := fork.Create(fsys, dir, h)
	if err != nil {
		t.Fatal(err)
	}
	stream := frames(es[3:], 4, 6)
	if _, err := w.Write(stream); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	b := readAll(t, fsys, w.Path())
	return fsys, w.Path(), b, len(b) - len(stream) - 32
}

// TestEveryByteFlipDetected: any single flipped bit in the header, the
// frames or the trailer makes the file fail with a *FileError that is
// ErrCorrupt and names the file and an offset at or before the flip (or
// inside the header for a flip there); readers never return its entries.
func TestEveryByteFlipDetected(t *testing.T) {
	fsys, path, orig, hdrLen := sample(t)
	for i := range orig {
		for _, mask := range []byte{0x01, 0x80, 0xff} {
			b := bytes.Clone(orig)
			b[i] ^= mask
			writeFile(t, fsys, path, b)
			_, err := fork.Scan(fsys, path, nil)
			var fe *fork.FileError
			if !errors.As(err, &fe) || !errors.Is(err, flume.ErrCorrupt) {
				t.Fatalf("flip %#x at %d: err %v, want a *FileError that is ErrCorrupt", mask, i, err)
			}
			if fe.Path != path || !(fe.Offset <= int64(i) || i < hdrLen && fe.Offset < int64(hdrLen)) {
				t.Fatalf("flip %#x at %d: error names %s at offset %d", mask, i, fe.Path, fe.Offset)
			}
			if got, _, err := collect(t, fsys); err == nil || len(got) != 0 {
				t.Fatalf("flip %#x at %d: Entries gave %d entries, err %v", mask, i, len(got), err)
			}
		}
	}
}

// TestTruncatedFileDetected: a file cut at any length is ErrIncomplete,
// and bytes after the trailer are ErrCorrupt.
func TestTruncatedFileDetected(t *testing.T) {
	fsys, path, orig, _ := sample(t)
	for n := range len(orig) {
		writeFile(t, fsys, path, orig[:n])
		info, err := fork.Scan(fsys, path, nil)
		if !errors.Is(err, fork.ErrIncomplete) || !errors.Is(err, flume.ErrCorrupt) || info.State != fork.Incomplete {
			t.Fatalf("file cut to %d of %d bytes: state %v, err %v, want incomplete", n, len(orig), info.State, err)
		}
		if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "incomplete") {
			t.Fatalf("error %q does not name the file as incomplete", err)
		}
	}
	writeFile(t, fsys, path, append(bytes.Clone(orig), 0))
	if _, err := fork.Scan(fsys, path, nil); !errors.Is(err, flume.ErrCorrupt) || errors.Is(err, fork.ErrIncomplete) {
		t.Fatalf("a byte after the trailer: %v, want corrupt", err)
	}
	writeFile(t, fsys, path, orig)
	if _, err := fork.Scan(fsys, path, nil); err != nil {
		t.Fatalf("restored file: %v", err)
	}
}

// TestListOrder: files are listed and read oldest first; temporary files
// are listed as such and skipped by Entries; other names are ignored; a
// damaged file is listed with its error and stops Entries before any entry.
func TestListOrder(t *testing.T) {
	fsys := vfs.NewMem()
	var want []flume.Entry
	var names []string
	// Three cuts of three different histories, in this order.
	for k := range 3 {
		id := flume.LogID{byte(k + 1)}
		es := chainLog(id, 6+k)
		h := header(es, 1, "cut")
		h.LogID = id
		h.AfterHash = es[1].Hash
		w, err := fork.Create(fsys, dir, h)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(frames(es[2:], 0, 0)); err != nil {
			t.Fatal(err)
		}
		names = append(names, w.Info().Name)
		want = append(want, es[2:]...)
	}
	// A cut being written, and a stranger.
	es := chainLog(testID, 5)
	w, err := fork.Create(fsys, dir, header(es, 0, "in progress"))
	if err != nil {
		t.Fatal(err)
	}
	w.Write(frames(es[1:3], 0, 0))
	writeFile(t, fsys, filepath.Join(dir, "README"), []byte("not a fork file"))

	infos, err := fork.List(fsys, dir)
	if err != nil {
		t.Fatal(err)
	}
	var gotNames []string
	var states []fork.State
	for _, i := range infos {
		gotNames = append(gotNames, i.Name)
		states = append(states, i.State)
	}
	if len(infos) != 4 || !reflect.DeepEqual(gotNames[:3], names) || !strings.HasSuffix(gotNames[3], ".fork.tmp") ||
		!reflect.DeepEqual(states, []fork.State{fork.Complete, fork.Complete, fork.Complete, fork.Temp}) {
		t.Fatalf("List: %q %v, want %q then a temp file", gotNames, states, names)
	}
	for i, n := range names {
		if !strings.HasPrefix(n, []string{"00000001-", "00000002-", "00000003-"}[i]) {
			t.Errorf("file %d is named %s", i, n)
		}
	}
	if infos[3].Header.Reason != "in progress" {
		t.Errorf("temp file's header: %+v", infos[3].Header)
	}
	got, gotFiles, err := collect(t, fsys)
	if err != nil {
		t.Fatal(err)
	}
	sameEntries(t, got, want)
	if !reflect.DeepEqual(gotFiles, names) {
		t.Errorf("entries came from %q, want %q", gotFiles, names)
	}

	// Damage the second file: listed as corrupt, Entries calls fn never.
	p := filepath.Join(dir, names[1])
	b := readAll(t, fsys, p)
	b[len(b)-40] ^= 1
	writeFile(t, fsys, p, b)
	infos, err = fork.List(fsys, dir)
	if err != nil {
		t.Fatal(err)
	}
	if infos[1].State != fork.Corrupt || infos[1].Err == nil || infos[0].State != fork.Complete || infos[2].State != fork.Complete {
		t.Fatalf("after damage: states %v %v %v", infos[0].State, infos[1].State, infos[2].State)
	}
	calls := 0
	err = fork.Entries(fsys, dir, func(fork.Info, flume.Entry) error { calls++; return nil })
	if err == nil || calls != 0 || !strings.Contains(err.Error(), names[1]) {
		t.Fatalf("Entries over a damaged file: %d calls, err %v", calls, err)
	}
	// The next file made continues the numbering after the temp file.
	w2, err := fork.Create(fsys, dir, header(es, 0, "next"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(w2.Info().Name, "00000005-") {
		t.Errorf("next file is %s, want number 5", w2.Info().Name)
	}
	if infos, _ := fork.List(fsys, "no/such/dir"); len(infos) != 0 {
		t.Errorf("List of a missing dir: %v", infos)
	}
}

// TestWriterRefusesWrongStreams: frames that are not the cut the header
// announced fail Write with ErrStream, leave no complete file once
// aborted, and fail Commit.
func TestWriterRefusesWrongStreams(t *testing.T) {
	es := chainLog(testID, 8)
	other := chainLog(flume.LogID{9}, 8)
	const after = 2
	good := frames(es[after+1:], 0, 0)
	flipped := bytes.Clone(good)
	flipped[len(flipped)-1] ^= 1
	huge := bytes.Clone(good)
	huge[3] = 0x7f // a payload length past MaxEntrySize
	cases := []struct {
		name   string
		writes [][]byte
	}{
		{"bad CRC", [][]byte{flipped}},
		{"frames of another history", [][]byte{frames(other[after+1:], 0, 0)}},
		{"a seq skipped", [][]byte{frames(append([]flume.Entry{es[3]}, es[5:]...), 0, 0)}},
		{"starts late", [][]byte{frames(es[after+2:], 0, 0)}},
		{"more entries than the cut", [][]byte{append(bytes.Clone(good), good[:60]...)}},
		{"a later write after the last frame", [][]byte{good, []byte{1}}},
		{"huge length", [][]byte{huge}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fsys := vfs.NewMem()
			h := header(es, after, "x")
			h.Since = 6 // the cut the header announces: seqs 3..6
			h.SinceHash = es[6].Hash
			w, err := fork.Create(fsys, dir, h)
			if err != nil {
				t.Fatal(err)
			}
			var werr error
			for _, b := range tc.writes {
				if _, werr = w.Write(b); werr != nil {
					break
				}
			}
			if !errors.Is(werr, fork.ErrStream) {
				t.Fatalf("Write: %v, want ErrStream", werr)
			}
			if _, err := w.Write(good[:1]); err != werr {
				t.Errorf("error not sticky: %v then %v", werr, err)
			}
			if err := w.Commit(); err == nil {
				t.Error("Commit succeeded")
			}
			if err := w.Abort(); err != nil {
				t.Fatal(err)
			}
			if err := w.Abort(); err != nil {
				t.Errorf("second Abort: %v", err)
			}
			if names, _ := fsys.List(dir); len(names) != 0 {
				t.Errorf("files left after Abort: %q", names)
			}
		})
	}
}

func TestCommitUnfinished(t *testing.T) {
	es := chainLog(testID, 6)
	fsys := vfs.NewMem()
	w, err := fork.Create(fsys, dir, header(es, 1, "x"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(frames(es[2:4], 0, 0)); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); !errors.Is(err, fork.ErrUnfinished) {
		t.Fatalf("Commit: %v, want ErrUnfinished", err)
	}
	if i := w.Info(); i.State != fork.Temp || i.Entries != 2 {
		t.Errorf("Info of an unfinished writer: %v, %d entries", i.State, i.Entries)
	}
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(nil); !errors.Is(err, fork.ErrClosed) {
		t.Errorf("Write after Abort: %v", err)
	}
	if names, _ := fsys.List(dir); len(names) != 0 {
		t.Errorf("files left after Abort: %q", names)
	}
}

func TestCreateRefuses(t *testing.T) {
	es := chainLog(testID, 4)
	cases := []struct {
		name string
		edit func(*fork.Header)
		want error
	}{
		{"empty cut", func(h *fork.Header) { h.After = h.Since }, fork.ErrEmptyCut},
		{"negative cut", func(h *fork.Header) { h.After, h.Since = -3, -2 }, nil},
		{"long reason", func(h *fork.Header) { h.Reason = strings.Repeat("x", fork.MaxReason+1) }, nil},
		{"reason not UTF-8", func(h *fork.Header) { h.Reason = "\xff" }, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fsys := vfs.NewMem()
			h := header(es, 0, "x")
			tc.edit(&h)
			_, err := fork.Create(fsys, dir, h)
			if err == nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Create: %v, want an error (%v)", err, tc.want)
			}
			if names, _ := fsys.List(dir); len(names) != 0 {
				t.Errorf("files made: %q", names)
			}
		})
	}
}

func TestCutEpochs(t *testing.T) {
	r := func(e uint64, start int64) flume.EpochRecord { return flume.EpochRecord{Epoch: e, Start: start} }
	hist := []flume.EpochRecord{r(1, 0), r(2, 5), r(3, 9), r(4, 12)}
	cases := []struct {
		after, since int64
		want         []uint64
	}{
		{-1, 20, []uint64{1, 2, 3, 4}},
		{2, 3, []uint64{1}},
		{3, 4, []uint64{1, 2}}, // epoch 2 starts at since+1: no entry yet, cut with them
		{3, 7, []uint64{1, 2}},
		{4, 7, []uint64{2}},        // epoch 2 starts at the first cut entry
		{6, 11, []uint64{2, 3, 4}}, // epoch 4 starts at since+1: no entry yet, cut with them
		{12, 13, []uint64{4}},
	}
	for _, tc := range cases {
		var got []uint64
		for _, e := range fork.CutEpochs(hist, tc.after, tc.since) {
			got = append(got, e.Epoch)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("CutEpochs(after %d, since %d) = %v, want %v", tc.after, tc.since, got, tc.want)
		}
	}
}
