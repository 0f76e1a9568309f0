package post_test

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/riverqueue/river"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/payment"
	"github.com/dibs-io/dibs/post"
)

// The workers' rules one case at a time, in the simulation's world with
// its faults off.

type bundle struct {
	w      *world
	runner *post.Runner
	pg     *recordingPayer
}

// setup returns a world with a coupon drop "coupons" and a purchase drop
// "tickets" (5,000 KRW, holds of a minute) and a Runner working in it;
// opts adjust the Runner's Config.
func setup(t *testing.T, opts ...func(*post.Config)) *bundle {
	t.Helper()
	s := &sched{rng: rand.New(rand.NewPCG(1, 2))}
	w := newWorld(s, simStart)
	s.w = w
	w.declineRate = 0
	for _, d := range []*dibs.Drop{
		{ID: "coupons", Title: "coupons", Kind: dibs.KindCoupon, Stock: 3},
		{ID: "tickets", Title: "tickets", Kind: dibs.KindPurchase, Stock: 3, HoldTTL: time.Minute, Price: 5000},
	} {
		d.Normalize(w.now)
		w.drops = append(w.drops, &simDrop{Drop: d, slots: make([]string, d.Stock)})
	}
	b := &bundle{w: w, pg: &recordingPayer{Payer: simPG{w}}}
	limits := make(map[string]post.Limit)
	for _, q := range post.Queues {
		limits[q] = post.Limit{}
	}
	cfg := post.Config{
		Store:     simStore{w},
		JobClient: noJobs,
		Release:   simGate{w},
		Payer:     b.pg,
		Notifier:  simReceiver{w},
		Limits:    limits,
		Now:       func() time.Time { return w.now },
	}
	for _, o := range opts {
		o(&cfg)
	}
	r, err := post.NewRunner(cfg)
	if err != nil {
		t.Fatal(err)
	}
	b.runner = r
	return b
}

// payments takes payment requests at the world's time.
func (b *bundle) payments() *post.Payments {
	return &post.Payments{Store: simStore{b.w}, Gateway: true, Now: func() time.Time { return b.w.now }}
}

