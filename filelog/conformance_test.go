package filelog_test

import (
	"fmt"
	"testing"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/filelog"
	"github.com/flume-go/flume/flumetest"
	"github.com/flume-go/flume/vfs"
)

var modes = []filelog.SyncMode{filelog.SyncAlways, filelog.SyncInterval, filelog.SyncNever}

type fsKind struct {
	name string
	new  func() vfs.FS
}

var fsKinds = []fsKind{
	{"mem", func() vfs.FS { return vfs.NewMem() }},
	{"os", func() vfs.FS { return vfs.Default }},
}

func testOptions(fs vfs.FS, mode filelog.SyncMode) *filelog.Options {
	// Small segments so that the suite crosses segment boundaries.
	return &filelog.Options{FS: fs, Sync: mode, SegmentSize: 16 << 10}
}

func TestConformance(t *testing.T) {
	for _, k := range fsKinds {
		for _, mode := range modes {
			t.Run(fmt.Sprintf("%s/%s", k.name, mode), func(t *testing.T) {
				flumetest.TestLog(t, func(t *testing.T) flume.Log {
					l, err := filelog.Open(t.TempDir(), testOptions(k.new(), mode))
					if err != nil {
						t.Fatal(err)
					}
					return l
				})
			})
		}
	}
}

func TestDurable(t *testing.T) {
	for _, k := range fsKinds {
		for _, mode := range modes {
			t.Run(fmt.Sprintf("%s/%s", k.name, mode), func(t *testing.T) {
				fs := k.new() // shared by every reopen of this variant
				flumetest.TestDurableLog(t, func(t *testing.T, dir string) flume.Log {
					l, err := filelog.Open(dir, testOptions(fs, mode))
					if err != nil {
						t.Fatal(err)
					}
					return l
				})
			})
		}
	}
}
