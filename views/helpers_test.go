package views_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/memlog"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// newDB opens a DB over l (a fresh memlog when nil), closed at the end.
func newDB(t testing.TB, l *memlog.Log) *flume.DB {
	t.Helper()
	if l == nil {
		l = memlog.New()
	}
	db, err := flume.Open(l, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func appendN(t testing.TB, db *flume.DB, n int, f func(i int64) string) {
	t.Helper()
	ctx := context.Background()
	vals := make([][]byte, 0, 1024)
	for i := 0; i < n; {
		vals = vals[:0]
		for ; i < n && len(vals) < cap(vals); i++ {
			vals = append(vals, []byte(f(db.Since()+1+int64(len(vals)))))
		}
		if _, _, err := db.AppendBatch(ctx, vals); err != nil {
			t.Fatal(err)
		}
	}
}

// copyLog returns a new memlog holding entries [0, upTo] of db's log with
// the same ID and chain: what reopening a durable log would give.
func copyLog(t testing.TB, db *flume.DB, upTo int64) *memlog.Log {
	t.Helper()
	l := memlog.New()
	if err := l.SetID(db.Log().ID()); err != nil {
		t.Fatal(err)
	}
	for s := int64(0); s <= upTo; s++ {
		e, err := db.Log().Entry(s)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.AppendEntries([]flume.Entry{e}); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

func num(i int64) string { return fmt.Sprint(i) }
