package engine

import (
	"context"
	"time"

	"github.com/dibs-io/dibs"
)

// SetAdmission changes a queued drop's pace: a fixed rate, or an auto pace
// between bounds. The mode and order of a drop never change. ECONFLICT for
// a drop that does not queue or is closed, EINVALID for a bad admission.
func (e *Engine) SetAdmission(ctx context.Context, id string, a dibs.Admission) (*dibs.Drop, error) {
	ent, err := e.entry(id)
	if err != nil {
		return nil, err
	}
	cur := ent.drop.Load()
	switch {
	case cur.Admission.Mode != dibs.AdmissionQueue:
		return nil, dibs.Errorf(dibs.ECONFLICT, "drop %s has no waiting room to pace", id)
	case cur.Status == dibs.StatusClosed:
		return nil, dibs.Errorf(dibs.ECONFLICT, "drop %s is closed for good", id)
	}
	a.Mode, a.Order = cur.Admission.Mode, cur.Admission.Order
	if err := a.Validate(); err != nil {
		return nil, err
	}
	now := e.now().UTC().Truncate(time.Microsecond)
	if err := e.store.SetDropAdmission(ctx, id, a, now); err != nil {
		return nil, err
	}
	next := *cur
	next.Admission, next.UpdatedAt = a, now
	ent.drop.Store(&next)
	return &next, nil
}

// SetPacedRate records the rate an auto-paced drop's waiting room chose,
// clamped to the drop's bounds. It changes nothing if an operator fixed
// the drop's rate meanwhile (on any node: the record decides).
func (e *Engine) SetPacedRate(ctx context.Context, id string, rate int) error {
	ent, err := e.entry(id)
	if err != nil {
		return err
	}
	now := e.now().UTC().Truncate(time.Microsecond)
	changed, err := e.store.SetPacedRate(ctx, id, rate, now)
	if err != nil || !changed {
		return err
	}
	cur := ent.drop.Load()
	if cur.Admission.Pace != dibs.PaceAuto {
		return nil // the next refresh reads the record
	}
	next := *cur
	next.Admission.Rate = min(max(rate, cur.Admission.MinRate), cur.Admission.MaxRate)
	next.UpdatedAt = now
	ent.drop.Store(&next)
	return nil
}
