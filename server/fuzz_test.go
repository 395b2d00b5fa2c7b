package server

import (
	"bytes"
	"encoding/json"
	"net/url"
	"testing"
)

// FuzzSplitNDJSON: any body either fails with a line error or yields
// values that are each one valid, single-line JSON value.
func FuzzSplitNDJSON(f *testing.F) {
	for _, s := range []string{"{}\n[1]\n", "\n\n", "{\"a\":\n1}", "\"x\"\r\n2\n", "{}{}", "\xff"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		values, err := splitNDJSON(body)
		if err != nil {
			if _, ok := err.(*lineError); !ok {
				t.Fatalf("error %v is not a line error", err)
			}
			return
		}
		for _, v := range values {
			if !json.Valid(v) || bytes.IndexByte(v, '\n') >= 0 {
				t.Fatalf("value %q is not one line of JSON", v)
			}
		}
	})
}

// FuzzStreamQuery: any query string parses or fails cleanly, never panics,
// and a parsed stream never combines reverse with live.
func FuzzStreamQuery(f *testing.F) {
	for _, s := range []string{"gt=1&lt=5", "reverse&limit=3", "live=true&gte=-1", "gt=9223372036854775807", "lt=x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		vals, err := url.ParseQuery(q)
		if err != nil {
			return
		}
		o, err := parseStreamOptions(vals)
		if err == nil && o.Reverse && o.Live {
			t.Fatalf("%q: reverse and live accepted", q)
		}
	})
}
