// Package startstop gives background services their one lifecycle shape
// (dibs.Background): a Service runs one function on its own goroutine,
// stops it by cancelling its context, and waits for it.
package startstop

import (
	"context"
	"errors"
	"sync"
)

// Service runs a function in the background once. The zero value is ready.
type Service struct {
	mu      sync.Mutex
	cancel  context.CancelFunc
	done    chan struct{}
	err     error
	started bool
}

// Start runs fn on a new goroutine with a context that ends when ctx does
// or Stop is called. A second Start does nothing. fn's error, other than
// the context's own, is what Stop returns.
func (s *Service) Start(ctx context.Context, fn func(ctx context.Context) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return nil
	}
	s.started = true
	ctx, s.cancel = context.WithCancel(ctx)
	s.done = make(chan struct{})
	go func() {
		defer close(s.done)
		err := fn(ctx)
		if errors.Is(err, context.Canceled) {
			err = nil
		}
		s.mu.Lock()
		s.err = err
		s.mu.Unlock()
	}()
	return nil
}

// Stop cancels the function's context, waits for it to return and returns
// its error. Safe to call more than once, and before Start.
func (s *Service) Stop() error {
	s.mu.Lock()
	cancel, done := s.cancel, s.done
	s.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	<-done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Done returns a channel closed once the function has returned; nil before
// Start.
func (s *Service) Done() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.done
}
