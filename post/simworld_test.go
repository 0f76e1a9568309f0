package post_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/riverqueue/river"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/payment"
	"github.com/dibs-io/dibs/post"
)

// This file is the simulated world the workers run in: the
// record with its job table, the gate, the payment gateway and the
// webhook receiver, all in memory, all driven by one seeded generator and
// one fake clock. sim_test.go schedules the events.
//
// Every call a worker makes into the world first yields to the scheduler
// (world.step), which may then run other events, resume other workers, or
// kill this one: the call and everything after it never happen, as if the
// process died there.

// Job states of the simulated job table, as River's.
const (
	jobAvailable = "available"
	jobRunning   = "running"
	jobCompleted = "completed"
	jobCancelled = "cancelled"
	jobDiscarded = "discarded"
)

type simJob struct {
	id          int64
	kind        string
	ref         post.ClaimRef
	state       string
	at          time.Time // when it may run next
	attempt     int
	maxAttempts int
	errors      int
	snoozes     int
	inFlight    int
}

type simClaim struct {
	dibs.Claim
	outbox bool
	drop   *simDrop

	// what the invariants track
	seen     dibs.ClaimState // the state at the last check
	released int             // slots the gate got back for it
	paid     int             // paid charges the gateway holds for it
}

// held reports whether the gate holds the claim's slot.
func (c *simClaim) held() bool { return c.drop.slots[c.Slot-1] == c.ID }

// simDrop is a drop with the gate's slots: the id of the claim holding
// each, "" if free.
type simDrop struct {
	*dibs.Drop
	slots []string
}

// charge is the gateway's ledger entry for one idempotency key.
type charge struct {
	payment.Charge
	claimID string // from the reference: which claim the money is for
	refunds int    // refunds the gateway made of it
}

type world struct {
	now    time.Time
	faults bool

	drops  []*simDrop
	claims map[string]*simClaim
	order  []*simClaim // oldest first
	jobs   []*simJob
	byKey  map[string]*simJob // kind + ":" + claim id

	// gateway
	ledger      map[string]*charge // by idempotency key
	keys        []string
	downTill    time.Time
	downMode    int
	declineRate float64 // of new charges, faults or not: a business outcome

	// receiver
	delivered  map[string]post.Notice // first delivery by notice id
	deliveries int

	codes map[string]string // coupon code → claim

	sched *sched
}

func newWorld(s *sched, start time.Time) *world {
	return &world{
		now:       start,
		claims:    make(map[string]*simClaim),
		byKey:     make(map[string]*simJob),
		ledger:    make(map[string]*charge),
		delivered: make(map[string]post.Notice),
		codes:     make(map[string]string),
		sched:     s,

		declineRate: 0.2,
	}
}

// chance reports true with probability p while faults are on.
func (w *world) chance(p float64) bool { return w.faults && w.sched.rng.Float64() < p }

func (w *world) step(what string) { w.sched.yield(what) }

func (w *world) drop(id string) *simDrop {
	for _, d := range w.drops {
		if d.ID == id {
			return d
		}
	}
	return nil
}

// enqueue inserts a job unless one of its kind for its claim exists, in any
// state (post.insertOpts: unique by args).
func (w *world) enqueue(kind string, c *simClaim, at time.Time) {
	key := kind + ":" + c.ID
	if w.byKey[key] != nil {
		return
	}
	j := &simJob{
		id: int64(len(w.jobs) + 1), kind: kind, ref: post.ClaimRef{ClaimID: c.ID, DropID: c.DropID},
		state: jobAvailable, at: at, maxAttempts: maxAttempts(kind),
	}
	w.jobs = append(w.jobs, j)
	w.byKey[key] = j
	w.sched.tracef("enqueue %s #%d at %s", key, j.id, w.clock(at))
}

func maxAttempts(kind string) int {
	var args interface{ InsertOpts() river.InsertOpts }
	switch kind {
	case post.KindChargePayment:
		args = post.ChargePaymentArgs{}
	case post.KindExpireHold:
		args = post.ExpireHoldArgs{}
	case post.KindNotifyWinner:
		args = post.NotifyWinnerArgs{}
	case post.KindPaymentFailed:
		args = post.PaymentFailedArgs{}
	case post.KindHoldExpired:
		args = post.HoldExpiredArgs{}
	case post.KindRefundPayment:
		args = post.RefundPaymentArgs{}
	case post.KindPaymentRefunded:
		args = post.PaymentRefundedArgs{}
	}
	return args.InsertOpts().MaxAttempts
}

