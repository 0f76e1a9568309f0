// Package post is what happens after a win: coupons are issued, holds are
// paid or expire, declined payments give their slot back, money the payment
// gateway took after a claim had ended is refunded, and the operator's main
// service is told by signed webhooks. Every step is a durable job
// (River) enqueued in the same transaction as the claim change that calls
// for it, run at least once, with handlers made idempotent by the claim id.
//
// The claim row is its own outbox entry: the recorder writes a new claim with
// its outbox flag set and nothing else, so the group commit of winners writes
// one row per claim and nothing more. A pump then takes flagged claims in batches and, in one
// transaction per batch, gives each coupon claim its code (and queues its
// notify_winner), queues each hold's expiry, and clears the flags. Every
// later change (a payment request, a settled payment, an expired hold) is a
// conditional update of the claim and the insert of its follow-up jobs,
// committed together.
//
// Claims come first: while the recorder is busy with group commits, the
// pump moves one batch a second at most (Config.Busy), and catches up as
// soon as the spike leaves the record idle. The outbox is durable, so what
// waits is never lost.
//
// The stores (sqlite, postgres) implement Store and enqueue the jobs it
// describes (JobParams) with River in their own transactions; this package
// holds the job kinds, the workers, the limits toward each downstream, and
// the rule of payment requests (Payments).
//
// Runner runs the workers, one River queue per downstream (the payment
// gateway, the record, the operator's main service), each with its own
// concurrency and rate limit (DefaultLimits), and the pump. A run may repeat (delivery is at least once) or die between any two
// calls, so every worker keeps three rules:
//
//   - the record first, then the world: a slot goes back to the gate only
//     after the record says the claim is released or expired, and every run
//     that finds such a claim gives the slot back again (ReleaseSlot is
//     idempotent), which finishes the work of a run that died in between;
//   - a payment is charged under the claim id, and every run after the
//     first looks the key up at the gateway before charging; a refund is
//     asked under payment.RefundKey of the claim id, and only for a claim
//     that ended (the record's update that enqueues it says so);
//   - a webhook notice carries the same ID on every delivery.
//
// The operator's kill switches (Config.Switches) stop the payments and the
// webhooks without losing either: the jobs they hold snooze, spending no
// attempt, until the switch is on again (switch.go).
//
// The deterministic simulation in sim_test.go runs the real
// workers against faults injected between any two of their calls and
// checks these rules after every event; a failure prints its seed, and
// `go test ./post -run 'TestSim$' -seed N` replays it with its trace.
package post

import (
	"context"
	"fmt"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/dibs-io/dibs"
)

// Job kinds. They are River job kinds and appear in the admin API. A coupon
// is not a job of its own: the outbox pump issues codes in batches.
const (
	KindChargePayment = "charge_payment" // purchase drops: charge the payment gateway
	KindExpireHold    = "expire_hold"    // purchase drops: release an unpaid hold at its deadline
	KindNotifyWinner  = "notify_winner"  // webhook: a coupon was issued or a hold was paid
	KindPaymentFailed = "payment_failed" // webhook: a payment was declined, the slot released
	KindHoldExpired   = "hold_expired"   // webhook: a hold ran out unpaid, the slot released

	// KindRefundPayment: purchase drops: give back money the gateway took
	// for a claim that had ended (released or expired) by then.
	KindRefundPayment = "refund_payment"
	// KindPaymentRefunded: webhook: that money was given back.
	KindPaymentRefunded = "payment_refunded"
)

// WebhookKinds are the job kinds that call the operator's main service.
var WebhookKinds = []string{KindNotifyWinner, KindPaymentFailed, KindHoldExpired, KindPaymentRefunded}

// Queues: the jobs toward one downstream run in one River queue, whose
// limits (Limit) are that downstream's.
const (
	QueueCharge  = KindChargePayment // the payment gateway: charges and refunds
	QueueExpire  = KindExpireHold    // the record
	QueueWebhook = "webhook"         // the operator's main service: every webhook kind
)

// Queues are all queues.
var Queues = []string{QueueCharge, QueueExpire, QueueWebhook}

