// Package gatetest is the conformance suite every dibs.Gate passes: exact-N
// under a stampede, per-user limits, idempotent retries, slot reuse after
// release, rebuild from the record, and linearizable histories checked with
// Porcupine.
package gatetest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/dibs-io/dibs"
)

// Factory returns a new, empty gate isolated from every other test's.
type Factory func(t *testing.T) dibs.Gate

// Run runs the conformance suite against gates made by newGate.
func Run(t *testing.T, newGate Factory) {
	t.Run("Stampede", func(t *testing.T) { t.Parallel(); testStampede(t, newGate(t)) })
	t.Run("RetryReturnsSameClaim", func(t *testing.T) { t.Parallel(); testRetry(t, newGate(t)) })
	t.Run("PerUserLimit", func(t *testing.T) { t.Parallel(); testPerUserLimit(t, newGate(t)) })
	t.Run("ReleaseReusesSlots", func(t *testing.T) { t.Parallel(); testReleaseReuse(t, newGate(t)) })
	t.Run("ReleasedKeyWinsOnce", func(t *testing.T) { t.Parallel(); testReleasedKey(t, newGate(t)) })
	t.Run("ReleasedKeysBounded", func(t *testing.T) { t.Parallel(); testReleasedKeysBounded(t, newGate(t)) })
	t.Run("ConcurrentReleaseNeverExceedsStock", func(t *testing.T) { t.Parallel(); testConcurrentRelease(t, newGate(t)) })
	t.Run("SoldOutKeepsWinners", func(t *testing.T) { t.Parallel(); testSoldOutKeepsWinners(t, newGate(t)) })
	t.Run("StatusAndClock", func(t *testing.T) { t.Parallel(); testStatusAndClock(t, newGate(t)) })
	t.Run("Confirm", func(t *testing.T) { t.Parallel(); testConfirm(t, newGate(t)) })
	t.Run("Rebuild", func(t *testing.T) { t.Parallel(); testRebuild(t, newGate(t)) })
	t.Run("HugeDrop", func(t *testing.T) { t.Parallel(); testHugeDrop(t, newGate(t)) })
	t.Run("UnknownDrop", func(t *testing.T) { t.Parallel(); testUnknownDrop(t, newGate(t)) })
	t.Run("ReserveWithoutClaimID", func(t *testing.T) { t.Parallel(); testReserveWithoutClaimID(t, newGate(t)) })
	t.Run("Holds", func(t *testing.T) { t.Parallel(); testHolds(t, newGate(t)) })
	t.Run("Restore", func(t *testing.T) { t.Parallel(); testRestore(t, newGate(t)) })
	t.Run("OwnRequestsAtLastSlot", func(t *testing.T) { t.Parallel(); testOwnRequestsAtLastSlot(t, newGate(t)) })
	t.Run("OwnRequestPausedOnSoldOutPath", func(t *testing.T) { t.Parallel(); testOwnRequestPaused(t, newGate(t)) })
	t.Run("Linearizable", func(t *testing.T) { t.Parallel(); testLinearizable(t, newGate(t), spread) })
	t.Run("LinearizableCrowded", func(t *testing.T) { t.Parallel(); testLinearizable(t, newGate(t), crowded) })
}

// SoldOutPathHook is implemented, in its own tests, by a gate that answers
// "sold out" without its lock from more than one read: fn runs on that
// path between the read that finds the user holds nothing and the read of
// the free slots, so that a test can pause a request there. The suite
// uses it when a gate offers it.
type SoldOutPathHook interface {
	OnSoldOutPath(fn func())
}

var epoch = time.Date(2016, 11, 11, 11, 0, 0, 0, time.UTC)

var dropSeq atomic.Int64

// NewDrop returns a valid, open coupon drop with a fresh id.
func NewDrop(stock int64, perUser int) *dibs.Drop {
	d := &dibs.Drop{
		ID:           fmt.Sprintf("drop-%d", dropSeq.Add(1)),
		Title:        "test drop",
		Kind:         dibs.KindCoupon,
		Stock:        stock,
		PerUserLimit: perUser,
		OpensAt:      epoch,
	}
	d.Normalize(epoch)
	return d
}

// MustPrepare prepares d on g with no prior claims.
func MustPrepare(tb testing.TB, g dibs.Gate, d *dibs.Drop) {
	tb.Helper()
	if err := g.Prepare(context.Background(), d, nil); err != nil {
		tb.Fatalf("prepare %s: %v", d.ID, err)
	}
}

var claimSeq atomic.Int64

func newClaimID() string { return fmt.Sprintf("c%d", claimSeq.Add(1)) }

func reserve(g dibs.Gate, d *dibs.Drop, user, key string) (dibs.Hold, error) {
	return g.Reserve(context.Background(), dibs.ReserveRequest{
		Drop: d, UserID: user, IdempotencyKey: key, ClaimID: newClaimID(), Now: epoch.Add(time.Minute),
	})
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if got := dibs.ErrorCode(err); got != code {
		t.Fatalf("error code = %q (%v), want %q", got, err, code)
	}
}

func mustReserve(t *testing.T, g dibs.Gate, d *dibs.Drop, user, key string) dibs.Hold {
	t.Helper()
	h, err := reserve(g, d, user, key)
	if err != nil {
		t.Fatalf("reserve %s: %v", user, err)
	}
	return h
}

