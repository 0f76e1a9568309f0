package storetest

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/post"
)

// PostStore is a system of record that also serves post-processing.
type PostStore interface {
	dibs.Store
	post.Store
}

// PostFactory returns a new, empty store isolated from every other test's.
type PostFactory func(t *testing.T) PostStore

// JobClientOf returns the River job client constructor of a store made by
// the suite's PostFactory (its package's NewJobClient).
type JobClientOf func(s PostStore) post.JobClientFunc

// RunPost runs the conformance suite of post.Store against stores made by
// newStore, whose jobs run on clients from jobClient: every change of a
// claim happens once and enqueues its follow-up job once, however often and
// however concurrently it is asked for.
func RunPost(t *testing.T, newStore PostFactory, jobClient JobClientOf) {
	t.Run("PumpEnqueuesFirstJobsOnce", func(t *testing.T) { t.Parallel(); testPump(t, newStore(t)) })
	t.Run("PumpIssuesCouponsOnce", func(t *testing.T) { t.Parallel(); testPumpCoupons(t, newStore(t)) })
	t.Run("RequestPaymentOnlyHeldInTime", func(t *testing.T) { t.Parallel(); testRequestPayment(t, newStore(t)) })
	t.Run("ConcurrentRequestPayment", func(t *testing.T) { t.Parallel(); testConcurrentRequests(t, newStore(t)) })
	t.Run("SettlePaymentOnce", func(t *testing.T) { t.Parallel(); testSettlePayment(t, newStore(t)) })
	t.Run("ExpireHoldOnlyWhenDueAndUnpaid", func(t *testing.T) { t.Parallel(); testExpireHold(t, newStore(t)) })
	t.Run("EndedClaimsFreeTheirSlot", func(t *testing.T) { t.Parallel(); testEndedFree(t, newStore(t)) })
	t.Run("ConcurrentSettleAndExpire", func(t *testing.T) { t.Parallel(); testConcurrentEnds(t, newStore(t)) })
	t.Run("ExpirePaymentOnlyPendingAndDue", func(t *testing.T) { t.Parallel(); testExpirePayment(t, newStore(t)) })
	t.Run("RefundOnlyEndedClaimsOnce", func(t *testing.T) { t.Parallel(); testLatePaymentRefund(t, newStore(t)) })
	t.Run("ConcurrentLatePaymentAndRefund", func(t *testing.T) { t.Parallel(); testConcurrentRefunds(t, newStore(t)) })
	t.Run("JobClientWorksJobs", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		testJobClient(t, s, jobClient(s))
	})
}

// holdTTL is the hold of the purchase drops of the suite; a hold of a
// claim recorded at epoch runs out at deadline.
const holdTTL = 10 * time.Minute

var deadline = epoch.Add(holdTTL)

// MustCreatePurchaseDrop stores a purchase drop of stock slots and
// per-user limit, priced 11,000 KRW, whose holds last ten minutes.
func MustCreatePurchaseDrop(tb testing.TB, s dibs.Store, stock int64, perUser int) *dibs.Drop {
	tb.Helper()
	d := &dibs.Drop{ID: fmt.Sprintf("p%d", seq.Add(1)), Title: "t", Kind: dibs.KindPurchase, Stock: stock, PerUserLimit: perUser,
		OpensAt: epoch, HoldTTL: holdTTL, Price: 11_000}
	d.Normalize(epoch)
	if err := s.CreateDrop(context.Background(), d); err != nil {
		tb.Fatalf("create drop: %v", err)
	}
	return d
}

// NewHold returns a held claim of the purchase drop d whose hold runs out
// at deadline.
func NewHold(d *dibs.Drop, user string, slot int64, nth int) *dibs.Claim {
	c := NewClaim(d, user, slot, nth)
	c.HoldExpiresAt = deadline
	return c
}

// MustRecordAll records claims and fails tb unless every one was recorded.
func MustRecordAll(tb testing.TB, s dibs.Store, claims ...*dibs.Claim) {
	tb.Helper()
	for i, err := range MustRecord(tb, s, claims...) {
		if err != nil {
			tb.Fatalf("claim %d: %v", i, err)
		}
	}
}