func (w *world) clock(t time.Time) string { return t.Sub(simStart).String() }

// --- the record (post.Store) ---

type simStore struct{ w *world }

var errRecordDown = dibs.Errorf(dibs.EUNAVAILABLE, "sim: record unavailable")

// begin is the start of a transaction: a yield, then maybe a failure that
// applied nothing.
func (s simStore) begin(op, claimID string) error {
	s.w.step(op + " " + claimID)
	if s.w.chance(0.03) {
		s.w.sched.tracef("%s %s: record down", op, claimID)
		return errRecordDown
	}
	return nil
}

// commit ends a transaction that applied: its answer may still be lost.
func (s simStore) commit(op, claimID string) error {
	if s.w.chance(0.03) {
		s.w.sched.tracef("%s %s: committed, answer lost", op, claimID)
		return fmt.Errorf("sim: commit: %w", dibs.ErrOutcomeUnknown)
	}
	return nil
}

func (s simStore) claim(id string) (*simClaim, error) {
	c := s.w.claims[id]
	if c == nil {
		return nil, dibs.Errorf(dibs.ENOTFOUND, "claim %s not found", id)
	}
	return c, nil
}

func (s simStore) FindDrop(ctx context.Context, id string) (*dibs.Drop, error) {
	if err := s.begin("find-drop", id); err != nil {
		return nil, err
	}
	d := s.w.drop(id)
	if d == nil {
		return nil, dibs.Errorf(dibs.ENOTFOUND, "drop %s not found", id)
	}
	cp := *d.Drop
	return &cp, nil
}

func (s simStore) FindClaim(ctx context.Context, id string) (*dibs.Claim, error) {
	if err := s.begin("find-claim", id); err != nil {
		return nil, err
	}
	c, err := s.claim(id)
	if err != nil {
		return nil, err
	}
	cp := c.Claim
	return &cp, nil
}

// PumpOutbox moves flagged claims on as post.Pump.Next says, in one
// transaction: a code another claim has fails it whole, as the record's
// unique index does.
func (s simStore) PumpOutbox(ctx context.Context, limit int, p post.Pump) (int, error) {
	if err := s.begin("pump", ""); err != nil {
		return 0, err
	}
	type move struct {
		c    *simClaim
		code string
		job  post.JobParams
		ok   bool
	}
	var moves []move
	drawn := map[string]bool{}
	for _, c := range s.w.order {
		if !c.outbox || len(moves) == limit {
			continue
		}
		code, job, ok, err := p.Next(post.Pumped{
			Ref:   post.ClaimRef{ClaimID: c.ID, DropID: c.DropID},
			State: c.State, HoldExpiresAt: c.HoldExpiresAt, HasCode: c.CouponCode != "",
		})
		if err != nil {
			return 0, err
		}
		if code != "" && (s.w.codes[code] != "" || drawn[code]) {
			return 0, dibs.Errorf(dibs.ECONFLICT, "coupon code %s is taken", code)
		}
		drawn[code] = true
		moves = append(moves, move{c, code, job, ok})
	}
	for _, m := range moves {
		if m.code != "" {
			s.w.codes[m.code] = m.c.ID
			m.c.CouponCode, m.c.UpdatedAt = m.code, p.Now
			s.w.sched.tracef("coupon %s = %s", m.c.ID, m.code)
		}
		if m.ok {
			at := s.w.now
			if !m.job.ScheduledAt.IsZero() {
				at = m.job.ScheduledAt
			}
			s.w.enqueue(m.job.Kind, m.c, at)
		}
		m.c.outbox = false
	}
	return len(moves), s.commit("pump", "")
}

func (s simStore) RequestPayment(ctx context.Context, claimID string, now time.Time) (*dibs.Claim, bool, error) {
	if err := s.begin("request-payment", claimID); err != nil {
		return nil, false, err
	}
	c, err := s.claim(claimID)
	if err != nil {
		return nil, false, err
	}
	changed := c.State == dibs.ClaimHeld && c.PayRequestedAt.IsZero() && now.Before(c.HoldExpiresAt)
	if changed {
		c.PayRequestedAt, c.UpdatedAt = now, now
		s.w.enqueue(post.KindChargePayment, c, now)
	}
	cp := c.Claim
	return &cp, changed, s.commit("request-payment", claimID)
}