// hold wins a slot of tickets; with requested, its owner asks to pay.
func (b *bundle) hold(t *testing.T, requested bool) *simClaim {
	t.Helper()
	c := b.w.addClaim(b.w.drops[1])
	if requested {
		if _, err := b.payments().RequestPayment(context.Background(), c.ID, c.UserID); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func (b *bundle) work(kind string, c *simClaim, attempt int) error {
	return b.runner.Work(context.Background(), post.Job{Kind: kind, Claim: post.ClaimRef{ClaimID: c.ID, DropID: c.DropID}, Attempt: attempt})
}

// jobs lists the kinds of the jobs enqueued for c.
func (b *bundle) jobs(c *simClaim) []string {
	var kinds []string
	for _, j := range b.w.jobs {
		if j.ref.ClaimID == c.ID {
			kinds = append(kinds, j.kind)
		}
	}
	return kinds
}

type recordingPayer struct {
	post.Payer
	calls []string
}

func (p *recordingPayer) Charge(ctx context.Context, key string, req payment.ChargeRequest) (*payment.Charge, error) {
	p.calls = append(p.calls, "charge")
	return p.Payer.Charge(ctx, key, req)
}

func (p *recordingPayer) Lookup(ctx context.Context, key string) (*payment.Charge, error) {
	p.calls = append(p.calls, "lookup")
	return p.Payer.Lookup(ctx, key)
}

// outcome names what a worker returned to River.
func outcome(err error) string {
	var snooze *river.JobSnoozeError
	var cancel *river.JobCancelError
	switch {
	case err == nil:
		return "done"
	case errors.As(err, &snooze):
		return "snoozed"
	case errors.As(err, &cancel):
		return "cancelled"
	}
	return "retry"
}

func TestChargePayment(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	charge := func(b *bundle, c *simClaim, amount int64) {
		_, _ = simPG{b.w}.Charge(ctx, c.ID, payment.ChargeRequest{Amount: amount, Currency: "KRW", Reference: "tickets/" + c.ID})
	}
	for _, tc := range []struct {
		name      string
		opts      []func(*post.Config)
		prepare   func(*bundle, *simClaim)
		attempt   int
		want      string // what the worker returns
		wantState dibs.ClaimState
		wantCalls []string
		wantBack  int // slots the gate got back
	}{
		{
			name: "the first attempt charges without a lookup", attempt: 1,
			want: "done", wantState: dibs.ClaimPaid, wantCalls: []string{"charge"},
		},
		{
			name: "a retry looks the key up before charging", attempt: 2,
			want: "done", wantState: dibs.ClaimPaid, wantCalls: []string{"lookup", "charge"},
		},
		{
			name: "a retry that finds the charge does not charge again", attempt: 3,
			prepare: func(b *bundle, c *simClaim) { charge(b, c, 5000) },
			want:    "done", wantState: dibs.ClaimPaid, wantCalls: []string{"lookup"},
		},
		{
			name: "a decline releases the claim, then its slot", attempt: 1,
			prepare: func(b *bundle, c *simClaim) { b.w.declineRate = 1 },
			want:    "done", wantState: dibs.ClaimReleased, wantCalls: []string{"charge"}, wantBack: 1,
		},
		{
			name: "a gateway that refuses before processing snoozes the job", attempt: 1,
			prepare: func(b *bundle, c *simClaim) { b.w.downTill, b.w.downMode = b.w.now.Add(time.Hour), downUnavailable },
			want:    "snoozed", wantState: dibs.ClaimHeld, wantCalls: []string{"charge"},
		},
		{
			name: "an open breaker snoozes the job", attempt: 2,
			prepare: func(b *bundle, c *simClaim) { b.w.downTill, b.w.downMode = b.w.now.Add(time.Hour), downCircuitOpen },
			want:    "snoozed", wantState: dibs.ClaimHeld, wantCalls: []string{"lookup"},
		},
		{
			name: "an unknown outcome is retried", attempt: 1,
			prepare: func(b *bundle, c *simClaim) { b.w.downTill, b.w.downMode = b.w.now.Add(time.Hour), downTimeout },
			want:    "retry", wantState: dibs.ClaimHeld, wantCalls: []string{"charge"},
		},
		{
			name: "a free drop is paid without the gateway", attempt: 1,
			prepare: func(b *bundle, c *simClaim) { b.w.drops[1].Price = 0 },
			want:    "done", wantState: dibs.ClaimPaid,
		},
		{
			name: "without a gateway the job waits for one", attempt: 1,
			opts: []func(*post.Config){func(c *post.Config) { c.Payer = nil }},
			want: "snoozed", wantState: dibs.ClaimHeld,
		},
		{
			name: "after a price change the recorded charge decides", attempt: 1,
			prepare: func(b *bundle, c *simClaim) { charge(b, c, 5000); b.w.drops[1].Price = 7000 },
			want:    "done", wantState: dibs.ClaimPaid, wantCalls: []string{"charge", "lookup"},
		},
		{
			name: "a request the gateway refuses for good releases the claim", attempt: 1,
			prepare: func(b *bundle, c *simClaim) { b.w.drops[1].Currency = "won" },
			want:    "done", wantState: dibs.ClaimReleased, wantCalls: []string{"charge"}, wantBack: 1,
		},
		{
			name: "a claim settled by a run that died gets its slot back", attempt: 2,
			prepare: func(b *bundle, c *simClaim) {
				c.State, c.UpdatedAt = dibs.ClaimReleased, b.w.now.Add(-post.DefaultRescueAfter)
			},
			// It looks for a charge applied since, to refund it.
			want: "done", wantState: dibs.ClaimReleased, wantCalls: []string{"lookup"}, wantBack: 1,
		},
		{
			name: "a claim that ended moments ago is looked at again", attempt: 2,
			prepare: func(b *bundle, c *simClaim) { c.State, c.UpdatedAt = dibs.ClaimReleased, b.w.now },
			// An earlier run taken for lost may still land a charge
			// within its timeout: the job looks again once that is over.
			want: "snoozed", wantState: dibs.ClaimReleased, wantCalls: []string{"lookup"}, wantBack: 1,
		},
		{
			name: "a paid claim is left alone", attempt: 2,
			prepare: func(b *bundle, c *simClaim) { c.State = dibs.ClaimPaid },
			want:    "done", wantState: dibs.ClaimPaid,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, tc.opts...)
			c := b.hold(t, true)
			if tc.prepare != nil {
				tc.prepare(b, c)
			}
			b.pg.calls = nil
			err := b.work(post.KindChargePayment, c, tc.attempt)
			if got := outcome(err); got != tc.want {
				t.Errorf("worker returned %v (%s), want %s", err, got, tc.want)
			}
			if c.State != tc.wantState {
				t.Errorf("claim is %s, want %s", c.State, tc.wantState)
			}
			if !slices.Equal(b.pg.calls, tc.wantCalls) {
				t.Errorf("gateway calls %v, want %v", b.pg.calls, tc.wantCalls)
			}
			if c.released != tc.wantBack {
				t.Errorf("the gate got the slot back %d times, want %d", c.released, tc.wantBack)
			}
			if tc.want == "retry" && !errors.Is(err, payment.ErrOutcomeUnknown) {
				t.Errorf("error %v does not say the outcome is unknown", err)
			}
		})
	}
}