// MustJobCounts returns the drop's jobs counted by kind and state, as
// "kind/state" keys.
func MustJobCounts(tb testing.TB, s post.Store, dropID string) map[string]int64 {
	tb.Helper()
	counts, err := s.JobCounts(context.Background(), dropID)
	if err != nil {
		tb.Fatalf("job counts: %v", err)
	}
	sorted := slices.IsSortedFunc(counts, func(a, b dibs.JobCount) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.State, b.State))
	})
	if !sorted {
		tb.Fatalf("job counts %v are not sorted by kind, state", counts)
	}
	m := make(map[string]int64, len(counts))
	for _, c := range counts {
		m[c.Kind+"/"+string(c.State)] = c.Count
	}
	return m
}

// jobsByKind sums counts (MustJobCounts) over states.
func jobsByKind(counts map[string]int64) map[string]int64 {
	m := make(map[string]int64)
	for key, n := range counts {
		kind, _, _ := strings.Cut(key, "/")
		m[kind] += n
	}
	return m
}

func wantJobs(t *testing.T, s post.Store, dropID string, want map[string]int64) {
	t.Helper()
	if got := jobsByKind(MustJobCounts(t, s, dropID)); !maps.Equal(got, want) {
		t.Fatalf("jobs of %s by kind = %v, want %v", dropID, got, want)
	}
}

// codes draws coupon codes CODE-1, CODE-2, … for PumpOutbox.
type codes struct{ n atomic.Int64 }

func (c *codes) next() (string, error) { return fmt.Sprintf("CODE-%d", c.n.Add(1)), nil }

// pumpAt is a pump that notifies, stamps at, and draws from codes.
func pumpAt(at time.Time, codes *codes) post.Pump {
	return post.Pump{Now: at, NewCode: codes.next, Notify: true}
}

func mustPump(t *testing.T, s post.Store, limit, want int) {
	t.Helper()
	mustPumpWith(t, s, limit, want, post.Pump{Now: epoch, NewCode: post.NewCode, Notify: true})
}

func mustPumpWith(t *testing.T, s post.Store, limit, want int, p post.Pump) {
	t.Helper()
	n, err := s.PumpOutbox(context.Background(), limit, p)
	if err != nil {
		t.Fatalf("pump outbox: %v", err)
	}
	if n != want {
		t.Fatalf("pump outbox(%d) handled %d claims, want %d", limit, n, want)
	}
}

func wantCode(t *testing.T, what string, err error, code string) {
	t.Helper()
	if got := dibs.ErrorCode(err); got != code {
		t.Fatalf("%s: error %q (%v), want %q", what, got, err, code)
	}
}

func mustFindClaim(t *testing.T, s dibs.Store, id string) *dibs.Claim {
	t.Helper()
	c, err := s.FindClaim(context.Background(), id)
	if err != nil {
		t.Fatalf("find claim %s: %v", id, err)
	}
	return c
}

// testPump: the pump moves each flagged claim on once (a coupon claim
// gets its code and its notify_winner, a hold its expiry scheduled at its
// deadline, a claim that ended nothing), clears the flags, and finds
// nothing the second time.
func testPump(t *testing.T, s PostStore) {
	coupons := MustCreateDrop(t, s, 10, 1)
	purchases := MustCreatePurchaseDrop(t, s, 10, 1)
	released := NewHold(purchases, "r", 3, 1)
	released.State = dibs.ClaimReleased
	future := time.Now().Add(time.Hour).UTC().Truncate(time.Millisecond)
	held := []*dibs.Claim{NewHold(purchases, "a", 1, 1), NewHold(purchases, "b", 2, 1)}
	for _, c := range held {
		c.HoldExpiresAt = future
	}
	MustRecordAll(t, s, NewClaim(coupons, "a", 1, 1), NewClaim(coupons, "b", 2, 1), NewClaim(coupons, "c", 3, 1),
		held[0], held[1], released)

	mustPump(t, s, 0, 0)
	mustPump(t, s, 2, 2)
	mustPump(t, s, 100, 4)
	mustPump(t, s, 100, 0)
	if got, want := MustJobCounts(t, s, coupons.ID), map[string]int64{"notify_winner/available": 3}; !maps.Equal(got, want) {
		t.Fatalf("coupon drop jobs = %v, want %v", got, want)
	}
	if got, want := MustJobCounts(t, s, purchases.ID), map[string]int64{"expire_hold/scheduled": 2}; !maps.Equal(got, want) {
		t.Fatalf("purchase drop jobs = %v, want %v", got, want)
	}

	// A claim recorded later is flagged at birth; the pump finds it alone.
	MustRecordAll(t, s, NewClaim(coupons, "d", 4, 1))
	mustPump(t, s, 100, 1)
	mustPump(t, s, 100, 0)
	wantJobs(t, s, coupons.ID, map[string]int64{post.KindNotifyWinner: 4})
	wantJobs(t, s, "nope", map[string]int64{})
}