// QueueOf is the queue of a job kind.
func QueueOf(kind string) string {
	switch kind {
	case KindNotifyWinner, KindPaymentFailed, KindHoldExpired, KindPaymentRefunded:
		return QueueWebhook
	case KindRefundPayment:
		return QueueCharge
	}
	return kind
}

// ClaimRef is what every job carries: the claim it is about. Everything
// else is read from the record when the job runs, so a job never acts on a
// stale copy.
type ClaimRef struct {
	ClaimID string `json:"claim_id"`
	DropID  string `json:"drop_id"`
}

// The arguments of each job kind (river.JobArgs).
type (
	ChargePaymentArgs   struct{ ClaimRef }
	ExpireHoldArgs      struct{ ClaimRef }
	NotifyWinnerArgs    struct{ ClaimRef }
	PaymentFailedArgs   struct{ ClaimRef }
	HoldExpiredArgs     struct{ ClaimRef }
	RefundPaymentArgs   struct{ ClaimRef }
	PaymentRefundedArgs struct{ ClaimRef }
)

func (ChargePaymentArgs) Kind() string   { return KindChargePayment }
func (ExpireHoldArgs) Kind() string      { return KindExpireHold }
func (NotifyWinnerArgs) Kind() string    { return KindNotifyWinner }
func (PaymentFailedArgs) Kind() string   { return KindPaymentFailed }
func (HoldExpiredArgs) Kind() string     { return KindHoldExpired }
func (RefundPaymentArgs) Kind() string   { return KindRefundPayment }
func (PaymentRefundedArgs) Kind() string { return KindPaymentRefunded }

// Pumped is what the outbox pump does with one flagged claim, as a store
// reads it.
type Pumped struct {
	Ref           ClaimRef
	State         dibs.ClaimState
	HoldExpiresAt time.Time
	HasCode       bool // it has a coupon code already
}

// Pump is how PumpOutbox moves claims on.
type Pump struct {
	// Now stamps the claims given a code.
	Now time.Time
	// NewCode draws a coupon code.
	NewCode func() (string, error)
	// Notify queues notify_winner for each coupon issued: there is an
	// endpoint to tell. Without one no job is queued per coupon.
	Notify bool
}

// JobParams describe a job a store enqueues in the transaction of the
// claim change that calls for it. Its kind sets everything else: its queue,
// attempts and priority, and that it is unique by kind and claim (a job
// enqueued again while one exists adds nothing).
type JobParams struct {
	Kind  string
	Claim ClaimRef
	// ScheduledAt is when the job may run first; zero: at once.
	ScheduledAt time.Time
}

// Next says what the pump does with a flagged claim: code is the coupon
// code to give it ("" for none), job the job to queue with it, if ok. A
// confirmed (coupon) claim gets a code and, with Notify, notify_winner; a
// hold gets its expiry at its deadline; a claim that left those states
// before the pump reached it gets nothing.
func (p Pump) Next(c Pumped) (code string, job JobParams, ok bool, err error) {
	switch c.State {
	case dibs.ClaimConfirmed:
		if c.HasCode {
			return "", JobParams{}, false, nil
		}
		if code, err = p.NewCode(); err != nil {
			return "", JobParams{}, false, fmt.Errorf("new coupon code: %w", err)
		}
		if p.Notify {
			return code, JobParams{Kind: KindNotifyWinner, Claim: c.Ref}, true, nil
		}
		return code, JobParams{}, false, nil
	case dibs.ClaimHeld:
		return "", JobParams{Kind: KindExpireHold, Claim: c.Ref, ScheduledAt: c.HoldExpiresAt}, true, nil
	}
	return "", JobParams{}, false, nil
}

// Settled is where SettlePayment moves a held claim and the kind of the
// job that follows: paid and notify_winner, or released and
// payment_failed.
func Settled(paid bool) (dibs.ClaimState, string) {
	if paid {
		return dibs.ClaimPaid, KindNotifyWinner
	}
	return dibs.ClaimReleased, KindPaymentFailed
}

