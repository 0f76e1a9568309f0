package engine_test

import (
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/engine"
	"github.com/dibs-io/dibs/internal/redisserver"
	"github.com/dibs-io/dibs/internal/testenv"
	"github.com/dibs-io/dibs/memory"
	"github.com/dibs-io/dibs/redis"
	"github.com/dibs-io/dibs/sqlite"
)

// downGate is a memory gate behind a dependency that is down until healed.
type downGate struct {
	*memory.Gate
	down atomic.Bool
}

func (g *downGate) err() error {
	return dibs.Errorf(dibs.EUNAVAILABLE, "The gate is unavailable; please retry.")
}

func (g *downGate) Prepare(ctx context.Context, d *dibs.Drop, scan dibs.ScanFunc) error {
	if g.down.Load() {
		return g.err()
	}
	return g.Gate.Prepare(ctx, d, scan)
}

func (g *downGate) Reserve(ctx context.Context, r dibs.ReserveRequest) (dibs.Hold, error) {
	if g.down.Load() {
		return dibs.Hold{}, g.err()
	}
	return g.Gate.Reserve(ctx, r)
}

func (g *downGate) Ping(context.Context) error {
	if g.down.Load() {
		return g.err()
	}
	return nil
}

// recorded returns a record with drop "d" (stock 3) and alice's claim of it.
func recorded(t *testing.T) (path string, alice *dibs.Claim) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "dibs.db")
	b := open(t, path)
	mustCreate(t, b.engine, "d", 3, 1)
	alice, _, err := claim(b.engine, "d", "alice")
	if err != nil {
		t.Fatal(err)
	}
	b.engine.Close()
	return path, alice
}

// openOn opens an engine on the record at path with gate g.
func openOn(t *testing.T, path string, g dibs.Gate) *engine.Engine {
	t.Helper()
	st, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	e := engine.New(engine.Config{Store: st, Gate: g})
	t.Cleanup(func() { e.Close(); st.Close() })
	if err := e.Open(context.Background()); err != nil {
		t.Fatalf("open with the gate down = %v, want the node up", err)
	}
	return e
}

// wantDownThenHealed checks a node whose gate is down: it serves its drops,
// answering unavailable, is not ready, and once heal is called claims go
// on by themselves, from the record's state.
func wantDownThenHealed(t *testing.T, e *engine.Engine, alice *dibs.Claim, heal func()) {
	t.Helper()
	ctx := context.Background()
	if _, err := e.Drop("d"); err != nil {
		t.Fatalf("drop while the gate is down = %v, want it served", err)
	}
	if _, _, err := claim(e, "d", "bob"); dibs.ErrorCode(err) != dibs.EUNAVAILABLE {
		t.Fatalf("claim while the gate is down = %v, want unavailable", err)
	}
	if err := e.Ready(ctx); err == nil {
		t.Fatal("ready while the gate is down")
	}

	heal()
	var bob *dibs.Claim
	testenv.WaitFor(t, "a claim to be taken once the gate is back", func() bool {
		c, created, err := claim(e, "d", "bob")
		if err != nil && dibs.ErrorCode(err) != dibs.EUNAVAILABLE {
			t.Fatalf("claim after the gate came back = %v", err)
		}
		if err == nil && !created {
			t.Fatalf("bob after the gate came back = %+v, want a new claim", c)
		}
		bob = c
		return err == nil
	})
	if bob.Slot == alice.Slot {
		t.Fatalf("bob took alice's slot %d", alice.Slot)
	}
	if c, created, err := claim(e, "d", "alice"); err != nil || created || c.ID != alice.ID {
		t.Fatalf("alice after the gate came back = %+v created=%v err=%v, want her claim %s", c, created, err, alice.ID)
	}
	if err := e.Ready(ctx); err != nil {
		t.Fatalf("ready after the gate came back = %v", err)
	}
}

// TestOpenWhileGateDown: a node whose gate cannot prepare its drops comes
// up anyway, and prepares them once the gate is back, with nobody calling
// Refresh.
func TestOpenWhileGateDown(t *testing.T) {
	t.Parallel()
	path, alice := recorded(t)
	g := &downGate{Gate: memory.NewGate()}
	g.down.Store(true)
	e := openOn(t, path, g)
	wantDownThenHealed(t, e, alice, func() { g.down.Store(false) })
}

// TestOpenWhileRedisDown: the same with the Redis gate and a Redis server
// that is down when the node opens, then restarts empty.
func TestOpenWhileRedisDown(t *testing.T) {
	t.Parallel()
	testenv.RedisURL(t)
	path, alice := recorded(t)
	srv := redisserver.Start(t)
	client, err := redis.NewClient(srv.URL(), redis.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	g := redis.NewGate(client, redis.GateOptions{Timeout: 300 * time.Millisecond})
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Stop)
	srv.Kill(t)
	e := openOn(t, path, g)
	wantDownThenHealed(t, e, alice, func() { srv.Restart(t) })
}

// TestCreateDropWhileGateDown: a drop created while the gate cannot take it
// is recorded and served (its claims answer unavailable), not refused, and
// the next Refresh prepares it.
func TestCreateDropWhileGateDown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path, _ := recorded(t)
	g := &downGate{Gate: memory.NewGate()}
	e := openOn(t, path, g)
	g.down.Store(true)
	d := &dibs.Drop{ID: "late", Title: "t", Kind: dibs.KindCoupon, Stock: 2}
	if err := e.CreateDrop(ctx, d); err != nil {
		t.Fatalf("create while the gate is down = %v, want the drop recorded", err)
	}
	if _, _, err := claim(e, "late", "bob"); dibs.ErrorCode(err) != dibs.EUNAVAILABLE {
		t.Fatalf("claim while the gate is down = %v, want unavailable", err)
	}
	if err := e.CreateDrop(ctx, &dibs.Drop{ID: "late", Title: "t", Kind: dibs.KindCoupon, Stock: 2}); dibs.ErrorCode(err) != dibs.ECONFLICT {
		t.Fatalf("second create = %v, want conflict: the first is recorded", err)
	}
	g.down.Store(false)
	if err := e.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if _, created, err := claim(e, "late", "bob"); err != nil || !created {
		t.Fatalf("claim after the gate came back = %v, created %v", err, created)
	}
}
