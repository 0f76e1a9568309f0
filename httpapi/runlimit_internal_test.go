package httpapi

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dibs-io/dibs"
)

func TestRunLimit(t *testing.T) {
	t.Parallel()
	shed := prometheus.NewCounter(prometheus.CounterOpts{Name: "shed"})
	l := newRunLimit(2, 30*time.Millisecond, shed)
	ctx := context.Background()
	a, err := l.acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, err := l.acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	if _, err := l.acquire(ctx); dibs.ErrorCode(err) != dibs.EOVERLOADED {
		t.Fatalf("third turn with two taken = %v, want overloaded", err)
	}
	if waited := time.Since(start); waited < 30*time.Millisecond {
		t.Fatalf("shed after %s, want after waiting its 30ms", waited)
	}

	got := make(chan error, 1)
	go func() { _, err := l.acquire(ctx); got <- err }()
	a()
	a() // twice: gives back one turn, not two
	if err := <-got; err != nil {
		t.Fatalf("a waiting turn after a release = %v", err)
	}
	if _, err := l.acquire(ctx); dibs.ErrorCode(err) != dibs.EOVERLOADED {
		t.Fatalf("a double release freed a second turn: %v", err)
	}
	b()

	if newRunLimit(0, time.Millisecond, shed) != nil {
		t.Fatal("a bound of 0 must mean no bound")
	}
	if release, err := (*runLimit)(nil).acquire(ctx); err != nil || release == nil {
		t.Fatalf("no bound: %v", err)
	}
}
