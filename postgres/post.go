package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/post"
)

var _ post.Store = (*Store)(nil)

// inTx runs fn in a transaction on a connection of pool and commits it if
// fn returns nil. A COMMIT that fails leaves the outcome unknown; every
// caller's change is conditional on the claim's state, so running it again
// is safe.
func (s *Store) inTx(ctx context.Context, pool *pgxpool.Pool, fn func(tx pgx.Tx) error) error {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", s.failed(ctx, err))
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", s.failed(ctx, err))
	}
	return nil
}

// PumpOutbox implements post.Store. It takes the oldest flagged claims
// through claims_outbox, skipping those another node's pump has locked,
// clears their flags, gives the coupon claims among them their codes in one
// statement (through claims_pkey; claims_coupon_code refuses a code another
// claim has) and enqueues their jobs, in one transaction on the background
// pool.
func (s *Store) PumpOutbox(ctx context.Context, limit int, p post.Pump) (int, error) {
	if limit <= 0 {
		return 0, nil
	}
	var n int
	err := s.inTx(ctx, s.background, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `UPDATE claims c SET outbox = false
			FROM (SELECT id FROM claims WHERE outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) p
			WHERE c.id = p.id
			RETURNING c.id, c.drop_id, c.state, c.hold_expires_at, c.coupon_code IS NOT NULL`, limit)
		if err != nil {
			return s.failed(ctx, err)
		}
		var pumped []post.Pumped
		for rows.Next() {
			var (
				c     post.Pumped
				state string
				hold  pgtype.Timestamptz
			)
			if err := rows.Scan(&c.Ref.ClaimID, &c.Ref.DropID, &state, &hold, &c.HasCode); err != nil {
				rows.Close()
				return err
			}
			c.State, c.HoldExpiresAt = dibs.ClaimState(state), fromNullTime(hold)
			pumped = append(pumped, c)
		}
		if err := rows.Err(); err != nil {
			return s.failed(ctx, err)
		}
		n = len(pumped)
		var (
			jobs       []post.JobParams
			ids, codes []string
		)
		for _, c := range pumped {
			code, job, ok, err := p.Next(c)
			if err != nil {
				return err
			}
			if code != "" {
				ids, codes = append(ids, c.Ref.ClaimID), append(codes, code)
			}
			if ok {
				jobs = append(jobs, job)
			}
		}
		if len(ids) > 0 {
			_, err := tx.Exec(ctx, `UPDATE claims c SET coupon_code = v.code, updated_at = $3
				FROM unnest($1::text[], $2::text[]) AS v (id, code)
				WHERE c.id = v.id AND c.coupon_code IS NULL`, ids, codes, p.Now)
			if err != nil {
				return fmt.Errorf("issue coupons: %w", s.failed(ctx, err))
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
func (s *Store) findClaimTx(ctx context.Context, tx pgx.Tx, id string) (*dibs.Claim, error) {
	c, err := scanClaim(tx.QueryRow(ctx, `SELECT `+claimFields+` FROM claims WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, dibs.Errorf(dibs.ENOTFOUND, "claim %s not found", id)
	} else if err != nil {
		return nil, s.failed(ctx, err)
	}
	return c, nil
}

// transition runs update (an UPDATE ... RETURNING the claim's fields,
// conditional on its state) in a transaction on pool and, when it changed
// the claim, enqueues a job of kind then. When it did
// not, the claim is returned as it is: a concurrent change that committed
// first is seen, since under READ COMMITTED the update waits for it and
// the read after it is a new snapshot. ENOTFOUND if there is no claim id.
func (s *Store) transition(ctx context.Context, pool *pgxpool.Pool, id, update string, args []any, then string) (c *dibs.Claim, changed bool, err error) {
	err = s.inTx(ctx, pool, func(tx pgx.Tx) error {
		c, err = scanClaim(tx.QueryRow(ctx, update, args...))
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			c, err = s.findClaimTx(ctx, tx, id)
			return err
		case err != nil:
			return s.failed(ctx, err)
		}
		changed = true
		return s.insertJobs(ctx, tx, post.JobParams{Kind: then, Claim: post.ClaimRef{ClaimID: c.ID, DropID: c.DropID}})
	})
	if err != nil {
		return nil, false, err
	}
	return c, changed, nil
}

// RequestPayment implements post.Store. It updates through claims_pkey,
// on the read pool: a user's request does not wait behind background
// work.
func (s *Store) RequestPayment(ctx context.Context, claimID string, now time.Time) (*dibs.Claim, bool, error) {
	c, changed, err := s.transition(ctx, s.read, claimID, `UPDATE claims SET pay_requested_at = $1, updated_at = $1
		WHERE id = $2 AND state = 'held' AND pay_requested_at IS NULL AND hold_expires_at > $1
		RETURNING `+claimFields, []any{now, claimID}, post.KindChargePayment)
	if err != nil {
		return nil, false, fmt.Errorf("request payment: %w", err)
	}
	return c, changed, nil
}

// SettlePayment implements post.Store. It updates through claims_pkey.
func (s *Store) SettlePayment(ctx context.Context, claimID string, paid bool, now time.Time) (*dibs.Claim, bool, error) {
	state, then := post.Settled(paid)
	c, changed, err := s.transition(ctx, s.background, claimID, `UPDATE claims SET state = $1, updated_at = $2
		WHERE id = $3 AND state = 'held'
		RETURNING `+claimFields, []any{string(state), now, claimID}, then)
	if err != nil {
		return nil, false, fmt.Errorf("settle payment: %w", err)
	}
	return c, changed, nil
}

// ExpireHold implements post.Store. It updates through claims_pkey.
func (s *Store) ExpireHold(ctx context.Context, claimID string, now time.Time) (*dibs.Claim, bool, error) {
	c, changed, err := s.transition(ctx, s.background, claimID, `UPDATE claims SET state = 'expired', updated_at = $1
		WHERE id = $2 AND state = 'held' AND pay_requested_at IS NULL AND hold_expires_at <= $1
		RETURNING `+claimFields, []any{now, claimID}, post.KindHoldExpired)
	if err != nil {
		return nil, false, fmt.Errorf("expire hold: %w", err)
	}
	return c, changed, nil
}

// ExpirePayment implements post.Store. It updates through claims_pkey.
func (s *Store) ExpirePayment(ctx context.Context, claimID string, deadline, now time.Time) (*dibs.Claim, bool, error) {
	c, changed, err := s.transition(ctx, s.background, claimID, `UPDATE claims SET state = 'expired', updated_at = $1
		WHERE id = $2 AND state = 'held' AND pay_requested_at IS NOT NULL AND hold_expires_at <= $3
		RETURNING `+claimFields, []any{now, claimID, deadline}, post.KindHoldExpired)
	if err != nil {
		return nil, false, fmt.Errorf("expire payment: %w", err)
	}
	return c, changed, nil
}

// RecordLatePayment implements post.Store. It updates through claims_pkey;
// the condition on the state is what keeps a live claim's charge from ever
// being refunded.
func (s *Store) RecordLatePayment(ctx context.Context, claimID string, now time.Time) (*dibs.Claim, bool, error) {
	c, changed, err := s.transition(ctx, s.background, claimID, `UPDATE claims SET late_paid_at = $1
		WHERE id = $2 AND state IN ('released', 'expired') AND late_paid_at IS NULL
		RETURNING `+claimFields, []any{now, claimID}, post.KindRefundPayment)
	if err != nil {
		return nil, false, fmt.Errorf("record late payment: %w", err)
	}
	return c, changed, nil
}

// RecordRefund implements post.Store. It updates through claims_pkey.
func (s *Store) RecordRefund(ctx context.Context, claimID string, now time.Time) (*dibs.Claim, bool, error) {
	c, changed, err := s.transition(ctx, s.background, claimID, `UPDATE claims SET refunded_at = $1
		WHERE id = $2 AND state IN ('released', 'expired') AND late_paid_at IS NOT NULL AND refunded_at IS NULL
		RETURNING `+claimFields, []any{now, claimID}, post.KindPaymentRefunded)
	if err != nil {
		return nil, false, fmt.Errorf("record refund: %w", err)
	}
	return c, changed, nil
}
