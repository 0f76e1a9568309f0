package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	"github.com/riverqueue/river/rivermigrate"
	"github.com/riverqueue/river/rivertype"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/post"
)

var _ post.Store = (*Store)(nil)

// migrateRiver creates or upgrades River's tables in the store's file,
// then the index JobCounts reads them by.
func migrateRiver(ctx context.Context, db *sql.DB) error {
	m, err := rivermigrate.New(riversqlite.New(db), &rivermigrate.Config{Logger: discard})
	if err != nil {
		return fmt.Errorf("river migrations: %w", err)
	}
	if _, err := m.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return fmt.Errorf("river migrate: %w", err)
	}
	// River's SQLite tables have no index on args; JobCounts looks a
	// drop's jobs up by this one. It is created after River's migrations
	// (which own the table) and again should a later one rebuild it.
	_, err = db.ExecContext(ctx, `CREATE INDEX IF NOT EXISTS river_job_drop ON river_job (`+jobDropID+`)`)
	if err != nil {
		return fmt.Errorf("river migrate: index jobs by drop: %w", err)
	}
	return nil
}

// jobDropID is the drop id a job's args carry. River stores args as a
// BLOB of JSON text; the cast keeps SQLite from ever reading it as JSONB.
const jobDropID = `json_extract(CAST(args AS TEXT), '$.drop_id')`

// discard is the logger of the store's own River clients, which only
// insert: their errors are returned to the caller.
var discard = slog.New(slog.DiscardHandler)

// newInserter is the River client the store enqueues jobs with, inside
// its own transactions. It has no workers and is never started.
func newInserter(db *sql.DB) (*river.Client[*sql.Tx], error) {
	c, err := river.NewClient(riversqlite.New(db), &river.Config{Logger: discard})
	if err != nil {
		return nil, fmt.Errorf("river client: %w", err)
	}
	return c, nil
}

// NewJobClient implements post.Store: a River client over the store's job
// connection (one connection, as River's SQLite driver wants), configured
// by cfg. Stop the client before closing the store.
func (s *Store) NewJobClient(cfg *river.Config) (post.JobClient, error) {
	c, err := river.NewClient(riversqlite.New(s.runner), cfg)
	if err != nil {
		return nil, fmt.Errorf("job client: %w", err)
	}
	return c, nil
}

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
		var jobs []river.InsertManyParams
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

func (s *Store) insertJobs(ctx context.Context, tx *sql.Tx, jobs ...river.InsertManyParams) error {
	if len(jobs) == 0 {
		return nil
	}
	if _, err := s.jobs.InsertManyTx(ctx, tx, jobs); err != nil {
		return fmt.Errorf("enqueue: %w", translate(err))
	}
	return nil
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
// claim, enqueues the job then calls for. When it did not, the claim is
// returned as it is. ENOTFOUND if there is no claim id.
func (s *Store) transition(ctx context.Context, id, update string, args []any, then func(post.ClaimRef) river.JobArgs) (c *dibs.Claim, changed bool, err error) {
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
		return s.insertJobs(ctx, tx, river.InsertManyParams{Args: then(post.ClaimRef{ClaimID: c.ID, DropID: c.DropID})})
	})
	if err != nil {
		return nil, false, err
	}
	return c, changed, nil
}

// RequestPayment implements post.Store. It reads and updates through
// claims_pkey.
func (s *Store) RequestPayment(ctx context.Context, claimID, userID string, now time.Time) (*dibs.Claim, error) {
	var c *dibs.Claim
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var err error
		c, err = findClaimTx(ctx, tx, claimID)
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
		c, err = scanClaim(tx.QueryRowContext(ctx, `UPDATE claims SET pay_requested_at = ?, updated_at = ?
			WHERE id = ? RETURNING `+claimFields, micros(now), micros(now), claimID))
		if err != nil {
			return translate(err)
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
		RETURNING `+claimFields, []any{micros(now), claimID, micros(now)},
		func(ref post.ClaimRef) river.JobArgs { return post.HoldExpiredArgs{ClaimRef: ref} })
	if err != nil {
		return nil, false, fmt.Errorf("expire hold: %w", err)
	}
	return c, changed, nil
}

// ExpirePayment implements post.Store. It updates through claims_pkey.
func (s *Store) ExpirePayment(ctx context.Context, claimID string, deadline, now time.Time) (*dibs.Claim, bool, error) {
	c, changed, err := s.transition(ctx, claimID, `UPDATE claims SET state = 'expired', updated_at = ?
		WHERE id = ? AND state = 'held' AND pay_requested_at IS NOT NULL AND hold_expires_at <= ?
		RETURNING `+claimFields, []any{micros(now), claimID, micros(deadline)},
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
	c, changed, err := s.transition(ctx, claimID, `UPDATE claims SET late_paid_at = ?
		WHERE id = ? AND state IN ('released', 'expired') AND late_paid_at IS NULL
		RETURNING `+claimFields, []any{micros(now), claimID},
		func(ref post.ClaimRef) river.JobArgs { return post.RefundPaymentArgs{ClaimRef: ref} })
	if err != nil {
		return nil, false, fmt.Errorf("record late payment: %w", err)
	}
	return c, changed, nil
}

// RecordRefund implements post.Store. It updates through claims_pkey.
func (s *Store) RecordRefund(ctx context.Context, claimID string, now time.Time) (*dibs.Claim, bool, error) {
	c, changed, err := s.transition(ctx, claimID, `UPDATE claims SET refunded_at = ?
		WHERE id = ? AND state IN ('released', 'expired') AND late_paid_at IS NOT NULL AND refunded_at IS NULL
		RETURNING `+claimFields, []any{micros(now), claimID},
		func(ref post.ClaimRef) river.JobArgs { return post.PaymentRefundedArgs{ClaimRef: ref} })
	if err != nil {
		return nil, false, fmt.Errorf("record refund: %w", err)
	}
	return c, changed, nil
}

// JobCounts implements post.Store. It reads river_job_drop.
func (s *Store) JobCounts(ctx context.Context, dropID string) ([]post.JobCount, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT kind, state, count(*) FROM river_job
		WHERE `+jobDropID+` = ? GROUP BY kind, state ORDER BY kind, state`, dropID)
	if err != nil {
		return nil, fmt.Errorf("job counts: %w", translate(err))
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
		return nil, fmt.Errorf("job counts: %w", translate(err))
	}
	return out, nil
}
