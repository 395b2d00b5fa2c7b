package server

import (
	"context"
	"fmt"
	"net/http/httptest"
	"testing"

	"github.com/flume-go/flume/memlog"
)

// BenchmarkStreamHTTP measures GET /log over 100k 100 B JSON entries.
func BenchmarkStreamHTTP(b *testing.B) {
	s, err := New(Config{Log: memlog.New()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	const n = 100_000
	vals := make([][]byte, n)
	for i := range vals {
		vals[i] = fmt.Appendf(nil, `{"i":%d,"p":"%080d"}`, i, i)
	}
	if _, _, err := s.DB().AppendBatch(context.Background(), vals); err != nil {
		b.Fatal(err)
	}
	h := s.Handler()
	b.SetBytes(int64(n * len(vals[0])))
	b.ResetTimer()
	for range b.N {
		rec := httptest.NewRecorder()
		rec.Body = nil // discard the output
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/log", nil))
		if rec.Code != 200 {
			b.Fatal(rec.Code)
		}
	}
}
