package codec_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"go.uber.org/goleak"

	"github.com/flume-go/flume"
	"github.com/flume-go/flume/codec"
	"github.com/flume-go/flume/memlog"
	"github.com/flume-go/flume/views"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type event struct {
	Kind string `json:"kind"`
	N    int    `json:"n"`
}

func openDB(t *testing.T) *flume.DB {
	db, err := flume.Open(memlog.New(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestJSONRoundTrip(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	j := codec.NewJSON[event](db)
	seq, err := j.Append(ctx, event{"a", 1})
	if err != nil || seq != 0 {
		t.Fatalf("Append = %d, %v", seq, err)
	}
	first, last, err := j.AppendBatch(ctx, event{"b", 2}, event{"c", 3})
	if err != nil || first != 1 || last != 2 {
		t.Fatalf("AppendBatch = %d, %d, %v", first, last, err)
	}
	if v, err := j.Get(ctx, 1); err != nil || v != (event{"b", 2}) {
		t.Fatalf("Get(1) = %+v, %v", v, err)
	}
	if raw, _ := db.Get(ctx, 0); string(raw) != `{"kind":"a","n":1}` {
		t.Fatalf("stored %s", raw)
	}
	if _, err := j.Get(ctx, 9); !errors.Is(err, flume.ErrNotFound) {
		t.Fatalf("Get(9) = %v", err)
	}
	s := j.Stream(ctx, flume.StreamOptions{Gt: flume.At(0)})
	defer s.Close()
	var got []event
	for s.Next() {
		got = append(got, s.Item().Value)
	}
	if s.Err() != nil || len(got) != 2 || got[1] != (event{"c", 3}) {
		t.Fatalf("stream = %+v, %v", got, s.Err())
	}
}

func TestJSONEncodeError(t *testing.T) {
	db := openDB(t)
	j := codec.NewJSON[any](db)
	if _, _, err := j.AppendBatch(context.Background(), 1, make(chan int)); err == nil {
		t.Fatal("unencodable value accepted")
	}
	if db.Since() != -1 {
		t.Fatal("a batch with an unencodable value was partly appended")
	}
}

func TestJSONDecodeErrorNamesSeq(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	j := codec.NewJSON[event](db)
	j.Append(ctx, event{"a", 1})
	db.Append(ctx, []byte("not json"))
	j.Append(ctx, event{"c", 3})
	_, err := j.Get(ctx, 1)
	var de *codec.DecodeError
	if !errors.As(err, &de) || de.Seq != 1 || !errors.Is(err, codec.ErrDecode) {
		t.Fatalf("Get(1) = %v, want *DecodeError at seq 1", err)
	}
	t.Log(err)

	s := j.Stream(ctx, flume.StreamOptions{})
	n := 0
	for s.Next() {
		n++
	}
	if n != 1 || !errors.As(s.Err(), &de) || de.Seq != 1 {
		t.Fatalf("stream gave %d then %v", n, s.Err())
	}
	s.Close()

	s = j.Stream(ctx, flume.StreamOptions{})
	s.SkipInvalid = true
	n = 0
	for s.Next() {
		n++
	}
	if n != 2 || s.Skipped != 1 || s.Err() != nil {
		t.Fatalf("skipping stream gave %d, skipped %d, %v", n, s.Skipped, s.Err())
	}
	s.Close()
}

func TestTypedViews(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	total := views.NewReduce("", "v1", nil, codec.Reducer(func(sum int, _ int64, e event) (int, error) {
		return sum + e.N, nil
	}, true), nil)
	if err := db.Use("total", total); err != nil {
		t.Fatal(err)
	}
	byKind := views.NewIndex(t.TempDir()+"/kind.db", "v1", codec.Keys(func(e event) [][]byte {
		return [][]byte{[]byte(e.Kind)}
	}, true))
	if err := db.Use("kind", byKind); err != nil {
		t.Fatal(err)
	}
	j := codec.NewJSON[event](db)
	j.AppendBatch(ctx, event{"a", 1}, event{"b", 2}, event{"a", 3})
	db.Append(ctx, []byte("{broken"))
	if n, err := total.Get(ctx); err != nil || n != 6 {
		t.Fatalf("total = %d, %v", n, err)
	}
	if seqs, err := byKind.Seqs(ctx, []byte("a")); err != nil || fmt.Sprint(seqs) != "[0 2]" {
		t.Fatalf("kind a = %v, %v", seqs, err)
	}
}

// FuzzDecode: any bytes decode to a value or a *DecodeError naming the seq,
// never a panic.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"kind":"a","n":1}`))
	f.Add([]byte(`{"kind":1}`))
	f.Add([]byte(`[`))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, err := codec.Decode[event](flume.Entry{Seq: 7, Data: b})
		var de *codec.DecodeError
		if err != nil && (!errors.As(err, &de) || de.Seq != 7) {
			t.Fatalf("error %v is not a *DecodeError at 7", err)
		}
	})
}

func ExampleJSON() {
	ctx := context.Background()
	db, _ := flume.Open(memlog.New(), nil)
	defer db.Close()

	type item map[string]string
	items := codec.NewJSON[item](db)
	for _, it := range []item{{"foo": "bar"}, {"baz": "bla"}, {"clam": "gnar"}} {
		items.Append(ctx, it)
	}
	s := items.Stream(ctx, flume.StreamOptions{})
	defer s.Close()
	for s.Next() {
		fmt.Println(s.Item().Seq, s.Item().Value)
	}
	// Output:
	// 0 map[foo:bar]
	// 1 map[baz:bla]
	// 2 map[clam:gnar]
}
