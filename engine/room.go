package engine

import (
	"context"

	"github.com/dibs-io/dibs"
)

// What the waiting rooms read of the engine's drops (room.Source).

// Remaining is the number of free slots of a drop, from the gate.
func (e *Engine) Remaining(ctx context.Context, dropID string) (int64, error) {
	if _, err := e.entry(dropID); err != nil {
		return 0, err
	}
	return e.gate.Remaining(ctx, dropID)
}

// Returning is the number of a drop's held slots that may still come
// back: the unpaid holds of a purchase drop, counted in the record. The
// wins of a coupon drop are final, so it has none.
func (e *Engine) Returning(ctx context.Context, d *dibs.Drop) (int64, error) {
	if d.Kind != dibs.KindPurchase {
		return 0, nil
	}
	c, err := e.store.CountClaims(ctx, d.ID)
	if err != nil {
		return 0, err
	}
	return c.Held, nil
}
