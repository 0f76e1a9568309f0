// Package dibs is the vocabulary of a first-come-first-served event system:
// drops (a limited stock handed out from a moment on), claims (a user's win of
// one slot of that stock), the error codes every layer speaks, and the small
// interfaces the storage adapters implement.
//
// The package imports only the standard library. Adapters (memory, sqlite,
// httpapi, ...) translate between this vocabulary and a technology; cmd/dibs
// wires them together.
package dibs

import (
	"regexp"
	"time"
	"unicode"
	"unicode/utf8"
)

// Limits that every layer enforces. Each one is a number a user can look up
// and a test exercises.
const (
	MaxStock          = 10_000_000 // slots per drop
	MaxPerUserLimit   = 100        // claims one user may hold in one drop
	MaxTitleLen       = 200        // bytes
	MaxUserIDLen      = 128        // bytes of a passport's sub
	MaxIdempotencyKey = 128        // bytes
	MinHoldTTL        = time.Second
	MaxHoldTTL        = 24 * time.Hour
	DefaultHoldTTL    = 10 * time.Minute
	MaxAdmissionRate  = 100_000           // admitted users per second
	MaxPrice          = 1_000_000_000_000 // in the currency's minor unit
	DefaultCurrency   = "KRW"
)

// Kind says what winning a drop means.
type Kind string

const (
	// KindCoupon: a win is final; a coupon is issued to the winner.
	KindCoupon Kind = "coupon"
	// KindPurchase: a win is a hold that must be paid before it expires.
	KindPurchase Kind = "purchase"
)

// Status is what an operator set on a drop. It is stored; the public State is
// derived from it, the clock and the stock.
type Status string

const (
	StatusActive Status = "active"
	StatusPaused Status = "paused"
	StatusClosed Status = "closed"
)

// State is what a client sees of a drop at a moment.
type State string

const (
	StateUpcoming State = "upcoming"
	StateOpen     State = "open"
	StatePaused   State = "paused"
	StateSoldOut  State = "sold_out"
	StateClosed   State = "closed"
)

// Admission modes.
const (
	AdmissionDirect = "direct" // anyone with a passport may claim
	AdmissionQueue  = "queue"  // claims need an admission from the waiting room
)

// Admission orders for people who join a waiting room before it opens.
const (
	OrderShuffle = "shuffle"
	OrderFIFO    = "fifo"
)

// Paces of a waiting room.
const (
	PaceFixed = ""     // admits Rate people per second until an operator changes it
	PaceAuto  = "auto" // dibs sets Rate itself, between MinRate and MaxRate, from downstream health
)

// Admission says how users reach the claim endpoint of a drop.
type Admission struct {
	Mode  string // AdmissionDirect or AdmissionQueue
	Rate  int    // admitted users per second (queue mode); with PaceAuto, the current pace
	Order string // OrderShuffle or OrderFIFO (queue mode)

	Pace             string // PaceFixed or PaceAuto (queue mode)
	MinRate, MaxRate int    // PaceAuto: the bounds of Rate
}

// Validate reports the first thing wrong with a as an EINVALID error.
func (a Admission) Validate() error {
	switch a.Mode {
	case AdmissionDirect:
		if a.Rate != 0 || a.Order != "" || a.Pace != PaceFixed || a.MinRate != 0 || a.MaxRate != 0 {
			return Errorf(EINVALID, "admission rate, order and pace apply to queue mode only")
		}
		return nil
	case AdmissionQueue:
	default:
		return Errorf(EINVALID, "admission.mode must be %q or %q", AdmissionDirect, AdmissionQueue)
	}
	switch {
	case a.Rate < 1 || a.Rate > MaxAdmissionRate:
		return Errorf(EINVALID, "admission.rate must be between 1 and %d", MaxAdmissionRate)
	case a.Order != OrderShuffle && a.Order != OrderFIFO:
		return Errorf(EINVALID, "admission.order must be %q or %q", OrderShuffle, OrderFIFO)
	}
	switch a.Pace {
	case PaceFixed:
		if a.MinRate != 0 || a.MaxRate != 0 {
			return Errorf(EINVALID, "admission min and max apply to the auto pace only")
		}
	case PaceAuto:
		if a.MinRate < 1 || a.MaxRate > MaxAdmissionRate || a.MinRate > a.MaxRate {
			return Errorf(EINVALID, "an auto pace needs 1 <= min <= max <= %d", MaxAdmissionRate)
		}
		if a.Rate < a.MinRate || a.Rate > a.MaxRate {
			return Errorf(EINVALID, "admission.rate must be between min and max")
		}
	default:
		return Errorf(EINVALID, "admission.pace must be fixed or %q", PaceAuto)
	}
	return nil
}

