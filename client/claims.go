package client

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// Claim is a claim on a drop's slot.
type Claim struct {
	ID             string     `json:"claim_id"`
	DropID         string     `json:"drop_id"`
	UserID         string     `json:"user_id"`
	Slot           int64      `json:"slot"`
	State          string     `json:"state"` // held, confirmed, paid, released, expired
	HoldExpiresAt  *time.Time `json:"hold_expires_at,omitempty"`
	PayRequestedAt *time.Time `json:"pay_requested_at,omitempty"`
	CouponCode     string     `json:"coupon_code,omitempty"`
	CreatedAt      time.Time  `json:"created_at"`

	// Created is set when this call won the claim (201), unset when it
	// answered the user's earlier claim (200).
	Created bool `json:"-"`
}

// ClaimOptions are the optional parts of a claim.
type ClaimOptions struct {
	// IdempotencyKey makes repeats of one claim answer the same claim. When
	// empty, Claim sends a random key of its own, so that its retries are
	// safe; pass one to make the claim safe to repeat across calls (a
	// request id of your own).
	IdempotencyKey string
	// Admission is the admission of an admitted waiting-room ticket;
	// queued drops refuse claims without one (CodeAdmissionRequired).
	Admission string
}

// Claim claims a slot of drop dropID for the passport's user. A won claim
// is durable when Claim returns it. Errors: CodeSoldOut, CodeClosed,
// CodeNotOpen, CodeLimitReached, CodePaused, CodeAdmissionRequired,
// CodeAdmissionInvalid, CodeUnauthorized, CodeNotFound; after its retries,
// CodeOverloaded or CodeUnavailable.
func (c *Client) Claim(ctx context.Context, pass, dropID string, o ClaimOptions) (*Claim, error) {
	key := o.IdempotencyKey
	if key == "" {
		key = newKey()
	}
	h := http.Header{"Idempotency-Key": {key}}
	if o.Admission != "" {
		h.Set("Dibs-Admission", o.Admission)
	}
	var out Claim
	status, err := c.do(ctx, call{
		method: http.MethodPost, path: "/v1/drops/" + url.PathEscape(dropID) + "/claims",
		auth: pass, header: h, retry: true,
	}, &out)
	if err != nil {
		return nil, err
	}
	out.Created = status == http.StatusCreated
	return &out, nil
}

// GetClaim reads a claim of the passport's user; anyone else's is
// CodeNotFound.
func (c *Client) GetClaim(ctx context.Context, pass, claimID string) (*Claim, error) {
	var out Claim
	if _, err := c.do(ctx, call{method: http.MethodGet, path: "/v1/claims/" + url.PathEscape(claimID), auth: pass, retry: true}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Pay asks to pay a held claim of the passport's user (purchase drops).
// The charge runs in the background: its outcome shows on the claim
// (GetClaim) and in a webhook. Asking again answers the same, so Pay is
// retried. Errors: CodeConflict (no longer held, or the hold ran out),
// CodeNotFound, CodeUnavailable (the node has no payment gateway).
func (c *Client) Pay(ctx context.Context, pass, claimID string) (*Claim, error) {
	var out Claim
	if _, err := c.do(ctx, call{method: http.MethodPost, path: "/v1/claims/" + url.PathEscape(claimID) + "/pay", auth: pass, retry: true}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
