package dibs

import (
	"context"
	"time"
)

// The services below are what the HTTP API (and any other front end) asks
// of a dibs node. engine implements DropService and ClaimService, room
// implements QueueService, post implements PaymentService and JobService;
// cmd/dibs wires them. Each method's errors are dibs errors (ErrorCode).

// DropService creates, shows and steers drops.
type DropService interface {
	// CreateDrop fills d's defaults, validates it, records it and opens
	// it. EINVALID, ECONFLICT (id taken).
	CreateDrop(ctx context.Context, d *Drop) error
	// Drop returns the drop as this node serves it. ENOTFOUND if unknown.
	Drop(id string) (*Drop, error)
	// Drops returns every drop this node serves.
	Drops() []*Drop
	// View returns what anyone may see of the drop now.
	View(ctx context.Context, id string) (DropView, error)
	// Stats returns the drop's view with the record's claim counts and this
	// node's claim outcomes.
	Stats(ctx context.Context, id string) (DropStats, error)
	// SetStatus pauses, resumes or closes a drop; a closed drop stays
	// closed (ECONFLICT).
	SetStatus(ctx context.Context, id string, s Status) error
	// SetAdmission changes a queued drop's pace to a's (Rate, Pace,
	// MinRate, MaxRate; the mode and order stay) and returns the drop.
	// ECONFLICT for a drop that does not queue or is closed, EINVALID for
	// a bad admission, ENOTFOUND if unknown.
	SetAdmission(ctx context.Context, id string, a Admission) (*Drop, error)
	// Winners streams the drop's active claims in slot order.
	Winners(ctx context.Context, dropID string, fn func(*Claim) error) error
	// Ready reports whether the node's dependencies answer.
	Ready(ctx context.Context) error
}

// DropView is what anyone may see of a drop at a moment.
type DropView struct {
	Drop      *Drop
	State     State
	Remaining int64
}

// DropStats are the live numbers of a drop for operators.
type DropStats struct {
	DropView
	Claims      ClaimCounts      // from the record
	ClaimsTotal int64            // claim requests this node answered
	Outcomes    map[string]int64 // of those, by outcome
}

// ClaimRequest is one user's attempt to claim a slot of a drop.
type ClaimRequest struct {
	DropID         string
	UserID         string
	IdempotencyKey string
	Admission      string // the waiting room's admission, for queued drops
}

// ClaimService takes claims.
type ClaimService interface {
	// Claim asks for a slot and returns at once with the answer's first
	// half: losers get their error here (ESOLDOUT, ELIMIT, ECLOSED,
	// ENOTOPEN, EPAUSED, ENOTFOUND, EADMISSIONREQUIRED, EADMISSIONINVALID,
	// EUNAVAILABLE, EOVERLOADED), everyone else a Claiming whose Wait
	// returns the claim once it is durable. Between the two a caller may
	// give back what it holds (a share of the CPU): Wait needs none.
	Claim(ctx context.Context, req ClaimRequest) (Claiming, error)
	// FindClaim returns the claim id if userID owns it; ENOTFOUND
	// otherwise, so that nobody learns of other users' claims.
	FindClaim(ctx context.Context, id, userID string) (*Claim, error)
}

// Claiming is a won or retried claim on its way to the record.
type Claiming interface {
	// Wait returns the claim once it is durable; created is false when
	// the user already held it (a retry). EUNAVAILABLE or EOVERLOADED mean
	// it could not be recorded: nothing was won. Call it once.
	Wait(ctx context.Context) (c *Claim, created bool, err error)
}

// QueueService is the waiting room of queued drops. Its methods answer
// ECONFLICT for a drop that does not queue.
type QueueService interface {
	// Join gives userID a place in d's line, or the one they have.
	Join(ctx context.Context, d *Drop, userID string) (QueueStatus, error)
	// Verify checks a ticket token once; StatusOf reads where it stands,
	// as often as a stream wakes, without verifying it again.
	Verify(ctx context.Context, d *Drop, userID, ticket string) (HeldTicket, error)
	StatusOf(ctx context.Context, d *Drop, t HeldTicket) (QueueStatus, error)
	// Info returns the public state of d's room.
	Info(ctx context.Context, d *Drop) (QueueInfo, error)
	// Changed returns a channel closed when this node's view of the
	// drop's room changes.
	Changed(dropID string) <-chan struct{}
}

// HeldTicket is a verified ticket, with the room epoch it was verified in.
type HeldTicket struct {
	Ticket
	Epoch uint64
}

// QueueStatus is where a person stands in a drop's line.
type QueueStatus struct {
	Ticket   string // the ticket token (Join only)
	Existing bool   // Join only: the user had joined before
	Number   uint64
	State    QueueState
	// Position is the place in line (1: next) while waiting; 0 when it is
	// not known yet (a shuffled pre-queue before opening) or not waiting.
	Position  uint64
	ETA       time.Duration // until admission; negative when unknown
	PollAfter time.Duration // when to ask again; zero once the wait is over
	Admission string        // the admission token, when admitted
	Expires   time.Time     // when the admission expires
	Joined    uint64        // people who joined the room so far
	Remaining int64         // free slots when the room last looked
	Now       time.Time
}

// Ahead is the number of people in line before the holder.
func (st QueueStatus) Ahead() uint64 { return st.Position - min(st.Position, 1) }

// Terminal reports whether the wait is over for good.
func (st QueueStatus) Terminal() bool {
	switch st.State {
	case QueueSoldOut, QueueClosed, QueueExpired, QueueWon:
		return true
	}
	return false
}

// QueueInfo is the public state of a drop's waiting room.
type QueueInfo struct {
	Order      string
	Rate       int
	Opened     bool
	PreQueue   uint64 // tickets drawn in the shuffle (or kept in order)
	Joined     uint64
	Serving    uint64
	SoldOut    bool
	SeedDigest string // hex SHA-256 of the seed, from the start
	Seed       string // hex, once opened
	Measured   float64
}

// PaymentService takes the payment requests of held claims.
type PaymentService interface {
	// RequestPayment records that userID asks to pay the held claim and
	// has it charged. ENOTFOUND if the claim is not userID's; ECONFLICT
	// if it is not held or its hold ran out; EUNAVAILABLE if this node
	// cannot charge. Asking again returns the claim and charges nothing
	// more.
	RequestPayment(ctx context.Context, claimID, userID string) (*Claim, error)
}

// JobService shows and retries post-processing work.
type JobService interface {
	// JobCounts counts the drop's jobs by kind and state.
	JobCounts(ctx context.Context, dropID string) ([]JobCount, error)
	// FailedWebhooks lists webhook jobs that gave up ("" = every drop),
	// newest first, at most limit.
	FailedWebhooks(ctx context.Context, dropID string, limit int) ([]FailedJob, error)
	// Retry runs a failed webhook job again. ENOTFOUND if there is no
	// such failed job.
	Retry(ctx context.Context, jobID int64) error
}

// JobCount is how many of a drop's jobs of one kind are in one state.
type JobCount struct {
	Kind  string `json:"kind"`
	State string `json:"state"`
	Count int64  `json:"count"`
}

// FailedJob is a post-processing job that gave up.
type FailedJob struct {
	ID          int64     `json:"id"`
	Kind        string    `json:"kind"`
	ClaimID     string    `json:"claim_id"`
	DropID      string    `json:"drop_id"`
	Attempts    int       `json:"attempts"`
	LastError   string    `json:"last_error"`
	FinalizedAt time.Time `json:"finalized_at"`
}
