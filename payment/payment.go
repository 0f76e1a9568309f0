// Package payment speaks dibs's payment-gateway protocol: a small HTTP+JSON
// protocol in which every charge carries an idempotency key (the claim id), so
// that asking twice never charges twice. It holds the protocol's vocabulary
// (Charge, ChargeRequest, Problem), the errors every caller must tell apart,
// and Client, the protected client the payment worker uses.
//
// The protocol is documented in docs/payments.md. The simulator behind
// `dibs pgsim` (package payment/pgsim) serves it; an operator puts a small
// adapter that serves it in front of a real gateway.
//
// A call has one of three results:
//
//   - a definite answer: a *Charge whose Status is paid, declined or refunded;
//   - a permanent refusal (ErrInvalid, ErrConflict, ErrNotFound): asking again
//     gives the same answer;
//   - a retryable error (Retryable reports true): ErrOutcomeUnknown when the
//     gateway may have applied the request, ErrUnavailable when it surely did
//     not. Retry with the same key, and Lookup the key before giving up.
package payment

import (
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/dibs-io/dibs"
)

// Status is the outcome of a charge as the gateway recorded it.
type Status string

const (
	// StatusPaid: the money was taken.
	StatusPaid Status = "paid"
	// StatusDeclined: the gateway refused the charge; nothing was taken and
	// asking again with the same key gives the same answer.
	StatusDeclined Status = "declined"
	// StatusRefunded: the charge was paid and later refunded.
	StatusRefunded Status = "refunded"
)

// ChargeRequest is the body of POST /v1/charges. The idempotency key travels
// in the Idempotency-Key header.
type ChargeRequest struct {
	Amount    int64  `json:"amount"`              // in the currency's minor unit, > 0
	Currency  string `json:"currency"`            // ISO 4217, e.g. "KRW"
	Reference string `json:"reference,omitempty"` // free text for humans, e.g. "drop/claim"
}

// MaxReferenceLen bounds ChargeRequest.Reference, in bytes.
const MaxReferenceLen = 256

var currencyPattern = regexp.MustCompile(`^[A-Z]{3}$`)

// Validate reports the first thing wrong with r, wrapping ErrInvalid.
func (r ChargeRequest) Validate() error {
	switch {
	case r.Amount <= 0:
		return fmt.Errorf("%w: amount must be positive", ErrInvalid)
	case !currencyPattern.MatchString(r.Currency):
		return fmt.Errorf("%w: currency must be three upper-case letters", ErrInvalid)
	case len(r.Reference) > MaxReferenceLen:
		return fmt.Errorf("%w: reference longer than %d bytes", ErrInvalid, MaxReferenceLen)
	}
	return nil
}

// ValidKey reports whether key can be an idempotency key: the same rule as
// the claim API's Idempotency-Key (1..128 bytes of printable UTF-8).
func ValidKey(key string) bool { return dibs.ValidIdempotencyKey(key) }

// RefundKey is the idempotency key of the refund of the charge under key:
// "refund:<key>". Every refund of one charge is asked under it, so a retry
// or a run after a crash asks for the same refund, never a second one.
func RefundKey(key string) string { return "refund:" + key }

// Charge is what the gateway recorded under one idempotency key. Every answer
// about the key (the first charge, a replay, a lookup) carries the same
// Charge, refunds aside.
type Charge struct {
	Key           string    `json:"key"`
	Status        Status    `json:"status"`
	Amount        int64     `json:"amount"`
	Currency      string    `json:"currency"`
	Reference     string    `json:"reference,omitempty"`
	ChargeID      string    `json:"charge_id"`
	DeclineReason string    `json:"decline_reason,omitempty"`
	CreatedAt     time.Time `json:"created_at"`
	RefundedAt    time.Time `json:"refunded_at,omitzero"`
}

// Problem is an error answer (application/problem+json), shaped like the
// dibs API's own. Code is one of the dibs error codes.
type Problem struct {
	Type   string `json:"type,omitempty"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
	Code   string `json:"code"`
}

// Errors a caller tells apart with errors.Is. Every error the Client returns
// wraps exactly one of ErrOutcomeUnknown, ErrUnavailable, ErrNotFound,
// ErrConflict or ErrInvalid (ErrCircuitOpen wraps ErrUnavailable).
var (
	// ErrOutcomeUnknown: the request may or may not have been applied (a
	// timeout, a connection reset, a 5xx). Retry with the same key, or Lookup
	// it. It wraps dibs.ErrOutcomeUnknown.
	ErrOutcomeUnknown = fmt.Errorf("payment gateway: %w", dibs.ErrOutcomeUnknown)

	// ErrUnavailable: the request was surely not applied: it was never sent
	// (circuit open, no concurrency slot or rate token in time, connection
	// refused) or the gateway refused it before processing (503 overloaded
	// or unavailable, 429). Retry later with the same key.
	ErrUnavailable = errors.New("payment gateway unavailable")

	// ErrCircuitOpen: the client's circuit breaker is open because the
	// gateway has been failing; the call failed fast without being sent. It
	// wraps ErrUnavailable.
	ErrCircuitOpen = fmt.Errorf("%w: circuit breaker open", ErrUnavailable)

	// ErrNotFound: the gateway never recorded a charge under the key.
	ErrNotFound = errors.New("payment not found")

	// ErrConflict: the key was used before with a different amount, currency
	// or reference, or a refund was asked of a charge that was not paid.
	// Permanent.
	ErrConflict = errors.New("payment conflict")

	// ErrInvalid: the request is malformed. Permanent.
	ErrInvalid = errors.New("invalid payment request")
)

// Retryable reports whether err is worth retrying later with the same key:
// the gateway may not have applied the request (ErrOutcomeUnknown) or surely
// did not (ErrUnavailable, ErrCircuitOpen).
func Retryable(err error) bool {
	return errors.Is(err, ErrOutcomeUnknown) || errors.Is(err, ErrUnavailable)
}
