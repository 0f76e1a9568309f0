package engine_test

import (
	"context"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/engine"
	"github.com/dibs-io/dibs/internal/testenv"
	"github.com/dibs-io/dibs/memory"
	"github.com/dibs-io/dibs/sqlite"
)

func mustReconcile(t *testing.T, r *engine.Reconciler, dropID string, want engine.ReconcileResult) {
	t.Helper()
	got, err := r.Reconcile(context.Background(), dropID)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("reconcile = %+v, want %+v", got, want)
	}
}

// A node died between gate and record: its hold has no record. Once older
// than the grace period, its slot goes back; a younger one stays.
func TestReconcileReleasesOrphanHolds(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	now := time.Now().UTC()
	d := &dibs.Drop{ID: "d", Title: "d", Kind: dibs.KindCoupon, Stock: 3, OpensAt: now.Add(-time.Hour)}
	if err := b.engine.CreateDrop(ctx, d); err != nil {
		t.Fatal(err)
	}
	old, err := b.gate.Reserve(ctx, dibs.ReserveRequest{Drop: d, UserID: "gone", ClaimID: "orphan-old", Now: now.Add(-time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.gate.Reserve(ctx, dibs.ReserveRequest{Drop: d, UserID: "busy", ClaimID: "orphan-young", Now: now}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := claim(b.engine, "d", "winner"); err != nil {
		t.Fatal(err)
	}

	r := engine.NewReconciler(b.engine, engine.ReconcilerConfig{Grace: 30 * time.Second})
	mustReconcile(t, r, "d", engine.ReconcileResult{Released: 1})
	mustReconcile(t, r, "d", engine.ReconcileResult{})
	if left, _ := b.gate.Remaining(ctx, "d"); left != 1 {
		t.Fatalf("remaining = %d, want 1 (the orphan's slot back)", left)
	}
	c, created, err := claim(b.engine, "d", "late")
	if err != nil || !created || c.Slot != old.Slot {
		t.Fatalf("late claim = %+v, %v, %v; want the orphan's slot %d", c, created, err, old.Slot)
	}
}

// The gate lost a recorded claim (a failover): it is restored, and its
// user's retry gets it back instead of a second win.
func TestReconcileRestoresLostClaims(t *testing.T) {
	t.Parallel()
	b := setup(t)
	mustCreate(t, b.engine, "d", 3, 1)
	won, _, err := claim(b.engine, "d", "alice")
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := b.gate.Release(context.Background(), "d", won.ID); !ok || err != nil {
		t.Fatalf("drop the hold from the gate: %v, %v", ok, err)
	}

	r := engine.NewReconciler(b.engine, engine.ReconcilerConfig{})
	mustReconcile(t, r, "d", engine.ReconcileResult{Restored: 1})
	mustReconcile(t, r, "d", engine.ReconcileResult{})
	again, created, err := claim(b.engine, "d", "alice")
	if err != nil || created || again.ID != won.ID || again.Slot != won.Slot {
		t.Fatalf("retry after restore = %+v, %v, %v; want %+v", again, created, err, won)
	}
}

// The record refuses a claim the gate gave out (the gate had lost the
// slot's recorded claim): the running reconciler looks at the drop at
// once, not at its next period, and both users end up right.
func TestConflictWakesReconciler(t *testing.T) {
	t.Parallel()
	b := setup(t)
	d := mustCreate(t, b.engine, "d", 2, 1)
	ctx := context.Background()
	lost := &dibs.Claim{ID: "lost", DropID: "d", UserID: "alice", Slot: 1, Nth: 1, State: dibs.ClaimConfirmed,
		CreatedAt: d.CreatedAt, UpdatedAt: d.CreatedAt}
	if errs, err := b.store.RecordClaims(ctx, []*dibs.Claim{lost}); err != nil || errs[0] != nil {
		t.Fatalf("record behind the gate's back: %v %v", errs, err)
	}

	r := engine.NewReconciler(b.engine, engine.ReconcilerConfig{Interval: time.Hour, Soon: 10 * time.Millisecond})
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Stop() })

	_, _, err := claim(b.engine, "d", "bob") // the gate hands out slot 1
	if dibs.ErrorCode(err) != dibs.EUNAVAILABLE {
		t.Fatalf("bob on a slot the record has = %v, want unavailable", err)
	}
	testenv.WaitFor(t, "alice's recorded claim back", func() bool {
		c, created, err := claim(b.engine, "d", "alice")
		return err == nil && !created && c.ID == "lost"
	})
	c, created, err := claim(b.engine, "d", "bob")
	if err != nil || !created || c.Slot != 2 {
		t.Fatalf("bob's retry = %+v, %v, %v; want a new claim on slot 2", c, created, err)
	}
}

func TestReconcilerStartStop(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := engine.NewReconciler(b.engine, engine.ReconcilerConfig{Interval: time.Millisecond})
	r.Stop() // before Start: nothing to do
	for range 2 {
		if err := r.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(5 * time.Millisecond)
	r.Stop()
	r.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	r.Stop()
}

// A refresh that read the record just before an operator's pause (another
// node's periodic refresh) does not resume the drop.
func TestStaleRefreshKeepsNewerStatus(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	mustCreate(t, b.engine, "d", 3, 1)
	before, err := b.store.ListDrops(ctx)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Millisecond) // the pause is stamped later than the copy
	if err := b.engine.SetStatus(ctx, "d", dibs.StatusPaused); err != nil {
		t.Fatal(err)
	}
	b.store.stale.Store(&before)
	if err := b.engine.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	b.store.stale.Store(nil)
	if d, _ := b.engine.Drop("d"); d.Status != dibs.StatusPaused {
		t.Fatalf("status after a stale refresh = %s, want paused", d.Status)
	}
	if _, _, err := claim(b.engine, "d", "u"); dibs.ErrorCode(err) != dibs.EPAUSED {
		t.Fatalf("claim after a stale refresh = %v, want paused", err)
	}
}

// pingGate is a gate whose dependency is down.
type pingGate struct {
	dibs.Gate
	err error
}

func (g pingGate) Ping(context.Context) error { return g.err }

func TestReadyChecksGate(t *testing.T) {
	t.Parallel()
	b := setup(t)
	down := dibs.Errorf(dibs.EUNAVAILABLE, "redis is down")
	e := engine.New(engine.Config{Store: b.store, Gate: pingGate{Gate: b.gate, err: down}})
	if err := e.Ready(context.Background()); dibs.ErrorCode(err) != dibs.EUNAVAILABLE {
		t.Fatalf("ready with the gate down = %v", err)
	}
	if err := b.engine.Ready(context.Background()); err != nil {
		t.Fatalf("ready = %v", err)
	}
}

// countingStore counts the reads that go through it.
type countingStore struct {
	dibs.Store
	mu    sync.Mutex
	reads map[string]int
}

func (s *countingStore) count(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reads == nil {
		s.reads = map[string]int{}
	}
	s.reads[name]++
}

func (s *countingStore) counts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.reads)
}