func (s simStore) SettlePayment(ctx context.Context, claimID string, paid bool, now time.Time) (*dibs.Claim, bool, error) {
	if err := s.begin("settle", claimID); err != nil {
		return nil, false, err
	}
	c, err := s.claim(claimID)
	if err != nil {
		return nil, false, err
	}
	changed := c.State == dibs.ClaimHeld
	if changed {
		c.UpdatedAt = now
		if paid {
			c.State = dibs.ClaimPaid
			s.w.enqueue(post.KindNotifyWinner, c, now)
		} else {
			c.State = dibs.ClaimReleased
			s.w.enqueue(post.KindPaymentFailed, c, now)
		}
		s.w.sched.tracef("settled %s %s", claimID, c.State)
	}
	cp := c.Claim
	return &cp, changed, s.commit("settle", claimID)
}

func (s simStore) ExpireHold(ctx context.Context, claimID string, now time.Time) (*dibs.Claim, bool, error) {
	if err := s.begin("expire", claimID); err != nil {
		return nil, false, err
	}
	c, err := s.claim(claimID)
	if err != nil {
		return nil, false, err
	}
	changed := c.State == dibs.ClaimHeld && c.PayRequestedAt.IsZero() && !now.Before(c.HoldExpiresAt)
	if changed {
		c.State, c.UpdatedAt = dibs.ClaimExpired, now
		s.w.enqueue(post.KindHoldExpired, c, now)
		s.w.sched.tracef("expired %s", claimID)
	}
	cp := c.Claim
	return &cp, changed, s.commit("expire", claimID)
}

func (s simStore) ExpirePayment(ctx context.Context, claimID string, deadline, now time.Time) (*dibs.Claim, bool, error) {
	if err := s.begin("expire-payment", claimID); err != nil {
		return nil, false, err
	}
	c, err := s.claim(claimID)
	if err != nil {
		return nil, false, err
	}
	changed := c.State == dibs.ClaimHeld && !c.PayRequestedAt.IsZero() && !deadline.Before(c.HoldExpiresAt)
	if changed {
		c.State, c.UpdatedAt = dibs.ClaimExpired, now
		s.w.enqueue(post.KindHoldExpired, c, now)
		s.w.sched.tracef("expired %s with its payment pending", claimID)
	}
	cp := c.Claim
	return &cp, changed, s.commit("expire-payment", claimID)
}

func (s simStore) RecordLatePayment(ctx context.Context, claimID string, now time.Time) (*dibs.Claim, bool, error) {
	if err := s.begin("late-payment", claimID); err != nil {
		return nil, false, err
	}
	c, err := s.claim(claimID)
	if err != nil {
		return nil, false, err
	}
	changed := !c.State.Active() && c.LatePaidAt.IsZero()
	if changed {
		c.LatePaidAt = now
		s.w.enqueue(post.KindRefundPayment, c, now)
		s.w.sched.tracef("late payment %s (%s)", claimID, c.State)
	}
	cp := c.Claim
	return &cp, changed, s.commit("late-payment", claimID)
}

func (s simStore) RecordRefund(ctx context.Context, claimID string, now time.Time) (*dibs.Claim, bool, error) {
	if err := s.begin("record-refund", claimID); err != nil {
		return nil, false, err
	}
	c, err := s.claim(claimID)
	if err != nil {
		return nil, false, err
	}
	changed := !c.State.Active() && !c.LatePaidAt.IsZero() && c.RefundedAt.IsZero()
	if changed {
		c.RefundedAt = now
		s.w.enqueue(post.KindPaymentRefunded, c, now)
		s.w.sched.tracef("refund recorded %s", claimID)
	}
	cp := c.Claim
	return &cp, changed, s.commit("record-refund", claimID)
}

func (s simStore) JobCounts(ctx context.Context, dropID string) ([]dibs.JobCount, error) {
	return nil, errors.New("sim: no job counts")
}

