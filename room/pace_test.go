package room_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/internal/testenv"
	"github.com/dibs-io/dibs/memory"
	"github.com/dibs-io/dibs/room"
	"github.com/dibs-io/dibs/roomtest"
)

// pacerCall is one call of a room.Pacer.
type pacerCall struct {
	drop               string
	waiting, remaining int64
}

// blockingPacer records its calls and returns only once release is
// closed.
type blockingPacer struct {
	calls   chan pacerCall
	release chan struct{}
}

func (p *blockingPacer) Pace(ctx context.Context, d *dibs.Drop, waiting, remaining int64, now time.Time) error {
	p.calls <- pacerCall{d.ID, waiting, remaining}
	<-p.release
	return nil
}

// TestLeaderPacesAutoDropsBesideItsSteps: the leader of a room calls its
// Pacer for an auto-paced drop and never for a fixed one; while a call is
// in flight its steps go on admitting and start no second call for the
// drop.
func TestLeaderPacesAutoDropsBesideItsSteps(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	opens := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	clock := roomtest.NewClock(opens)
	fixed := roomtest.NewDrop(100, 10, dibs.OrderFIFO, opens)
	auto := roomtest.NewDrop(100, 10, dibs.OrderFIFO, opens)
	auto.Admission.Pace, auto.Admission.MinRate, auto.Admission.MaxRate = dibs.PaceAuto, 5, 50
	if err := auto.Validate(); err != nil {
		t.Fatal(err)
	}
	src := roomtest.NewSource()
	src.Add(fixed)
	src.Add(auto)
	p := &blockingPacer{calls: make(chan pacerCall, 8), release: make(chan struct{})}
	release := sync.OnceFunc(func() { close(p.release) })
	t.Cleanup(release)
	svc, err := room.New(room.Config{Backend: memory.NewRoom(), Secret: roomtest.Secret, Now: clock.Now, Pacer: p})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []*dibs.Drop{fixed, auto} {
		for i := range 30 {
			if _, err := svc.Join(ctx, d, fmt.Sprintf("user%d", i)); err != nil {
				t.Fatal(err)
			}
		}
	}

	// step runs one tick a second later; it fails the test if the tick
	// waits for the pacer.
	step := func() {
		t.Helper()
		clock.Add(time.Second)
		var done atomic.Bool
		go func() { svc.Tick(ctx, src); done.Store(true) }()
		testenv.WaitFor(t, "a tick while a pacer call is in flight", done.Load)
	}
	step()
	testenv.WaitFor(t, "the pacer to be called", func() bool { return len(p.calls) > 0 })
	if c := <-p.calls; c.drop != auto.ID || c.waiting != 30 || c.remaining != 100 {
		t.Errorf("pacer called with %+v, want drop %s, 30 waiting, 100 remaining", c, auto.ID)
	}

	step()
	step()
	if n := len(p.calls); n != 0 {
		t.Errorf("%d more pacer calls while the first was in flight, want none", n)
	}
	in, err := svc.Info(ctx, auto)
	if err != nil {
		t.Fatal(err)
	}
	if in.Serving == 0 {
		t.Error("the auto-paced room admitted nobody while its pacer call was in flight")
	}

	release()
	testenv.WaitFor(t, "a second pacer call once the first returned", func() bool {
		step()
		return len(p.calls) > 0
	})
	for len(p.calls) > 0 {
		if c := <-p.calls; c.drop != auto.ID {
			t.Errorf("pacer called for drop %s, want only the auto-paced %s", c.drop, auto.ID)
		}
	}
}
