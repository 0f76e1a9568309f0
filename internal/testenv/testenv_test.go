package testenv_test

import (
	"testing"

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
