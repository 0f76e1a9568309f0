package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
	"github.com/riverqueue/river/rivertype"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/post"
)

var _ post.Store = (*Store)(nil)

// discard is the logger of the store's own River clients (the migrator
// and the inserter): their errors are returned to the caller.
var discard = slog.New(slog.DiscardHandler)

// migrateRiver creates or upgrades River's tables in schema (the
// search_path's when empty). migrate calls it under its advisory lock.
func (s *Store) migrateRiver(ctx context.Context, schema string) error {
	m, err := rivermigrate.New(riverpgxv5.New(s.background), &rivermigrate.Config{Schema: schema, Logger: discard})
	if err != nil {
		return fmt.Errorf("river migrations: %w", err)
	}
	if _, err := m.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return fmt.Errorf("river migrate: %w", err)
	}
	return nil
}

// newInserter is the River client the store enqueues jobs with, inside
// its own transactions. It has no workers and is never started.
func newInserter(pool *pgxpool.Pool, schema string) (*river.Client[pgx.Tx], error) {
	c, err := river.NewClient(riverpgxv5.New(pool), &river.Config{Logger: discard, Schema: schema})
	if err != nil {
		return nil, fmt.Errorf("river client: %w", err)
	}
	return c, nil
}

// NewJobClient implements post.Store: a River client over the background
// pool, configured by cfg with the store's schema. Unless cfg.PollOnly is
// set, a started client takes one connection out of the background pool
// for LISTEN and keeps it until it stops: the pool may then open another,
// so the store holds one connection more than its pools' bounds. Stop the
// client before closing the store.
func (s *Store) NewJobClient(cfg *river.Config) (post.JobClient, error) {
	c := *cfg
	c.Schema = s.schema
	client, err := river.NewClient(riverpgxv5.New(s.background), &c)
	if err != nil {
		return nil, fmt.Errorf("job client: %w", err)
	}
	return client, nil
}

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
			jobs       []river.InsertManyParams
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

func (s *Store) insertJobs(ctx context.Context, tx pgx.Tx, jobs ...river.InsertManyParams) error {
	if len(jobs) == 0 {
		return nil
	}
	if _, err := s.jobs.InsertManyTx(ctx, tx, jobs); err != nil {
		return fmt.Errorf("enqueue: %w", s.failed(ctx, err))
	}
	return nil
}

// findClaimTx reads claim id inside tx, locked for update when lock is
// set. ENOTFOUND if there is none.
func (s *Store) findClaimTx(ctx context.Context, tx pgx.Tx, id string, lock bool) (*dibs.Claim, error) {
	q := `SELECT ` + claimFields + ` FROM claims WHERE id = $1`
	if lock {
		q += ` FOR UPDATE`
	}
	c, err := scanClaim(tx.QueryRow(ctx, q, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, dibs.Errorf(dibs.ENOTFOUND, "claim %s not found", id)
	} else if err != nil {
		return nil, s.failed(ctx, err)
	}
	return c, nil
}

// transition runs update (an UPDATE ... RETURNING the claim's fields,
// conditional on its state) in a transaction on the background pool and,
// when it changed the claim, enqueues the job then calls for. When it did
// not, the claim is returned as it is: a concurrent change that committed
// first is seen, since under READ COMMITTED the update waits for it and
// the read after it is a new snapshot. ENOTFOUND if there is no claim id.
func (s *Store) transition(ctx context.Context, id, update string, args []any, then func(post.ClaimRef) river.JobArgs) (c *dibs.Claim, changed bool, err error) {
	err = s.inTx(ctx, s.background, func(tx pgx.Tx) error {
		c, err = scanClaim(tx.QueryRow(ctx, update, args...))
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			c, err = s.findClaimTx(ctx, tx, id, false)
			return err
		case err != nil:
			return s.failed(ctx, err)
		}
		changed = true
		return s.insertJobs(ctx, tx, river.InsertManyParams{Args: then(post.ClaimRef{ClaimID: c.ID, DropID: c.DropID})})
	})
	if err != nil {
		return nil, false, err
	}
	return c, changed, nil
}

// RequestPayment implements post.Store. It locks the claim through
// claims_pkey, on the read pool: a user's request does not wait behind
// background work.
func (s *Store) RequestPayment(ctx context.Context, claimID, userID string, now time.Time) (*dibs.Claim, error) {
	var c *dibs.Claim
	err := s.inTx(ctx, s.read, func(tx pgx.Tx) error {
		var err error
		c, err = s.findClaimTx(ctx, tx, claimID, true)
		switch {
		case err != nil:
			return err
		case c.UserID != userID:
			// Someone else's claim is not told apart from a missing one.
			return dibs.Errorf(dibs.ENOTFOUND, "claim %s not found", claimID)
		case !c.PayRequestedAt.IsZero():
			return nil
		case c.State != dibs.ClaimHeld:
			return dibs.Errorf(dibs.ECONFLICT, "claim %s is %s, not held", claimID, c.State)
		case !now.Before(c.HoldExpiresAt):
			return dibs.Errorf(dibs.ECONFLICT, "the hold of claim %s ran out at %s", claimID, c.HoldExpiresAt.Format(time.RFC3339))
		}
		c, err = scanClaim(tx.QueryRow(ctx, `UPDATE claims SET pay_requested_at = $1, updated_at = $1
			WHERE id = $2 RETURNING `+claimFields, now, claimID))
		if err != nil {
			return s.failed(ctx, err)
		}
		return s.insertJobs(ctx, tx, river.InsertManyParams{Args: post.ChargePaymentArgs{ClaimRef: post.ClaimRef{ClaimID: c.ID, DropID: c.DropID}}})
	})
	if err != nil {
		return nil, fmt.Errorf("request payment: %w", err)
	}
	return c, nil
}

