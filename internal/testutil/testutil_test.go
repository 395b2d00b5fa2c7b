package testutil

import (
	"fmt"
	"testing"
	"testing/synctest"
	"time"
)

// fatalRecorder is a testing.TB whose Fatalf records the message instead of
// ending the goroutine.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Helper() {}

func (r *fatalRecorder) Fatalf(format string, args ...any) { r.msg = fmt.Sprintf(format, args...) }

func TestPoll(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		calls := 0
		if !Poll(time.Second, func() bool { calls++; return time.Since(start) >= 100*time.Millisecond }) {
			t.Fatal("Poll gave up on a condition that became true before its timeout")
		}
		// The interval backs off (1, 2, 4, ... ms, capped) instead of
		// spinning, yet notices the change within one capped interval.
		if d := time.Since(start); d > 100*time.Millisecond+maxPollInterval {
			t.Errorf("Poll noticed the condition after %v", d)
		}
		if calls < 5 || calls > 20 {
			t.Errorf("Poll checked %d times in 100ms, want a backoff from 1ms", calls)
		}

		start = time.Now()
		calls = 0
		if Poll(time.Second, func() bool { calls++; return false }) {
			t.Fatal("Poll reported a condition that never held")
		}
		if d := time.Since(start); d != time.Second {
			t.Errorf("Poll gave up after %v, want the 1s timeout exactly", d)
		}
		if calls < 2 {
			t.Errorf("Poll checked %d times", calls)
		}
	})
}

func TestEventually(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &fatalRecorder{}
		start := time.Now()
		Eventually(r, "something", time.Second, func() bool { return time.Since(start) > 10*time.Millisecond })
		if r.msg != "" {
			t.Fatalf("Eventually failed on a condition that held: %s", r.msg)
		}
		Eventually(r, "the primary to count the refusal", 3*time.Second, func() bool { return false })
		if want := "timed out after 3s waiting for the primary to count the refusal"; r.msg != want {
			t.Fatalf("got %q, want %q", r.msg, want)
		}
	})
}
