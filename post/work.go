package post

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/riverqueue/river"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/payment"
)

// Releaser gives a claim's slot back to the gate and lets the waiting room
// admit someone in its place; *engine.Engine implements it. ReleaseSlot must
// be idempotent per claim id: it reports false when the gate holds nothing
// for the claim (any more).
type Releaser interface {
	ReleaseSlot(ctx context.Context, dropID, claimID string) (bool, error)
}

// Payer is the payment gateway as the charge and refund workers use it;
// *payment.Client implements it. Errors are payment's: ErrOutcomeUnknown,
// ErrUnavailable (and ErrCircuitOpen), ErrNotFound, ErrConflict, ErrInvalid.
// Refund must be idempotent per key (payment.Client sends
// payment.RefundKey(key) as the refund's idempotency key).
type Payer interface {
	Charge(ctx context.Context, key string, req payment.ChargeRequest) (*payment.Charge, error)
	Lookup(ctx context.Context, key string) (*payment.Charge, error)
	Refund(ctx context.Context, key string) (*payment.Charge, error)
}

// Notice is one webhook event for the operator's main service.
type Notice struct {
	// ID is "<kind>:<claim id>": the same for every delivery of one event,
	// so that the receiver can drop duplicates (delivery is at least once).
	ID string
	// Type is the job kind: notify_winner, payment_failed, hold_expired or
	// payment_refunded.
	Type string
	// Time is when the claim reached the state the notice is about.
	Time time.Time
	// Data is a ClaimNotice.
	Data any
}

// ClaimNotice is the Data of every Notice: the claim as the record has it
// when the notice is sent.
type ClaimNotice struct {
	ClaimID       string          `json:"claim_id"`
	DropID        string          `json:"drop_id"`
	UserID        string          `json:"user_id"`
	Slot          int64           `json:"slot"`
	State         dibs.ClaimState `json:"state"`
	CouponCode    string          `json:"coupon_code,omitempty"`
	HoldExpiresAt time.Time       `json:"hold_expires_at,omitzero"`
	// RefundedAt is set in payment_refunded notices only, so that the
	// notices of the claim's end read the same on every delivery.
	RefundedAt time.Time `json:"refunded_at,omitzero"`
}

// Notifier delivers notices to the operator's main service. Notify is
// called concurrently. An error wrapping ErrPermanent ends the job at once
// (it is listed by Runner.FailedWebhooks); any other error is retried with
// backoff, up to WebhookAttempts.
type Notifier interface {
	Notify(ctx context.Context, n Notice) error
}

// ErrPermanent marks a Notify error that retrying cannot fix (the receiver
// refused the notice as malformed, say).
var ErrPermanent = errors.New("permanent failure")

// Job is one run of a job, as River hands it to the worker of its kind.
type Job struct {
	Kind  string
	Claim ClaimRef
	// Attempt is 1 on the first run. River counts every fetch, so a run
	// after a worker died mid-job counts as a retry; a snooze does not.
	Attempt int
	// Snoozes is how many times the job was snoozed before this run.
	Snoozes int
}

// Work runs one job as the River worker of its kind does, and returns what
// that worker returns to River: nil when the job is done, a river.JobSnooze
// error to run it again later without spending an attempt, a
// river.JobCancel error to end it for good, or any other error to retry it
// with backoff. It is safe for concurrent use and needs no River client, so
// tests and simulations drive the workers through it.
func (r *Runner) Work(ctx context.Context, j Job) error {
	var err error
	switch j.Kind {
	case KindChargePayment:
		err = r.chargePayment(ctx, j)
	case KindExpireHold:
		err = r.expireHold(ctx, j)
	case KindRefundPayment:
		err = r.refundPayment(ctx, j)
	case KindNotifyWinner, KindPaymentFailed, KindHoldExpired, KindPaymentRefunded:
		err = r.notify(ctx, j)
	default:
		err = river.JobCancel(fmt.Errorf("unknown job kind %q", j.Kind))
	}
	r.metrics.job(j.Kind, err)
	return err
}

