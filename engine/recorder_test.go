package engine_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/engine"
)

// stuckGate is a gate whose releases wait until unblock is closed; each
// release announces itself on entered first.
type stuckGate struct {
	dibs.Gate
	entered chan string
	unblock chan struct{}
}

func (g *stuckGate) Release(ctx context.Context, dropID, claimID string) (bool, error) {
	g.entered <- claimID
	<-g.unblock
	return g.Gate.Release(ctx, dropID, claimID)
}

// TestFailedCommitDoesNotStallClaims: while the slots of a failed batch are
// on their way back to a slow gate, a new claim reaches the record and wins;
// the failed claim is answered only once its slot is back, and the slot
// comes back once.
func TestFailedCommitDoesNotStallClaims(t *testing.T) {
	t.Parallel()
	var gate *stuckGate
	b := open(t, filepath.Join(t.TempDir(), "dibs.db"), func(c *engine.Config, _ *faultyStore) {
		gate = &stuckGate{Gate: c.Gate, entered: make(chan string, 1), unblock: make(chan struct{})}
		c.Gate = gate
		c.Recorder = engine.RecorderConfig{Committers: 1} // the committer that failed must take the next batch too
	})
	unblock := sync.OnceFunc(func() { close(gate.unblock) })
	t.Cleanup(unblock) // before the engine's Close, which waits for the release
	mustCreate(t, b.engine, "d", 10, 1)
	b.store.failWith(errors.New("disk full"))

	alice := make(chan error, 1)
	go func() {
		_, _, err := claim(b.engine, "d", "alice")
		alice <- err
	}()
	released := <-gate.entered // alice's batch failed; its release is stuck in the gate
	b.store.heal()

	bob := make(chan error, 1)
	go func() {
		c, created, err := claim(b.engine, "d", "bob")
		if err == nil && (!created || c.Slot == 0) {
			err = errors.New("bob's claim was not created")
		}
		bob <- err
	}()
	// Generous: the claim needs one commit of one row, but the machine may
	// be starved; without the fix it waits for the release forever.
	select {
	case err := <-bob:
		if err != nil {
			t.Fatalf("bob's claim while the release is stuck = %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("bob's claim waited for the release of alice's slot")
	}
	if w := b.store.writes.Load(); w != 2 {
		t.Fatalf("record writes = %d, want 2 (alice's failed, bob's)", w)
	}
	select {
	case err := <-alice:
		t.Fatalf("alice answered (%v) before her slot was back", err)
	default:
	}

	unblock()
	if err := <-alice; dibs.ErrorCode(err) != dibs.EUNAVAILABLE {
		t.Fatalf("alice's claim = %v, want unavailable", err)
	}
	select {
	case id := <-gate.entered:
		t.Fatalf("a second release (%s) after %s's", id, released)
	default:
	}
	if left, _ := b.gate.Remaining(context.Background(), "d"); left != 9 {
		t.Fatalf("remaining = %d, want 9: bob's slot taken, alice's back", left)
	}
}
