package testenv_test

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/dibs-io/dibs/internal/testenv"
)

func TestCIFailsOnMissingService(t *testing.T) {
	t.Setenv("CI", "true")
	t.Setenv("TEST_REDIS_URL", "redis://127.0.0.1:1/0") // nothing listens on port 1
	ft := &fakeTB{TB: t}
	func() {
		defer func() { recover() }()
		testenv.RedisURL(ft)
	}()
	if !ft.failed || ft.skipped {
		t.Fatalf("under CI an unreachable service must fail the test (failed=%v skipped=%v)", ft.failed, ft.skipped)
	}
}

func TestSkipsWithoutCI(t *testing.T) {
	t.Setenv("CI", "")
	t.Setenv("TEST_DATABASE_URL", "")
	ft := &fakeTB{TB: t}
	func() {
		defer func() { recover() }()
		testenv.DatabaseURL(ft)
	}()
	if !ft.skipped || ft.failed {
		t.Fatalf("without CI and URL the test must skip (failed=%v skipped=%v)", ft.failed, ft.skipped)
	}
}

// fakeTB records Fatal and Skip instead of ending the test.
type fakeTB struct {
	testing.TB
	failed, skipped bool
}

func (f *fakeTB) Helper()               {}
func (f *fakeTB) Fatalf(string, ...any) { f.failed = true; panic("fatal") }
func (f *fakeTB) Skipf(string, ...any)  { f.skipped = true; panic("skip") }

// TestWaitFor runs on synctest's clock: a condition that comes to hold ends
// the wait, one that never does fails the test after WaitTimeout and not
// before.
func TestWaitFor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		polls := 0
		took := testenv.WaitFor(t, "the third poll", func() bool { polls++; return polls == 3 })
		if polls != 3 || took != 3*time.Millisecond {
			t.Fatalf("WaitFor returned after %d polls and %s, want 3 and 3ms (1ms, then 2ms)", polls, took)
		}

		ft := &fakeTB{TB: t}
		start := time.Now()
		func() {
			defer func() { recover() }()
			testenv.WaitFor(ft, "never", func() bool { return false })
		}()
		if waited := time.Since(start); !ft.failed || waited <= testenv.WaitTimeout || waited > testenv.WaitTimeout+time.Second {
			t.Fatalf("a condition that never holds: failed=%v after %s, want a failure just past %s", ft.failed, waited, testenv.WaitTimeout)
		}
	})
}