// findClaim reads the job's claim. A claim the record does not have can
// never be worked: the job is cancelled.
func (r *Runner) findClaim(ctx context.Context, j Job) (*dibs.Claim, error) {
	c, err := r.store.FindClaim(ctx, j.Claim.ClaimID)
	if dibs.ErrorCode(err) == dibs.ENOTFOUND {
		return nil, river.JobCancel(fmt.Errorf("%s: claim %s: %w", j.Kind, j.Claim.ClaimID, err))
	} else if err != nil {
		return nil, fmt.Errorf("%s: find claim %s: %w", j.Kind, j.Claim.ClaimID, err)
	}
	return c, nil
}

// chargePayment settles the payment of a held claim whose owner asked to
// pay. The claim id is the idempotency key, so no run can charge twice;
// every run after the first looks the key up before charging, so a run
// that follows a lost answer or a dead worker learns the outcome first.
// While payments are switched off it waits, touching nothing, and the
// claim's hold waits with it (expireHold).
func (r *Runner) chargePayment(ctx context.Context, j Job) error {
	if !r.on(dibs.SwitchPayments) {
		r.paused.wait(j.Claim.ClaimID, r.now())
		return r.switchedOff(j.Kind)
	}
	defer r.paused.ran(j.Claim.ClaimID)
	c, err := r.findClaim(ctx, j)
	if err != nil {
		return err
	}
	switch c.State {
	case dibs.ClaimHeld:
	case dibs.ClaimReleased, dibs.ClaimExpired:
		// Settled by an earlier run that may have died before giving
		// the slot back, or expired while its payment was pending (the
		// payment grace ran out): a charge an earlier run sent may have
		// been applied since, and that money goes back.
		found, err := r.findLatePayment(ctx, c, j)
		if err != nil {
			return err
		}
		if err := r.releaseSlot(ctx, c); err != nil {
			return err
		}
		// An earlier run of this job that began before the claim ended
		// may still be at the gateway (taken for lost, not stopped): its
		// charge can land after this lookup. Look again once any such run
		// is over, RescueAfter after the claim ended at the latest.
		if late := c.UpdatedAt.Add(r.rescue).Sub(r.now()); late > 0 && j.Attempt > 1 && !found &&
			!c.PayRequestedAt.IsZero() && c.LatePaidAt.IsZero() && r.payer != nil {
			return river.JobSnooze(late)
		}
		return nil
	default:
		return nil
	}
	if c.PayRequestedAt.IsZero() {
		return river.JobCancel(fmt.Errorf("charge payment: claim %s: its owner never asked to pay", c.ID))
	}
	d, err := r.store.FindDrop(ctx, c.DropID)
	if err != nil {
		return fmt.Errorf("charge payment: find drop %s: %w", c.DropID, err)
	}
	if d.Price == 0 {
		r.metrics.payment("free")
		return r.settle(ctx, c, true, false)
	}
	if r.payer == nil {
		r.log.Warn("charge payment: no payment gateway configured; the job waits for one", "claim", c.ID, "drop", c.DropID)
		return river.JobSnooze(r.retryMax)
	}
	if j.Attempt > 1 {
		if err := r.wait(ctx, j.Kind); err != nil {
			return err
		}
		ch, err := r.payer.Lookup(ctx, c.ID)
		switch {
		case err == nil:
			return r.settleCharge(ctx, c, ch)
		case !errors.Is(err, payment.ErrNotFound):
			return r.paymentFailed(ctx, c, j, "lookup", err)
		}
	}
	if err := r.wait(ctx, j.Kind); err != nil {
		return err
	}
	currency := d.Currency
	if currency == "" {
		currency = dibs.DefaultCurrency
	}
	ch, err := r.payer.Charge(ctx, c.ID, payment.ChargeRequest{
		Amount:    d.Price,
		Currency:  currency,
		Reference: d.ID + "/" + c.ID,
	})
	if errors.Is(err, payment.ErrConflict) {
		// The key was charged before with another amount (the price
		// changed): what the gateway recorded under it is the outcome.
		if ch, err = r.payer.Lookup(ctx, c.ID); errors.Is(err, payment.ErrNotFound) {
			return r.reject(ctx, c, fmt.Errorf("charge conflicts, yet no charge is recorded: %w", payment.ErrConflict))
		}
	}
	if err != nil {
		return r.paymentFailed(ctx, c, j, "charge", err)
	}
	return r.settleCharge(ctx, c, ch)
}

