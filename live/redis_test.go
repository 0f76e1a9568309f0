package live_test

import (
	"context"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"github.com/dibs-io/dibs/internal/testenv"
	"github.com/dibs-io/dibs/live"
	"github.com/dibs-io/dibs/redis"
)

// TestTwoNodesOnRedis: two services sharing a Redis each list the other,
// and one that stopped turns stale on the other's clock.
func TestTwoNodesOnRedis(t *testing.T) {
	t.Parallel()
	c, err := redis.NewClient(testenv.RedisURL(t), redis.ClientOptions{ConnWriteTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	// On a starved machine the first connection can take longer than the
	// client's dial timeout; it keeps connecting in the background.
	testenv.WaitFor(t, "Redis to answer", func() bool {
		return c.Do(context.Background(), c.B().Ping().Build()).Error() == nil
	})
	prefix := "dibs-test-live:" + strings.ToLower(rand.Text()[:10]) + ":"
	t.Cleanup(func() {
		ctx := context.Background()
		c.Do(ctx, c.B().Del().Key(prefix+"{live}:nodes", prefix+"{live}:node:node-a", prefix+"{live}:node:node-b").Build())
	})
	bus := func() live.Bus {
		b, err := redis.NewLiveBus(c, redis.LiveBusOptions{Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	clkA, clkB, d := newClock(), newClock(), newDrops()
	a, ma := newService(t, "node-a", bus(), clkA, d, nil)
	// b runs in the background on ticks the test gives; a steps by hand.
	ticks := make(chan time.Time)
	b, _ := newService(t, "node-b", bus(), clkB, d, nil, func(c *live.Config) { c.Ticks = ticks })
	ma.claims.WithLabelValues("phones", "won").Add(1)
	mustStart(t, b)
	mustStep(t, a)
	clkA.Add(time.Second)
	ma.claims.WithLabelValues("phones", "won").Add(30)
	mustStep(t, a)
	clkB.Add(time.Second)
	ticks <- clkB.Now()
	testenv.WaitFor(t, "node-b to list node-a, fresh", func() bool {
		snap, err := b.Snapshot(context.Background())
		n, ok := nodesOf(snap)["node-a"]
		return err == nil && ok && !n.Stale && len(snap.Drops) == 1 && snap.Drops[0].ClaimsPerSec.Won == 30
	})
	snap := mustStep(t, a)
	if n, ok := nodesOf(snap)["node-b"]; !ok || n.Stale {
		t.Fatalf("node-a lists node-b as %+v (listed %v), want fresh", n, ok)
	}

	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	clkA.Add(live.StaleAfter + time.Second)
	snap = mustStep(t, a)
	if n, ok := nodesOf(snap)["node-b"]; !ok || !n.Stale {
		t.Fatalf("after node-b stopped: %+v (listed %v), want stale", n, ok)
	}
	if n := nodesOf(snap)["node-a"]; n.Stale {
		t.Fatalf("node-a lists itself stale")
	}
}

// mustStart starts s, waits for its first snapshot, and stops it when the
// test ends.
func mustStart(tb testing.TB, s *live.Service) {
	tb.Helper()
	changed := s.Changed()
	if err := s.Start(context.Background()); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = s.Stop() })
	<-changed
}