// noJobs is the job client of a Runner that is never started.
func noJobs(*river.Config) (post.JobClient, error) {
	return nil, errors.New("sim: no River here")
}

// --- the gate (post.Releaser) ---

type simGate struct{ w *world }

var errGateDown = errors.New("sim: gate unavailable")

func (g simGate) ReleaseSlot(ctx context.Context, dropID, claimID string) (bool, error) {
	w := g.w
	w.step("release " + claimID)
	if w.chance(0.03) {
		w.sched.tracef("release %s: gate down", claimID)
		return false, errGateDown
	}
	c := w.claims[claimID]
	if c == nil || c.DropID != dropID || !c.held() {
		w.sched.tracef("release %s: no hold", claimID)
		return false, nil
	}
	c.drop.slots[c.Slot-1] = ""
	c.released++
	w.sched.tracef("release %s: slot back", claimID)
	if c.State.Active() {
		w.sched.failf("the gate got back the slot of claim %s while the record has it %s", claimID, c.State)
	}
	if w.chance(0.03) {
		w.sched.tracef("release %s: answer lost", claimID)
		return false, errGateDown
	}
	return true, nil
}

// --- the payment gateway (post.Payer) ---

type simPG struct{ w *world }

// Outage modes: how the gateway fails while it is down. None applies the
// request.
const (
	downUnavailable = iota // 503: refused before processing
	downCircuitOpen        // the client's breaker refuses to send
	downTimeout            // no answer; nothing applied
	downModes
)

func (p simPG) down() error {
	w := p.w
	if !w.now.Before(w.downTill) {
		return nil
	}
	switch w.downMode {
	case downUnavailable:
		return fmt.Errorf("sim: 503: %w", payment.ErrUnavailable)
	case downCircuitOpen:
		return payment.ErrCircuitOpen
	}
	return fmt.Errorf("sim: timeout: %w", payment.ErrOutcomeUnknown)
}

func (p simPG) Charge(ctx context.Context, key string, req payment.ChargeRequest) (*payment.Charge, error) {
	w := p.w
	w.step("charge " + key)
	if r := w.sched.cur; r != nil && w.now.Sub(r.began) > simJobTimeout {
		w.sched.tracef("charge %s: the run's context ended, not sent", key)
		return nil, context.DeadlineExceeded
	}
	if err := p.down(); err != nil {
		w.sched.tracef("charge %s: gateway down: %v", key, err)
		return nil, err
	}
	if err := req.Validate(); err != nil {
		return nil, err
	}
	switch {
	case w.chance(0.05):
		w.sched.tracef("charge %s: 429", key)
		return nil, fmt.Errorf("sim: 429: %w", payment.ErrUnavailable)
	case w.chance(0.08):
		w.sched.tracef("charge %s: timeout, not applied", key)
		return nil, fmt.Errorf("sim: timeout: %w", payment.ErrOutcomeUnknown)
	}
	ch := w.ledger[key]
	switch {
	case ch == nil:
		claimID := req.Reference[strings.LastIndexByte(req.Reference, '/')+1:]
		ch = &charge{claimID: claimID, Charge: payment.Charge{
			Key: key, Status: payment.StatusPaid, Amount: req.Amount, Currency: req.Currency,
			Reference: req.Reference, ChargeID: fmt.Sprintf("ch_%d", len(w.keys)+1), CreatedAt: w.now,
		}}
		if w.sched.rng.Float64() < w.declineRate {
			ch.Status, ch.DeclineReason = payment.StatusDeclined, "insufficient_funds"
		}
		w.ledger[key] = ch
		w.keys = append(w.keys, key)
		if c := w.claims[claimID]; c != nil && ch.Status == payment.StatusPaid {
			c.paid++
		}
		w.sched.tracef("charge %s: %s", key, ch.Status)
	case ch.Amount != req.Amount || ch.Currency != req.Currency || ch.Reference != req.Reference:
		return nil, fmt.Errorf("sim: 422: %w", payment.ErrConflict)
	default:
		w.sched.tracef("charge %s: replay, %s", key, ch.Status)
	}
	if w.chance(0.2) { // a slow answer: time passes while it travels
		w.now = w.now.Add(time.Duration(w.sched.rng.Int64N(int64(40 * time.Second))))
	}
	w.step("charge answer " + key)
	if w.chance(0.08) {
		w.sched.tracef("charge %s: applied, answer lost", key)
		return nil, fmt.Errorf("sim: reset: %w", payment.ErrOutcomeUnknown)
	}
	cp := ch.Charge
	return &cp, nil
}

