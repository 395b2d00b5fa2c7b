package reliability

import (
	"testing"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/filelog"
)

// The durable log joins the in-process suites (fsync always on every node).
func init() {
	logKinds = append(logKinds, logKind{"filelog", func(t testing.TB, dir string) flume.Log {
		t.Helper()
		l, err := filelog.Open(dir, &filelog.Options{Sync: filelog.SyncAlways})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}})
}
