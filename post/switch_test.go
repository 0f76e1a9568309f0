package post_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/payment"
	"github.com/dibs-io/dibs/post"
)

// switchBoard is a dibs.SwitchService kept in memory.
type switchBoard struct {
	mu sync.Mutex
	s  dibs.Switches
}

var _ dibs.SwitchService = (*switchBoard)(nil)

func (b *switchBoard) Switches() dibs.Switches {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.s
}

func (b *switchBoard) SetSwitches(_ context.Context, change map[dibs.Switch]bool, _ string) (dibs.Switches, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.s = b.s.Apply(change)
	return b.s, nil
}

func (b *switchBoard) set(sw dibs.Switch, on bool) {
	_, _ = b.SetSwitches(context.Background(), map[dibs.Switch]bool{sw: on}, "test")
}

// counters gathers reg's counters by name and label values, as
// "name value value…".
func counters(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := make(map[string]float64)
	for _, f := range families {
		for _, m := range f.GetMetric() {
			name := f.GetName()
			for _, l := range m.GetLabel() {
				name += " " + l.GetValue()
			}
			got[name] = m.GetCounter().GetValue()
		}
	}
	return got
}

// wantSwitchSnooze fails t unless err is a snooze of the switch's recheck:
// the upper half of it.
func wantSwitchSnooze(t *testing.T, what string, err error, recheck time.Duration) {
	t.Helper()
	var snooze *river.JobSnoozeError
	if !errors.As(err, &snooze) || snooze.Duration < recheck/2 || snooze.Duration > recheck {
		t.Errorf("%s: got %v, want a snooze of %s..%s", what, err, recheck/2, recheck)
	}
}

// The payments switch, one job at a time in the simulation's world: off,
// nothing reaches the gateway and no hold whose payment was asked for
// expires; on, each charge that waited runs once before its hold may
// expire.
func TestPaymentsSwitch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	board := &switchBoard{}
	reg := prometheus.NewRegistry()
	b := setup(t, func(c *post.Config) { c.Switches, c.Registerer = board, reg })
	ran := b.hold(t, true)     // its charge runs while payments are off
	backlog := b.hold(t, true) // its charge does not run before the deadline
	unasked := b.hold(t, false)

	// Money taken after a claim ended, whose refund is due.
	tickets := b.w.drops[1]
	tickets.Stock++
	tickets.slots = append(tickets.slots, "")
	late := b.w.addClaim(tickets)
	if _, err := (simPG{b.w}).Charge(ctx, late.ID, payment.ChargeRequest{Amount: 5000, Currency: "KRW", Reference: "tickets/" + late.ID}); err != nil {
		t.Fatal(err)
	}
	late.State, late.LatePaidAt = dibs.ClaimExpired, b.w.now
	b.pg.calls = nil

	board.set(dibs.SwitchPayments, false)
	wantSwitchSnooze(t, "charge while off", b.work(post.KindChargePayment, ran, 1), post.DefaultSwitchRecheck)
	wantSwitchSnooze(t, "refund while off", b.work(post.KindRefundPayment, late, 1), post.DefaultSwitchRecheck)
	b.w.now = ran.HoldExpiresAt.Add(time.Hour) // no payment grace: due an hour ago
	wantSwitchSnooze(t, "expiry of a hold asked to pay, while off", b.work(post.KindExpireHold, ran, 1), post.DefaultSwitchRecheck)
	wantSwitchSnooze(t, "expiry of another one", b.work(post.KindExpireHold, backlog, 1), post.DefaultSwitchRecheck)
	if err := b.work(post.KindExpireHold, unasked, 1); err != nil {
		t.Fatalf("expiry of a hold never asked to pay, while off: %v", err)
	}
	if len(b.pg.calls) != 0 || !late.RefundedAt.IsZero() {
		t.Errorf("while off: gateway calls %v, refunded at %v; want none", b.pg.calls, late.RefundedAt)
	}
	for _, c := range []*simClaim{ran, backlog} {
		if c.State != dibs.ClaimHeld || c.released != 0 {
			t.Errorf("claim %s while off: %s, slot back %d times; want held, 0", c.ID, c.State, c.released)
		}
	}
	if unasked.State != dibs.ClaimExpired || unasked.released != 1 {
		t.Errorf("hold never asked to pay: %s, slot back %d times; want expired as usual, 1", unasked.State, unasked.released)
	}

	board.set(dibs.SwitchPayments, true)
	// Back on: the expiries wait for the charges that waited, whether
	// those ran while off or not at all yet.
	wantSwitchSnooze(t, "expiry before its charge ran", b.work(post.KindExpireHold, ran, 1), post.DefaultSwitchRecheck)
	wantSwitchSnooze(t, "expiry before its charge ran at all", b.work(post.KindExpireHold, backlog, 1), post.DefaultSwitchRecheck)

	if err := b.work(post.KindChargePayment, ran, 1); err != nil {
		t.Fatalf("charge after the switch: %v", err)
	}
	if err := b.work(post.KindExpireHold, ran, 1); err != nil || ran.State != dibs.ClaimPaid || ran.released != 0 {
		t.Errorf("expiry after the charge: %v, claim %s, slot back %d times; want nil, paid, 0", err, ran.State, ran.released)
	}
	// The gateway is down when the other charge runs: it had its chance,
	// and its hold expires, past its (zero) grace.
	b.w.downTill, b.w.downMode = b.w.now.Add(time.Hour), downUnavailable
	if err := b.work(post.KindChargePayment, backlog, 1); outcome(err) != "snoozed" {
		t.Fatalf("charge while the gateway is down: %v, want a snooze", err)
	}
	if err := b.work(post.KindExpireHold, backlog, 1); err != nil || backlog.State != dibs.ClaimExpired || backlog.released != 1 {
		t.Errorf("expiry after the charge had its chance: %v, claim %s, slot back %d times; want nil, expired, 1", err, backlog.State, backlog.released)
	}
	b.w.downTill = time.Time{}
	if err := b.work(post.KindRefundPayment, late, 1); err != nil || late.RefundedAt.IsZero() {
		t.Errorf("refund after the switch: %v, refunded at %v; want it refunded", err, late.RefundedAt)
	}

	if want := []string{"charge", "charge", "refund"}; !slices.Equal(b.pg.calls, want) {
		t.Errorf("gateway calls %v, want %v", b.pg.calls, want)
	}
	for key, ch := range b.w.ledger {
		if ch.Status == payment.StatusPaid && ch.claimID != ran.ID {
			t.Errorf("the gateway holds a paid charge under %s for claim %s; want only %s's", key, ch.claimID, ran.ID)
		}
	}
	got := counters(t, reg)
	for name, want := range map[string]float64{
		"dibs_post_switched_off_total charge_payment": 2, // a charge and a refund
		"dibs_post_switched_off_total expire_hold":    4,
	} {
		if got[name] != want {
			t.Errorf("%s = %v, want %v", name, got[name], want)
		}
	}
}

