// Package storetest is the conformance suite every dibs.Store passes. Its
// centre is the record as final arbiter: even when the gate is bypassed and
// claims are written directly, the store holds at most stock active claims
// per drop and at most per_user_limit per user.
package storetest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dibs-io/dibs"
)

// Factory returns a new, empty store isolated from every other test's.
type Factory func(t *testing.T) dibs.Store

// Run runs the conformance suite against stores made by newStore.
func Run(t *testing.T, newStore Factory) {
	t.Run("Drops", func(t *testing.T) { t.Parallel(); testDrops(t, newStore(t)) })
	t.Run("Pace", func(t *testing.T) { t.Parallel(); testPace(t, newStore(t)) })
	t.Run("RecordAndFind", func(t *testing.T) { t.Parallel(); testRecordAndFind(t, newStore(t)) })
	t.Run("RecordIsIdempotent", func(t *testing.T) { t.Parallel(); testIdempotent(t, newStore(t)) })
	t.Run("NoSecondActiveSlot", func(t *testing.T) { t.Parallel(); testSlotUnique(t, newStore(t)) })
	t.Run("NoSlotBeyondStock", func(t *testing.T) { t.Parallel(); testBeyondStock(t, newStore(t)) })
	t.Run("PerUserLimit", func(t *testing.T) { t.Parallel(); testPerUser(t, newStore(t)) })
	t.Run("InactiveClaimsFreeTheirSlot", func(t *testing.T) { t.Parallel(); testInactiveFree(t, newStore(t)) })
	t.Run("ConcurrentWritersOnSameSlots", func(t *testing.T) { t.Parallel(); testConcurrentWriters(t, newStore(t)) })
	t.Run("ScanAndCount", func(t *testing.T) { t.Parallel(); testScanAndCount(t, newStore(t)) })
}

var epoch = time.Date(2016, 11, 11, 11, 0, 0, 0, time.UTC)

var seq atomic.Int64

// MustCreateDrop stores a coupon drop of stock slots and per-user limit.
func MustCreateDrop(tb testing.TB, s dibs.Store, stock int64, perUser int) *dibs.Drop {
	tb.Helper()
	d := &dibs.Drop{ID: fmt.Sprintf("d%d", seq.Add(1)), Title: "t", Kind: dibs.KindCoupon, Stock: stock, PerUserLimit: perUser, OpensAt: epoch}
	d.Normalize(epoch)
	if err := s.CreateDrop(context.Background(), d); err != nil {
		tb.Fatalf("create drop: %v", err)
	}
	return d
}

// NewClaim returns an active claim of d for user at slot and nth.
func NewClaim(d *dibs.Drop, user string, slot int64, nth int) *dibs.Claim {
	return &dibs.Claim{
		ID: fmt.Sprintf("c%d", seq.Add(1)), DropID: d.ID, UserID: user, Slot: slot, Nth: nth,
		State: dibs.InitialClaimState(d.Kind), CreatedAt: epoch, UpdatedAt: epoch,
	}
}

// MustRecord records claims and returns the per-claim results.
func MustRecord(tb testing.TB, s dibs.Store, claims ...*dibs.Claim) []error {
	tb.Helper()
	res, err := s.RecordClaims(context.Background(), claims)
	if err != nil {
		tb.Fatalf("record claims: %v", err)
	}
	if len(res) != len(claims) {
		tb.Fatalf("record claims: %d results for %d claims", len(res), len(claims))
	}
	return res
}

func wantResults(t *testing.T, got []error, want ...string) {
	t.Helper()
	for i := range want {
		if c := dibs.ErrorCode(got[i]); c != want[i] {
			t.Fatalf("result %d = %q (%v), want %q", i, c, got[i], want[i])
		}
	}
}

