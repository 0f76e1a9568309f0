package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/post"
)

var _ post.Store = (*Store)(nil)

// inTx runs fn in a transaction on the writer connection and commits it
// if fn returns nil. The transaction takes the write lock at BEGIN
// (_txlock=immediate), so what fn reads cannot change before it writes.
func (s *Store) inTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", translate(err))
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", translate(err))
	}
	return nil
}

// PumpOutbox implements post.Store. It takes the oldest flagged claims
// through claims_outbox, clears their flags, gives the coupon claims among
// them their codes (through claims_pkey; claims_coupon_code refuses a code
// another claim has) and enqueues their jobs, in one transaction.
func (s *Store) PumpOutbox(ctx context.Context, limit int, p post.Pump) (int, error) {
	if limit <= 0 {
		return 0, nil
	}
	var n int
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `UPDATE claims SET outbox = 0
			WHERE id IN (SELECT id FROM claims WHERE outbox = 1 ORDER BY id LIMIT ?)
			RETURNING id, drop_id, state, hold_expires_at, coupon_code IS NOT NULL`, limit)
		if err != nil {
			return translate(err)
		}
		defer rows.Close()
		var pumped []post.Pumped
		for rows.Next() {
			var (
				c     post.Pumped
				state string
				hold  sql.NullInt64
			)
			if err := rows.Scan(&c.Ref.ClaimID, &c.Ref.DropID, &state, &hold, &c.HasCode); err != nil {
				return err
			}
			c.State, c.HoldExpiresAt = dibs.ClaimState(state), fromNullMicros(hold)
			pumped = append(pumped, c)
		}
		if err := rows.Err(); err != nil {
			return translate(err)
		}
		rows.Close()
		n = len(pumped)
		var jobs []post.JobParams
		var setCode *sql.Stmt
		for _, c := range pumped {
			code, job, ok, err := p.Next(c)
			if err != nil {
				return err
			}
			if code != "" {
				if setCode == nil {
					if setCode, err = tx.PrepareContext(ctx, `UPDATE claims SET coupon_code = ?, updated_at = ?
						WHERE id = ? AND coupon_code IS NULL`); err != nil {
						return translate(err)
					}
					defer setCode.Close()
				}
				if _, err := setCode.ExecContext(ctx, code, micros(p.Now), c.Ref.ClaimID); err != nil {
					return fmt.Errorf("issue coupon: %w", translate(err))
				}
			}
			if ok {
				jobs = append(jobs, job)
			}
		}
		return s.insertJobs(ctx, tx, jobs...)
	})
	if err != nil {
		return 0, fmt.Errorf("pump outbox: %w", err)
	}
	return n, nil
}

