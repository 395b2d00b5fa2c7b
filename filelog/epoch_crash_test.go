package filelog_test

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/filelog"
	"github.com/flume-go/flume/flumetest"
	"github.com/flume-go/flume/vfs"
	"github.com/flume-go/flume/vfs/errorfs"
)

// The crash and fault tests of BeginEpoch, Fence, SetCommittedHint and
// TruncateAfter. Each case builds a log (deterministically: fixed ID,
// derived promotion IDs), then runs one call and checks that whatever a
// power loss or an I/O error leaves reopens into exactly the state before
// the call or the state after it, never anything between, and never fails
// to open.

// nodeView is everything the calls under test may change.
type nodeView struct {
	since  int64
	head   flume.Hash
	epoch  uint64
	epochs []flume.EpochRecord
	fenced uint64
	hint   int64
}

func viewOf(l *filelog.Log) nodeView {
	v := nodeView{epoch: l.Epoch(), epochs: l.Epochs(), fenced: l.FencedEpoch(), hint: l.CommittedHint()}
	v.since, v.head = l.Head()
	return v
}

func (v nodeView) equal(o nodeView) bool {
	return v.since == o.since && v.head == o.head && v.epoch == o.epoch && sameRecords(v.epochs, o.epochs) &&
		v.fenced == o.fenced && v.hint == o.hint
}

func (v nodeView) String() string {
	return fmt.Sprintf("since %d (%s) epoch %d fenced %d hint %d history %v", v.since, v.head.Short(), v.epoch, v.fenced, v.hint, v.epochs)
}

var crashID = flume.LogID{0xc7, 0xa5, 0x4e, 1, 2, 3}

const crashSegSize = 1024

func crashOpts(fs vfs.FS) *filelog.Options {
	return &filelog.Options{FS: fs, SegmentSize: crashSegSize}
}

// crashCase is one call under test on a log built by setup.
type crashCase struct {
	name  string
	setup func(t testing.TB, l *filelog.Log)
	op    func(l *filelog.Log) error
}

