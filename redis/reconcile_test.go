package redis_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/engine"
	"github.com/dibs-io/dibs/internal/testenv"
	"github.com/dibs-io/dibs/redis"
	"github.com/dibs-io/dibs/sqlite"
)

// TestReconcilerOnRedis: the reconciler heals a Redis gate from the
// record: a hold whose node died before recording it goes back after the
// grace period, and a recorded claim the gate lost comes back.
func TestReconcilerOnRedis(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	client := MustClient(t, testenv.RedisURL(t))
	gate := MustGate(t, client, redis.GateOptions{})
	store, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "dibs.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	e := engine.New(engine.Config{Store: store, Gate: gate})
	if err := e.Open(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	now := time.Now().UTC()
	d := &dibs.Drop{ID: "d", Title: "d", Kind: dibs.KindCoupon, Stock: 3, OpensAt: now.Add(-time.Hour)}
	if err := e.CreateDrop(ctx, d); err != nil {
		t.Fatal(err)
	}

	orphan, err := gate.Reserve(ctx, dibs.ReserveRequest{Drop: d, UserID: "gone", ClaimID: "orphan", Now: now.Add(-time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	won, _, err := e.ClaimAndWait(ctx, dibs.ClaimRequest{DropID: "d", UserID: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := gate.Release(ctx, "d", won.ID); !ok || err != nil { // the gate forgets alice
		t.Fatalf("release = %v, %v", ok, err)
	}

	rec := engine.NewReconciler(e, engine.ReconcilerConfig{Grace: 30 * time.Second})
	res, err := rec.Reconcile(ctx, "d")
	if err != nil {
		t.Fatal(err)
	}
	if res != (engine.ReconcileResult{Released: 1, Restored: 1}) {
		t.Fatalf("reconcile = %+v, want one released and one restored", res)
	}
	again, created, err := e.ClaimAndWait(ctx, dibs.ClaimRequest{DropID: "d", UserID: "alice"})
	if err != nil || created || again.ID != won.ID || again.Slot != won.Slot {
		t.Fatalf("alice after the reconcile = %+v, %v, %v; want %+v", again, created, err, won)
	}
	if left, _ := gate.Remaining(ctx, "d"); left != 2 {
		t.Fatalf("remaining = %d, want 2 (alice's slot held, the orphan's %d back)", left, orphan.Slot)
	}
}
