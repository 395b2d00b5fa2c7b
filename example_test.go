package flume_test

import (
	"context"
	"fmt"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/memlog"
)

func ExampleDB_Append() {
	ctx := context.Background()
	db, err := flume.Open(memlog.New(), nil)
	if err != nil {
		panic(err)
	}
	defer db.Close()

	for _, v := range []string{`{"foo":"bar"}`, `{"baz":"bla"}`} {
		seq, err := db.Append(ctx, []byte(v))
		if err != nil {
			panic(err)
		}
		fmt.Println("appended", v, "at", seq)
	}
	first, last, _ := db.AppendBatch(ctx, [][]byte{[]byte(`{"clam":"gnar"}`), []byte(`{"x":1}`)})
	fmt.Println("batch", first, last, "since", db.Since())
	// Output:
	// appended {"foo":"bar"} at 0
	// appended {"baz":"bla"} at 1
	// batch 2 3 since 3
}

func ExampleDB_Stream() {
	ctx := context.Background()
	db, _ := flume.Open(memlog.New(), nil)
	defer db.Close()
	for _, v := range []string{"a", "b", "c", "d"} {
		db.Append(ctx, []byte(v))
	}

	// Entries after seq 0, newest first, at most two.
	s := db.Stream(ctx, flume.StreamOptions{Gt: flume.At(0), Reverse: true, Limit: 2})
	for s.Next() {
		fmt.Println(s.Entry().Seq, string(s.Entry().Data))
	}
	if err := s.Err(); err != nil {
		panic(err)
	}
	s.Close()

	// A live stream from the follower's position (the seed's replication):
	// old entries first, then new ones as they are appended.
	live := db.Stream(ctx, flume.StreamOptions{Gt: flume.At(1), Live: true, Limit: 3})
	defer live.Close()
	db.Append(ctx, []byte("e"))
	for live.Next() {
		fmt.Println("live", live.Entry().Seq, string(live.Entry().Data))
	}
	// Output:
	// 3 d
	// 2 c
	// live 2 c
	// live 3 d
	// live 4 e
}

func ExampleDB_WaitSince() {
	ctx := context.Background()
	db, _ := flume.Open(memlog.New(), nil)
	defer db.Close()
	go db.Append(ctx, []byte("hello"))
	if err := db.WaitSince(ctx, 0); err != nil {
		panic(err)
	}
	b, _ := db.Get(ctx, 0)
	fmt.Println(string(b))
	// Output: hello
}