// testPumpCoupons: the pump gives each coupon claim one code, stamped with
// the pump's time, and nothing to holds; without an endpoint to notify it
// queues no job; a code another claim has fails the whole batch and leaves
// it flagged for the next pump, which draws new codes.
func testPumpCoupons(t *testing.T, s PostStore) {
	d := MustCreateDrop(t, s, 10, 1)
	p := MustCreatePurchaseDrop(t, s, 10, 1)
	a, b, h := NewClaim(d, "a", 1, 1), NewClaim(d, "b", 2, 1), NewHold(p, "a", 1, 1)
	MustRecordAll(t, s, a, b, h)
	at := epoch.Add(time.Minute)
	var gen codes
	quiet := pumpAt(at, &gen)
	quiet.Notify = false
	mustPumpWith(t, s, 100, 3, quiet)

	got := map[string]string{}
	for _, c := range []*dibs.Claim{a, b} {
		found := mustFindClaim(t, s, c.ID)
		if found.CouponCode == "" || !found.UpdatedAt.Equal(at) || found.State != dibs.ClaimConfirmed {
			t.Fatalf("claim %s after the pump: %+v, want a code, updated at %s", c.ID, found, at)
		}
		got[found.CouponCode] = c.ID
	}
	if len(got) != 2 {
		t.Fatalf("codes %v, want two distinct", got)
	}
	if found := mustFindClaim(t, s, h.ID); found.CouponCode != "" {
		t.Fatalf("a hold got code %q", found.CouponCode)
	}
	wantJobs(t, s, d.ID, map[string]int64{})
	wantJobs(t, s, p.ID, map[string]int64{post.KindExpireHold: 1})
	mustPumpWith(t, s, 100, 0, pumpAt(at, &gen))

	// A code drawn twice: the batch fails whole and stays flagged.
	c, e := NewClaim(d, "c", 3, 1), NewClaim(d, "e", 4, 1)
	MustRecordAll(t, s, c, e)
	taken := func() (string, error) { return "CODE-1", nil }
	_, err := s.PumpOutbox(context.Background(), 100, post.Pump{Now: at, NewCode: taken, Notify: true})
	wantCode(t, "pump with a code another claim has", err, dibs.ECONFLICT)
	for _, x := range []*dibs.Claim{c, e} {
		if found := mustFindClaim(t, s, x.ID); found.CouponCode != "" {
			t.Fatalf("claim %s kept code %q from a failed pump", x.ID, found.CouponCode)
		}
	}
	wantJobs(t, s, d.ID, map[string]int64{})
	mustPumpWith(t, s, 100, 2, pumpAt(at, &gen))
	wantJobs(t, s, d.ID, map[string]int64{post.KindNotifyWinner: 2})
	if found := mustFindClaim(t, s, a.ID); got[found.CouponCode] != a.ID {
		t.Fatalf("claim a's code changed to %q", found.CouponCode)
	}
}