func mustRemaining(t *testing.T, g dibs.Gate, d *dibs.Drop, want int64) {
	t.Helper()
	got, err := g.Remaining(context.Background(), d.ID)
	if err != nil {
		t.Fatalf("remaining: %v", err)
	}
	if got != want {
		t.Fatalf("remaining = %d, want %d", got, want)
	}
}

// testStampede: N=1,000, 100,000 users on 2,000 goroutines, each user once,
// a fifth of them twice. Exactly N distinct winners with distinct slots, and
// every answer a winner gets names the same claim. Answers are checked after
// the fact: the order goroutines log them in is not the order the gate saw.
func testStampede(t *testing.T, g dibs.Gate) {
	const stock, users, workers = 1000, 100_000, 2000
	d := NewDrop(stock, 1)
	MustPrepare(t, g, d)

	var (
		mu      sync.Mutex
		answers = map[string][]dibs.Hold{}
		next    atomic.Int64
		failed  atomic.Value
	)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= users+users/5 {
					return
				}
				user := fmt.Sprintf("u%d", i%users)
				h, err := reserve(g, d, user, "")
				if dibs.ErrorCode(err) == dibs.ESOLDOUT {
					continue
				} else if err != nil {
					failed.Store(err)
					return
				}
				mu.Lock()
				answers[user] = append(answers[user], h)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		t.Fatal(err)
	}
	if len(answers) != stock {
		t.Fatalf("winners = %d, want %d", len(answers), stock)
	}
	slots := map[int64]string{}
	for user, hs := range answers {
		fresh := 0
		for _, h := range hs {
			if h.ClaimID != hs[0].ClaimID || h.Slot != hs[0].Slot {
				t.Fatalf("user %s got two claims: %+v and %+v", user, hs[0], h)
			}
			if !h.Existing {
				fresh++
			}
		}
		if fresh != 1 {
			t.Fatalf("user %s got %d new holds, want 1", user, fresh)
		}
		s := hs[0].Slot
		if other, taken := slots[s]; taken {
			t.Fatalf("slot %d given to %s and %s", s, other, user)
		}
		if s < 1 || s > stock {
			t.Fatalf("slot %d outside 1..%d", s, stock)
		}
		slots[s] = user
	}
	mustRemaining(t, g, d, 0)
}

func testRetry(t *testing.T, g dibs.Gate) {
	d := NewDrop(10, 1)
	MustPrepare(t, g, d)
	first := mustReserve(t, g, d, "alice", "")
	if first.Existing || first.Nth != 1 || first.UserID != "alice" {
		t.Fatalf("first = %+v, want alice's new hold nth 1", first)
	}
	for _, key := range []string{"", "k1", "k2"} { // limit 1: any retry gets the claim
		again := mustReserve(t, g, d, "alice", key)
		if !again.Existing || again.ClaimID != first.ClaimID || again.Slot != first.Slot {
			t.Fatalf("retry with key %q = %+v, want existing %+v", key, again, first)
		}
	}
	mustRemaining(t, g, d, 9)
}

func testPerUserLimit(t *testing.T, g dibs.Gate) {
	d := NewDrop(100, 3)
	MustPrepare(t, g, d)
	seen := map[int64]bool{}
	nths := map[int]bool{}
	for i := range 3 {
		h := mustReserve(t, g, d, "bob", "")
		if h.Existing || seen[h.Slot] || nths[h.Nth] || h.Nth < 1 || h.Nth > 3 {
			t.Fatalf("claim %d = %+v: want a new slot and a new nth in 1..3", i, h)
		}
		seen[h.Slot], nths[h.Nth] = true, true
	}
	_, err := reserve(g, d, "bob", "")
	wantCode(t, err, dibs.ELIMIT)

	// With a key, a retry is the same claim, and a new key past the limit is refused.
	keyed := mustReserve(t, g, d, "carol", "order-1")
	again := mustReserve(t, g, d, "carol", "order-1")
	if !again.Existing || again.ClaimID != keyed.ClaimID {
		t.Fatalf("keyed retry = %+v, want existing %+v", again, keyed)
	}
	mustReserve(t, g, d, "carol", "order-2")
	mustReserve(t, g, d, "carol", "order-3")
	_, err = reserve(g, d, "carol", "order-4")
	wantCode(t, err, dibs.ELIMIT)

	// Releasing one frees its nth and lets the user claim once more.
	if ok, err := g.Release(context.Background(), d.ID, keyed.ClaimID); !ok || err != nil {
		t.Fatalf("release = %v, %v", ok, err)
	}
	h := mustReserve(t, g, d, "carol", "order-4")
	if h.Nth != keyed.Nth {
		t.Fatalf("nth after release = %d, want the freed %d", h.Nth, keyed.Nth)
	}
	mustRemaining(t, g, d, 100-6)
}

