package engine_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/engine"
	"github.com/dibs-io/dibs/internal/testenv"
	"github.com/dibs-io/dibs/memory"
	"github.com/dibs-io/dibs/sqlite"
)

// faultyStore fails RecordClaims on demand, and lists drops from a stale
// snapshot when given one.
type faultyStore struct {
	dibs.Store
	fail   atomic.Pointer[error]
	writes atomic.Int64
	block  chan struct{} // if set, writes wait for it to close
	stale  atomic.Pointer[[]*dibs.Drop]
}

func (s *faultyStore) ListDrops(ctx context.Context) ([]*dibs.Drop, error) {
	if ds := s.stale.Load(); ds != nil {
		return *ds, nil
	}
	return s.Store.ListDrops(ctx)
}

func (s *faultyStore) RecordClaims(ctx context.Context, claims []*dibs.Claim) ([]error, error) {
	s.writes.Add(1)
	if s.block != nil {
		<-s.block
	}
	if err := s.fail.Load(); err != nil {
		return nil, *err
	}
	return s.Store.RecordClaims(ctx, claims)
}

func (s *faultyStore) failWith(err error) { s.fail.Store(&err) }
func (s *faultyStore) heal()              { s.fail.Store(nil) }

type bundle struct {
	engine *engine.Engine
	store  *faultyStore
	gate   *memory.Gate
	path   string
}

func setup(t *testing.T) *bundle {
	t.Helper()
	path := filepath.Join(t.TempDir(), "dibs.db")
	return open(t, path)
}

func open(t *testing.T, path string, opts ...func(*engine.Config, *faultyStore)) *bundle {
	t.Helper()
	return openTB(t, path, opts...)
}

func openTB(t testing.TB, path string, opts ...func(*engine.Config, *faultyStore)) *bundle {
	t.Helper()
	st, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	b := &bundle{store: &faultyStore{Store: st}, gate: memory.NewGate(), path: path}
	cfg := engine.Config{Store: b.store, Gate: b.gate}
	for _, o := range opts {
		o(&cfg, b.store)
	}
	b.engine = engine.New(cfg)
	if err := b.engine.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.engine.Close(); st.Close() })
	return b
}

