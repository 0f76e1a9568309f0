package post

import (
	"context"
	"fmt"
	"time"

	"github.com/dibs-io/dibs"
)

var _ dibs.PaymentService = (*Payments)(nil)

// Payments takes the payment requests of held claims (dibs.PaymentService):
// it holds the rule of who may pay what and when, and the record's
// conditional update (Store.RequestPayment) makes it stick, so that a hold
// that runs out between the check and the update is never paid. Safe for
// concurrent use once its fields are set.
type Payments struct {
	Store Store
	// Gateway is whether this node has a payment gateway: without one, the
	// claims of priced drops cannot be charged.
	Gateway bool
	// Now is the time of a request (default time.Now).
	Now func() time.Time
}

// RequestPayment records that userID asks to pay the held claim, which
// enqueues its charge. ENOTFOUND if the claim is not userID's (someone
// else's claim is not told apart from a missing one); EUNAVAILABLE if the
// drop is priced and no gateway is configured; ECONFLICT if the claim is
// not held or its hold ran out. A repeated request returns the claim and
// enqueues nothing.
func (p *Payments) RequestPayment(ctx context.Context, claimID, userID string) (*dibs.Claim, error) {
	now := time.Now
	if p.Now != nil {
		now = p.Now
	}
	c, err := p.Store.FindClaim(ctx, claimID)
	if err != nil {
		return nil, fmt.Errorf("request payment: %w", err)
	}
	if c.UserID != userID {
		return nil, dibs.Errorf(dibs.ENOTFOUND, "claim %s not found", claimID)
	}
	if !p.Gateway {
		d, err := p.Store.FindDrop(ctx, c.DropID)
		if err != nil {
			return nil, fmt.Errorf("request payment: %w", err)
		}
		if d.Price > 0 {
			return nil, dibs.Errorf(dibs.EUNAVAILABLE, "no payment gateway is configured")
		}
	}
	at := now()
	if done, err := payable(c, at); done || err != nil {
		return c, err
	}
	c, changed, err := p.Store.RequestPayment(ctx, claimID, at)
	if err != nil {
		return nil, fmt.Errorf("request payment: %w", err)
	}
	if !changed {
		// The claim changed between the read and the update: a request
		// that came first stands; an end or an expiry refuses this one.
		done, err := payable(c, at)
		switch {
		case err != nil:
			return nil, err
		case !done:
			return nil, dibs.Errorf(dibs.ECONFLICT, "claim %s changed while its payment was asked for", claimID)
		}
	}
	return c, nil
}

// payable is the rule for a payment request of c's owner at now: done if
// the owner asked already (the first request stands, whatever the time);
// ECONFLICT if c is not held or its hold ran out by now.
func payable(c *dibs.Claim, now time.Time) (done bool, err error) {
	switch {
	case !c.PayRequestedAt.IsZero():
		return true, nil
	case c.State != dibs.ClaimHeld:
		return false, dibs.Errorf(dibs.ECONFLICT, "claim %s is %s, not held", c.ID, c.State)
	case !now.Before(c.HoldExpiresAt):
		return false, dibs.Errorf(dibs.ECONFLICT, "the hold of claim %s ran out at %s", c.ID, c.HoldExpiresAt.Format(time.RFC3339))
	}
	return false, nil
}