// paymentFailed decides what an error from the gateway means for the job.
func (r *Runner) paymentFailed(ctx context.Context, c *dibs.Claim, j Job, op string, err error) error {
	switch {
	case errors.Is(err, payment.ErrUnavailable):
		// Surely not applied: wait without spending an attempt, however
		// long the gateway stays down.
		r.metrics.payment("unavailable")
		return river.JobSnooze(r.backoff(j.Snoozes+1, r.snoozeMax))
	case errors.Is(err, payment.ErrOutcomeUnknown):
		// Maybe applied: retry with backoff; the next run looks it up.
		r.metrics.payment("unknown")
		r.log.Info("charge payment: outcome unknown, will look it up", "claim", c.ID, "op", op, "attempt", j.Attempt)
		return fmt.Errorf("charge payment %s: %s: %w", c.ID, op, err)
	case errors.Is(err, payment.ErrInvalid), errors.Is(err, payment.ErrConflict), errors.Is(err, payment.ErrNotFound):
		return r.reject(ctx, c, err)
	}
	return fmt.Errorf("charge payment %s: %s: %w", c.ID, op, err)
}

// reject ends a payment the gateway refused for good without charging: a
// bug or a misconfiguration, so it is logged as an error; the slot goes
// back as for a decline.
func (r *Runner) reject(ctx context.Context, c *dibs.Claim, err error) error {
	r.metrics.payment("rejected")
	r.log.Error("charge payment: the gateway refused the charge; releasing the slot", "claim", c.ID, "drop", c.DropID, "err", err)
	return r.settle(ctx, c, false, false)
}

// settleCharge settles the claim by the gateway's record of its charge.
func (r *Runner) settleCharge(ctx context.Context, c *dibs.Claim, ch *payment.Charge) error {
	switch ch.Status {
	case payment.StatusPaid:
		r.metrics.payment("paid")
		return r.settle(ctx, c, true, true)
	case payment.StatusDeclined, payment.StatusRefunded:
		r.metrics.payment("declined")
		return r.settle(ctx, c, false, true)
	}
	return fmt.Errorf("charge payment %s: the gateway answered status %q", c.ID, ch.Status)
}

// settle records the outcome, then gives the slot back if the claim is no
// longer active: in this order, so that the record never shows an active
// claim whose slot the gate gave to someone else. charged says the outcome
// is the gateway's (not a free drop's): a paid one for a claim that ended
// meanwhile is money taken late.
func (r *Runner) settle(ctx context.Context, c *dibs.Claim, paid, charged bool) error {
	got, changed, err := r.store.SettlePayment(ctx, c.ID, paid, r.now())
	if err != nil {
		return fmt.Errorf("settle payment %s: %w", c.ID, err)
	}
	if !changed && paid && charged && !got.State.Active() {
		// The hold ended while the charge was under way (the payment
		// grace ran out): money taken late, refunded by refund_payment.
		if err := r.recordLatePayment(ctx, got); err != nil {
			return err
		}
	}
	if got.State.Active() {
		return nil
	}
	return r.releaseSlot(ctx, got)
}

func (r *Runner) releaseSlot(ctx context.Context, c *dibs.Claim) error {
	if _, err := r.release.ReleaseSlot(ctx, c.DropID, c.ID); err != nil {
		return fmt.Errorf("release slot of claim %s: %w", c.ID, err)
	}
	return nil
}

