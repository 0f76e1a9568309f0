package dibs

import (
	"context"
	"time"
)

// Store is the system of record: drops and claims, durable once a call
// returns. Its unique indexes make it impossible to hold more than Stock
// active claims per drop or more than PerUserLimit per user, whatever the
// gate does.
//
// Implementations are safe for concurrent use.
type Store interface {
	// CreateDrop stores a new drop. ECONFLICT if the id is taken.
	CreateDrop(ctx context.Context, d *Drop) error
	// FindDrop returns the drop id. ENOTFOUND if there is none.
	FindDrop(ctx context.Context, id string) (*Drop, error)
	// ListDrops returns every drop, oldest first.
	ListDrops(ctx context.Context) ([]*Drop, error)
	// SetDropStatus records an operator's pause, resume or close.
	SetDropStatus(ctx context.Context, id string, s Status, now time.Time) error
	// SetDropAdmission records an operator's change of a queued drop's
	// pace (a valid Admission with the drop's mode and order).
	SetDropAdmission(ctx context.Context, id string, a Admission, now time.Time) error
	// SetPacedRate records the pace an auto-paced drop's waiting room
	// chose: only while the drop's pace is PaceAuto, and clamped to its
	// bounds. changed is false if the drop is not auto-paced (an operator
	// fixed its rate meanwhile) or already had that rate.
	SetPacedRate(ctx context.Context, id string, rate int, now time.Time) (changed bool, err error)

	// RecordClaims makes claims durable in one transaction (group commit).
	// It is idempotent by claim id: a claim already recorded counts as
	// recorded. The result has one entry per claim: nil when the claim is
	// durable, or an ECONFLICT error when another active claim holds its
	// slot or its user's nth place. A non-nil second result means nothing
	// was committed, or, wrapping ErrOutcomeUnknown, that it cannot be told.
	RecordClaims(ctx context.Context, claims []*Claim) ([]error, error)
	// FindClaim returns the claim id. ENOTFOUND if there is none.
	FindClaim(ctx context.Context, id string) (*Claim, error)
	// ScanActiveClaims streams a drop's active claims ordered by slot.
	ScanActiveClaims(ctx context.Context, dropID string, fn func(*Claim) error) error
	// CountClaims counts a drop's claims by state.
	CountClaims(ctx context.Context, dropID string) (ClaimCounts, error)

	// Ping reports whether the store answers.
	Ping(ctx context.Context) error
	Close() error
}