func testReleaseReuse(t *testing.T, g dibs.Gate) {
	d := NewDrop(3, 1)
	MustPrepare(t, g, d)
	a := mustReserve(t, g, d, "a", "")
	mustReserve(t, g, d, "b", "")
	mustReserve(t, g, d, "c", "")
	_, err := reserve(g, d, "d", "")
	wantCode(t, err, dibs.ESOLDOUT)

	ok, err := g.Release(context.Background(), d.ID, a.ClaimID)
	if !ok || err != nil {
		t.Fatalf("release = %v, %v", ok, err)
	}
	ok, err = g.Release(context.Background(), d.ID, a.ClaimID)
	if ok || err != nil {
		t.Fatalf("second release = %v, %v; want false, nil", ok, err)
	}
	mustRemaining(t, g, d, 1)
	h := mustReserve(t, g, d, "d", "")
	if h.Slot != a.Slot {
		t.Fatalf("slot after release = %d, want the returned %d", h.Slot, a.Slot)
	}
	_, err = reserve(g, d, "e", "")
	wantCode(t, err, dibs.ESOLDOUT)
	// The user who released may win again.
	if _, err := reserve(g, d, "a", ""); dibs.ErrorCode(err) != dibs.ESOLDOUT {
		t.Fatalf("a after release and sell-out: %v, want sold_out", err)
	}
}

func mustRelease(t *testing.T, g dibs.Gate, d *dibs.Drop, claimID string) {
	t.Helper()
	if ok, err := g.Release(context.Background(), d.ID, claimID); !ok || err != nil {
		t.Fatalf("release %s = %v, %v; want true, nil", claimID, ok, err)
	}
}

func wantReleased(t *testing.T, h dibs.Hold, user, key, claimID string) {
	t.Helper()
	want := dibs.Hold{UserID: user, ClaimID: claimID, IdempotencyKey: key, Existing: true, Released: true}
	if h != want {
		t.Fatalf("retry with the released key %q = %+v, want %+v", key, h, want)
	}
}

// testReleasedKeyWinsOnce: an idempotency key names its first claim for
// good. Once that claim's hold is released, a retry with the key gets the
// released claim back (no slot), even once the drop is sold out or closed,
// never a new slot; other keys, and requests without one, claim afresh.
// Unrecorded lets the key claim again when the record never got its claim.
func testReleasedKey(t *testing.T, g dibs.Gate) {
	ctx := context.Background()
	d := NewDrop(3, 2)
	MustPrepare(t, g, d)
	first := mustReserve(t, g, d, "alice", "adm-1")
	mustRelease(t, g, d, first.ClaimID)
	wantReleased(t, mustReserve(t, g, d, "alice", "adm-1"), "alice", "adm-1", first.ClaimID)
	mustRemaining(t, g, d, 3)
	if hs := MustHolds(t, g, d.ID); len(hs) != 0 {
		t.Fatalf("holds after the released key's retry = %v, want none", hs)
	}

	// Another key, and another user with the same key, claim afresh.
	other := mustReserve(t, g, d, "alice", "adm-2")
	bob := mustReserve(t, g, d, "bob", "adm-1")
	if other.Existing || other.Released || bob.Existing || bob.Released {
		t.Fatalf("fresh keys = %+v, %+v; want new holds", other, bob)
	}
	mustReserve(t, g, d, "cyd", "")
	mustRemaining(t, g, d, 0)
	wantReleased(t, mustReserve(t, g, d, "alice", "adm-1"), "alice", "adm-1", first.ClaimID)

	// Unrecorded naming another claim changes nothing; naming the released
	// one, the key claims again (here: a slot comes back first), and from
	// then on names the new claim.
	h, err := g.Reserve(ctx, dibs.ReserveRequest{Drop: d, UserID: "alice", IdempotencyKey: "adm-1", ClaimID: newClaimID(), Now: epoch.Add(time.Minute), Unrecorded: "someone-else"})
	if err != nil {
		t.Fatal(err)
	}
	wantReleased(t, h, "alice", "adm-1", first.ClaimID)
	mustRelease(t, g, d, bob.ClaimID)
	again, err := g.Reserve(ctx, dibs.ReserveRequest{Drop: d, UserID: "alice", IdempotencyKey: "adm-1", ClaimID: newClaimID(), Now: epoch.Add(time.Minute), Unrecorded: first.ClaimID})
	if err != nil || again.Existing || again.Released || again.ClaimID == first.ClaimID || again.IdempotencyKey != "adm-1" {
		t.Fatalf("reserve with the released claim unrecorded = %+v, %v; want a new hold with key adm-1", again, err)
	}
	if h := mustReserve(t, g, d, "alice", "adm-1"); !h.Existing || h.Released || h.ClaimID != again.ClaimID {
		t.Fatalf("retry after reclaiming = %+v, want existing %s", h, again.ClaimID)
	}
	wantReleased(t, mustReserve(t, g, d, "bob", "adm-1"), "bob", "adm-1", bob.ClaimID)

	// Closed: the released key still gets its claim back.
	if err := g.SetStatus(ctx, d.ID, dibs.StatusClosed); err != nil {
		t.Fatal(err)
	}
	wantReleased(t, mustReserve(t, g, d, "bob", "adm-1"), "bob", "adm-1", bob.ClaimID)

	// Without a key, a user whose hold was released may claim again.
	d1 := NewDrop(1, 1)
	MustPrepare(t, g, d1)
	a := mustReserve(t, g, d1, "alice", "")
	mustRelease(t, g, d1, a.ClaimID)
	if h := mustReserve(t, g, d1, "alice", ""); h.Existing || h.Released || h.ClaimID == a.ClaimID {
		t.Fatalf("keyless claim after release = %+v, want a new hold", h)
	}
}