func mustCreate(t *testing.T, e *engine.Engine, id string, stock int64, perUser int) *dibs.Drop {
	t.Helper()
	d := &dibs.Drop{ID: id, Title: id, Kind: dibs.KindCoupon, Stock: stock, PerUserLimit: perUser}
	if err := e.CreateDrop(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	return d
}

func claim(e *engine.Engine, drop, user string) (*dibs.Claim, bool, error) {
	return e.ClaimAndWait(context.Background(), dibs.ClaimRequest{DropID: drop, UserID: user})
}

// TestStampedeRecordEqualsAcked: every 201 is in the record, the record
// holds nothing else, and there are exactly stock of them.
func TestStampedeRecordEqualsAcked(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const stock, users, workers = 300, 5000, 256
	mustCreate(t, b.engine, "pepero", stock, 1)

	var mu sync.Mutex
	acked := map[string]*dibs.Claim{}
	var next atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := next.Add(1); i <= users; i = next.Add(1) {
				c, created, err := claim(b.engine, "pepero", fmt.Sprintf("u%d", i))
				if dibs.ErrorCode(err) == dibs.ESOLDOUT {
					continue
				} else if err != nil || !created {
					failed.Store(fmt.Errorf("claim: created=%v err=%v", created, err))
					return
				}
				mu.Lock()
				acked[c.ID] = c
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		t.Fatal(err)
	}
	if len(acked) != stock {
		t.Fatalf("acked %d, want %d", len(acked), stock)
	}
	var recorded int
	err := b.engine.Winners(context.Background(), "pepero", func(c *dibs.Claim) error {
		recorded++
		if a := acked[c.ID]; a == nil || a.Slot != c.Slot || a.UserID != c.UserID {
			return fmt.Errorf("recorded %+v was not acked as such", c)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if recorded != stock {
		t.Fatalf("recorded %d, want %d", recorded, stock)
	}
	st, err := b.engine.Stats(context.Background(), "pepero")
	if err != nil {
		t.Fatal(err)
	}
	if st.State != dibs.StateSoldOut || st.Remaining != 0 || st.Claims.Confirmed != stock || st.Outcomes["won"] != stock {
		t.Fatalf("stats = %+v", st)
	}
}

func TestRetryGetsSameClaimFromMemory(t *testing.T) {
	t.Parallel()
	b := setup(t)
	mustCreate(t, b.engine, "d", 5, 1)
	first, created, err := claim(b.engine, "d", "alice")
	if err != nil || !created {
		t.Fatalf("first: created=%v err=%v", created, err)
	}
	writes := b.store.writes.Load()
	again, created, err := claim(b.engine, "d", "alice")
	if err != nil || created || again.ID != first.ID || again.Slot != first.Slot {
		t.Fatalf("retry = %+v created=%v err=%v, want %+v", again, created, err, first)
	}
	if w := b.store.writes.Load(); w != writes {
		t.Fatalf("a retry of a durable claim wrote to the record (%d writes, want %d)", w, writes)
	}
}

// TestFailedCommitReturnsSlot: a definite failure answers 503 and gives the
// slot back; the next claim gets it.
func TestFailedCommitReturnsSlot(t *testing.T) {
	t.Parallel()
	b := setup(t)
	mustCreate(t, b.engine, "d", 1, 1)
	b.store.failWith(errors.New("disk full"))
	_, _, err := claim(b.engine, "d", "alice")
	if dibs.ErrorCode(err) != dibs.EUNAVAILABLE {
		t.Fatalf("claim during failure = %v, want unavailable", err)
	}
	if left, _ := b.gate.Remaining(context.Background(), "d"); left != 1 {
		t.Fatalf("remaining after failed commit = %d, want 1", left)
	}
	b.store.heal()
	c, created, err := claim(b.engine, "d", "bob")
	if err != nil || !created || c.Slot != 1 {
		t.Fatalf("after heal: %+v created=%v err=%v", c, created, err)
	}
}

// TestUnknownOutcomeKeepsSlot: after a commit whose outcome is unknown, the
// slot stays held, and the user's retry completes the write.
func TestUnknownOutcomeKeepsSlot(t *testing.T) {
	t.Parallel()
	b := setup(t)
	mustCreate(t, b.engine, "d", 1, 1)
	b.store.failWith(fmt.Errorf("connection lost during commit: %w", dibs.ErrOutcomeUnknown))
	_, _, err := claim(b.engine, "d", "alice")
	if dibs.ErrorCode(err) != dibs.EUNAVAILABLE {
		t.Fatalf("claim = %v, want unavailable", err)
	}
	if _, _, err := claim(b.engine, "d", "bob"); dibs.ErrorCode(err) != dibs.ESOLDOUT {
		t.Fatalf("bob = %v, want sold_out: alice's slot must stay held", err)
	}
	b.store.heal()
	c, created, err := claim(b.engine, "d", "alice")
	if err != nil || created {
		t.Fatalf("alice's retry = %v created=%v, want her existing claim", err, created)
	}
	if _, err := b.engine.FindClaim(context.Background(), c.ID, "alice"); err != nil {
		t.Fatalf("retry did not complete the write: %v", err)
	}
}

// TestRestartRebuildsGate: a new engine over the same file serves the same
// winners and sells no held slot again.
func TestRestartRebuildsGate(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "dibs.db")
	b := open(t, path)
	mustCreate(t, b.engine, "d", 3, 1)
	var first []*dibs.Claim
	for _, u := range []string{"a", "b", "c"} {
		c, _, err := claim(b.engine, "d", u)
		if err != nil {
			t.Fatal(err)
		}
		first = append(first, c)
	}
	b.engine.Close()

	b2 := open(t, path)
	for _, want := range first {
		got, created, err := claim(b2.engine, "d", want.UserID)
		if err != nil || created || got.ID != want.ID || got.Slot != want.Slot {
			t.Fatalf("after restart %s = %+v created=%v err=%v, want %+v", want.UserID, got, created, err, want)
		}
	}
	if _, _, err := claim(b2.engine, "d", "newcomer"); dibs.ErrorCode(err) != dibs.ESOLDOUT {
		t.Fatalf("newcomer after restart = %v, want sold_out", err)
	}
}

func TestStatusChanges(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	mustCreate(t, b.engine, "d", 3, 1)
	if err := b.engine.SetStatus(ctx, "d", dibs.StatusPaused); err != nil {
		t.Fatal(err)
	}
	if _, _, err := claim(b.engine, "d", "a"); dibs.ErrorCode(err) != dibs.EPAUSED {
		t.Fatalf("claim while paused = %v", err)
	}
	if v, _ := b.engine.View(ctx, "d"); v.State != dibs.StatePaused {
		t.Fatalf("state = %s, want paused", v.State)
	}
	if err := b.engine.SetStatus(ctx, "d", dibs.StatusActive); err != nil {
		t.Fatal(err)
	}
	if _, _, err := claim(b.engine, "d", "a"); err != nil {
		t.Fatalf("claim after resume = %v", err)
	}
	if err := b.engine.SetStatus(ctx, "d", dibs.StatusClosed); err != nil {
		t.Fatal(err)
	}
	if err := b.engine.SetStatus(ctx, "d", dibs.StatusActive); dibs.ErrorCode(err) != dibs.ECONFLICT {
		t.Fatalf("resume after close = %v, want conflict", err)
	}
	if d, _ := b.store.FindDrop(ctx, "d"); d.Status != dibs.StatusClosed {
		t.Fatalf("recorded status = %s", d.Status)
	}
}

// TestCloseDrainsRecorder: claims queued when Close is called are committed
// before it returns.
func TestCloseDrainsRecorder(t *testing.T) {
	t.Parallel()
	b := setup(t)
	mustCreate(t, b.engine, "d", 100, 1)
	var wg sync.WaitGroup
	var won atomic.Int64
	for i := range 100 {
		wg.Go(func() {
			if _, created, err := claim(b.engine, "d", fmt.Sprintf("u%d", i)); err == nil && created {
				won.Add(1)
			}
		})
	}
	time.Sleep(time.Millisecond)
	b.engine.Close()
	wg.Wait()
	n, err := b.store.CountClaims(context.Background(), "d")
	if err != nil {
		t.Fatal(err)
	}
	if n.Confirmed != won.Load() {
		t.Fatalf("record holds %d, acked %d", n.Confirmed, won.Load())
	}
}

// TestFullQueueShedsAndReturnsSlot: with the recorder's queue full, a claim
// is refused at once with EOVERLOADED and its slot goes back.
func TestFullQueueShedsAndReturnsSlot(t *testing.T) {
	t.Parallel()
	block := make(chan struct{})
	b := open(t, filepath.Join(t.TempDir(), "dibs.db"), func(c *engine.Config, s *faultyStore) {
		c.Recorder = engine.RecorderConfig{MaxBatch: 1, Queue: 1}
		s.block = block
	})
	mustCreate(t, b.engine, "d", 10, 1)
	var wg sync.WaitGroup
	wg.Go(func() { claim(b.engine, "d", "a") }) // committing, blocked
	testenv.WaitFor(t, "a's commit", func() bool { return b.store.writes.Load() == 1 })
	// b and c race for the queue's one place: the one that takes it waits
	// there (a's commit is blocked), the other is shed. Which is which is
	// the scheduler's; that the loser is refused at once is the engine's.
	type answer struct {
		user string
		err  error
	}
	answers := make(chan answer, 2)
	for _, u := range []string{"b", "c"} {
		wg.Go(func() {
			_, _, err := claim(b.engine, "d", u)
			answers <- answer{u, err}
		})
	}
	shed := <-answers
	if dibs.ErrorCode(shed.err) != dibs.EOVERLOADED {
		t.Fatalf("claim of %s with a full queue = %v, want overloaded", shed.user, shed.err)
	}
	if left, _ := b.gate.Remaining(context.Background(), "d"); left != 8 {
		t.Fatalf("remaining = %d, want 8 (a's and the queued claim's): the refused claim's slot must come back", left)
	}
	close(block)
	if queued := <-answers; queued.err != nil {
		t.Fatalf("the queued claim of %s = %v, want it recorded once a's commit ended", queued.user, queued.err)
	}
	wg.Wait()
}

// TestLosersMintNoClaimID: once the gate refuses everyone, losers are
// answered without minting a claim id, and a slot that comes back (here
// from a failed write) is won all the same.
func TestLosersMintNoClaimID(t *testing.T) {
	t.Parallel()
	var mints atomic.Int64
	unblock := make(chan struct{})
	b := open(t, filepath.Join(t.TempDir(), "dibs.db"), func(cfg *engine.Config, st *faultyStore) {
		cfg.NewID = func() string { return fmt.Sprintf("c%d", mints.Add(1)) }
		st.block = unblock
	})
	mustCreate(t, b.engine, "d", 1, 1)
	b.store.failWith(errors.New("disk full"))
	winner := make(chan error, 1)
	go func() { _, _, err := claim(b.engine, "d", "winner"); winner <- err }()
	testenv.WaitFor(t, "the winner to hold the only slot", func() bool { left, _ := b.gate.Remaining(context.Background(), "d"); return left == 0 })
	if _, _, err := claim(b.engine, "d", "first-loser"); dibs.ErrorCode(err) != dibs.ESOLDOUT {
		t.Fatalf("first loser: %v, want %s", err, dibs.ESOLDOUT)
	}
	before := mints.Load()
	for i := range 10 {
		if _, _, err := claim(b.engine, "d", fmt.Sprint("loser-", i)); dibs.ErrorCode(err) != dibs.ESOLDOUT {
			t.Fatalf("loser %d: %v, want %s", i, err, dibs.ESOLDOUT)
		}
	}
	if n := mints.Load() - before; n != 0 {
		t.Fatalf("10 losers of a sold-out drop minted %d claim ids, want 0", n)
	}
	close(unblock)
	if err := <-winner; dibs.ErrorCode(err) != dibs.EUNAVAILABLE {
		t.Fatalf("claim whose write failed: %v, want %s", err, dibs.EUNAVAILABLE)
	}
	b.store.heal()
	c, created, err := claim(b.engine, "d", "late")
	if err != nil || !created || c.ID == "" {
		t.Fatalf("claim of the returned slot = %+v, created %v, %v; want a new claim", c, created, err)
	}
}

// TestCommittedSignals: a commit that made claims durable signals
// Committed without waiting for a reader, signals coalesce, and the
// channel closes once the engine has stopped.
func TestCommittedSignals(t *testing.T) {
	t.Parallel()
	b := setup(t)
	mustCreate(t, b.engine, "d", 10, 1)
	for _, u := range []string{"a", "b", "c"} { // nobody reads meanwhile
		if _, _, err := claim(b.engine, "d", u); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := <-b.engine.Committed(); !ok {
		t.Fatal("Committed closed while the engine runs")
	}
	select {
	case <-b.engine.Committed():
		t.Fatal("three commits read unread gave two signals, want one")
	default:
	}
	if err := b.engine.Stop(); err != nil {
		t.Fatal(err)
	}
	for range b.engine.Committed() {
	}
}

// TestStartContextStops: the engine runs until its Start context ends,
// then takes no more claims.
func TestStartContextStops(t *testing.T) {
	t.Parallel()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "dibs.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := engine.New(engine.Config{Store: st, Gate: memory.NewGate()})
	ctx, cancel := context.WithCancel(context.Background())
	if err := e.Start(ctx); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, e, "d", 10, 1)
	if _, _, err := claim(e, "d", "before"); err != nil {
		t.Fatal(err)
	}
	cancel()
	for range e.Committed() { // closed once the engine has stopped
	}
	if _, _, err := claim(e, "d", "after"); dibs.ErrorCode(err) != dibs.EUNAVAILABLE {
		t.Fatalf("claim after the context ended: %v, want %s", err, dibs.EUNAVAILABLE)
	}
	if err := e.Stop(); err != nil {
		t.Fatal(err)
	}
}

// TestClaimThenWait: losers and retries answered from memory are counted
// at Claim; a winner is counted once, when Wait learns it is durable.
func TestClaimThenWait(t *testing.T) {
	t.Parallel()
	b := setup(t)
	mustCreate(t, b.engine, "d", 1, 1)
	ctx := context.Background()
	outcomes := func() map[string]int64 {
		t.Helper()
		st, err := b.engine.Stats(ctx, "d")
		if err != nil {
			t.Fatal(err)
		}
		return st.Outcomes
	}

	w, err := b.engine.Claim(ctx, dibs.ClaimRequest{DropID: "d", UserID: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if got := outcomes()["won"]; got != 0 {
		t.Fatalf("won before Wait = %d, want 0", got)
	}
	c, created, err := w.Wait(ctx)
	if err != nil || !created || c.UserID != "alice" {
		t.Fatalf("Wait = %+v created=%v err=%v, want alice's new claim", c, created, err)
	}
	if got := outcomes()["won"]; got != 1 {
		t.Fatalf("won after Wait = %d, want 1", got)
	}

	if _, err := b.engine.Claim(ctx, dibs.ClaimRequest{DropID: "d", UserID: "bob"}); dibs.ErrorCode(err) != dibs.ESOLDOUT {
		t.Fatalf("bob's Claim = %v, want %s", err, dibs.ESOLDOUT)
	}
	w, err = b.engine.Claim(ctx, dibs.ClaimRequest{DropID: "d", UserID: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if got := outcomes(); got["existing"] != 1 || got["sold_out"] != 1 {
		t.Fatalf("outcomes before the retry's Wait = %v, want existing 1 and sold_out 1", got)
	}
	again, created, err := w.Wait(ctx)
	if err != nil || created || again.ID != c.ID {
		t.Fatalf("retry's Wait = %+v created=%v err=%v, want %s", again, created, err, c.ID)
	}
	if got := outcomes(); got["won"]+got["existing"]+got["sold_out"] != 3 {
		t.Fatalf("outcomes = %v, want 3 requests counted once each", got)
	}
}