func TestChargeSnoozeGrows(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *post.Config) { c.RetryMin, c.RetryMax = time.Second, time.Hour })
	c := b.hold(t, true)
	b.w.downTill, b.w.downMode = b.w.now.Add(time.Hour), downUnavailable
	for _, tc := range []struct {
		snoozes  int
		min, max time.Duration
	}{
		{0, 500 * time.Millisecond, time.Second},
		{3, 4 * time.Second, 8 * time.Second},
		{20, 15 * time.Second, 30 * time.Second}, // capped at 30 s while the gateway is down
	} {
		err := b.runner.Work(context.Background(), post.Job{Kind: post.KindChargePayment, Claim: post.ClaimRef{ClaimID: c.ID, DropID: c.DropID}, Attempt: 1, Snoozes: tc.snoozes})
		var snooze *river.JobSnoozeError
		if !errors.As(err, &snooze) {
			t.Fatalf("snoozes %d: got %v, want a snooze", tc.snoozes, err)
		}
		if snooze.Duration < tc.min || snooze.Duration > tc.max {
			t.Errorf("snoozes %d: snoozed %s, want %s..%s", tc.snoozes, snooze.Duration, tc.min, tc.max)
		}
	}
}

func TestExpireHold(t *testing.T) {
	t.Parallel()
	t.Run("due: expired, then the slot goes back", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		c := b.hold(t, false)
		b.w.now = c.HoldExpiresAt
		if err := b.work(post.KindExpireHold, c, 1); err != nil {
			t.Fatal(err)
		}
		if c.State != dibs.ClaimExpired || c.released != 1 || c.held() {
			t.Errorf("claim %s, slot back %d times, held %v; want expired, 1, false", c.State, c.released, c.held())
		}
		if got := b.jobs(c); !slices.Contains(got, post.KindHoldExpired) {
			t.Errorf("jobs %v, want hold_expired among them", got)
		}
		// A run after a crash between the two steps finds nothing left to do.
		if err := b.work(post.KindExpireHold, c, 2); err != nil || c.released != 1 {
			t.Errorf("second run: %v, slot back %d times", err, c.released)
		}
	})
	t.Run("early: snoozed until the deadline", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		c := b.hold(t, false)
		b.w.now = c.HoldExpiresAt.Add(-1500 * time.Millisecond)
		err := b.work(post.KindExpireHold, c, 1)
		var snooze *river.JobSnoozeError
		if !errors.As(err, &snooze) || snooze.Duration != 1500*time.Millisecond {
			t.Errorf("got %v, want a snooze of 1.5s", err)
		}
		if c.State != dibs.ClaimHeld {
			t.Errorf("claim is %s, want held", c.State)
		}
	})
	t.Run("asked to pay in time, no grace: expired at the deadline", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		c := b.hold(t, true)
		b.w.now = c.HoldExpiresAt
		if err := b.work(post.KindExpireHold, c, 1); err != nil {
			t.Fatal(err)
		}
		if c.State != dibs.ClaimExpired || c.released != 1 {
			t.Errorf("claim %s, slot back %d times; want expired, 1", c.State, c.released)
		}
	})
	t.Run("asked to pay in time, negative grace: left to the payment", func(t *testing.T) {
		t.Parallel()
		b := setup(t, func(c *post.Config) { c.PaymentGrace = -1 })
		c := b.hold(t, true)
		b.w.now = c.HoldExpiresAt.Add(time.Hour)
		if err := b.work(post.KindExpireHold, c, 1); err != nil {
			t.Fatal(err)
		}
		if c.State != dibs.ClaimHeld || c.released != 0 {
			t.Errorf("claim %s, slot back %d times; want held, 0", c.State, c.released)
		}
	})
	t.Run("released by a decline whose run died: the slot goes back", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		c := b.hold(t, true)
		c.State = dibs.ClaimReleased
		if err := b.work(post.KindExpireHold, c, 1); err != nil {
			t.Fatal(err)
		}
		if c.released != 1 {
			t.Errorf("slot back %d times, want 1", c.released)
		}
	})
}

