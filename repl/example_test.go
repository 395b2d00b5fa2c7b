package repl_test

import (
	"context"
	"fmt"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/memlog"
	"github.com/flume-go/flume/repl"
)

// The seed's example: two DBs in one program, the second a live replica of
// the first.
func ExampleReplicate() {
	ctx := context.Background()
	db, _ := flume.Open(memlog.New(), nil)
	db2, _ := flume.Open(memlog.New(), nil)
	defer db.Close()
	defer db2.Close()

	for _, v := range []string{`{"foo":"bar"}`, `{"baz":"bla"}`, `{"clam":"gnar"}`} {
		db.Append(ctx, []byte(v))
	}
	link, err := repl.Replicate(db, db2, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer link.Close()
	seq, _ := db.Append(ctx, []byte(`{"livetest":"test"}`))
	db2.WaitSince(ctx, seq)
	for s := int64(0); s <= seq; s++ {
		v, _ := db2.Get(ctx, s)
		fmt.Println(s, string(v))
	}
	_, err = db2.Append(ctx, []byte(`{}`))
	fmt.Println(err)
	// Output:
	// 0 {"foo":"bar"}
	// 1 {"baz":"bla"}
	// 2 {"clam":"gnar"}
	// 3 {"livetest":"test"}
	// flume: read-only follower: appends go to the primary at in-process
}