// InsertManyParams are River's parameters for inserting jobs: each kind's
// args, whose InsertOpts give its queue, attempts, priority and uniqueness,
// and the job's scheduled time. The stores' River inserters use it inside
// their own transactions.
func InsertManyParams(jobs []JobParams) ([]river.InsertManyParams, error) {
	out := make([]river.InsertManyParams, 0, len(jobs))
	for _, j := range jobs {
		args, err := jobArgs(j.Kind, j.Claim)
		if err != nil {
			return nil, err
		}
		p := river.InsertManyParams{Args: args}
		if !j.ScheduledAt.IsZero() {
			p.InsertOpts = &river.InsertOpts{ScheduledAt: j.ScheduledAt}
		}
		out = append(out, p)
	}
	return out, nil
}

// jobArgs are the River args of a job kind.
func jobArgs(kind string, ref ClaimRef) (river.JobArgs, error) {
	switch kind {
	case KindChargePayment:
		return ChargePaymentArgs{ref}, nil
	case KindExpireHold:
		return ExpireHoldArgs{ref}, nil
	case KindNotifyWinner:
		return NotifyWinnerArgs{ref}, nil
	case KindPaymentFailed:
		return PaymentFailedArgs{ref}, nil
	case KindHoldExpired:
		return HoldExpiredArgs{ref}, nil
	case KindRefundPayment:
		return RefundPaymentArgs{ref}, nil
	case KindPaymentRefunded:
		return PaymentRefundedArgs{ref}, nil
	}
	return nil, fmt.Errorf("unknown job kind %q", kind)
}

// Attempts per job kind before River discards a job. A payment (or a
// refund: RefundPaymentArgs) is never abandoned while its outcome is unknown (a gateway that is down snoozes
// the job, which costs no attempt); a webhook that still fails after
// WebhookAttempts is discarded and listed in the admin API for a retry.
const (
	ChargeAttempts  = 1000
	WebhookAttempts = 20
	JobAttempts     = 25 // expire_hold
)

// Priorities within a queue (River runs 1 first): the notices of failures
// are rare, and never wait behind a sold-out drop's winners.
const (
	priorityFirst  = 1
	priorityNormal = 2
)

// A job is unique by kind and claim: enqueuing it again while one exists
// (River leaves cancelled and discarded jobs out) adds nothing.
func insertOpts(kind string, attempts, priority int) river.InsertOpts {
	return river.InsertOpts{
		Queue:       QueueOf(kind),
		MaxAttempts: attempts,
		Priority:    priority,
		UniqueOpts:  river.UniqueOpts{ByArgs: true},
	}
}

func (ChargePaymentArgs) InsertOpts() river.InsertOpts {
	return insertOpts(KindChargePayment, ChargeAttempts, priorityNormal)
}
func (ExpireHoldArgs) InsertOpts() river.InsertOpts {
	return insertOpts(KindExpireHold, JobAttempts, priorityNormal)
}
func (NotifyWinnerArgs) InsertOpts() river.InsertOpts {
	return insertOpts(KindNotifyWinner, WebhookAttempts, priorityNormal)
}
func (PaymentFailedArgs) InsertOpts() river.InsertOpts {
	return insertOpts(KindPaymentFailed, WebhookAttempts, priorityFirst)
}
func (HoldExpiredArgs) InsertOpts() river.InsertOpts {
	return insertOpts(KindHoldExpired, WebhookAttempts, priorityFirst)
}

// A refund goes before the charges of its queue: it is rare, and it is
// money the customer is owed.
func (RefundPaymentArgs) InsertOpts() river.InsertOpts {
	return insertOpts(KindRefundPayment, ChargeAttempts, priorityFirst)
}
func (PaymentRefundedArgs) InsertOpts() river.InsertOpts {
	return insertOpts(KindPaymentRefunded, WebhookAttempts, priorityFirst)
}