// SettlePayment implements post.Store. It updates through claims_pkey.
func (s *Store) SettlePayment(ctx context.Context, claimID string, paid bool, now time.Time) (*dibs.Claim, bool, error) {
	state, then := post.Settled(paid)
	c, changed, err := s.transition(ctx, claimID, `UPDATE claims SET state = $1, updated_at = $2
		WHERE id = $3 AND state = 'held'
		RETURNING `+claimFields, []any{string(state), now, claimID}, then)
	if err != nil {
		return nil, false, fmt.Errorf("settle payment: %w", err)
	}
	return c, changed, nil
}

// ExpireHold implements post.Store. It updates through claims_pkey.
func (s *Store) ExpireHold(ctx context.Context, claimID string, now time.Time) (*dibs.Claim, bool, error) {
	c, changed, err := s.transition(ctx, claimID, `UPDATE claims SET state = 'expired', updated_at = $1
		WHERE id = $2 AND state = 'held' AND pay_requested_at IS NULL AND hold_expires_at <= $1
		RETURNING `+claimFields, []any{now, claimID},
		func(ref post.ClaimRef) river.JobArgs { return post.HoldExpiredArgs{ClaimRef: ref} })
	if err != nil {
		return nil, false, fmt.Errorf("expire hold: %w", err)
	}
	return c, changed, nil
}

// ExpirePayment implements post.Store. It updates through claims_pkey.
func (s *Store) ExpirePayment(ctx context.Context, claimID string, deadline, now time.Time) (*dibs.Claim, bool, error) {
	c, changed, err := s.transition(ctx, claimID, `UPDATE claims SET state = 'expired', updated_at = $1
		WHERE id = $2 AND state = 'held' AND pay_requested_at IS NOT NULL AND hold_expires_at <= $3
		RETURNING `+claimFields, []any{now, claimID, deadline},
		func(ref post.ClaimRef) river.JobArgs { return post.HoldExpiredArgs{ClaimRef: ref} })
	if err != nil {
		return nil, false, fmt.Errorf("expire payment: %w", err)
	}
	return c, changed, nil
}

// RecordLatePayment implements post.Store. It updates through claims_pkey;
// the condition on the state is what keeps a live claim's charge from ever
// being refunded.
func (s *Store) RecordLatePayment(ctx context.Context, claimID string, now time.Time) (*dibs.Claim, bool, error) {
	c, changed, err := s.transition(ctx, claimID, `UPDATE claims SET late_paid_at = $1
		WHERE id = $2 AND state IN ('released', 'expired') AND late_paid_at IS NULL
		RETURNING `+claimFields, []any{now, claimID},
		func(ref post.ClaimRef) river.JobArgs { return post.RefundPaymentArgs{ClaimRef: ref} })
	if err != nil {
		return nil, false, fmt.Errorf("record late payment: %w", err)
	}
	return c, changed, nil
}

// RecordRefund implements post.Store. It updates through claims_pkey.
func (s *Store) RecordRefund(ctx context.Context, claimID string, now time.Time) (*dibs.Claim, bool, error) {
	c, changed, err := s.transition(ctx, claimID, `UPDATE claims SET refunded_at = $1
		WHERE id = $2 AND state IN ('released', 'expired') AND late_paid_at IS NOT NULL AND refunded_at IS NULL
		RETURNING `+claimFields, []any{now, claimID},
		func(ref post.ClaimRef) river.JobArgs { return post.PaymentRefundedArgs{ClaimRef: ref} })
	if err != nil {
		return nil, false, fmt.Errorf("record refund: %w", err)
	}
	return c, changed, nil
}

// JobCounts implements post.Store. The containment test reads River's GIN
// index river_job_args_index.
func (s *Store) JobCounts(ctx context.Context, dropID string) ([]post.JobCount, error) {
	args, err := json.Marshal(map[string]string{"drop_id": dropID})
	if err != nil {
		return nil, fmt.Errorf("job counts: %w", err)
	}
	// state is an enum, whose order is not its name's.
	rows, err := s.read.Query(ctx, `SELECT kind, state::text, count(*) FROM river_job
		WHERE args @> $1::jsonb GROUP BY kind, state::text ORDER BY kind, state::text`, string(args))
	if err != nil {
		return nil, fmt.Errorf("job counts: %w", s.failed(ctx, err))
	}
	defer rows.Close()
	var out []post.JobCount
	for rows.Next() {
		var jc post.JobCount
		var state string
		if err := rows.Scan(&jc.Kind, &state, &jc.Count); err != nil {
			return nil, fmt.Errorf("job counts: %w", err)
		}
		jc.State = rivertype.JobState(state)
		out = append(out, jc)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("job counts: %w", s.failed(ctx, err))
	}
	return out, nil
}