// testRequestPayment: RequestPayment marks a held claim whose hold runs
// out after now, once, and enqueues one charge; any other claim is left as
// it is, so that a hold that ran out after the rule was checked is never
// paid.
func testRequestPayment(t *testing.T, s PostStore) {
	ctx := context.Background()
	d := MustCreatePurchaseDrop(t, s, 10, 1)
	c, late, released := NewHold(d, "alice", 1, 1), NewHold(d, "bob", 2, 1), NewHold(d, "carol", 3, 1)
	released.State = dibs.ClaimReleased
	MustRecordAll(t, s, c, late, released)

	_, _, err := s.RequestPayment(ctx, "nope", epoch)
	wantCode(t, "request of an unknown claim", err, dibs.ENOTFOUND)
	for _, tc := range []struct {
		name  string
		claim *dibs.Claim
		at    time.Time
	}{
		{"request at the deadline", late, deadline},
		{"request after the deadline", late, deadline.Add(time.Second)},
		{"request of a released claim", released, epoch},
	} {
		got, changed, err := s.RequestPayment(ctx, tc.claim.ID, tc.at)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if changed || !got.PayRequestedAt.IsZero() {
			t.Fatalf("%s: changed = %t, claim %+v", tc.name, changed, got)
		}
	}

	at := deadline.Add(-time.Microsecond)
	got, changed, err := s.RequestPayment(ctx, c.ID, at)
	if err != nil {
		t.Fatal(err)
	}
	if !changed || !got.PayRequestedAt.Equal(at) || got.State != dibs.ClaimHeld {
		t.Fatalf("after request: changed = %t, %+v", changed, got)
	}
	// Again, even after the deadline: the first request stands.
	for _, now := range []time.Time{at, deadline.Add(time.Hour)} {
		again, changed, err := s.RequestPayment(ctx, c.ID, now)
		if err != nil {
			t.Fatalf("repeated request at %s: %v", now, err)
		}
		if changed || *again != *got {
			t.Fatalf("repeated request: changed = %t, %+v\nwant %+v", changed, *again, *got)
		}
	}
	if found := mustFindClaim(t, s, c.ID); *found != *got {
		t.Fatalf("found %+v\nwant  %+v", *found, *got)
	}
	wantJobs(t, s, d.ID, map[string]int64{post.KindChargePayment: 1})
}

// testConcurrentRequests: of many requests for one claim at once, one
// changes it and one charge is enqueued.
func testConcurrentRequests(t *testing.T, s PostStore) {
	ctx := context.Background()
	d := MustCreatePurchaseDrop(t, s, 10, 1)
	c := NewHold(d, "a", 1, 1)
	MustRecordAll(t, s, c)
	const n = 8
	var changes atomic.Int64
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, changed, err := s.RequestPayment(ctx, c.ID, epoch.Add(time.Duration(i+1)*time.Second))
			if err != nil {
				t.Errorf("request %d: %v", i, err)
			}
			if changed {
				changes.Add(1)
			}
		}()
	}
	wg.Wait()
	if got := changes.Load(); got != 1 {
		t.Fatalf("%d requests changed the claim, want 1", got)
	}
	wantJobs(t, s, d.ID, map[string]int64{post.KindChargePayment: 1})
}

func testSettlePayment(t *testing.T, s PostStore) {
	ctx := context.Background()
	d := MustCreatePurchaseDrop(t, s, 10, 1)
	paid, declined := NewHold(d, "a", 1, 1), NewHold(d, "b", 2, 1)
	MustRecordAll(t, s, paid, declined)
	at := epoch.Add(time.Minute)

	steps := []struct {
		claim       *dibs.Claim
		paid        bool
		wantState   dibs.ClaimState
		wantChanged bool
	}{
		{paid, true, dibs.ClaimPaid, true},
		{paid, true, dibs.ClaimPaid, false},
		{paid, false, dibs.ClaimPaid, false},
		{declined, false, dibs.ClaimReleased, true},
		{declined, false, dibs.ClaimReleased, false},
		{declined, true, dibs.ClaimReleased, false},
	}
	for i, st := range steps {
		c, changed, err := s.SettlePayment(ctx, st.claim.ID, st.paid, at.Add(time.Duration(i)*time.Second))
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if c.ID != st.claim.ID || c.State != st.wantState || changed != st.wantChanged {
			t.Fatalf("step %d: state %s changed %v, want %s %v", i, c.State, changed, st.wantState, st.wantChanged)
		}
	}
	if got := mustFindClaim(t, s, paid.ID); got.State != dibs.ClaimPaid || !got.UpdatedAt.Equal(at) {
		t.Fatalf("paid claim: state %s updated %s, want paid at %s", got.State, got.UpdatedAt, at)
	}
	wantJobs(t, s, d.ID, map[string]int64{post.KindNotifyWinner: 1, post.KindPaymentFailed: 1})

	_, _, err := s.SettlePayment(ctx, "nope", true, at)
	wantCode(t, "settle an unknown claim", err, dibs.ENOTFOUND)
}

