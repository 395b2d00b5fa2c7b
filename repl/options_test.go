package repl

import (
	"strings"
	"testing"
	"time"
)

// TestOptionsValidate: an option with no meaning is refused with an error
// naming the field, by both constructors and by Replicate; zero values take
// the defaults.
func TestOptionsValidate(t *testing.T) {
	cases := []struct {
		name  string
		opts  Options
		field string // "" means valid
	}{
		{"zero", Options{}, ""},
		{"fast", *fastOpts(), ""},
		{"negative heartbeat", Options{Heartbeat: -time.Second}, "Heartbeat"},
		{"negative dead", Options{DeadAfter: -1}, "DeadAfter"},
		{"dead below two heartbeats", Options{Heartbeat: time.Second, DeadAfter: 1500 * time.Millisecond}, "DeadAfter"},
		{"dead below two default heartbeats", Options{DeadAfter: 900 * time.Millisecond}, "DeadAfter"},
		{"default dead follows a long heartbeat", Options{Heartbeat: 5 * time.Second}, ""},
		{"negative min backoff", Options{MinBackoff: -1}, "MinBackoff"},
		{"backoff bounds reversed", Options{MinBackoff: time.Second, MaxBackoff: time.Millisecond}, "MaxBackoff"},
		{"default max follows a long min", Options{MinBackoff: 10 * time.Second}, ""},
		{"negative window", Options{MaxInFlight: -1}, "MaxInFlight"},
		{"negative batch bytes", Options{MaxBatchBytes: -1}, "MaxBatchBytes"},
		{"negative batch entries", Options{MaxBatchEntries: -5}, "MaxBatchEntries"},
		{"node ID too long", Options{NodeID: strings.Repeat("n", maxStringLen+1)}, "NodeID"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o, err := c.opts.withDefaults(nil)
			if c.field == "" {
				if err != nil {
					t.Fatalf("withDefaults = %v, want valid", err)
				}
				if o.DeadAfter < 2*o.Heartbeat || o.MaxBackoff < o.MinBackoff || o.MinBackoff <= 0 ||
					o.MaxInFlight <= 0 || o.MaxBatchBytes <= 0 || o.MaxBatchEntries <= 0 || o.NodeID == "" {
					t.Fatalf("defaults are inconsistent: %+v", o)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "Options."+c.field) {
				t.Fatalf("withDefaults = %v, want an error naming Options.%s", err, c.field)
			}
			opts := c.opts
			if _, err := NewPrimary(newMemDB(t), &opts); err == nil || !strings.Contains(err.Error(), c.field) {
				t.Fatalf("NewPrimary = %v, want an error naming %s", err, c.field)
			}
			fdb := newMemDB(t)
			if _, err := NewFollower(fdb, "127.0.0.1:1", &opts); err == nil || !strings.Contains(err.Error(), c.field) {
				t.Fatalf("NewFollower = %v, want an error naming %s", err, c.field)
			}
			if f, _ := fdb.Role(); f {
				t.Fatal("a refused NewFollower made the DB a follower")
			}
			if _, err := Replicate(newMemDB(t), newMemDB(t), &opts); err == nil {
				t.Fatal("Replicate accepted invalid options")
			}
		})
	}
}
