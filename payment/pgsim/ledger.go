package pgsim

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/dibs-io/dibs/payment"
)

// Entry is the ledger's record of the charge under one idempotency key.
type Entry struct {
	payment.Charge
	// Attempts counts the charge requests under the key that the simulator
	// processed (applied or answered from the ledger), the first included.
	// Requests refused by overload or outage, and faulted requests that were
	// not applied, are not counted.
	Attempts int `json:"attempts"`
	// RefundKey is the Idempotency-Key of the refund that refunded the
	// charge, RefundAttempts the refund requests under it that reached the
	// charge, and RefundsRefused the refund requests under any other key,
	// refused because the charge was refunded already: a caller that asks
	// for a second refund of one charge shows up here.
	RefundKey      string    `json:"refund_key,omitempty"`
	RefundAttempts int       `json:"refund_attempts,omitempty"`
	RefundsRefused int       `json:"refunds_refused,omitempty"`
	UpdatedAt      time.Time `json:"updated_at"`
}

// ledger holds at most one charge per idempotency key. Every change happens
// under one mutex, so concurrent requests under one key cannot both charge.
type ledger struct {
	mu    sync.Mutex
	byKey map[string]*Entry
	order []*Entry // by creation
}

func newLedger() *ledger { return &ledger{byKey: make(map[string]*Entry)} }

// errMismatch: the key was charged before with a different request.
var errMismatch = errors.New("idempotency key reused with a different request")

// charge records a charge under key, unless one exists, and returns the
// charge under key and whether this call created it. decline and reason
// decide the outcome of a new charge. errMismatch if the existing charge was
// asked with a different request.
func (l *ledger) charge(key string, req payment.ChargeRequest, decline bool, reason string, now time.Time) (payment.Charge, bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.byKey[key]; ok {
		if e.Amount != req.Amount || e.Currency != req.Currency || e.Reference != req.Reference {
			return payment.Charge{}, false, errMismatch
		}
		e.Attempts++
		e.UpdatedAt = now
		return e.Charge, false, nil
	}
	e := &Entry{
		Charge: payment.Charge{
			Key:       key,
			Status:    payment.StatusPaid,
			Amount:    req.Amount,
			Currency:  req.Currency,
			Reference: req.Reference,
			ChargeID:  fmt.Sprintf("ch_%08d", len(l.order)+1),
			CreatedAt: now,
		},
		Attempts:  1,
		UpdatedAt: now,
	}
	if decline {
		e.Status = payment.StatusDeclined
		e.DeclineReason = reason
	}
	l.byKey[key] = e
	l.order = append(l.order, e)
	return e.Charge, true, nil
}

// Errors of ledger.refund.
var (
	errNoCharge      = errors.New("no charge under this key")
	errNotRefundable = errors.New("charge was declined; nothing to refund")
	errRefundedOther = errors.New("charge was refunded already, under another refund key")
)

// refund marks the paid charge under key refunded, under the refund's own
// idempotency key refundKey ("" when the caller sent none). It reports
// whether this call refunded it. Asking again under the same refund key (or
// none) returns the refunded charge as it is; asking under another one is a
// second refund of the charge, refused with errRefundedOther.
func (l *ledger) refund(key, refundKey string, now time.Time) (payment.Charge, bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.byKey[key]
	switch {
	case !ok:
		return payment.Charge{}, false, errNoCharge
	case e.Status == payment.StatusDeclined:
		return payment.Charge{}, false, errNotRefundable
	case e.Status == payment.StatusRefunded && refundKey != "" && e.RefundKey != "" && refundKey != e.RefundKey:
		e.RefundsRefused++
		return payment.Charge{}, false, errRefundedOther
	case e.Status == payment.StatusRefunded:
		e.RefundAttempts++
		return e.Charge, false, nil
	}
	e.Status = payment.StatusRefunded
	e.RefundedAt = now
	e.UpdatedAt = now
	e.RefundKey = refundKey
	e.RefundAttempts = 1
	return e.Charge, true, nil
}

func (l *ledger) get(key string) (payment.Charge, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.byKey[key]
	if !ok {
		return payment.Charge{}, false
	}
	return e.Charge, true
}

// entries returns a copy of every entry, oldest first.
func (l *ledger) entries() []Entry {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Entry, len(l.order))
	for i, e := range l.order {
		out[i] = *e
	}
	return out
}