// Drop is a limited stock handed out first come, first served.
type Drop struct {
	ID           string
	Title        string
	Kind         Kind
	Stock        int64 // slots 1..Stock
	PerUserLimit int   // active claims one user may hold
	OpensAt      time.Time
	ClosesAt     time.Time     // zero: never closes by itself
	HoldTTL      time.Duration // purchase drops: how long a hold waits for payment
	Price        int64         // purchase drops: charged per claim, in the currency's minor unit; 0 is free
	Currency     string        // purchase drops: ISO 4217 code, DefaultCurrency if empty
	Admission    Admission
	Status       Status
	CreatedAt    time.Time
	UpdatedAt    time.Time
}

var (
	dropIDPattern   = regexp.MustCompile(`^[a-z0-9-]{1,64}$`)
	currencyPattern = regexp.MustCompile(`^[A-Z]{3}$`)
)

// ValidDropID reports whether id has the form [a-z0-9-]{1,64}.
func ValidDropID(id string) bool { return dropIDPattern.MatchString(id) }

// ValidUserID reports whether id can name a user: 1..MaxUserIDLen bytes of
// printable UTF-8 (see printable).
func ValidUserID(id string) bool {
	return validToken(id, MaxUserIDLen)
}

// ValidIdempotencyKey reports whether key is an acceptable Idempotency-Key:
// 1..MaxIdempotencyKey bytes of printable UTF-8 (see printable).
func ValidIdempotencyKey(key string) bool {
	return validToken(key, MaxIdempotencyKey)
}

func validToken(s string, max int) bool {
	return len(s) > 0 && len(s) <= max && printable(s)
}

// printable reports whether s is valid UTF-8 without control or format
// characters (Unicode categories Cc and Cf: NUL, CR, LF, U+0085, the
// bidirectional overrides such as U+202E, zero-width joiners) or line and
// paragraph separators (Zl, Zp: U+2028, U+2029): such characters can make
// a log line, a CSV row or a displayed title say something else.
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp)) {
			return false
		}
	}
	return true
}

// Normalize fills defaults: per-user limit 1, opening now, direct admission,
// shuffle order for queues, the default hold TTL for purchase drops, status
// active.
func (d *Drop) Normalize(now time.Time) {
	if d.PerUserLimit == 0 {
		d.PerUserLimit = 1
	}
	if d.OpensAt.IsZero() {
		d.OpensAt = now
	}
	if d.Admission.Mode == "" {
		d.Admission.Mode = AdmissionDirect
	}
	if d.Admission.Mode == AdmissionQueue && d.Admission.Order == "" {
		d.Admission.Order = OrderShuffle
	}
	if d.Kind == KindPurchase && d.HoldTTL == 0 {
		d.HoldTTL = DefaultHoldTTL
	}
	if d.Kind == KindPurchase && d.Currency == "" {
		d.Currency = DefaultCurrency
	}
	if d.Status == "" {
		d.Status = StatusActive
	}
	if d.CreatedAt.IsZero() {
		d.CreatedAt = now
	}
	if d.UpdatedAt.IsZero() {
		d.UpdatedAt = d.CreatedAt
	}
}

// Validate reports the first thing wrong with d as an EINVALID error.
func (d *Drop) Validate() error {
	switch {
	case !ValidDropID(d.ID):
		return Errorf(EINVALID, "id must match [a-z0-9-]{1,64}")
	case d.Title == "":
		return Errorf(EINVALID, "title is required")
	case len(d.Title) > MaxTitleLen || !utf8.ValidString(d.Title):
		return Errorf(EINVALID, "title must be valid UTF-8 of at most %d bytes", MaxTitleLen)
	case !printable(d.Title):
		return Errorf(EINVALID, "title must not hold control or format characters (line breaks, NUL, bidirectional overrides)")
	case d.Kind != KindCoupon && d.Kind != KindPurchase:
		return Errorf(EINVALID, "kind must be %q or %q", KindCoupon, KindPurchase)
	case d.Stock < 1 || d.Stock > MaxStock:
		return Errorf(EINVALID, "stock must be between 1 and %d", MaxStock)
	case d.PerUserLimit < 1 || d.PerUserLimit > MaxPerUserLimit:
		return Errorf(EINVALID, "per_user_limit must be between 1 and %d", MaxPerUserLimit)
	case !d.ClosesAt.IsZero() && !d.ClosesAt.After(d.OpensAt):
		return Errorf(EINVALID, "closes_at must be after opens_at")
	case d.Kind == KindCoupon && d.HoldTTL != 0:
		return Errorf(EINVALID, "hold_ttl applies to purchase drops only")
	case d.Kind == KindPurchase && (d.HoldTTL < MinHoldTTL || d.HoldTTL > MaxHoldTTL):
		return Errorf(EINVALID, "hold_ttl must be between %s and %s", MinHoldTTL, MaxHoldTTL)
	case d.Kind == KindCoupon && (d.Price != 0 || d.Currency != ""):
		return Errorf(EINVALID, "price and currency apply to purchase drops only")
	case d.Price < 0 || d.Price > MaxPrice:
		return Errorf(EINVALID, "price must be between 0 and %d", int64(MaxPrice))
	case d.Kind == KindPurchase && !currencyPattern.MatchString(d.Currency):
		return Errorf(EINVALID, "currency must be three upper-case letters (ISO 4217)")
	case d.Status != StatusActive && d.Status != StatusPaused && d.Status != StatusClosed:
		return Errorf(EINVALID, "status must be active, paused or closed")
	}
	return d.Admission.Validate()
}

