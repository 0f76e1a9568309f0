package dibs

import "context"

// Background is the one shape of every service that works in the
// background (the engine's recorder and reconciler, the waiting room's
// leader, post-processing). Start begins the work and returns once it runs;
// the work goes on until ctx is cancelled or Stop is called. Stop ends it,
// waits until nothing of it runs, and returns the error that ended it, if
// any. Both are safe to call more than once; Stop before Start returns nil.
type Background interface {
	Start(ctx context.Context) error
	Stop() error
}
