package testenv

import (
	"testing"
	"time"
)

// WaitTimeout is how long WaitFor polls before it fails the test. It bounds
// a failing test only: a condition that comes to hold ends the wait as soon
// as it is seen. It is set for a starved machine (two cores shared with
// other work, the race detector), not for the speed of what is awaited;
// a test that means to bound a speed measures it and says so.
const WaitTimeout = time.Minute

// WaitFor polls cond until it holds and returns how long that took. It
// polls every millisecond at first and less often as the wait grows (20 ms
// at most), so that a long wait leaves the cores to the code it waits for.
// If cond does not hold within WaitTimeout, WaitFor fails tb, saying what
// it waited for. Call it from the test's goroutine.
func WaitFor(tb testing.TB, what string, cond func() bool) time.Duration {
	tb.Helper()
	start := time.Now()
	for pause := time.Millisecond; !cond(); pause = min(2*pause, 20*time.Millisecond) {
		if time.Since(start) > WaitTimeout {
			tb.Fatalf("%s: not after %s", what, time.Since(start).Round(time.Millisecond))
		}
		time.Sleep(pause)
	}
	return time.Since(start)
}
