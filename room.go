package dibs

import (
	"context"
	"strconv"
	"time"
)

// A queued drop (Admission.Mode == AdmissionQueue) puts a waiting room in
// front of its claims. The room is two counters per drop, tickets issued and
// positions served, plus one compact entry per person so that joining twice
// gives the same place. Tickets and admissions are signed tokens, so reading
// a place costs no lookup.

// Waiting-room limits and defaults.
const (
	DefaultAdmissionTTL = 30 * time.Second // how long an admitted person has to claim
	MaxTicketNumber     = 1<<32 - 1        // tickets one room can issue
)

// QueueState is where a ticket stands.
type QueueState string

const (
	QueueWaiting  QueueState = "waiting"  // in line, or the drop has not opened yet
	QueueAdmitted QueueState = "admitted" // may claim now, with the admission
	QueueExpired  QueueState = "expired"  // was admitted and did not claim in time
	QueueWon      QueueState = "won"      // was admitted and won a claim; the admission has expired
	QueueSoldOut  QueueState = "sold_out" // no slot can come back: the wait is over
	QueueClosed   QueueState = "closed"   // the drop is closed
)

// Ticket is a place in a drop's waiting room, as its signed token carries
// it.
type Ticket struct {
	DropID   string
	UserID   string
	Number   uint64 // 1, 2, ... in order of joining
	IssuedAt time.Time
}

// Pass is a verified admission: the room let ticket Number through in
// batch Batch, and the holder may claim until Expires.
type Pass struct {
	DropID  string
	UserID  string
	Number  uint64
	Batch   uint64
	Expires time.Time
}

// ClaimKey is the idempotency key of the claim a pass permits: every claim
// made with the same admission gets the same claim back.
func (p Pass) ClaimKey() string { return "admission-" + strconv.FormatUint(p.Number, 10) }

// RoomSeed holds the random values a room is created with when it does not
// exist yet. A room keeps the first ones it was given.
type RoomSeed struct {
	Epoch uint64 // names this incarnation of the room; tickets of another do not verify
	Seed  []byte // keys the shuffle of the pre-queue; published once the room opens
}

// RoomState is the shared state of one drop's waiting room. Its size does
// not depend on how many people wait.
type RoomState struct {
	RoomSeed
	Issued      uint64    // tickets issued: numbers 1..Issued
	Serving     uint64    // positions 1..Serving have been admitted
	Opened      bool      // the pre-queue is closed and its order drawn
	PreQueue    uint64    // tickets issued before opening: numbers 1..PreQueue are ordered by Admission.Order
	SoldOut     bool      // no slot can come back
	Rate        float64   // admissions per second, as the leader measured them
	Remaining   int64     // free slots when the leader last looked
	LastAdvance time.Time // the leader's last step
	LastBatch   uint64    // sequence number of the newest batch so far
	Batches     []Batch   // admissions not yet expired, oldest first
}

// Batch is the admissions of one moment: positions Start..End, admitted at
// At. Their admissions expire together at At plus the admission TTL.
type Batch struct {
	Seq        uint64
	At         time.Time
	Start, End uint64
	Used       uint64 // admissions of the batch that won a claim
}

// Size is the number of admissions in the batch.
func (b Batch) Size() uint64 { return b.End - b.Start + 1 }

// Advance is one step of a room's leader.
type Advance struct {
	Now          time.Time
	Open         bool          // close the pre-queue now, unless it is closed
	Admit        uint64        // positions to admit; never more than the tickets waiting
	ExpireBefore time.Time     // forget batches admitted before this
	BatchWindow  time.Duration // admissions within this of the newest batch's start join it
	SoldOut      bool
	Rate         float64
	Remaining    int64
}

// Place is the answer to a join.
type Place struct {
	Number   uint64
	Epoch    uint64
	Existing bool // the user had joined before; this is their place
}

// Room keeps the shared state of drops' waiting rooms: counters, the compact
// per-person entries that make joining idempotent, and the lease that makes
// one node the leader of each room.
//
// Implementations are safe for concurrent use.
type Room interface {
	// Join gives a person a ticket number in the drop's room: a new one, or
	// the one they already have. person is a keyed hash of the user id,
	// never the id itself. A room that does not exist is created from fresh.
	Join(ctx context.Context, dropID string, person uint64, fresh RoomSeed) (Place, error)

	// Sync returns the room's state, creating the room from fresh if it does
	// not exist. If node is not empty, it takes or renews the room's leader
	// lease for lease and reports whether node holds it.
	Sync(ctx context.Context, dropID, node string, lease time.Duration, fresh RoomSeed) (RoomState, bool, error)

	// Advance applies a leader's step and returns the new state. ECONFLICT
	// if node does not hold the lease: nothing changed.
	Advance(ctx context.Context, dropID, node string, a Advance) (RoomState, error)

	// Find returns the place person holds in the drop's room without
	// issuing one; false if they have none (or the room does not exist).
	Find(ctx context.Context, dropID string, person uint64) (Place, bool, error)

	// Use counts a claim won by ticket number with an admission of batch
	// seq, and remembers that the ticket won. Batches that expired are not
	// counted; the ticket is remembered all the same.
	Use(ctx context.Context, dropID string, seq, number uint64) error

	// Won reports whether ticket number won a claim (Use).
	Won(ctx context.Context, dropID string, number uint64) (bool, error)
}
