package views_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/memlog"
	"github.com/flume-go/flume/views"
)

// A reduce view that counts entries and bytes; its state and since are
// saved in one file, so a restart resumes without re-reading the log.
func ExampleNewReduce() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "flume-example")
	defer os.RemoveAll(dir)

	db, _ := flume.Open(memlog.New(), nil)
	defer db.Close()

	type stats struct{ Entries, Bytes int }
	st := views.NewReduce(filepath.Join(dir, "stats.json"), "stats-v1", nil,
		func(s stats, e flume.Entry) (stats, error) {
			return stats{s.Entries + 1, s.Bytes + len(e.Data)}, nil
		}, nil)
	if err := db.Use("stats", st); err != nil {
		panic(err)
	}
	for _, v := range []string{`{"foo":"bar"}`, `{"baz":"bla"}`, `{"clam":"gnar"}`} {
		db.Append(ctx, []byte(v))
	}
	s, err := st.Get(ctx) // waits until the view holds all three appends
	if err != nil {
		panic(err)
	}
	fmt.Printf("%+v\n", s)
	// Output: {Entries:3 Bytes:41}
}

// An index view on the first letter of each entry: exact and range queries.
func ExampleNewIndex() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "flume-example")
	defer os.RemoveAll(dir)

	db, _ := flume.Open(memlog.New(), nil)
	defer db.Close()
	byLetter := views.NewIndex(filepath.Join(dir, "letters.db"), "v1",
		func(e flume.Entry) ([][]byte, error) { return [][]byte{e.Data[:1]}, nil })
	if err := db.Use("letters", byLetter); err != nil {
		panic(err)
	}
	for _, w := range strings.Fields("apple banana avocado cherry blueberry") {
		db.Append(ctx, []byte(w))
	}
	seqs, _ := byLetter.Seqs(ctx, []byte("a"))
	fmt.Println("a:", seqs)

	it := byLetter.Query(ctx, views.IndexQuery{Gte: []byte("b"), Lt: []byte("c"), Values: true})
	defer it.Close()
	for it.Next() {
		fmt.Println(string(it.Match().Key), it.Match().Seq, string(it.Match().Value))
	}
	// Output:
	// a: [0 2]
	// b 1 banana
	// b 4 blueberry
}