// Admits reports why a claim at now cannot be taken, judging only by status
// and clock: EPAUSED, ECLOSED or ENOTOPEN. Stock is the gate's business.
func (d *Drop) Admits(status Status, now time.Time) error {
	switch {
	case status == StatusClosed:
		return Errorf(ECLOSED, "drop %s is closed", d.ID)
	case !d.ClosesAt.IsZero() && !now.Before(d.ClosesAt):
		return Errorf(ECLOSED, "drop %s closed at %s", d.ID, d.ClosesAt.Format(time.RFC3339))
	case status == StatusPaused:
		return Errorf(EPAUSED, "drop %s is paused", d.ID)
	case now.Before(d.OpensAt):
		return Errorf(ENOTOPEN, "drop %s opens at %s", d.ID, d.OpensAt.Format(time.RFC3339))
	}
	return nil
}

// StateAt is the public state of d at now, given its operator status and the
// slots the gate still has.
func (d *Drop) StateAt(status Status, now time.Time, remaining int64) State {
	switch err := d.Admits(status, now); ErrorCode(err) {
	case ECLOSED:
		return StateClosed
	case EPAUSED:
		return StatePaused
	case ENOTOPEN:
		return StateUpcoming
	}
	if remaining <= 0 {
		return StateSoldOut
	}
	return StateOpen
}

// ClaimState is where a claim is in its life.
type ClaimState string

const (
	ClaimHeld      ClaimState = "held"      // purchase drop: won, waiting for payment
	ClaimConfirmed ClaimState = "confirmed" // coupon drop: won for good
	ClaimPaid      ClaimState = "paid"      // purchase drop: paid
	ClaimReleased  ClaimState = "released"  // given back (payment declined, operator)
	ClaimExpired   ClaimState = "expired"   // hold ran out before payment
)

// Active reports whether a claim in state s holds its slot.
func (s ClaimState) Active() bool {
	return s == ClaimHeld || s == ClaimConfirmed || s == ClaimPaid
}

// InitialClaimState is the state a fresh win has in a drop of kind k.
func InitialClaimState(k Kind) ClaimState {
	if k == KindPurchase {
		return ClaimHeld
	}
	return ClaimConfirmed
}

// Claim is a user's win of one slot of a drop.
type Claim struct {
	ID             string
	DropID         string
	UserID         string
	Slot           int64 // 1..drop stock
	Nth            int   // 1..per-user limit: which of the user's claims this is
	State          ClaimState
	IdempotencyKey string
	CreatedAt      time.Time
	UpdatedAt      time.Time
	HoldExpiresAt  time.Time // purchase drops only
	PayRequestedAt time.Time // purchase drops: when the owner asked to pay
	CouponCode     string    // coupon drops, once issued
	// LatePaidAt is when the payment gateway turned out to hold a paid
	// charge for the claim after it had ended (released or expired): money
	// taken late, which is refunded. RefundedAt is when it was refunded.
	LatePaidAt time.Time
	RefundedAt time.Time
}

// ClaimCounts are the record's claims of one drop by state.
type ClaimCounts struct {
	Held, Confirmed, Paid, Released, Expired int64
}

// Active is the number of claims holding a slot.
func (c ClaimCounts) Active() int64 { return c.Held + c.Confirmed + c.Paid }

// Add counts n more claims in state s; unknown states are ignored.
func (c *ClaimCounts) Add(s ClaimState, n int64) {
	switch s {
	case ClaimHeld:
		c.Held += n
	case ClaimConfirmed:
		c.Confirmed += n
	case ClaimPaid:
		c.Paid += n
	case ClaimReleased:
		c.Released += n
	case ClaimExpired:
		c.Expired += n
	}
}