// buildEpochs writes the usual log of these tests: epoch 1 from seq 0,
// entries 0..29, epoch 2 from 30, entries 30..59 (batches of 3, 40-byte
// payloads: about six segments), epoch 3 from 60 without entries yet,
// fenced epoch 3 and committed hint 20.
func buildEpochs(t testing.TB, l *filelog.Log) {
	t.Helper()
	if err := l.SetID(crashID); err != nil {
		t.Fatal(err)
	}
	for _, e := range []uint64{1, 2, 3} {
		if err := l.BeginEpoch(flumetest.NextEpochRecord(l, e)); err != nil {
			t.Fatal(err)
		}
		if e == 3 {
			break
		}
		for i := l.Since() + 1; i < int64(e)*30; i += 3 {
			if _, err := l.Append(payload(i), payload(i+1), payload(i+2)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := l.Fence(3); err != nil {
		t.Fatal(err)
	}
	if err := l.SetCommittedHint(20); err != nil {
		t.Fatal(err)
	}
}

// cutAt returns the op that cuts l after seq.
func cutAt(seq func(l *filelog.Log) int64) func(l *filelog.Log) error {
	return func(l *filelog.Log) error {
		s := seq(l)
		want := flume.GenesisHash(l.ID())
		if s >= 0 {
			e, err := l.Entry(s)
			if err != nil {
				return err
			}
			want = e.Hash
		}
		_, err := l.TruncateAfter(s, want, nil)
		return err
	}
}

// segmentBases returns the first seqs of l's segment files.
func segmentBases(t testing.TB, fs vfs.FS) []int64 {
	t.Helper()
	var bases []int64
	for _, p := range segments(t, fs) {
		var b int64
		fmt.Sscanf(filepath.Base(p), "%d", &b)
		bases = append(bases, b)
	}
	return bases
}

func crashCases() []crashCase {
	fixed := func(s int64) func(*filelog.Log) int64 { return func(*filelog.Log) int64 { return s } }
	var boundary int64 // the last seq of the third segment, set by its setup
	return []crashCase{
		{"BeginEpoch/first", func(t testing.TB, l *filelog.Log) {
			if err := l.SetID(crashID); err != nil {
				t.Fatal(err)
			}
			for i := int64(0); i < 12; i++ {
				l.Append(payload(i))
			}
		}, func(l *filelog.Log) error { return l.BeginEpoch(flumetest.NextEpochRecord(l, 1)) }},
		{"BeginEpoch/next", buildEpochs, func(l *filelog.Log) error { return l.BeginEpoch(flumetest.NextEpochRecord(l, 5)) }},
		{"BeginEpoch/after entries", func(t testing.TB, l *filelog.Log) {
			buildEpochs(t, l)
			l.Append(payload(60), payload(61))
		}, func(l *filelog.Log) error { return l.BeginEpoch(flumetest.NextEpochRecord(l, 4)) }},
		{"Fence/first", func(t testing.TB, l *filelog.Log) { l.SetID(crashID) }, func(l *filelog.Log) error { return l.Fence(2) }},
		{"Fence/next", buildEpochs, func(l *filelog.Log) error { return l.Fence(9) }},
		{"SetCommittedHint", buildEpochs, func(l *filelog.Log) error { return l.SetCommittedHint(55) }},
		// Two promotions that wrote nothing (KAFKA-10706), dropped at once.
		{"DropEmptyEpochs", func(t testing.TB, l *filelog.Log) {
			buildEpochs(t, l)
			for _, e := range []uint64{7, 8} {
				if err := l.BeginEpoch(flumetest.NextEpochRecord(l, e)); err != nil {
					t.Fatal(err)
				}
			}
		}, func(l *filelog.Log) error { return l.DropEmptyEpochs(len(l.Epochs()) - 2) }},
		// Cuts: inside a batch in a sealed segment, across the epoch 2
		// boundary (epochs 2 and 3 go); at the end of a batch; at a
		// segment boundary; inside a batch of the active segment (epoch 3
		// goes); everything.
		{"TruncateAfter/inside a batch, sealed, across epochs", buildEpochs, cutAt(fixed(25))},
		{"TruncateAfter/end of a batch", buildEpochs, cutAt(fixed(35))},
		{"TruncateAfter/segment boundary", func(t testing.TB, l *filelog.Log) {
			buildEpochs(t, l)
			if err := l.Sync(); err != nil {
				t.Fatal(err)
			}
			boundary = segmentBases(t, filelogFS(l))[3] - 1
		}, cutAt(func(*filelog.Log) int64 { return boundary })},
		{"TruncateAfter/inside a batch, active", buildEpochs, cutAt(fixed(58))},
		{"TruncateAfter/everything", buildEpochs, cutAt(fixed(-1))},
	}
}

// fsOf remembers the FS each test log was opened on, for setups that look
// at the files.
var fsOf sync.Map // *filelog.Log -> vfs.FS

func filelogFS(l *filelog.Log) vfs.FS {
	v, _ := fsOf.Load(l)
	return v.(vfs.FS)
}

func openCrashLog(t testing.TB, fsys vfs.FS, under vfs.FS) *filelog.Log {
	t.Helper()
	l, err := filelog.Open(dir, crashOpts(fsys))
	if err != nil {
		t.Fatal(err)
	}
	fsOf.Store(l, under)
	t.Cleanup(func() { fsOf.Delete(l) })
	return l
}

func crashSeed(t *testing.T) uint64 {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("FLUME_SEED"); s != "" {
		fmt.Sscan(s, &seed)
	}
	t.Logf("seed %d (set FLUME_SEED to replay)", seed)
	return seed
}

// reference runs c without faults and returns the states before and after.
func (c crashCase) reference(t *testing.T) (before, after nodeView) {
	mem := vfs.NewMem()
	l := openCrashLog(t, mem, mem)
	defer l.Close()
	c.setup(t, l)
	before = viewOf(l)
	if err := c.op(l); err != nil {
		t.Fatalf("%s without faults: %v", c.name, err)
	}
	return before, viewOf(l)
}

// checkReopen opens the log on fsys and checks that it is in state before
// or after (exactly after, if mustBeAfter), sound, without a leftover
// intent, and that it takes an append and reopens unchanged.
func checkReopen(t *testing.T, what string, fsys vfs.FS, before, after nodeView, mustBeAfter bool) {
	t.Helper()
	l, err := filelog.Open(dir, crashOpts(fsys))
	if err != nil {
		t.Fatalf("%s: open: %v", what, err)
	}
	got := viewOf(l)
	if !got.equal(after) && (mustBeAfter || !got.equal(before)) {
		l.Close()
		t.Fatalf("%s: reopened into\n  %s\nwant the state before\n  %s\nor after\n  %s", what, got, before, after)
	}
	flumetest.CheckLog(t, l, func(i int64) []byte { return payload(i) })
	if _, err := l.Verify(t.Context(), nil); err != nil {
		t.Fatalf("%s: verify: %v", what, err)
	}
	if _, err := fsys.Stat(filepath.Join(dir, "truncate")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("%s: the truncation intent is still there after open (%v)", what, err)
	}
	if s, err := l.Append(payload(got.since + 1)); err != nil || s != got.since+1 {
		t.Fatalf("%s: append after reopen = %d, %v", what, s, err)
	}
	got.since, got.head = l.Head()
	if err := l.Close(); err != nil {
		t.Fatalf("%s: close: %v", what, err)
	}
	l, err = filelog.Open(dir, crashOpts(fsys))
	if err != nil {
		t.Fatalf("%s: second open: %v", what, err)
	}
	defer l.Close()
	if again := viewOf(l); !again.equal(got) {
		t.Fatalf("%s: second open found\n  %s\nwant\n  %s", what, again, got)
	}
}

// TestEpochOpsCrashAtEveryOp takes a power-loss clone of the filesystem
// before every filesystem operation of each call (and after it returns),
// keeping only synced data, or also a seeded random part of the unsynced
// data, and checks that every clone reopens into the state before the call
// or the state after it.
func TestEpochOpsCrashAtEveryOp(t *testing.T) {
	seed := crashSeed(t)
	for ci, c := range crashCases() {
		t.Run(c.name, func(t *testing.T) {
			before, after := c.reference(t)
			mem := vfs.NewMem()
			efs := errorfs.Wrap(mem, nil)
			l := openCrashLog(t, efs, mem)
			c.setup(t, l)
			if got := viewOf(l); !got.equal(before) {
				t.Fatalf("setup is not deterministic: %s, reference %s", got, before)
			}
			type point struct {
				what  string
				fs    *vfs.MemFS
				after bool // the call had returned: only its new state will do
			}
			var mu sync.Mutex
			var points []point
			const returned = "after the call returned"
			clone := func(what string) {
				// Only synced data, then partial unsynced data: each clone
				// keeps a random prefix of each file's unsynced writes.
				for k, pct := range []int{0, 50, 100, 100, 100, 100} {
					rng := rand.New(rand.NewPCG(seed, uint64(ci*100000+len(points)*10+k)))
					c := mem.CrashClone(vfs.CrashConfig{UnsyncedDataPercent: pct, Rand: rng})
					points = append(points, point{fmt.Sprintf("crash %s, %d%% of unsynced data kept", what, pct), c, what == returned})
				}
			}
			efs.SetInjector(errorfs.InjectorFunc(func(op errorfs.Op) error {
				mu.Lock()
				defer mu.Unlock()
				clone(fmt.Sprintf("before op %d (%s %s)", op.Index, op.Kind, filepath.Base(op.Path)))
				return nil
			}))
			err := c.op(l)
			efs.SetInjector(nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := viewOf(l); !got.equal(after) {
				t.Fatalf("after the call: %s, reference %s", got, after)
			}
			clone(returned)
			l.Close()
			for _, p := range points {
				checkReopen(t, p.what, p.fs, before, after, p.after)
			}
			t.Logf("%d crash points", len(points))
		})
	}
}

// TestEpochOpsErrorAtEveryOp fails each filesystem operation of each call
// in turn: the call returns the injected error (or succeeds, if the
// failure was harmless), and the log reopens into the state before the
// call or after it (after it, if the call succeeded).
func TestEpochOpsErrorAtEveryOp(t *testing.T) {
	for _, c := range crashCases() {
		t.Run(c.name, func(t *testing.T) {
			before, after := c.reference(t)
			for i := int64(0); ; i++ {
				if i > 500 {
					t.Fatal("the call never ran without an injected error")
				}
				mem := vfs.NewMem()
				efs := errorfs.Wrap(mem, nil)
				l := openCrashLog(t, efs, mem)
				c.setup(t, l)
				efs.SetInjector(errorfs.OnIndex(efs.Ops() + i))
				err := c.op(l)
				efs.SetInjector(nil)
				injected := efs.Injected() > 0
				l.Close()
				what := fmt.Sprintf("error at op %d of the call (%v)", i, err)
				if !injected {
					if err != nil {
						t.Fatalf("op %d: the call failed without an injected error: %v", i, err)
					}
					checkReopen(t, what, mem, before, after, true)
					t.Logf("the call ran through after %d injection points", i)
					return
				}
				if err != nil && !errors.Is(err, errorfs.ErrInjected) {
					t.Fatalf("%s: the error is not the injected one", what)
				}
				checkReopen(t, what, mem, before, after, err == nil)
			}
		})
	}
}