func testDrops(t *testing.T, s dibs.Store) {
	ctx := context.Background()
	d := &dibs.Drop{
		ID: fmt.Sprintf("phone-%d", seq.Add(1)), Title: "1,000 phones at noon", Kind: dibs.KindPurchase, Stock: 1000, PerUserLimit: 2,
		OpensAt: epoch, ClosesAt: epoch.Add(time.Hour), HoldTTL: 90 * time.Second, Price: 11_000, Currency: "KRW",
		Admission: dibs.Admission{Mode: dibs.AdmissionQueue, Rate: 500, Order: dibs.OrderFIFO},
	}
	d.Normalize(epoch)
	if err := s.CreateDrop(ctx, d); err != nil {
		t.Fatal(err)
	}
	got, err := s.FindDrop(ctx, d.ID)
	if err != nil {
		t.Fatal(err)
	}
	if *got != *d {
		t.Fatalf("found %+v\nwant  %+v", *got, *d)
	}
	if err := s.CreateDrop(ctx, d); dibs.ErrorCode(err) != dibs.ECONFLICT {
		t.Fatalf("second create = %v, want conflict", err)
	}
	if _, err := s.FindDrop(ctx, "nope"); dibs.ErrorCode(err) != dibs.ENOTFOUND {
		t.Fatalf("find unknown = %v, want not_found", err)
	}
	if err := s.SetDropStatus(ctx, d.ID, dibs.StatusPaused, epoch.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.FindDrop(ctx, d.ID); got.Status != dibs.StatusPaused || !got.UpdatedAt.Equal(epoch.Add(time.Minute)) {
		t.Fatalf("after pause: status %s updated %s", got.Status, got.UpdatedAt)
	}
	if err := s.SetDropStatus(ctx, "nope", dibs.StatusPaused, epoch); dibs.ErrorCode(err) != dibs.ENOTFOUND {
		t.Fatalf("status of unknown = %v, want not_found", err)
	}
	list, err := s.ListDrops(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !containsDrop(list, d.ID) {
		t.Fatalf("list %v lacks %s", list, d.ID)
	}
}

func containsDrop(ds []*dibs.Drop, id string) bool {
	for _, d := range ds {
		if d.ID == id {
			return true
		}
	}
	return false
}

func testRecordAndFind(t *testing.T, s dibs.Store) {
	d := MustCreateDrop(t, s, 10, 1)
	c := NewClaim(d, "alice", 3, 1)
	c.IdempotencyKey = "k-1"
	c.State = dibs.ClaimHeld
	c.HoldExpiresAt = epoch.Add(10 * time.Minute)
	wantResults(t, MustRecord(t, s, c), "")
	got, err := s.FindClaim(context.Background(), c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if *got != *c {
		t.Fatalf("found %+v\nwant  %+v", *got, *c)
	}
	if _, err := s.FindClaim(context.Background(), "nope"); dibs.ErrorCode(err) != dibs.ENOTFOUND {
		t.Fatalf("find unknown = %v, want not_found", err)
	}
}

func testIdempotent(t *testing.T, s dibs.Store) {
	d := MustCreateDrop(t, s, 10, 1)
	c := NewClaim(d, "alice", 1, 1)
	wantResults(t, MustRecord(t, s, c), "")
	// The same claim again (a retry after a crash, or two nodes completing
	// the same hold) is already durable: no error, no second row.
	wantResults(t, MustRecord(t, s, c, c), "", "")
	n, err := s.CountClaims(context.Background(), d.ID)
	if err != nil {
		t.Fatal(err)
	}
	if n.Active() != 1 {
		t.Fatalf("active = %d, want 1", n.Active())
	}
}

func testSlotUnique(t *testing.T, s dibs.Store) {
	d := MustCreateDrop(t, s, 3, 1)
	a, b := NewClaim(d, "a", 1, 1), NewClaim(d, "b", 2, 1)
	wantResults(t, MustRecord(t, s, a, b), "", "")
	// A gate gone wrong hands slot 1 out again, alone and inside a batch.
	wantResults(t, MustRecord(t, s, NewClaim(d, "c", 1, 1)), dibs.ECONFLICT)
	wantResults(t, MustRecord(t, s, NewClaim(d, "d", 3, 1), NewClaim(d, "e", 3, 1), NewClaim(d, "f", 2, 1)), "", dibs.ECONFLICT, dibs.ECONFLICT)
	n, _ := s.CountClaims(context.Background(), d.ID)
	if n.Active() != 3 {
		t.Fatalf("active = %d, want 3", n.Active())
	}
}

func testBeyondStock(t *testing.T, s dibs.Store) {
	d := MustCreateDrop(t, s, 2, 1)
	res := MustRecord(t, s, NewClaim(d, "a", 1, 1), NewClaim(d, "b", 2, 1), NewClaim(d, "c", 3, 1), NewClaim(d, "d", 0, 1))
	if dibs.ErrorCode(res[0]) != "" || dibs.ErrorCode(res[1]) != "" {
		t.Fatalf("slots within stock: %v", res)
	}
	for i := 2; i < 4; i++ {
		if res[i] == nil {
			t.Fatalf("claim %d outside 1..stock was recorded", i)
		}
	}
	n, _ := s.CountClaims(context.Background(), d.ID)
	if n.Active() != 2 {
		t.Fatalf("active = %d, want 2 (the stock)", n.Active())
	}
}

func testPerUser(t *testing.T, s dibs.Store) {
	d := MustCreateDrop(t, s, 10, 2)
	wantResults(t, MustRecord(t, s, NewClaim(d, "a", 1, 1), NewClaim(d, "a", 2, 2)), "", "")
	// A second claim at a place the user holds, and a place beyond the limit.
	res := MustRecord(t, s, NewClaim(d, "a", 3, 1), NewClaim(d, "a", 4, 3), NewClaim(d, "b", 5, 1))
	if res[0] == nil || res[1] == nil || res[2] != nil {
		t.Fatalf("results = %v, want conflict, conflict, nil", res)
	}
}

func testInactiveFree(t *testing.T, s dibs.Store) {
	d := MustCreateDrop(t, s, 1, 1)
	gone := NewClaim(d, "a", 1, 1)
	gone.State = dibs.ClaimReleased
	expired := NewClaim(d, "b", 1, 1)
	expired.State = dibs.ClaimExpired
	wantResults(t, MustRecord(t, s, gone, expired, NewClaim(d, "a", 1, 1)), "", "", "")
	n, _ := s.CountClaims(context.Background(), d.ID)
	if n != (dibs.ClaimCounts{Confirmed: 1, Released: 1, Expired: 1}) {
		t.Fatalf("counts = %+v", n)
	}
}

// testConcurrentWriters: many writers race for the same few slots with
// different users; the record keeps one active claim per slot.
func testConcurrentWriters(t *testing.T, s dibs.Store) {
	const stock, writers, batches = 5, 8, 10
	d := MustCreateDrop(t, s, stock, 1)
	var won atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	for w := range writers {
		wg.Go(func() {
			for b := range batches {
				var batch []*dibs.Claim
				for slot := int64(1); slot <= stock; slot++ {
					batch = append(batch, NewClaim(d, fmt.Sprintf("w%d-b%d-s%d", w, b, slot), slot, 1))
				}
				res, err := s.RecordClaims(context.Background(), batch)
				if err != nil {
					failed.Store(err)
					return
				}
				for _, r := range res {
					if r == nil {
						won.Add(1)
					}
				}
			}
		})
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		t.Fatal(err)
	}
	if won.Load() != stock {
		t.Fatalf("recorded %d claims, want %d", won.Load(), stock)
	}
}

func testScanAndCount(t *testing.T, s dibs.Store) {
	d := MustCreateDrop(t, s, 10, 1)
	other := MustCreateDrop(t, s, 10, 1)
	released := NewClaim(d, "r", 2, 1)
	released.State = dibs.ClaimReleased
	MustRecord(t, s, NewClaim(d, "c", 7, 1), NewClaim(d, "a", 3, 1), released, NewClaim(other, "x", 1, 1))
	var slots []int64
	err := s.ScanActiveClaims(context.Background(), d.ID, func(c *dibs.Claim) error {
		if c.DropID != d.ID || !c.State.Active() {
			return fmt.Errorf("scanned %+v", c)
		}
		slots = append(slots, c.Slot)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(slots) != "[3 7]" {
		t.Fatalf("scanned slots %v, want [3 7]", slots)
	}
	n, err := s.CountClaims(context.Background(), d.ID)
	if err != nil {
		t.Fatal(err)
	}
	if n != (dibs.ClaimCounts{Confirmed: 2, Released: 1}) {
		t.Fatalf("counts = %+v", n)
	}
}