// What a node saw wait on the payments switch lapses: a charge that ran on
// another node keeps a hold here no longer than SwitchHoldLapse.
func TestPaymentsSwitchLapses(t *testing.T) {
	t.Parallel()
	board := &switchBoard{}
	b := setup(t, func(c *post.Config) { c.Switches = board })
	c := b.hold(t, true)
	b.w.now = c.HoldExpiresAt
	board.set(dibs.SwitchPayments, false)
	wantSwitchSnooze(t, "expiry while off", b.work(post.KindExpireHold, c, 1), post.DefaultSwitchRecheck)
	board.set(dibs.SwitchPayments, true)
	b.w.now = b.w.now.Add(post.SwitchHoldLapse)
	wantSwitchSnooze(t, "expiry within the lapse", b.work(post.KindExpireHold, c, 1), post.DefaultSwitchRecheck)
	b.w.now = b.w.now.Add(time.Second)
	if err := b.work(post.KindExpireHold, c, 1); err != nil || c.State != dibs.ClaimExpired {
		t.Errorf("expiry past the lapse: %v, claim %s; want nil, expired", err, c.State)
	}
}

// The webhooks switch holds every delivery and nothing else; it is looked
// at again every SwitchRecheck.
func TestWebhooksSwitch(t *testing.T) {
	t.Parallel()
	board := &switchBoard{}
	b := setup(t, func(c *post.Config) { c.Switches, c.SwitchRecheck = board, 10*time.Second })
	c := b.w.addClaim(b.w.drops[0])
	c.CouponCode = "AAAA-BBBB-CCCC-DDDD"
	h := b.hold(t, true)

	board.set(dibs.SwitchWebhooks, false)
	wantSwitchSnooze(t, "delivery while off", b.work(post.KindNotifyWinner, c, 1), 10*time.Second)
	if b.w.deliveries != 0 {
		t.Fatalf("%d deliveries while off, want none", b.w.deliveries)
	}
	if err := b.work(post.KindChargePayment, h, 1); err != nil || h.State != dibs.ClaimPaid {
		t.Errorf("charge while webhooks are off: %v, claim %s; want it paid", err, h.State)
	}
	board.set(dibs.SwitchWebhooks, true)
	if err := b.work(post.KindNotifyWinner, c, 1); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.w.delivered[post.KindNotifyWinner+":"+c.ID]; !ok || b.w.deliveries != 1 {
		t.Errorf("deliveries %d (%v), want the one notice", b.w.deliveries, b.w.delivered)
	}
}
