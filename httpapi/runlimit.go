package httpapi

import (
	"context"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dibs-io/dibs"
)

// DefaultClaimWait is the longest a claim waits in line for a turn to run,
// a safety net only: the line is bounded by the claim class's in-flight
// limit, and a line of 4,096 claims at tens of microseconds each clears
// in milliseconds. Beyond it the claim is shed with 503.
const DefaultClaimWait = 2 * time.Second

// DefaultClaimWorkers is how many claim handlers run at once: two per core
// keeps the cores busy while a spike waits in line.
func DefaultClaimWorkers() int { return 2 * runtime.GOMAXPROCS(0) }

// runLimit bounds the handlers of a route class that run at once. The class's
// in-flight bound says how many requests it may hold (and sheds at once
// beyond it); this says how many of them may use a core. The others wait in
// line, parked: a parked goroutine costs no CPU, and its keep-alive
// connection sends nothing more meanwhile. So a claim spike saturating the
// cores keeps a few handlers ahead of a drop read in the run queue instead
// of one per connection, and a burst waits a few milliseconds instead of
// being told to come back in a second.
type runLimit struct {
	slots chan struct{}
	wait  time.Duration
	shed  prometheus.Counter
}

func newRunLimit(n int, wait time.Duration, shed prometheus.Counter) *runLimit {
	if n <= 0 {
		return nil // no bound
	}
	return &runLimit{slots: make(chan struct{}, n), wait: wait, shed: shed}
}

// acquire waits for a turn and returns its release, which is safe to call
// more than once. EOVERLOADED if no turn came within the wait.
func (l *runLimit) acquire(ctx context.Context) (func(), error) {
	if l == nil {
		return func() {}, nil
	}
	select {
	case l.slots <- struct{}{}:
		return l.releaser(), nil
	default:
	}
	t := time.NewTimer(l.wait)
	defer t.Stop()
	select {
	case l.slots <- struct{}{}:
		return l.releaser(), nil
	case <-t.C:
		l.shed.Inc()
		return nil, dibs.Errorf(dibs.EOVERLOADED, "The server is at capacity for claims; retry shortly.")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (l *runLimit) releaser() func() {
	var done atomic.Bool
	return func() {
		if done.CompareAndSwap(false, true) {
			<-l.slots
		}
	}
}
