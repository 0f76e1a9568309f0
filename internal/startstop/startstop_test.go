package startstop_test

import (
	"context"
	"errors"
	"testing"

	"github.com/dibs-io/dibs/internal/startstop"
)

func TestStopCancelsAndWaits(t *testing.T) {
	var s startstop.Service
	if err := s.Stop(); err != nil {
		t.Fatalf("Stop before Start: %v", err)
	}
	running := make(chan struct{})
	returned := false
	if err := s.Start(context.Background(), func(ctx context.Context) error {
		close(running)
		<-ctx.Done()
		returned = true
		return ctx.Err()
	}); err != nil {
		t.Fatal(err)
	}
	<-running
	if err := s.Stop(); err != nil {
		t.Fatalf("Stop: %v, want nil (a cancelled context is a clean stop)", err)
	}
	if !returned {
		t.Fatal("Stop returned before the function did")
	}
	if err := s.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
}

func TestStopReportsTheError(t *testing.T) {
	var s startstop.Service
	boom := errors.New("boom")
	_ = s.Start(context.Background(), func(context.Context) error { return boom })
	<-s.Done()
	if err := s.Stop(); !errors.Is(err, boom) {
		t.Fatalf("Stop: %v, want %v", err, boom)
	}
}

func TestParentContextEndsTheWork(t *testing.T) {
	var s startstop.Service
	ctx, cancel := context.WithCancel(context.Background())
	_ = s.Start(ctx, func(ctx context.Context) error { <-ctx.Done(); return nil })
	cancel()
	<-s.Done()
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
}

func TestSecondStartDoesNothing(t *testing.T) {
	var s startstop.Service
	calls := make(chan struct{}, 2)
	fn := func(ctx context.Context) error { calls <- struct{}{}; <-ctx.Done(); return nil }
	_ = s.Start(context.Background(), fn)
	_ = s.Start(context.Background(), fn)
	_ = s.Stop()
	if len(calls) != 1 {
		t.Fatalf("fn ran %d times, want 1", len(calls))
	}
}