func (s *countingStore) FindDrop(ctx context.Context, id string) (*dibs.Drop, error) {
	s.count("FindDrop")
	return s.Store.FindDrop(ctx, id)
}

func (s *countingStore) ListDrops(ctx context.Context) ([]*dibs.Drop, error) {
	s.count("ListDrops")
	return s.Store.ListDrops(ctx)
}

func (s *countingStore) FindClaim(ctx context.Context, id string) (*dibs.Claim, error) {
	s.count("FindClaim")
	return s.Store.FindClaim(ctx, id)
}

func (s *countingStore) ScanActiveClaims(ctx context.Context, dropID string, fn func(*dibs.Claim) error) error {
	s.count("ScanActiveClaims")
	return s.Store.ScanActiveClaims(ctx, dropID, fn)
}

func (s *countingStore) CountClaims(ctx context.Context, dropID string) (dibs.ClaimCounts, error) {
	s.count("CountClaims")
	return s.Store.CountClaims(ctx, dropID)
}

// TestBackgroundWorkReadsTheBackgroundStore: loading drops, rebuilding the
// gate and reconciling read through Config.Background; claims and the
// user's own reads through Store.
func TestBackgroundWorkReadsTheBackgroundStore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path, _ := recorded(t)
	st, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	front, back := &countingStore{Store: st}, &countingStore{Store: st}
	e := engine.New(engine.Config{Store: front, Background: back, Gate: memory.NewGate()})
	if err := e.Open(ctx); err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	c, _, err := claim(e, "d", "bob")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.FindClaim(ctx, c.ID, "bob"); err != nil {
		t.Fatal(err)
	}
	if err := e.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	r := engine.NewReconciler(e, engine.ReconcilerConfig{})
	mustReconcile(t, r, "d", engine.ReconcileResult{})

	got := back.counts()
	for _, name := range []string{"ListDrops", "ScanActiveClaims", "FindDrop"} {
		if got[name] == 0 {
			t.Errorf("background store saw no %s: %v", name, got)
		}
	}
	if got := front.counts(); len(got) != 1 || got["FindClaim"] != 1 {
		t.Errorf("request store saw %v, want only the user's FindClaim", got)
	}
}