func TestPumpIssuesCoupons(t *testing.T) {
	t.Parallel()
	codes := []string{"AAAA-BBBB-CCCC-DDDD", "EEEE-FFFF-GGGG-HHHH", "JJJJ-KKKK-LLLL-MMMM"}
	b := setup(t, func(c *post.Config) {
		c.NewCode = func() (string, error) {
			code := codes[0]
			codes = codes[1:]
			return code, nil
		}
	})
	c := b.w.addClaim(b.w.drops[0])
	h := b.hold(t, false)
	for run := 1; run <= 2; run++ { // the second pump finds nothing flagged
		if _, err := b.runner.Pump(context.Background()); err != nil {
			t.Fatal(err)
		}
		if c.CouponCode != "AAAA-BBBB-CCCC-DDDD" {
			t.Errorf("pump %d: code %q, want the first one", run, c.CouponCode)
		}
	}
	if got := b.jobs(c); !slices.Equal(got, []string{post.KindNotifyWinner}) {
		t.Errorf("jobs %v, want one notify_winner", got)
	}
	if got := b.jobs(h); !slices.Equal(got, []string{post.KindExpireHold}) || h.CouponCode != "" {
		t.Errorf("hold: jobs %v, code %q; want one expire_hold and no code", got, h.CouponCode)
	}

	// Without a notifier nobody is told: no job per coupon.
	b = setup(t, func(c *post.Config) { c.Notifier = nil })
	c = b.w.addClaim(b.w.drops[0])
	if _, err := b.runner.Pump(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := b.jobs(c); len(got) != 0 || c.CouponCode == "" {
		t.Errorf("without a notifier: jobs %v, code %q; want none and a code", got, c.CouponCode)
	}

	b = setup(t, func(c *post.Config) {
		c.NewCode = func() (string, error) { return "", errors.New("no entropy") }
	})
	c = b.w.addClaim(b.w.drops[0])
	if _, err := b.runner.Pump(context.Background()); err == nil || c.CouponCode != "" || !c.outbox {
		t.Errorf("failing NewCode: %v, code %q, flagged %v; want an error, no code, still flagged", err, c.CouponCode, c.outbox)
	}
}

type notifyFunc func(context.Context, post.Notice) error

func (f notifyFunc) Notify(ctx context.Context, n post.Notice) error { return f(ctx, n) }

func TestNotify(t *testing.T) {
	t.Parallel()
	var got []post.Notice
	answer := error(nil)
	b := setup(t, func(c *post.Config) {
		c.Notifier = notifyFunc(func(_ context.Context, n post.Notice) error {
			got = append(got, n)
			return answer
		})
	})
	c := b.w.addClaim(b.w.drops[0])
	c.CouponCode = "AAAA-BBBB-CCCC-DDDD"
	h := b.hold(t, false)
	h.State = dibs.ClaimExpired

	if err := b.work(post.KindNotifyWinner, c, 1); err != nil {
		t.Fatal(err)
	}
	answer = errors.New("502")
	if err := b.work(post.KindHoldExpired, h, 1); outcome(err) != "retry" {
		t.Errorf("a failed delivery: %v, want a retry", err)
	}
	answer = errors.Join(errors.New("400"), post.ErrPermanent)
	if err := b.work(post.KindHoldExpired, h, 2); outcome(err) != "cancelled" {
		t.Errorf("a refused delivery: %v, want the job cancelled", err)
	}
	if len(got) != 3 {
		t.Fatalf("%d notices, want 3", len(got))
	}
	if n := got[0]; n.ID != "notify_winner:"+c.ID || n.Type != post.KindNotifyWinner || !n.Time.Equal(c.UpdatedAt) {
		t.Errorf("notice %+v: want ID notify_winner:%s, its type, the claim's update time", n, c.ID)
	}
	if got[1].ID != got[2].ID {
		t.Errorf("retries carry IDs %q and %q, want one", got[1].ID, got[2].ID)
	}
	for i, want := range []string{
		`{"claim_id":"c1","drop_id":"coupons","user_id":"u1","slot":1,"state":"confirmed","coupon_code":"AAAA-BBBB-CCCC-DDDD"}`,
		`{"claim_id":"c2","drop_id":"tickets","user_id":"u2","slot":1,"state":"expired","hold_expires_at":"2026-11-11T11:01:00Z"}`,
	} {
		data, err := json.Marshal(got[i].Data)
		if err != nil || string(data) != want {
			t.Errorf("notice %d data %s (%v), want %s", i, data, err, want)
		}
	}

	b = setup(t, func(c *post.Config) { c.Notifier = nil })
	c = b.w.addClaim(b.w.drops[0])
	if err := b.work(post.KindNotifyWinner, c, 1); err != nil {
		t.Errorf("without a notifier: %v, want done", err)
	}
}

func TestWorkUnknownClaim(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ghost := &simClaim{Claim: dibs.Claim{ID: "ghost", DropID: "tickets"}}
	for _, kind := range post.Kinds {
		if err := b.work(kind, ghost, 1); outcome(err) != "cancelled" {
			t.Errorf("%s of a claim the record lacks: %v, want cancelled", kind, err)
		}
	}
	if err := b.work("nonsense", ghost, 1); outcome(err) != "cancelled" {
		t.Errorf("unknown kind: %v, want cancelled", err)
	}
}

func TestNewCode(t *testing.T) {
	t.Parallel()
	shape := regexp.MustCompile(`^[A-HJ-NP-Z2-9]{4}(-[A-HJ-NP-Z2-9]{4}){3}$`)
	seen := make(map[string]bool)
	for range 1000 {
		code, err := post.NewCode()
		if err != nil {
			t.Fatal(err)
		}
		if !shape.MatchString(code) {
			t.Fatalf("code %q: want four groups of four from A-Z and 2-9 without I and O", code)
		}
		if seen[code] {
			t.Fatalf("code %q drawn twice", code)
		}
		seen[code] = true
	}
}

func (p *recordingPayer) Refund(ctx context.Context, key string) (*payment.Charge, error) {
	p.calls = append(p.calls, "refund")
	return p.Payer.Refund(ctx, key)
}

// A charge the gateway applied after the hold expired (its payment grace
// ran out) is refunded once, and payment_refunded follows; the charge of
// a live claim is never refunded.
func TestLatePaymentIsRefunded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const grace = 30 * time.Second
	b := setup(t, func(c *post.Config) { c.PaymentGrace = grace })
	c := b.hold(t, true)

	// The hold keeps its slot for the grace, then expires.
	b.w.now = c.HoldExpiresAt.Add(grace - time.Second)
	var snooze *river.JobSnoozeError
	if err := b.work(post.KindExpireHold, c, 1); !errors.As(err, &snooze) || snooze.Duration != time.Second || c.State != dibs.ClaimHeld {
		t.Fatalf("expire_hold within the grace: %v, claim %s; want a snooze of 1s, held", err, c.State)
	}
	b.w.now = c.HoldExpiresAt.Add(grace)
	if err := b.work(post.KindExpireHold, c, 1); err != nil || c.State != dibs.ClaimExpired || c.released != 1 {
		t.Fatalf("expire_hold after the grace: %v, claim %s, slot back %d times; want expired, 1", err, c.State, c.released)
	}

	// The charge the first run sent lands now.
	if _, err := (simPG{b.w}).Charge(ctx, c.ID, payment.ChargeRequest{Amount: 5000, Currency: "KRW", Reference: "tickets/" + c.ID}); err != nil {
		t.Fatal(err)
	}
	if err := b.work(post.KindChargePayment, c, 2); err != nil {
		t.Fatalf("charge_payment of the expired claim: %v", err)
	}
	if c.LatePaidAt.IsZero() || !slices.Contains(b.jobs(c), post.KindRefundPayment) {
		t.Fatalf("late paid at %v, jobs %v; want the late payment recorded and refund_payment queued", c.LatePaidAt, b.jobs(c))
	}
	for attempt := 1; attempt <= 2; attempt++ { // the second run finds it done
		if err := b.work(post.KindRefundPayment, c, attempt); err != nil {
			t.Fatalf("refund_payment attempt %d: %v", attempt, err)
		}
	}
	ch := b.w.ledger[c.ID]
	if ch.Status != payment.StatusRefunded || ch.refunds != 1 || c.RefundedAt.IsZero() {
		t.Fatalf("charge %s refunded %d times, claim refunded at %v; want refunded once, recorded", ch.Status, ch.refunds, c.RefundedAt)
	}
	if got := b.pg.calls; !slices.Equal(got, []string{"lookup", "refund"}) {
		t.Errorf("gateway calls %v, want [lookup refund]", got)
	}
	if err := b.work(post.KindPaymentRefunded, c, 1); err != nil {
		t.Fatal(err)
	}
	n, ok := b.w.delivered[post.KindPaymentRefunded+":"+c.ID]
	if data, _ := n.Data.(post.ClaimNotice); !ok || !n.Time.Equal(c.RefundedAt) || !data.RefundedAt.Equal(c.RefundedAt) || data.State != dibs.ClaimExpired {
		t.Errorf("notice %+v, want payment_refunded of the expired claim at %v", n, c.RefundedAt)
	}

	// A live claim: nothing is recorded, and a refund job is refused
	// without calling the gateway.
	live := b.hold(t, true)
	if _, err := (simPG{b.w}).Charge(ctx, live.ID, payment.ChargeRequest{Amount: 5000, Currency: "KRW", Reference: "tickets/" + live.ID}); err != nil {
		t.Fatal(err)
	}
	if _, changed, err := (simStore{b.w}).RecordLatePayment(ctx, live.ID, b.w.now); err != nil || changed {
		t.Errorf("late payment of a held claim: changed %v, %v; want unchanged", changed, err)
	}
	b.pg.calls = nil
	if err := b.work(post.KindRefundPayment, live, 1); outcome(err) != "cancelled" || len(b.pg.calls) != 0 {
		t.Errorf("refund of a held claim: %v, gateway calls %v; want cancelled, none", err, b.pg.calls)
	}
	if ch := b.w.ledger[live.ID]; ch.Status != payment.StatusPaid {
		t.Errorf("live claim's charge is %s, want paid", ch.Status)
	}
}