// testReleasedKeysBounded: a gate remembers the last dibs.ReleasedKeys
// released keys of a drop; the oldest beyond that claims afresh.
func testReleasedKeysBounded(t *testing.T, g dibs.Gate) {
	const workers = 16
	d := NewDrop(workers, 1)
	MustPrepare(t, g, d)
	oldest := mustReserve(t, g, d, "u0", "k")
	mustRelease(t, g, d, oldest.ClaimID)
	second := mustReserve(t, g, d, "u1", "k")
	mustRelease(t, g, d, second.ClaimID)

	var next atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := next.Add(1) + 1; i <= dibs.ReleasedKeys; i = next.Add(1) + 1 {
				h, err := reserve(g, d, fmt.Sprintf("u%d", i), "k")
				if err == nil {
					_, err = g.Release(context.Background(), d.ID, h.ClaimID)
				}
				if err != nil {
					failed.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		t.Fatal(err)
	}
	// dibs.ReleasedKeys + 1 released: u0's is forgotten, u1's kept.
	wantReleased(t, mustReserve(t, g, d, "u1", "k"), "u1", "k", second.ClaimID)
	if h := mustReserve(t, g, d, fmt.Sprintf("u%d", dibs.ReleasedKeys), "k"); !h.Released {
		t.Fatalf("newest released key = %+v, want it released", h)
	}
	if h := mustReserve(t, g, d, "u0", "k"); h.Existing || h.Released {
		t.Fatalf("oldest released key past the bound = %+v, want a new hold", h)
	}
}

// testConcurrentRelease: users reserve and release at random; at no moment
// do the held slots exceed stock, and at the end the books balance.
func testConcurrentRelease(t *testing.T, g dibs.Gate) {
	const stock, workers, rounds = 20, 64, 300
	d := NewDrop(stock, 1)
	MustPrepare(t, g, d)
	var (
		mu     sync.Mutex
		held   = map[int64]string{} // slot → claim
		failed atomic.Value
	)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for range rounds {
				// Each worker owns its users, so only it releases their claims.
				user := fmt.Sprintf("w%d-u%d", w, rng.IntN(4))
				h, err := reserve(g, d, user, "")
				if dibs.ErrorCode(err) == dibs.ESOLDOUT {
					continue
				} else if err != nil {
					failed.Store(err)
					return
				}
				if !h.Existing {
					mu.Lock()
					if other, taken := held[h.Slot]; taken {
						failed.Store(fmt.Errorf("slot %d given twice (%s, %s)", h.Slot, other, h.ClaimID))
					}
					held[h.Slot] = h.ClaimID
					if len(held) > stock {
						failed.Store(fmt.Errorf("%d slots held, stock %d", len(held), stock))
					}
					mu.Unlock()
				}
				if rng.IntN(2) == 0 {
					// Forget the slot before releasing it: once released it may be handed out again at once.
					mu.Lock()
					if held[h.Slot] == h.ClaimID {
						delete(held, h.Slot)
					}
					mu.Unlock()
					if _, err := g.Release(context.Background(), d.ID, h.ClaimID); err != nil {
						failed.Store(err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		t.Fatal(err)
	}
	mustRemaining(t, g, d, stock-int64(len(held)))
}

func testSoldOutKeepsWinners(t *testing.T, g dibs.Gate) {
	d := NewDrop(2, 1)
	MustPrepare(t, g, d)
	a := mustReserve(t, g, d, "a", "")
	mustReserve(t, g, d, "b", "")
	for range 3 {
		_, err := reserve(g, d, "loser", "")
		wantCode(t, err, dibs.ESOLDOUT)
	}
	again := mustReserve(t, g, d, "a", "")
	if !again.Existing || again.ClaimID != a.ClaimID {
		t.Fatalf("winner after sell-out = %+v, want existing %+v", again, a)
	}
}

func testStatusAndClock(t *testing.T, g dibs.Gate) {
	ctx := context.Background()
	d := NewDrop(10, 1)
	d.ClosesAt = epoch.Add(time.Hour)
	MustPrepare(t, g, d)
	at := func(user string, now time.Time) error {
		_, err := g.Reserve(ctx, dibs.ReserveRequest{Drop: d, UserID: user, ClaimID: newClaimID(), Now: now})
		return err
	}
	wantCode(t, at("early", epoch.Add(-time.Second)), dibs.ENOTOPEN)
	wantCode(t, at("late", epoch.Add(time.Hour)), dibs.ECLOSED)
	if err := at("ok", epoch); err != nil {
		t.Fatalf("at opening: %v", err)
	}

	if err := g.SetStatus(ctx, d.ID, dibs.StatusPaused); err != nil {
		t.Fatal(err)
	}
	wantCode(t, at("p", epoch.Add(time.Minute)), dibs.EPAUSED)
	if err := at("ok", epoch.Add(time.Minute)); err != nil { // a holder still gets the claim back
		t.Fatalf("holder while paused: %v", err)
	}
	if err := g.SetStatus(ctx, d.ID, dibs.StatusActive); err != nil {
		t.Fatal(err)
	}
	if err := at("p", epoch.Add(time.Minute)); err != nil {
		t.Fatalf("after resume: %v", err)
	}
	if err := g.SetStatus(ctx, d.ID, dibs.StatusClosed); err != nil {
		t.Fatal(err)
	}
	wantCode(t, at("c", epoch.Add(time.Minute)), dibs.ECLOSED)
	mustRemaining(t, g, d, 8)
}

func testConfirm(t *testing.T, g dibs.Gate) {
	d := NewDrop(5, 1)
	MustPrepare(t, g, d)
	h := mustReserve(t, g, d, "a", "")
	if h.Durable {
		t.Fatal("a fresh hold is durable before Confirm")
	}
	if again := mustReserve(t, g, d, "a", ""); again.Durable {
		t.Fatal("retry reports durable before Confirm")
	}
	if err := g.Confirm(context.Background(), d.ID, h.ClaimID); err != nil {
		t.Fatal(err)
	}
	if again := mustReserve(t, g, d, "a", ""); !again.Durable || again.ClaimID != h.ClaimID {
		t.Fatalf("retry after Confirm = %+v, want durable %s", again, h.ClaimID)
	}
}

func testRebuild(t *testing.T, g dibs.Gate) {
	d := NewDrop(5, 2)
	record := []*dibs.Claim{
		{ID: "r1", DropID: d.ID, UserID: "a", Slot: 2, Nth: 1, State: dibs.ClaimConfirmed, CreatedAt: epoch},
		{ID: "r2", DropID: d.ID, UserID: "b", Slot: 4, Nth: 1, State: dibs.ClaimConfirmed, CreatedAt: epoch, IdempotencyKey: "kb"},
		{ID: "r3", DropID: d.ID, UserID: "a", Slot: 5, Nth: 2, State: dibs.ClaimConfirmed, CreatedAt: epoch},
	}
	scan := func(ctx context.Context, fn func(*dibs.Claim) error) error {
		for _, c := range record {
			if err := fn(c); err != nil {
				return err
			}
		}
		return nil
	}
	if err := g.Prepare(context.Background(), d, scan); err != nil {
		t.Fatal(err)
	}
	mustRemaining(t, g, d, 2)
	_, err := reserve(g, d, "a", "")
	wantCode(t, err, dibs.ELIMIT)
	if h := mustReserve(t, g, d, "b", "kb"); !h.Existing || h.ClaimID != "r2" || !h.Durable {
		t.Fatalf("rebuilt keyed hold = %+v, want existing durable r2", h)
	}
	got := map[int64]bool{}
	for _, u := range []string{"c", "d"} {
		got[mustReserve(t, g, d, u, "").Slot] = true
	}
	if !got[1] || !got[3] {
		t.Fatalf("new slots = %v, want the free 1 and 3", got)
	}
	_, err = reserve(g, d, "e", "")
	wantCode(t, err, dibs.ESOLDOUT)

	// Preparing again keeps the state.
	if err := g.Prepare(context.Background(), d, scan); err != nil {
		t.Fatal(err)
	}
	mustRemaining(t, g, d, 0)
}

func testHugeDrop(t *testing.T, g dibs.Gate) {
	d := NewDrop(dibs.MaxStock, 1)
	MustPrepare(t, g, d)
	mustRemaining(t, g, d, dibs.MaxStock)
	h := mustReserve(t, g, d, "a", "")
	if h.Slot < 1 || h.Slot > dibs.MaxStock {
		t.Fatalf("slot %d outside the drop", h.Slot)
	}
	mustRemaining(t, g, d, dibs.MaxStock-1)
}

// testReserveWithoutClaimID: a request without a claim id gets every
// answer but a new hold: where a hold would be made the gate answers
// ErrNeedClaimID and takes no slot; the id given next is the hold's.
func testReserveWithoutClaimID(t *testing.T, g dibs.Gate) {
	d := NewDrop(2, 1)
	MustPrepare(t, g, d)
	ctx := context.Background()
	bare := func(user, key string) (dibs.Hold, error) {
		return g.Reserve(ctx, dibs.ReserveRequest{Drop: d, UserID: user, IdempotencyKey: key, Now: epoch.Add(time.Minute)})
	}
	if _, err := bare("a", "ka"); !errors.Is(err, dibs.ErrNeedClaimID) {
		t.Fatalf("new hold without an id: %v, want ErrNeedClaimID", err)
	}
	mustRemaining(t, g, d, 2)
	h, err := g.Reserve(ctx, dibs.ReserveRequest{Drop: d, UserID: "a", IdempotencyKey: "ka", ClaimID: "given-a", Now: epoch.Add(time.Minute)})
	if err != nil || h.ClaimID != "given-a" || h.Existing {
		t.Fatalf("new hold with an id = %+v, %v, want new given-a", h, err)
	}
	if again, err := bare("a", "ka"); err != nil || !again.Existing || again.ClaimID != "given-a" {
		t.Fatalf("retry without an id = %+v, %v, want existing given-a", again, err)
	}
	b := mustReserve(t, g, d, "b", "kb")
	if _, err := bare("loser", ""); dibs.ErrorCode(err) != dibs.ESOLDOUT {
		t.Fatalf("loser without an id: %v, want %s", err, dibs.ESOLDOUT)
	}
	mustRelease(t, g, d, b.ClaimID)
	released, err := bare("b", "kb")
	if err != nil {
		t.Fatalf("released key without an id: %v", err)
	}
	wantReleased(t, released, "b", "kb", b.ClaimID)
	if _, err := bare("c", ""); !errors.Is(err, dibs.ErrNeedClaimID) {
		t.Fatalf("new hold without an id after a release: %v, want ErrNeedClaimID", err)
	}
	mustRemaining(t, g, d, 1)
}

func testUnknownDrop(t *testing.T, g dibs.Gate) {
	d := NewDrop(1, 1)
	_, err := reserve(g, d, "a", "")
	wantCode(t, err, dibs.ENOTFOUND)
	_, err = g.Remaining(context.Background(), d.ID)
	wantCode(t, err, dibs.ENOTFOUND)
	err = g.Holds(context.Background(), d.ID, func(dibs.Hold) error { return nil })
	wantCode(t, err, dibs.ENOTFOUND)
}

// MustHolds returns the drop's holds by claim id.
func MustHolds(tb testing.TB, g dibs.Gate, dropID string) map[string]dibs.Hold {
	tb.Helper()
	out := map[string]dibs.Hold{}
	err := g.Holds(context.Background(), dropID, func(h dibs.Hold) error {
		out[h.ClaimID] = h
		return nil
	})
	if err != nil {
		tb.Fatalf("holds of %s: %v", dropID, err)
	}
	return out
}

func testHolds(t *testing.T, g dibs.Gate) {
	ctx := context.Background()
	d := NewDrop(50, 2)
	MustPrepare(t, g, d)
	if hs := MustHolds(t, g, d.ID); len(hs) != 0 {
		t.Fatalf("holds of a fresh drop = %v", hs)
	}
	want := map[string]dibs.Hold{}
	for i := range 30 {
		h := mustReserve(t, g, d, fmt.Sprintf("u%d", i%20), fmt.Sprintf("k%d", i))
		want[h.ClaimID] = h
	}
	var gone []string
	for id := range want {
		if len(gone) < 5 {
			gone = append(gone, id)
		}
	}
	for _, id := range gone {
		if ok, err := g.Release(ctx, d.ID, id); !ok || err != nil {
			t.Fatalf("release %s = %v, %v", id, ok, err)
		}
		delete(want, id)
	}
	confirmed := slices.Collect(maps.Keys(want))[:10]
	if err := g.Confirm(ctx, d.ID, confirmed...); err != nil {
		t.Fatal(err)
	}
	for _, id := range confirmed {
		h := want[id]
		h.Durable = true
		want[id] = h
	}

	got := MustHolds(t, g, d.ID)
	if len(got) != len(want) {
		t.Fatalf("%d holds listed, want %d", len(got), len(want))
	}
	for id, w := range want {
		h := got[id]
		if h.UserID != w.UserID || h.Slot != w.Slot || h.Nth != w.Nth || h.IdempotencyKey != w.IdempotencyKey ||
			!h.CreatedAt.Equal(w.CreatedAt) || h.Durable != w.Durable {
			t.Fatalf("hold %s listed as %+v, want %+v", id, h, w)
		}
	}

	stop := errors.New("stop")
	n := 0
	err := g.Holds(ctx, d.ID, func(dibs.Hold) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Fatalf("holds after fn failed: err %v after %d calls, want stop after 1", err, n)
	}
}

// testRestore: the record's claims come back into the gate, pushing out the
// holds in their way, and the books balance after each.
func testRestore(t *testing.T, g dibs.Gate) {
	ctx := context.Background()
	d := NewDrop(6, 2)
	MustPrepare(t, g, d)
	a := mustReserve(t, g, d, "a", "") // slot 1
	b := mustReserve(t, g, d, "b", "") // slot 2

	restore := func(c *dibs.Claim) bool {
		t.Helper()
		c.DropID, c.State, c.CreatedAt = d.ID, dibs.ClaimConfirmed, epoch
		ok, err := g.Restore(ctx, c)
		if err != nil {
			t.Fatalf("restore %+v: %v", c, err)
		}
		return ok
	}

	// A claim already held is left alone.
	if restore(&dibs.Claim{ID: a.ClaimID, UserID: "a", Slot: a.Slot, Nth: 1}) {
		t.Fatal("restore of a held claim reported a change")
	}
	// A free slot beyond the counter: taken, the ones below stay free.
	if !restore(&dibs.Claim{ID: "r5", UserID: "e", Slot: 5, Nth: 1, IdempotencyKey: "ke"}) {
		t.Fatal("restore r5 reported no change")
	}
	mustRemaining(t, g, d, 3)
	if h := mustReserve(t, g, d, "e", "ke"); !h.Existing || h.ClaimID != "r5" || !h.Durable || h.Slot != 5 {
		t.Fatalf("e after restore = %+v, want existing durable r5 on slot 5", h)
	}
	// A slot held by another hold: that hold goes.
	if !restore(&dibs.Claim{ID: "r2", UserID: "x", Slot: b.Slot, Nth: 1}) {
		t.Fatal("restore r2 reported no change")
	}
	hs := MustHolds(t, g, d.ID)
	if _, ok := hs[b.ClaimID]; ok || hs["r2"].Slot != b.Slot || hs["r2"].UserID != "x" {
		t.Fatalf("after restoring r2 over b: %v", hs)
	}
	mustRemaining(t, g, d, 3)
	// The user's nth place held by another claim: that claim goes and its
	// slot comes back.
	if !restore(&dibs.Claim{ID: "r1", UserID: "a", Slot: 6, Nth: 1}) {
		t.Fatal("restore r1 reported no change")
	}
	hs = MustHolds(t, g, d.ID)
	if _, ok := hs[a.ClaimID]; ok || hs["r1"].Slot != 6 {
		t.Fatalf("after restoring r1 over a's nth: %v", hs)
	}
	mustRemaining(t, g, d, 3) // slots 1, 3, 4 free
	free := map[int64]bool{}
	for _, u := range []string{"p", "q", "r"} {
		free[mustReserve(t, g, d, u, "").Slot] = true
	}
	if !free[1] || !free[3] || !free[4] {
		t.Fatalf("slots left after restores = %v, want 1, 3, 4", free)
	}
	_, err := reserve(g, d, "s", "")
	wantCode(t, err, dibs.ESOLDOUT)
	if got := len(MustHolds(t, g, d.ID)); got != 6 {
		t.Fatalf("%d holds, want 6", got)
	}

	for _, c := range []*dibs.Claim{
		{ID: "bad1", DropID: d.ID, UserID: "z", Slot: 0, Nth: 1},
		{ID: "bad2", DropID: d.ID, UserID: "z", Slot: 7, Nth: 1},
		{ID: "bad3", DropID: d.ID, UserID: "z", Slot: 3, Nth: 0},
	} {
		_, err := g.Restore(ctx, c)
		wantCode(t, err, dibs.EINVALID)
	}
}

// workload shapes a linearizability history: drops of stock slots, each
// claimed by users users, from clients clients running ops operations
// each; one operation in releaseOneIn releases a claim.
type workload struct {
	drops, users, clients, ops, releaseOneIn int
	stock                                    int64
}

// spread: many drops, many users each, little contention on any one drop.
var spread = workload{drops: 200, stock: 5, users: 20, clients: 64, ops: 60, releaseOneIn: 3}

// crowded: a few drops of two slots that three users fight over from many
// clients, releasing often. A user is on both sides of the sell-out again
// and again: their hold released, then their own requests racing each
// other and the other users for the slot that came back.
var crowded = workload{drops: 12, stock: 2, users: 3, clients: 24, ops: 40, releaseOneIn: 3}

// testLinearizable records a concurrent reserve/release history shaped by
// w and checks it against ClaimModel. A gate with a pause point on its
// sold-out path (SoldOutPathHook) yields there now and then, so that its
// lock-free answers meet the writes they could miss.
func testLinearizable(t *testing.T, g dibs.Gate, w workload) {
	if hook, ok := g.(SoldOutPathHook); ok {
		hook.OnSoldOutPath(func() {
			if rand.IntN(2) == 0 {
				runtime.Gosched()
			}
		})
	}
	ds := make([]*dibs.Drop, w.drops)
	for i := range ds {
		ds[i] = NewDrop(w.stock, 1)
		MustPrepare(t, g, ds[i])
	}
	start := time.Now()
	var (
		mu      sync.Mutex
		history []porcupine.Operation
		held    = make([][]string, w.drops) // claims won and not released yet, per drop
		failed  atomic.Value
	)
	var wg sync.WaitGroup
	for c := range w.clients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(c), 7))
			for range w.ops {
				di := rng.IntN(w.drops)
				d := ds[di]
				var in Op
				mu.Lock()
				if ids := held[di]; len(ids) > 0 && rng.IntN(w.releaseOneIn) == 0 {
					in = Op{Drop: d.ID, Release: true, ClaimID: ids[rng.IntN(len(ids))]}
				} else {
					in = Op{Drop: d.ID, User: fmt.Sprintf("u%d", rng.IntN(w.users)), ClaimID: newClaimID()}
				}
				mu.Unlock()

				call := time.Since(start).Nanoseconds()
				out, err := apply(g, d, in)
				ret := time.Since(start).Nanoseconds()
				if err != nil {
					failed.Store(err)
					return
				}
				mu.Lock()
				history = append(history, porcupine.Operation{ClientId: c, Input: in, Call: call, Output: out, Return: ret})
				switch out.Kind {
				case "won":
					held[di] = append(held[di], out.ClaimID)
				case "released":
					held[di] = slices.DeleteFunc(held[di], func(id string) bool { return id == in.ClaimID })
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		t.Fatal(err)
	}
	CheckLinearizable(t, w.stock, history)
}

// CheckLinearizable fails t unless history is linearizable under
// ClaimModel(stock). On failure it writes a visualization next to the test's
// temporary files and names it.
func CheckLinearizable(t testing.TB, stock int64, history []porcupine.Operation) {
	t.Helper()
	model := ClaimModel(stock)
	res, info := porcupine.CheckOperationsVerbose(model, history, 30*time.Second)
	if res == porcupine.Ok {
		return
	}
	path := filepath.Join(os.TempDir(), fmt.Sprintf("dibs-linearizability-%d.html", time.Now().UnixNano()))
	if err := porcupine.VisualizePath(model, info, path); err != nil {
		t.Logf("visualize: %v", err)
	}
	t.Fatalf("history of %d operations is %s, not linearizable; see %s", len(history), res, path)
}

func apply(g dibs.Gate, d *dibs.Drop, in Op) (Result, error) {
	ctx := context.Background()
	if in.Release {
		ok, err := g.Release(ctx, d.ID, in.ClaimID)
		if err != nil {
			return Result{}, err
		}
		if ok {
			return Result{Kind: "released"}, nil
		}
		return Result{Kind: "not_held"}, nil
	}
	h, err := g.Reserve(ctx, dibs.ReserveRequest{Drop: d, UserID: in.User, ClaimID: in.ClaimID, Now: epoch.Add(time.Minute)})
	switch {
	case dibs.ErrorCode(err) == dibs.ESOLDOUT:
		return Result{Kind: "sold_out"}, nil
	case err != nil:
		return Result{}, fmt.Errorf("reserve: %w", err)
	case h.Existing:
		return Result{Kind: "existing", ClaimID: h.ClaimID, Slot: h.Slot}, nil
	}
	return Result{Kind: "won", ClaimID: h.ClaimID, Slot: h.Slot}, nil
}

// testOwnRequestsAtLastSlot: a user whose hold was just released sends
// several requests at once for the one free slot (a double tap, a page and
// an app). One wins it and every other gets that claim back; none is told
// "sold out", which a page may show last. The requests are released
// together, round after round, so that one of them reads the drop while
// another takes the slot.
func testOwnRequestsAtLastSlot(t *testing.T, g dibs.Gate) {
	const requests, rounds = 4, 2000 // rounds at most; see budget
	d := NewDrop(1, 1)
	MustPrepare(t, g, d)
	mustRelease(t, g, d, mustReserve(t, g, d, "u", "").ClaimID)

	type answer struct {
		h   dibs.Hold
		err error
	}
	var (
		starts  [rounds]chan struct{} // closed when the round's requests may go
		arrived [rounds]atomic.Int32
		answers [requests]answer
		done    sync.WaitGroup
	)
	for r := range starts {
		starts[r] = make(chan struct{})
	}
	stop := make(chan struct{})
	defer close(stop)
	for i := range requests {
		go func() {
			for r := range rounds {
				select {
				case <-starts[r]:
				case <-stop:
					return
				}
				// Wake-ups come one after the other: wait until every
				// request of the round is awake, so that they start within
				// a few instructions of each other.
				arrived[r].Add(1)
				for arrived[r].Load() < requests {
					runtime.Gosched()
				}
				h, err := reserve(g, d, "u", "")
				answers[i] = answer{h, err}
				done.Done()
			}
		}()
	}
	// A gate a round trip away runs fewer rounds: the budget bounds what
	// the test costs, not what it asserts.
	budget := time.Now().Add(3 * time.Second)
	for r := 0; r < rounds && time.Now().Before(budget); r++ {
		done.Add(requests)
		close(starts[r])
		done.Wait()
		var won []dibs.Hold
		for _, a := range answers {
			if a.err != nil {
				t.Fatalf("round %d: a request of the user who takes the last slot answered %v", r, a.err)
			}
			if !a.h.Existing {
				won = append(won, a.h)
			}
		}
		if len(won) != 1 {
			t.Fatalf("round %d: %d requests of one user won, want 1: %+v", r, len(won), answers)
		}
		for _, a := range answers {
			if a.h.ClaimID != won[0].ClaimID || a.h.Slot != won[0].Slot {
				t.Fatalf("round %d: answers %+v and %+v name different claims", r, a.h, won[0])
			}
		}
		mustRelease(t, g, d, won[0].ClaimID)
	}
}

// testOwnRequestPaused forces what testOwnRequestsAtLastSlot waits for: a
// request of a user with nothing held pauses on the gate's sold-out path,
// having read that the user holds nothing, while another request of the
// same user takes the last slot. The paused request must come back with
// that claim, not "sold out".
func testOwnRequestPaused(t *testing.T, g dibs.Gate) {
	hook, ok := g.(SoldOutPathHook)
	if !ok {
		t.Skip("the gate offers no pause point on its sold-out path")
	}
	d := NewDrop(1, 1)
	MustPrepare(t, g, d)
	mustRelease(t, g, d, mustReserve(t, g, d, "u", "").ClaimID)

	paused, resume := make(chan struct{}), make(chan struct{})
	var first atomic.Bool
	hook.OnSoldOutPath(func() {
		if first.CompareAndSwap(false, true) {
			close(paused)
			<-resume
		}
	})
	type answer struct {
		h   dibs.Hold
		err error
	}
	done := make(chan answer, 1)
	go func() {
		h, err := reserve(g, d, "u", "")
		done <- answer{h, err}
	}()
	select {
	case <-paused:
	case a := <-done:
		t.Fatalf("reserve answered %+v, %v without passing the sold-out path", a.h, a.err)
	}
	won := mustReserve(t, g, d, "u", "")
	close(resume)
	a := <-done
	if won.Existing {
		t.Fatalf("the running request = %+v, want the last slot", won)
	}
	if a.err != nil || !a.h.Existing || a.h.ClaimID != won.ClaimID || a.h.Slot != won.Slot {
		t.Fatalf("the paused request = %+v, %v; want the claim %s its twin won", a.h, a.err, won.ClaimID)
	}
}
