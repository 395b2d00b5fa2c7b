// Package testutil holds small helpers shared by flume's tests.
//
// Prefer waiting on an event (a channel, DB.WaitSince, Follower.Ready) and,
// in-process, testing/synctest. Poll and Eventually are for state that has
// no event to wait on: another process, a counter in Stats, /status over
// HTTP, goroutine or file-descriptor counts.
package testutil

import (
	"testing"
	"time"
)

// maxPollInterval caps the backoff between two checks: cond may be an HTTP
// request or a scan of /proc, and a waiter should still notice the change
// within a few tens of milliseconds.
const maxPollInterval = 50 * time.Millisecond

// Poll calls cond until it returns true or timeout has passed, and reports
// whether it returned true. It checks at once, then after 1ms, doubling the
// interval up to 50ms, and once more at the deadline.
func Poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	wait := time.Millisecond
	for {
		if cond() {
			return true
		}
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		time.Sleep(min(wait, left))
		wait = min(2*wait, maxPollInterval)
	}
}

// Eventually fails t unless cond returns true within timeout. The failure
// names what was awaited and how long the test waited for it, e.g.
// "timed out after 10s waiting for the primary to count the refusal".
func Eventually(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	start := time.Now()
	if !Poll(timeout, cond) {
		t.Fatalf("timed out after %v waiting for %s", time.Since(start).Round(time.Millisecond), what)
	}
}