func testExpireHold(t *testing.T, s PostStore) {
	ctx := context.Background()
	d := MustCreatePurchaseDrop(t, s, 10, 1)
	unpaid, paying, paid := NewHold(d, "a", 1, 1), NewHold(d, "b", 2, 1), NewHold(d, "c", 3, 1)
	MustRecordAll(t, s, unpaid, paying, paid)
	if _, _, err := s.RequestPayment(ctx, paying.ID, epoch.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.SettlePayment(ctx, paid.ID, true, epoch.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	base := map[string]int64{post.KindChargePayment: 1, post.KindNotifyWinner: 1}
	wantJobs(t, s, d.ID, base)

	steps := []struct {
		name        string
		claim       *dibs.Claim
		now         time.Time
		wantState   dibs.ClaimState
		wantChanged bool
	}{
		{"before the deadline", unpaid, deadline.Add(-time.Microsecond), dibs.ClaimHeld, false},
		{"owner asked to pay", paying, deadline.Add(time.Hour), dibs.ClaimHeld, false},
		{"paid", paid, deadline.Add(time.Hour), dibs.ClaimPaid, false},
		{"at the deadline", unpaid, deadline, dibs.ClaimExpired, true},
		{"again", unpaid, deadline.Add(time.Hour), dibs.ClaimExpired, false},
	}
	for _, st := range steps {
		c, changed, err := s.ExpireHold(ctx, st.claim.ID, st.now)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if c.ID != st.claim.ID || c.State != st.wantState || changed != st.wantChanged {
			t.Fatalf("%s: state %s changed %v, want %s %v", st.name, c.State, changed, st.wantState, st.wantChanged)
		}
	}
	if got := mustFindClaim(t, s, unpaid.ID); !got.UpdatedAt.Equal(deadline) {
		t.Fatalf("expired claim updated %s, want %s", got.UpdatedAt, deadline)
	}
	base[post.KindHoldExpired] = 1
	wantJobs(t, s, d.ID, base)

	_, _, err := s.ExpireHold(ctx, "nope", deadline)
	wantCode(t, "expire an unknown claim", err, dibs.ENOTFOUND)
}

// testExpirePayment: a hold whose owner asked to pay expires by
// ExpirePayment once its hold ran out by the deadline given, and no other
// claim does.
func testExpirePayment(t *testing.T, s PostStore) {
	ctx := context.Background()
	d := MustCreatePurchaseDrop(t, s, 10, 1)
	unpaid, paying, paid := NewHold(d, "a", 1, 1), NewHold(d, "b", 2, 1), NewHold(d, "c", 3, 1)
	MustRecordAll(t, s, unpaid, paying, paid)
	for _, c := range []*dibs.Claim{paying, paid} {
		if _, _, err := s.RequestPayment(ctx, c.ID, epoch.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := s.SettlePayment(ctx, paid.ID, true, epoch.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	base := map[string]int64{post.KindChargePayment: 2, post.KindNotifyWinner: 1}
	now := deadline.Add(time.Hour)
	for _, st := range []struct {
		name        string
		claim       *dibs.Claim
		by          time.Time
		wantState   dibs.ClaimState
		wantChanged bool
	}{
		{"never asked to pay", unpaid, deadline, dibs.ClaimHeld, false},
		{"paid", paid, deadline, dibs.ClaimPaid, false},
		{"hold runs out after the deadline given", paying, deadline.Add(-time.Microsecond), dibs.ClaimHeld, false},
		{"hold ran out by it", paying, deadline, dibs.ClaimExpired, true},
		{"again", paying, now, dibs.ClaimExpired, false},
	} {
		c, changed, err := s.ExpirePayment(ctx, st.claim.ID, st.by, now)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if c.ID != st.claim.ID || c.State != st.wantState || changed != st.wantChanged {
			t.Fatalf("%s: state %s changed %v, want %s %v", st.name, c.State, changed, st.wantState, st.wantChanged)
		}
	}
	if got := mustFindClaim(t, s, paying.ID); !got.UpdatedAt.Equal(now) {
		t.Fatalf("expired claim updated %s, want %s", got.UpdatedAt, now)
	}
	base[post.KindHoldExpired] = 1
	wantJobs(t, s, d.ID, base)
	_, _, err := s.ExpirePayment(ctx, "nope", deadline, now)
	wantCode(t, "expire the payment of an unknown claim", err, dibs.ENOTFOUND)
}

// testLatePaymentRefund: a late payment and its refund are recorded for an
// ended (released or expired) claim only, once each, each with its one
// job; a live claim's charge is never marked for a refund, and neither
// record changes the claim's state or UpdatedAt.
func testLatePaymentRefund(t *testing.T, s PostStore) {
	ctx := context.Background()
	d := MustCreatePurchaseDrop(t, s, 10, 1)
	held, paid, released, expired := NewHold(d, "a", 1, 1), NewHold(d, "b", 2, 1), NewHold(d, "c", 3, 1), NewHold(d, "e", 4, 1)
	MustRecordAll(t, s, held, paid, released, expired)
	at := epoch.Add(time.Minute)
	if _, _, err := s.SettlePayment(ctx, paid.ID, true, at); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.SettlePayment(ctx, released.ID, false, at); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.ExpireHold(ctx, expired.ID, deadline); err != nil {
		t.Fatal(err)
	}
	base := map[string]int64{post.KindNotifyWinner: 1, post.KindPaymentFailed: 1, post.KindHoldExpired: 1}
	wantJobs(t, s, d.ID, base)

	late, refund := deadline.Add(time.Minute), deadline.Add(2*time.Minute)
	// No refund before the late payment is recorded.
	if c, changed, err := s.RecordRefund(ctx, released.ID, refund); err != nil || changed || !c.RefundedAt.IsZero() {
		t.Fatalf("refund before the late payment: changed %v, %+v, %v; want unchanged", changed, c, err)
	}
	for _, live := range []*dibs.Claim{held, paid} {
		c, changed, err := s.RecordLatePayment(ctx, live.ID, late)
		if err != nil || changed || !c.LatePaidAt.IsZero() {
			t.Fatalf("late payment of a %s claim: changed %v, %v; want unchanged", c.State, changed, err)
		}
		if c, changed, err = s.RecordRefund(ctx, live.ID, refund); err != nil || changed || !c.RefundedAt.IsZero() {
			t.Fatalf("refund of a %s claim: changed %v, %v; want unchanged", c.State, changed, err)
		}
	}
	wantJobs(t, s, d.ID, base)

	for _, ended := range []*dibs.Claim{released, expired} {
		before := mustFindClaim(t, s, ended.ID)
		for i := range 2 {
			c, changed, err := s.RecordLatePayment(ctx, ended.ID, late.Add(time.Duration(i)*time.Second))
			if err != nil || changed != (i == 0) || !c.LatePaidAt.Equal(late) {
				t.Fatalf("late payment %d of a %s claim: changed %v, late paid at %s, %v; want changed %v at %s", i, c.State, changed, c.LatePaidAt, err, i == 0, late)
			}
		}
		for i := range 2 {
			c, changed, err := s.RecordRefund(ctx, ended.ID, refund.Add(time.Duration(i)*time.Second))
			if err != nil || changed != (i == 0) || !c.RefundedAt.Equal(refund) {
				t.Fatalf("refund %d of a %s claim: changed %v, refunded at %s, %v; want changed %v at %s", i, c.State, changed, c.RefundedAt, err, i == 0, refund)
			}
		}
		got := mustFindClaim(t, s, ended.ID)
		if got.State != before.State || !got.UpdatedAt.Equal(before.UpdatedAt) || !got.LatePaidAt.Equal(late) || !got.RefundedAt.Equal(refund) {
			t.Fatalf("after the refund: %+v\nbefore: %+v", got, before)
		}
	}
	base[post.KindRefundPayment], base[post.KindPaymentRefunded] = 2, 2
	wantJobs(t, s, d.ID, base)

	_, _, err := s.RecordLatePayment(ctx, "nope", late)
	wantCode(t, "late payment of an unknown claim", err, dibs.ENOTFOUND)
	_, _, err = s.RecordRefund(ctx, "nope", refund)
	wantCode(t, "refund of an unknown claim", err, dibs.ENOTFOUND)
}

// testConcurrentRefunds: goroutines race to record the late payment of the
// same holds, some while the hold is being paid or expired; a late payment
// is recorded only for a hold that ended, once, with one refund_payment,
// and never for the paid ones.
func testConcurrentRefunds(t *testing.T, s PostStore) {
	const holds, workers = 8, 6
	ctx := context.Background()
	d := MustCreatePurchaseDrop(t, s, holds, 1)
	claims := make([]*dibs.Claim, holds)
	for i := range claims {
		claims[i] = NewHold(d, fmt.Sprintf("u%d", i), int64(i+1), 1)
	}
	MustRecordAll(t, s, claims...)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i, c := range claims {
				var err error
				switch {
				case w == 0 && i%2 == 0:
					_, _, err = s.SettlePayment(ctx, c.ID, true, epoch)
				case w == 0:
					_, _, err = s.ExpireHold(ctx, c.ID, deadline)
				default:
					_, _, err = s.RecordLatePayment(ctx, c.ID, deadline)
				}
				if err != nil {
					t.Errorf("worker %d, claim %d: %v", w, i, err)
				}
			}
		})
	}
	wg.Wait()
	// The late payments of the expired holds the race left unrecorded.
	for _, c := range claims {
		if _, _, err := s.RecordLatePayment(ctx, c.ID, deadline); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range claims {
		got := mustFindClaim(t, s, c.ID)
		if wantLate := i%2 == 1; got.LatePaidAt.IsZero() == wantLate {
			t.Errorf("claim %d is %s with late payment at %v; want one recorded: %v", i, got.State, got.LatePaidAt, wantLate)
		}
	}
	wantJobs(t, s, d.ID, map[string]int64{post.KindNotifyWinner: holds / 2, post.KindHoldExpired: holds / 2, post.KindRefundPayment: holds / 2})
}

// testEndedFree: a hold that expired or whose payment was declined gives
// its slot and its user's place back to the partial unique indexes; a paid
// one keeps them.
func testEndedFree(t *testing.T, s PostStore) {
	ctx := context.Background()
	d := MustCreatePurchaseDrop(t, s, 3, 1)
	expired, declined, paid := NewHold(d, "a", 1, 1), NewHold(d, "b", 2, 1), NewHold(d, "c", 3, 1)
	MustRecordAll(t, s, expired, declined, paid)
	if _, changed, err := s.ExpireHold(ctx, expired.ID, deadline); err != nil || !changed {
		t.Fatalf("expire: changed %v, %v", changed, err)
	}
	if _, changed, err := s.SettlePayment(ctx, declined.ID, false, epoch); err != nil || !changed {
		t.Fatalf("decline: changed %v, %v", changed, err)
	}
	if _, changed, err := s.SettlePayment(ctx, paid.ID, true, epoch); err != nil || !changed {
		t.Fatalf("pay: changed %v, %v", changed, err)
	}
	wantResults(t, MustRecord(t, s, NewHold(d, "a", 1, 1), NewHold(d, "d", 2, 1), NewHold(d, "e", 3, 1), NewHold(d, "c", 1, 1)),
		"", "", dibs.ECONFLICT, dibs.ECONFLICT)
	n, err := s.CountClaims(ctx, d.ID)
	if err != nil {
		t.Fatal(err)
	}
	if n != (dibs.ClaimCounts{Held: 2, Paid: 1, Released: 1, Expired: 1}) {
		t.Fatalf("counts = %+v", n)
	}
}

// testConcurrentEnds: goroutines race to settle (paid or declined) and
// expire the same holds; each hold ends once, in the state of the one call
// that changed it, with that call's follow-up job alone.
func testConcurrentEnds(t *testing.T, s PostStore) {
	const holds, workers = 16, 8
	ctx := context.Background()
	d := MustCreatePurchaseDrop(t, s, holds, 1)
	claims := make([]*dibs.Claim, holds)
	for i := range claims {
		claims[i] = NewHold(d, fmt.Sprint("u", i), int64(i+1), 1)
	}
	MustRecordAll(t, s, claims...)
	now := deadline.Add(time.Second)

	type end struct {
		state dibs.ClaimState
		by    int
	}
	var (
		mu     sync.Mutex
		ends   = make(map[string][]end)
		failed error
		wg     sync.WaitGroup
	)
	for w := range workers {
		wg.Go(func() {
			for k := range holds {
				c := claims[(k+w*5)%holds] // each worker starts elsewhere
				var (
					got     *dibs.Claim
					changed bool
					err     error
				)
				switch (w + k) % 3 {
				case 0:
					got, changed, err = s.SettlePayment(ctx, c.ID, true, now)
				case 1:
					got, changed, err = s.SettlePayment(ctx, c.ID, false, now)
				default:
					got, changed, err = s.ExpireHold(ctx, c.ID, now)
				}
				mu.Lock()
				if err != nil && failed == nil {
					failed = err
				}
				if changed {
					ends[c.ID] = append(ends[c.ID], end{got.State, w})
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if failed != nil {
		t.Fatal(failed)
	}
	want := make(map[string]int64)
	for _, c := range claims {
		e := ends[c.ID]
		if len(e) != 1 {
			t.Fatalf("claim %s changed %d times (%v), want once", c.ID, len(e), e)
		}
		if got := mustFindClaim(t, s, c.ID); got.State != e[0].state {
			t.Fatalf("claim %s is %s, but the call that changed it made it %s", c.ID, got.State, e[0].state)
		}
		switch e[0].state {
		case dibs.ClaimPaid:
			want[post.KindNotifyWinner]++
		case dibs.ClaimReleased:
			want[post.KindPaymentFailed]++
		case dibs.ClaimExpired:
			want[post.KindHoldExpired]++
		default:
			t.Fatalf("claim %s ended %s", c.ID, e[0].state)
		}
	}
	wantJobs(t, s, d.ID, want)
}

// testJobClient: a client from the store's job client constructor starts, works the jobs the
// pump enqueued (the winners' notifications, in the webhook queue) and
// stops.
func testJobClient(t *testing.T, s PostStore, newClient post.JobClientFunc) {
	ctx := context.Background()
	d := MustCreateDrop(t, s, 10, 1)
	claims := []*dibs.Claim{NewClaim(d, "a", 1, 1), NewClaim(d, "b", 2, 1), NewClaim(d, "c", 3, 1)}
	MustRecordAll(t, s, claims...)
	mustPump(t, s, 100, len(claims))

	var mu sync.Mutex
	notified := map[string]string{}
	workers := river.NewWorkers()
	river.AddWorker(workers, river.WorkFunc(func(ctx context.Context, job *river.Job[post.NotifyWinnerArgs]) error {
		c, err := s.FindClaim(ctx, job.Args.ClaimID)
		if err != nil {
			return err
		}
		mu.Lock()
		notified[c.ID] = c.CouponCode
		mu.Unlock()
		return nil
	}))
	client, err := newClient(&river.Config{
		Logger:            slog.New(slog.DiscardHandler),
		Queues:            map[string]river.QueueConfig{post.QueueWebhook: {MaxWorkers: 2}},
		Workers:           workers,
		FetchCooldown:     10 * time.Millisecond,
		FetchPollInterval: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Start(ctx); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		stopCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := client.Stop(stopCtx); err != nil {
			t.Errorf("stop job client: %v", err)
		}
	}
	t.Cleanup(stop) // before the store closes

	want := map[string]int64{post.KindNotifyWinner + "/" + string(rivertype.JobStateCompleted): 3}
	var got map[string]int64
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if got = MustJobCounts(t, s, d.ID); maps.Equal(got, want) {
			break
		}
	}
	if !maps.Equal(got, want) {
		t.Fatalf("jobs = %v, want %v", got, want)
	}
	stop()
	for _, c := range claims {
		if code := notified[c.ID]; code == "" || code != mustFindClaim(t, s, c.ID).CouponCode {
			t.Fatalf("claim %s was notified with code %q", c.ID, code)
		}
	}
	list, err := client.JobList(ctx, river.NewJobListParams().Kinds(post.KindNotifyWinner))
	if err != nil {
		t.Fatalf("job list: %v", err)
	}
	if len(list.Jobs) != len(claims) {
		t.Fatalf("job list has %d notify_winner jobs, want %d", len(list.Jobs), len(claims))
	}
}
