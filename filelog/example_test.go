package filelog_test

import (
	"fmt"
	"os"

	"github.com/flume-go/flume/filelog"
)

func ExampleOpen() {
	dir, _ := os.MkdirTemp("", "flume-example-")
	defer os.RemoveAll(dir)

	l, err := filelog.Open(dir, &filelog.Options{Sync: filelog.SyncAlways})
	if err != nil {
		panic(err)
	}
	last, _ := l.Append([]byte(`{"foo":"bar"}`), []byte(`{"baz":"bla"}`))
	fmt.Println("last seq:", last)
	l.Close()

	// Reopen: everything is there, and the open report says what recovery did.
	l, _ = filelog.Open(dir, nil)
	defer l.Close()
	v, _ := l.Get(1)
	fmt.Println(string(v), "truncated:", l.OpenReport().TruncatedBytes)
	it := l.Iter(0)
	defer it.Close()
	for it.Next() {
		e := it.Entry()
		fmt.Println(e.Seq, string(e.Data))
	}
	// Output:
	// last seq: 1
	// {"baz":"bla"} truncated: 0
	// 0 {"foo":"bar"}
	// 1 {"baz":"bla"}
}