// TestLateChargeOfALostRunIsFound: a run taken for lost sends its charge
// after a newer run looked it up and found none. The newer run does not
// end the job: it looks again once every earlier run's timeout is over,
// finds the money and has it refunded.
func TestLateChargeOfALostRunIsFound(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	c := b.hold(t, true)
	b.w.now = c.HoldExpiresAt
	if err := b.work(post.KindExpireHold, c, 1); err != nil || c.State != dibs.ClaimExpired {
		t.Fatalf("expire_hold at the deadline: %v, claim %s; want expired", err, c.State)
	}
	var snooze *river.JobSnoozeError
	if err := b.work(post.KindChargePayment, c, 2); !errors.As(err, &snooze) || c.released != 1 {
		t.Fatalf("charge_payment of a claim that just ended: %v, slot back %d times; want a snooze, 1", err, c.released)
	}
	// The lost run's charge lands within its timeout.
	if _, err := (simPG{b.w}).Charge(ctx, c.ID, payment.ChargeRequest{Amount: 5000, Currency: "KRW", Reference: "tickets/" + c.ID}); err != nil {
		t.Fatal(err)
	}
	b.w.now = b.w.now.Add(snooze.Duration)
	if err := b.work(post.KindChargePayment, c, 2); err != nil {
		t.Fatalf("charge_payment looking again: %v", err)
	}
	if c.LatePaidAt.IsZero() || !slices.Contains(b.jobs(c), post.KindRefundPayment) {
		t.Fatalf("late paid at %v, jobs %v; want the late payment recorded and refund_payment queued", c.LatePaidAt, b.jobs(c))
	}
}