// expireHold ends a hold that ran out unpaid and gives its slot back. A
// hold whose owner asked to pay in time is charge_payment's to settle: it
// expires PaymentGrace past its deadline only while payments are on and
// its charge is not waiting on the payments switch (the charge ran once
// since the switch came back on, on this node's knowledge: switch.go).
func (r *Runner) expireHold(ctx context.Context, j Job) error {
	if err := r.wait(ctx, j.Kind); err != nil {
		return err
	}
	now := r.now()
	c, _, err := r.store.ExpireHold(ctx, j.Claim.ClaimID, now)
	if dibs.ErrorCode(err) == dibs.ENOTFOUND {
		return river.JobCancel(fmt.Errorf("expire hold %s: %w", j.Claim.ClaimID, err))
	} else if err != nil {
		return fmt.Errorf("expire hold %s: %w", j.Claim.ClaimID, err)
	}
	switch {
	case !c.State.Active():
		// Expired now or by an earlier run that may have died before
		// giving the slot back, or released by a declined payment.
		return r.releaseSlot(ctx, c)
	case c.State == dibs.ClaimHeld && c.PayRequestedAt.IsZero() && now.Before(c.HoldExpiresAt):
		// Run early (this node's clock is behind the one that scheduled
		// the job): come back at the deadline.
		return river.JobSnooze(c.HoldExpiresAt.Sub(now))
	case c.State == dibs.ClaimHeld && r.grace >= 0:
		// Its owner asked to pay and the payment is pending: it keeps
		// the hold for the grace, then the slot goes back and a charge
		// applied after that is refunded.
		if payBy := c.HoldExpiresAt.Add(r.grace); now.Before(payBy) {
			return river.JobSnooze(payBy.Sub(now))
		}
		if !r.on(dibs.SwitchPayments) {
			// Nobody can pay while payments are off: the hold waits.
			r.paused.wait(c.ID, now)
			return r.switchedOff(j.Kind)
		}
		if r.paused.waiting(c.ID, now) {
			// Payments are back: the charge that waited runs first.
			return r.switchedOff(j.Kind)
		}
		c, _, err = r.store.ExpirePayment(ctx, c.ID, now.Add(-r.grace), now)
		if err != nil {
			return fmt.Errorf("expire payment %s: %w", j.Claim.ClaimID, err)
		}
		if !c.State.Active() {
			return r.releaseSlot(ctx, c)
		}
	}
	return nil
}

// findLatePayment looks up the charge of an ended claim whose owner had
// asked to pay, unless its late payment is recorded already: a paid charge
// is money taken late, recorded with its refund_payment.
func (r *Runner) findLatePayment(ctx context.Context, c *dibs.Claim, j Job) (found bool, err error) {
	if c.PayRequestedAt.IsZero() || !c.LatePaidAt.IsZero() || r.payer == nil {
		return false, nil
	}
	if err := r.wait(ctx, j.Kind); err != nil {
		return false, err
	}
	ch, err := r.payer.Lookup(ctx, c.ID)
	switch {
	case errors.Is(err, payment.ErrNotFound):
		return false, nil
	case errors.Is(err, payment.ErrUnavailable):
		return false, river.JobSnooze(r.backoff(j.Snoozes+1, r.snoozeMax))
	case err != nil:
		return false, fmt.Errorf("charge payment %s: look up the charge of an ended claim: %w", c.ID, err)
	case ch.Status != payment.StatusPaid:
		return true, nil // declined or refunded: nothing of it lands later
	}
	return true, r.recordLatePayment(ctx, c)
}

// recordLatePayment records that the gateway took the money of an ended
// claim, which enqueues its refund. The record refuses it for a live claim.
func (r *Runner) recordLatePayment(ctx context.Context, c *dibs.Claim) error {
	got, changed, err := r.store.RecordLatePayment(ctx, c.ID, r.now())
	if err != nil {
		return fmt.Errorf("record late payment %s: %w", c.ID, err)
	}
	if changed {
		r.metrics.payment("late")
		r.log.Warn("charge payment: the gateway took the money after the claim ended; refunding it", "claim", c.ID, "drop", c.DropID, "state", got.State)
	}
	return nil
}

