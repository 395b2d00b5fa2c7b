package server

import (
	"encoding/json"
	"strings"
	"testing"
)

var validJSONCases = []string{
	``, ` `, `{}`, `[]`, `{"a":1}`, ` {"a" : [1, 2.5, -0, 1e9, 1E-2, 0.1e+3]} `, `"x"`, `"\u00e9\n\"\\\/"`,
	`true`, `false`, `null`, `nul`, `tru`, `01`, `-`, `1.`, `.1`, `1e`, `1e+`, `-01`, `+1`, `{"a"}`, `{"a":}`,
	`{,}`, `[1,]`, `[,1]`, `{"a":1,}`, `{}{}`, `[] x`, "\"a\tb\"", "\"\x01\"", `"\x"`, `"\u12g4"`, `"\u12"`,
	"\"\xff\xfe\"", `{"a":{"b":[{"c":null}]}}`, `[[[[]]]]`, `[1 2]`, `{"a" 1}`, `"unterminated`, "\n[\r\n1\t]\n",
	`{"a":1 "b":2}`, `1.5e3x`, `"é"`,
}

func TestValidJSONMatchesStdlib(t *testing.T) {
	cases := append([]string(nil), validJSONCases...)
	cases = append(cases, strings.Repeat("[", maxJSONDepth)+strings.Repeat("]", maxJSONDepth),
		strings.Repeat("[", maxJSONDepth+1)+strings.Repeat("]", maxJSONDepth+1),
		strings.Repeat(`{"a":`, maxJSONDepth)+"1"+strings.Repeat("}", maxJSONDepth),
		strings.Repeat(`{"a":`, maxJSONDepth+1)+"1"+strings.Repeat("}", maxJSONDepth+1))
	for _, c := range cases {
		if got, want := validJSON([]byte(c)), json.Valid([]byte(c)); got != want {
			t.Errorf("validJSON(%.40q) = %v, json.Valid = %v", c, got, want)
		}
	}
}

// FuzzValidJSON: validJSON agrees with encoding/json.Valid on any input.
func FuzzValidJSON(f *testing.F) {
	for _, c := range validJSONCases {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := validJSON(b), json.Valid(b); got != want {
			t.Fatalf("validJSON(%q) = %v, json.Valid = %v", b, got, want)
		}
	})
}
