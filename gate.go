package dibs

import (
	"context"
	"errors"
	"time"
)

// ScanFunc streams claims to fn, in slot order, until fn returns an error or
// the claims end.
type ScanFunc func(ctx context.Context, fn func(*Claim) error) error

// ReserveRequest asks a gate for a slot.
type ReserveRequest struct {
	Drop           *Drop
	UserID         string
	IdempotencyKey string    // optional; scoped to the user and the drop
	Now            time.Time // judged against the drop's opening and closing

	// ClaimID is the id a new hold gets; a hold the user already has keeps
	// its own. Empty asks for an answer without a new hold: where the gate
	// would make one, it answers ErrNeedClaimID and takes no slot. Minting
	// an id costs about as much as the rest of a loser's answer, so a
	// caller that expects a refusal (the drop sold out) may ask without.
	ClaimID string

	// Unrecorded names a released claim of IdempotencyKey that the caller
	// found missing from the record (its write failed, or its node died
	// before it): nothing was won with the key, so the gate forgets that
	// claim and may take a new slot for the key. See Hold.Released.
	Unrecorded string
}

// ErrNeedClaimID is a gate's answer to a ReserveRequest without a ClaimID
// that would get a new hold: a slot is free, and the caller asks again
// with an id.
var ErrNeedClaimID = errors.New("a new hold needs a claim id")

// Hold is a slot a gate gave a user: new, or the user's from an earlier
// request.
type Hold struct {
	UserID         string
	ClaimID        string
	Slot           int64
	Nth            int
	IdempotencyKey string
	CreatedAt      time.Time
	Existing       bool // the user already held this claim before the request
	Durable        bool // the gate knows the claim is in the record

	// Released: the request's idempotency key named a hold that was
	// released since (a declined payment, an expired hold, a failed
	// write). No slot is held: ClaimID names the released claim, Slot and
	// Nth are zero, and Existing is set. A key names its first claim for
	// good, so the gate takes no new slot for it.
	Released bool
}

// ReleasedKeys is how many released holds with an idempotency key a gate
// remembers per drop (Hold.Released). Releases are rare; past the bound the
// oldest is forgotten, and a retry with its key is then a new request.
const ReleasedKeys = 10_000

// Gate hands out the slots of drops, atomically and fast. While a drop runs,
// the gate is the only authority on which slots are free; the Store is the
// final arbiter and the source the gate is rebuilt from.
//
// Implementations are safe for concurrent use.
type Gate interface {
	// Prepare readies the gate for d. If the gate holds no state for d, it
	// builds it from the record's active claims, streamed by scan. Preparing
	// a prepared drop keeps its slots and holds and takes d's new settings.
	Prepare(ctx context.Context, d *Drop, scan ScanFunc) error

	// Reserve gives the user a slot, or the user's existing hold when the
	// idempotency key matches or the per-user limit is 1 and reached. A key
	// whose hold was released gets that hold back, Released, and no slot
	// (unless r.Unrecorded names it), whatever the drop's state. A new
	// hold takes r.ClaimID; without one the gate answers ErrNeedClaimID.
	// Errors: ENOTFOUND (drop not prepared), ESOLDOUT, ELIMIT, ECLOSED,
	// ENOTOPEN, EPAUSED, EUNAVAILABLE.
	Reserve(ctx context.Context, r ReserveRequest) (Hold, error)

	// Confirm marks holds as durable in the record, so that a retry can be
	// answered from the gate alone.
	Confirm(ctx context.Context, dropID string, claimIDs ...string) error

	// Release returns the slot of the hold claimID to the pool. It reports
	// false if the gate has no such hold (already released). A hold with an
	// idempotency key is remembered as released (ReleasedKeys).
	Release(ctx context.Context, dropID, claimID string) (bool, error)

	// SetStatus records an operator's pause, resume or close.
	SetStatus(ctx context.Context, dropID string, s Status) error

	// Remaining is the number of free slots.
	Remaining(ctx context.Context, dropID string) (int64, error)

	// Holds streams the drop's holds to fn, in no particular order, until fn
	// returns an error or the holds end. A hold taken or released during
	// the call may or may not be seen. The reconciler compares them with
	// the record.
	Holds(ctx context.Context, dropID string, fn func(Hold) error) error

	// Restore puts an active claim of the record back into the gate, as a
	// durable hold of its slot, after the gate lost it (a Redis failover, a
	// bug). Holds that stand in its way, on its slot or on its user's nth
	// place, cannot be recorded while it is active, so they are dropped.
	// It reports false if the gate already holds the claim. EINVALID if the
	// slot is outside the drop or nth below 1.
	Restore(ctx context.Context, c *Claim) (bool, error)
}