// refundPayment gives back the money the gateway took for a claim after it
// had ended, and records the refund, which enqueues payment_refunded. The
// refund carries its own idempotency key (payment.RefundKey of the claim
// id), so no run, retry or rescue refunds twice. While payments are
// switched off it waits: a refund moves money too.
func (r *Runner) refundPayment(ctx context.Context, j Job) error {
	if !r.on(dibs.SwitchPayments) {
		return r.switchedOff(j.Kind)
	}
	c, err := r.findClaim(ctx, j)
	if err != nil {
		return err
	}
	switch {
	case c.State.Active():
		// RecordLatePayment enqueues refunds of ended claims only, and
		// an ended claim never comes back; the check stays, as a guard.
		return river.JobCancel(fmt.Errorf("refund payment: claim %s is %s: the charge of a live claim is never refunded", c.ID, c.State))
	case c.LatePaidAt.IsZero():
		return river.JobCancel(fmt.Errorf("refund payment: claim %s has no late payment recorded", c.ID))
	case !c.RefundedAt.IsZero():
		return nil
	}
	if r.payer == nil {
		r.log.Warn("refund payment: no payment gateway configured; the job waits for one", "claim", c.ID, "drop", c.DropID)
		return river.JobSnooze(r.retryMax)
	}
	if err := r.wait(ctx, j.Kind); err != nil {
		return err
	}
	ch, err := r.payer.Refund(ctx, c.ID)
	switch {
	case err == nil && ch.Status == payment.StatusRefunded:
	case err == nil:
		return fmt.Errorf("refund payment %s: the gateway answered status %q", c.ID, ch.Status)
	case errors.Is(err, payment.ErrUnavailable):
		r.metrics.payment("refund_unavailable")
		return river.JobSnooze(r.backoff(j.Snoozes+1, r.snoozeMax))
	case errors.Is(err, payment.ErrOutcomeUnknown):
		// Maybe applied: the next run asks again under the same refund
		// key, which the gateway answers with the refund it made.
		r.metrics.payment("refund_unknown")
		return fmt.Errorf("refund payment %s: %w", c.ID, err)
	default:
		// Nothing to refund under the key (no charge, a declined one,
		// or a refund under another key): a bug or a misconfiguration.
		r.metrics.payment("refund_rejected")
		r.log.Error("refund payment: the gateway refused the refund", "claim", c.ID, "drop", c.DropID, "err", err)
		return river.JobCancel(fmt.Errorf("refund payment %s: %w", c.ID, err))
	}
	if _, _, err := r.store.RecordRefund(ctx, c.ID, r.now()); err != nil {
		return fmt.Errorf("record refund %s: %w", c.ID, err)
	}
	r.metrics.payment("refunded")
	return nil
}

// notify delivers the webhook of a notify_winner, payment_failed,
// hold_expired or payment_refunded job. While webhooks are switched off
// the delivery waits.
func (r *Runner) notify(ctx context.Context, j Job) error {
	if r.notifier == nil {
		r.metrics.webhook(j.Kind, "skipped")
		return nil
	}
	if !r.on(dibs.SwitchWebhooks) {
		return r.switchedOff(j.Kind)
	}
	c, err := r.findClaim(ctx, j)
	if err != nil {
		return err
	}
	if err := r.wait(ctx, j.Kind); err != nil {
		return err
	}
	n := Notice{
		ID:   j.Kind + ":" + c.ID,
		Type: j.Kind,
		Time: c.UpdatedAt,
		Data: ClaimNotice{
			ClaimID:       c.ID,
			DropID:        c.DropID,
			UserID:        c.UserID,
			Slot:          c.Slot,
			State:         c.State,
			CouponCode:    c.CouponCode,
			HoldExpiresAt: c.HoldExpiresAt,
		},
	}
	if j.Kind == KindPaymentRefunded {
		if c.RefundedAt.IsZero() {
			return river.JobCancel(fmt.Errorf("notify %s: claim %s has no refund recorded", n.ID, c.ID))
		}
		d := n.Data.(ClaimNotice)
		d.RefundedAt = c.RefundedAt
		n.Time, n.Data = c.RefundedAt, d
	}
	err = r.notifier.Notify(ctx, n)
	switch {
	case err == nil:
		r.metrics.webhook(j.Kind, "delivered")
		return nil
	case errors.Is(err, ErrPermanent):
		r.metrics.webhook(j.Kind, "rejected")
		r.log.Warn("webhook refused for good", "notice", n.ID, "err", err)
		return river.JobCancel(fmt.Errorf("notify %s: %w", n.ID, err))
	}
	r.metrics.webhook(j.Kind, "failed")
	return fmt.Errorf("notify %s: %w", n.ID, err)
}

// wait takes a token of the rate limiter of kind's queue.
func (r *Runner) wait(ctx context.Context, kind string) error {
	if l := r.limiters[QueueOf(kind)]; l != nil {
		if err := l.Wait(ctx); err != nil {
			return fmt.Errorf("%s: rate limit: %w", kind, err)
		}
	}
	return nil
}

// codeAlphabet has 32 symbols without look-alikes (no I, O, 0, 1), so each
// one carries 5 bits.
const codeAlphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"

// NewCode returns a coupon code of 16 symbols in four groups
// (XXXX-XXXX-XXXX-XXXX), 80 random bits from crypto/rand: unguessable, and
// easy to read out and type.
func NewCode() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	out := make([]byte, 0, 19)
	for i, x := range b {
		if i > 0 && i%4 == 0 {
			out = append(out, '-')
		}
		out = append(out, codeAlphabet[x&31])
	}
	return string(out), nil
}