func (p simPG) Lookup(ctx context.Context, key string) (*payment.Charge, error) {
	w := p.w
	w.step("lookup " + key)
	if err := p.down(); err != nil {
		return nil, err
	}
	if w.chance(0.05) {
		w.sched.tracef("lookup %s: timeout", key)
		return nil, fmt.Errorf("sim: timeout: %w", payment.ErrOutcomeUnknown)
	}
	ch := w.ledger[key]
	if ch == nil {
		w.sched.tracef("lookup %s: not found", key)
		return nil, fmt.Errorf("sim: 404: %w", payment.ErrNotFound)
	}
	w.sched.tracef("lookup %s: %s", key, ch.Status)
	cp := ch.Charge
	return &cp, nil
}

// Refund refunds the paid charge under key, as pgsim does under the
// refund key payment.RefundKey(key): once, then the same answer.
func (p simPG) Refund(ctx context.Context, key string) (*payment.Charge, error) {
	w := p.w
	w.step("refund " + key)
	if err := p.down(); err != nil {
		w.sched.tracef("refund %s: gateway down: %v", key, err)
		return nil, err
	}
	switch {
	case w.chance(0.05):
		w.sched.tracef("refund %s: 429", key)
		return nil, fmt.Errorf("sim: 429: %w", payment.ErrUnavailable)
	case w.chance(0.08):
		w.sched.tracef("refund %s: timeout, not applied", key)
		return nil, fmt.Errorf("sim: timeout: %w", payment.ErrOutcomeUnknown)
	}
	ch := w.ledger[key]
	switch {
	case ch == nil:
		return nil, fmt.Errorf("sim: 404: %w", payment.ErrNotFound)
	case ch.Status == payment.StatusDeclined:
		return nil, fmt.Errorf("sim: 409: %w", payment.ErrConflict)
	case ch.Status == payment.StatusPaid:
		ch.Status, ch.RefundedAt = payment.StatusRefunded, w.now
		ch.refunds++
		w.sched.tracef("refund %s: refunded", key)
		if c := w.claims[ch.claimID]; c != nil && c.State.Active() {
			w.sched.failf("the gateway refunded the charge of claim %s, which is %s", c.ID, c.State)
		}
	default:
		w.sched.tracef("refund %s: replay", key)
	}
	w.step("refund answer " + key)
	if w.chance(0.08) {
		w.sched.tracef("refund %s: applied, answer lost", key)
		return nil, fmt.Errorf("sim: reset: %w", payment.ErrOutcomeUnknown)
	}
	cp := ch.Charge
	return &cp, nil
}

// --- the webhook receiver (post.Notifier) ---

type simReceiver struct{ w *world }

func (r simReceiver) Notify(ctx context.Context, n post.Notice) error {
	w := r.w
	w.step("notify " + n.ID)
	switch {
	case w.chance(0.1):
		w.sched.tracef("notify %s: 502", n.ID)
		return errors.New("sim: 502 from the main service")
	case w.chance(0.02):
		w.sched.tracef("notify %s: 400", n.ID)
		return fmt.Errorf("sim: 400 from the main service: %w", post.ErrPermanent)
	}
	w.deliveries++
	kind, claimID, _ := strings.Cut(n.ID, ":")
	data, ok := n.Data.(post.ClaimNotice)
	switch {
	case !ok || kind != n.Type || data.ClaimID != claimID:
		w.sched.failf("notice %s is malformed: %+v", n.ID, n)
	case w.delivered[n.ID].ID == "":
		w.delivered[n.ID] = n
	case !reflect.DeepEqual(w.delivered[n.ID], n):
		w.sched.failf("notice %s delivered twice with different contents: %+v, then %+v", n.ID, w.delivered[n.ID], n)
	}
	w.sched.tracef("notify %s: delivered", n.ID)
	if w.chance(0.1) {
		w.sched.tracef("notify %s: delivered, answer lost", n.ID)
		return errors.New("sim: connection reset")
	}
	return nil
}