// findClaimTx reads claim id inside tx. ENOTFOUND if there is none.
func findClaimTx(ctx context.Context, tx *sql.Tx, id string) (*dibs.Claim, error) {
	c, err := scanClaim(tx.QueryRowContext(ctx, `SELECT `+claimFields+` FROM claims WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, dibs.Errorf(dibs.ENOTFOUND, "claim %s not found", id)
	} else if err != nil {
		return nil, translate(err)
	}
	return c, nil
}

// transition runs update (an UPDATE ... RETURNING the claim's fields,
// conditional on its state) in a transaction and, when it changed the
// claim, enqueues a job of kind then. When it did not, the claim is
// returned as it is. ENOTFOUND if there is no claim id.
func (s *Store) transition(ctx context.Context, id, update string, args []any, then string) (c *dibs.Claim, changed bool, err error) {
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		c, err = scanClaim(tx.QueryRowContext(ctx, update, args...))
		switch {
		case errors.Is(err, sql.ErrNoRows):
			c, err = findClaimTx(ctx, tx, id)
			return err
		case err != nil:
			return translate(err)
		}
		changed = true
		return s.insertJobs(ctx, tx, post.JobParams{Kind: then, Claim: post.ClaimRef{ClaimID: c.ID, DropID: c.DropID}})
	})
	if err != nil {
		return nil, false, err
	}
	return c, changed, nil
}

// RequestPayment implements post.Store. It updates through claims_pkey.
func (s *Store) RequestPayment(ctx context.Context, claimID string, now time.Time) (*dibs.Claim, bool, error) {
	c, changed, err := s.transition(ctx, claimID, `UPDATE claims SET pay_requested_at = ?, updated_at = ?
		WHERE id = ? AND state = 'held' AND pay_requested_at IS NULL AND hold_expires_at > ?
		RETURNING `+claimFields, []any{micros(now), micros(now), claimID, micros(now)}, post.KindChargePayment)
	if err != nil {
		return nil, false, fmt.Errorf("request payment: %w", err)
	}
	return c, changed, nil
}

// SettlePayment implements post.Store. It updates through claims_pkey.
func (s *Store) SettlePayment(ctx context.Context, claimID string, paid bool, now time.Time) (*dibs.Claim, bool, error) {
	state, then := post.Settled(paid)
	c, changed, err := s.transition(ctx, claimID, `UPDATE claims SET state = ?, updated_at = ?
		WHERE id = ? AND state = 'held'
		RETURNING `+claimFields, []any{string(state), micros(now), claimID}, then)
	if err != nil {
		return nil, false, fmt.Errorf("settle payment: %w", err)
	}
	return c, changed, nil
}

// ExpireHold implements post.Store. It updates through claims_pkey.
func (s *Store) ExpireHold(ctx context.Context, claimID string, now time.Time) (*dibs.Claim, bool, error) {
	c, changed, err := s.transition(ctx, claimID, `UPDATE claims SET state = 'expired', updated_at = ?
		WHERE id = ? AND state = 'held' AND pay_requested_at IS NULL AND hold_expires_at <= ?
		RETURNING `+claimFields, []any{micros(now), claimID, micros(now)}, post.KindHoldExpired)
	if err != nil {
		return nil, false, fmt.Errorf("expire hold: %w", err)
	}
	return c, changed, nil
}

// ExpirePayment implements post.Store. It updates through claims_pkey.
func (s *Store) ExpirePayment(ctx context.Context, claimID string, deadline, now time.Time) (*dibs.Claim, bool, error) {
	c, changed, err := s.transition(ctx, claimID, `UPDATE claims SET state = 'expired', updated_at = ?
		WHERE id = ? AND state = 'held' AND pay_requested_at IS NOT NULL AND hold_expires_at <= ?
		RETURNING `+claimFields, []any{micros(now), claimID, micros(deadline)}, post.KindHoldExpired)
	if err != nil {
		return nil, false, fmt.Errorf("expire payment: %w", err)
	}
	return c, changed, nil
}

// RecordLatePayment implements post.Store. It updates through claims_pkey;
// the condition on the state is what keeps a live claim's charge from ever
// being refunded.
func (s *Store) RecordLatePayment(ctx context.Context, claimID string, now time.Time) (*dibs.Claim, bool, error) {
	c, changed, err := s.transition(ctx, claimID, `UPDATE claims SET late_paid_at = ?
		WHERE id = ? AND state IN ('released', 'expired') AND late_paid_at IS NULL
		RETURNING `+claimFields, []any{micros(now), claimID}, post.KindRefundPayment)
	if err != nil {
		return nil, false, fmt.Errorf("record late payment: %w", err)
	}
	return c, changed, nil
}

// RecordRefund implements post.Store. It updates through claims_pkey.
func (s *Store) RecordRefund(ctx context.Context, claimID string, now time.Time) (*dibs.Claim, bool, error) {
	c, changed, err := s.transition(ctx, claimID, `UPDATE claims SET refunded_at = ?
		WHERE id = ? AND state IN ('released', 'expired') AND late_paid_at IS NOT NULL AND refunded_at IS NULL
		RETURNING `+claimFields, []any{micros(now), claimID}, post.KindPaymentRefunded)
	if err != nil {
		return nil, false, fmt.Errorf("record refund: %w", err)
	}
	return c, changed, nil
}
