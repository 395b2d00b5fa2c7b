// Package codec puts typed values on top of a flume DB, whose entries are
// opaque bytes. JSON[T] stores each value as one JSON document (the seed's
// values are JSON objects) and decodes entries back into T, reporting an
// entry that does not decode as a *DecodeError naming its seq.
//
//	type Event struct{ Foo string `json:"foo"` }
//	events := codec.NewJSON[Event](db)
//	seq, err := events.Append(ctx, Event{Foo: "bar"})
//	ev, err := events.Get(ctx, seq)
package codec

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/flume-go/flume"
)

// ErrDecode marks an entry that could not be decoded. The concrete error is
// a *DecodeError. Use errors.Is.
var ErrDecode = errors.New("codec: cannot decode entry")

// DecodeError says which entry did not decode into which type, and why. It
// unwraps to ErrDecode and to the decoder's error.
type DecodeError struct {
	Seq  int64  // the entry's seq
	Type string // the Go type it was decoded into
	Err  error  // the decoder's error
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("codec: entry %d is not valid JSON for %s: %v", e.Seq, e.Type, e.Err)
}

// Unwrap makes errors.Is(err, ErrDecode) true and exposes the cause.
func (e *DecodeError) Unwrap() []error { return []error{ErrDecode, e.Err} }

// Decode decodes a JSON entry into a T. An entry that is not valid JSON for
// T is a *DecodeError with e.Seq. It never panics, whatever the bytes. It is
// the building block for typed views, see Reducer and Keys.
func Decode[T any](e flume.Entry) (T, error) {
	var v T
	if err := json.Unmarshal(e.Data, &v); err != nil {
		var zero T
		return zero, &DecodeError{Seq: e.Seq, Type: fmt.Sprintf("%T", v), Err: err}
	}
	return v, nil
}

// Encode encodes v as JSON; an error names the type.
func Encode[T any](v T) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("codec: encode %T: %w", v, err)
	}
	return b, nil
}

// JSON is a typed view of a DB whose entries are JSON encodings of T. It adds
// no state: any number of JSON values (of different T) may share one DB, and
// it is safe for concurrent use like the DB.
type JSON[T any] struct {
	db *flume.DB
}

// NewJSON returns a JSON codec over db.
func NewJSON[T any](db *flume.DB) *JSON[T] { return &JSON[T]{db: db} }

// DB returns the underlying DB.
func (j *JSON[T]) DB() *flume.DB { return j.db }

// Append encodes v and appends it, returning its own seq (see DB.Append).
func (j *JSON[T]) Append(ctx context.Context, v T) (int64, error) {
	b, err := Encode(v)
	if err != nil {
		return 0, err
	}
	return j.db.Append(ctx, b)
}

// AppendBatch encodes vs and appends them atomically as consecutive entries
// (see DB.AppendBatch); nothing is appended if any value fails to encode.
func (j *JSON[T]) AppendBatch(ctx context.Context, vs ...T) (first, last int64, err error) {
	bs := make([][]byte, len(vs))
	for i, v := range vs {
		if bs[i], err = Encode(v); err != nil {
			return 0, 0, fmt.Errorf("codec: value %d of the batch: %w", i, err)
		}
	}
	return j.db.AppendBatch(ctx, bs)
}

// Get returns the value of entry seq (DB.Get's errors, or a *DecodeError).
func (j *JSON[T]) Get(ctx context.Context, seq int64) (T, error) {
	b, err := j.db.Get(ctx, seq)
	if err != nil {
		var zero T
		return zero, err
	}
	return Decode[T](flume.Entry{Seq: seq, Data: b})
}

// Stream opens a typed stream with DB.Stream's options and guarantees. An
// entry that does not decode ends the stream with a *DecodeError, unless
// SkipInvalid is set on the returned stream before the first Next.
func (j *JSON[T]) Stream(ctx context.Context, opts flume.StreamOptions) *Stream[T] {
	return &Stream[T]{s: j.db.Stream(ctx, opts)}
}

// Item is one decoded entry.
type Item[T any] struct {
	Seq   int64
	Value T
}

// Stream is a typed flume.Stream. Use it like bufio.Scanner.
type Stream[T any] struct {
	s   *flume.Stream
	cur Item[T]
	err error
	// SkipInvalid makes the stream skip entries that do not decode instead
	// of ending with their *DecodeError; Skipped counts them.
	SkipInvalid bool
	Skipped     int
}

// Next decodes the next entry; false at the end, on error or on a decode
// error (unless SkipInvalid).
func (s *Stream[T]) Next() bool {
	if s.err != nil {
		return false
	}
	for s.s.Next() {
		e := s.s.Entry()
		v, err := Decode[T](e)
		if err != nil {
			if s.SkipInvalid {
				s.Skipped++
				continue
			}
			s.err = err
			s.s.Close()
			return false
		}
		s.cur = Item[T]{Seq: e.Seq, Value: v}
		return true
	}
	return false
}

// Item is the current decoded entry; it stays valid after Next.
func (s *Stream[T]) Item() Item[T] { return s.cur }

// Err is the error that ended the stream (a *DecodeError or the underlying
// stream's error), nil at a normal end.
func (s *Stream[T]) Err() error {
	if s.err != nil {
		return s.err
	}
	return s.s.Err()
}

// Close releases the stream.
func (s *Stream[T]) Close() error { return s.s.Close() }

// Reducer adapts a reducer over decoded values to a ReduceFunc over entries,
// for views.NewReduce: fn gets each entry's seq and value. An entry that
// does not decode stops the view with its *DecodeError unless skipInvalid,
// which leaves the state unchanged for it.
func Reducer[T, S any](fn func(state S, seq int64, v T) (S, error), skipInvalid bool) func(S, flume.Entry) (S, error) {
	return func(s S, e flume.Entry) (S, error) {
		v, err := Decode[T](e)
		if err != nil {
			if skipInvalid {
				return s, nil
			}
			return s, err
		}
		return fn(s, e.Seq, v)
	}
}

// Keys adapts a key function over decoded values to a views.KeyFunc. An entry
// that does not decode is indexed under no key when skipInvalid, else it
// stops the index with its *DecodeError.
func Keys[T any](fn func(v T) [][]byte, skipInvalid bool) func(flume.Entry) ([][]byte, error) {
	return func(e flume.Entry) ([][]byte, error) {
		v, err := Decode[T](e)
		if err != nil {
			if skipInvalid {
				return nil, nil
			}
			return nil, err
		}
		return fn(v), nil
	}
}