// Store is what post-processing needs of the system of record. Each method
// that changes a claim does so with an update conditional on the claim's
// current state and enqueues the follow-up jobs in the same transaction, so
// a change and its consequences commit together or not at all; calling a
// method again after it succeeded changes nothing and enqueues nothing. The
// jobs are described by JobParams; each store enqueues them through its own
// job queue (River, in the store's database).
type Store interface {
	// FindDrop and FindClaim read the record, as in dibs.Store.
	FindDrop(ctx context.Context, id string) (*dibs.Drop, error)
	FindClaim(ctx context.Context, id string) (*dibs.Claim, error)

	// PumpOutbox moves up to limit claims whose outbox flag is set on to
	// what follows a win, as p.Next says (a coupon code and its
	// notify_winner; a hold's expire_hold at its deadline), and clears
	// their flags, in one transaction, oldest claims first. It returns how
	// many claims it handled. A code that another claim has already fails
	// the call (ECONFLICT) and leaves every flag set: the next call draws
	// new codes.
	PumpOutbox(ctx context.Context, limit int, p Pump) (int, error)

	// RequestPayment records that the owner of the held claim asked to
	// pay it at now and enqueues charge_payment, if the claim is held, its
	// owner has not asked before and its hold runs out after now. changed
	// is false, and nothing is enqueued, in any other situation. ENOTFOUND
	// if there is no such claim. Whose claim it is and whether it may be
	// paid is Payments's to say.
	RequestPayment(ctx context.Context, claimID string, now time.Time) (c *dibs.Claim, changed bool, err error)

	// SettlePayment ends the payment of a held claim: paid moves it to
	// paid and enqueues notify_winner; declined moves it to released and
	// enqueues payment_failed. changed is false, and nothing is enqueued,
	// if the claim was not held any more.
	SettlePayment(ctx context.Context, claimID string, paid bool, now time.Time) (c *dibs.Claim, changed bool, err error)

	// ExpireHold moves a held claim whose hold ran out by now and whose
	// owner never asked to pay to expired, and enqueues hold_expired.
	// changed is false if the claim was in any other situation.
	ExpireHold(ctx context.Context, claimID string, now time.Time) (c *dibs.Claim, changed bool, err error)

	// ExpirePayment moves a held claim whose owner asked to pay, whose
	// payment has not settled and whose hold ran out by deadline (now
	// minus the payment grace, Config.PaymentGrace) to expired, and
	// enqueues hold_expired. changed is false if the claim was in any other
	// situation. A charge that the gateway applies after this is money
	// taken late: RecordLatePayment.
	ExpirePayment(ctx context.Context, claimID string, deadline, now time.Time) (c *dibs.Claim, changed bool, err error)

	// RecordLatePayment records that the gateway holds a paid charge for a
	// claim that has ended (released or expired) and enqueues
	// refund_payment. changed is false, and nothing is enqueued, if the
	// claim is live (held, paid, confirmed): the charge of a live claim is
	// never refunded; or if its late payment was recorded already. It does
	// not change the claim's UpdatedAt, which dates the claim's state and
	// its notices.
	RecordLatePayment(ctx context.Context, claimID string, now time.Time) (c *dibs.Claim, changed bool, err error)

	// RecordRefund records that the late payment of an ended claim was
	// refunded and enqueues payment_refunded. changed is false, and
	// nothing is enqueued, if the claim is live, has no late payment
	// recorded, or was recorded refunded already.
	RecordRefund(ctx context.Context, claimID string, now time.Time) (c *dibs.Claim, changed bool, err error)

	// JobCounts counts the drop's jobs by kind and state, ordered by
	// both.
	JobCounts(ctx context.Context, dropID string) ([]dibs.JobCount, error)
}

// JobCount is dibs.JobCount.
//
// Deprecated: use dibs.JobCount.
type JobCount = dibs.JobCount

// JobClientFunc returns a River client over a store's database, configured
// by cfg, for the Runner to start; each store package has one
// (sqlite.NewJobClient, postgres.NewJobClient) that cmd/dibs wires.
type JobClientFunc func(cfg *river.Config) (JobClient, error)

// JobClient is the part of a *river.Client the Runner uses, whatever the
// database driver.
type JobClient interface {
	Start(ctx context.Context) error
	Stop(ctx context.Context) error
	JobList(ctx context.Context, params *river.JobListParams) (*river.JobListResult, error)
	JobRetry(ctx context.Context, id int64) (*rivertype.JobRow, error)
}
