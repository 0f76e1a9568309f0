package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/bits"
	"strings"

	"github.com/dibs-io/dibs"
)

// claimColumns are the columns the recorder writes. The columns
// post-processing sets later (and the outbox flag, born set by its
// default) are not among them: the group commit writes what a claim has
// when it is won, and the rest take their defaults.
const claimColumns = `id, drop_id, user_id, slot, nth, state, idempotency_key, created_at, updated_at,
	hold_expires_at, coupon_code`

// claimFields are the columns a claim is read from.
const claimFields = claimColumns + `, pay_requested_at, late_paid_at, refunded_at`

// RecordClaims implements dibs.Store. All claims go in one transaction: one
// fsync for the whole batch.
func (s *Store) RecordClaims(ctx context.Context, claims []*dibs.Claim) ([]error, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("record claims: begin: %w", translate(err))
	}
	defer tx.Rollback()

	inserted := make(map[string]bool, len(claims))
	for rest := claims; len(rest) > 0; {
		n := s.inserts.chunk(len(rest))
		if err := s.insertClaims(ctx, tx, rest[:n], inserted); err != nil {
			return nil, fmt.Errorf("record claims: %w", err)
		}
		rest = rest[n:]
	}
	results := make([]error, len(claims))
	for i, c := range claims {
		if inserted[c.ID] {
			continue
		}
		// Skipped: either recorded before (a retry: fine) or blocked by
		// another active claim, the stock or the per-user limit.
		var one int
		err := tx.QueryRowContext(ctx, `SELECT 1 FROM claims WHERE id = ?`, c.ID).Scan(&one)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			results[i] = dibs.Errorf(dibs.ECONFLICT, "slot %d or place %d of user %s in drop %s is taken", c.Slot, c.Nth, c.UserID, c.DropID)
		case err != nil:
			return nil, fmt.Errorf("record claims: look up %s: %w", c.ID, translate(err))
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("record claims: commit: %w", translate(err))
	}
	return results, nil
}

// insertStmts are multi-row INSERTs prepared once on the writer connection,
// one per power of two up to 512 rows: a batch is written in chunks of
// those sizes (37 claims: 32, 4, 1), so no batch pays to parse SQL.
type insertStmts [10]*sql.Stmt

// chunk is the largest prepared size not above n.
func (st *insertStmts) chunk(n int) int {
	size := 1
	for size*2 <= n && size*2 <= 1<<(len(st)-1) {
		size *= 2
	}
	return size
}

func (st *insertStmts) prepare(ctx context.Context, db *sql.DB) error {
	for k := range st {
		stmt, err := db.PrepareContext(ctx, insertSQL(1<<k))
		if err != nil {
			return fmt.Errorf("prepare insert of %d claims: %w", 1<<k, err)
		}
		st[k] = stmt
	}
	return nil
}

func (st *insertStmts) close() {
	for _, stmt := range st {
		if stmt != nil {
			stmt.Close()
		}
	}
}

func insertSQL(rows int) string {
	var q strings.Builder
	q.WriteString(`INSERT INTO claims (` + claimColumns + `) VALUES `)
	for i := range rows {
		if i > 0 {
			q.WriteByte(',')
		}
		q.WriteString(`(?,?,?,?,?,?,?,?,?,?,?)`)
	}
	q.WriteString(` ON CONFLICT DO NOTHING RETURNING id`)
	return q.String()
}

// insertClaims writes claims (a prepared size) and notes which were
// inserted.
func (s *Store) insertClaims(ctx context.Context, tx *sql.Tx, claims []*dibs.Claim, inserted map[string]bool) error {
	stmt := s.inserts[bits.TrailingZeros(uint(len(claims)))]
	args := make([]any, 0, len(claims)*11)
	for _, c := range claims {
		args = append(args, c.ID, c.DropID, c.UserID, c.Slot, c.Nth, string(c.State), nullString(c.IdempotencyKey),
			micros(c.CreatedAt), micros(c.UpdatedAt), nullMicros(c.HoldExpiresAt), nullString(c.CouponCode))
	}
	rows, err := tx.StmtContext(ctx, stmt).QueryContext(ctx, args...)
	if err != nil {
		return translate(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return err
		}
		inserted[id] = true
	}
	return translate(rows.Err())
}

// FindClaim implements dibs.Store.
func (s *Store) FindClaim(ctx context.Context, id string) (*dibs.Claim, error) {
	c, err := scanClaim(s.read.QueryRowContext(ctx, `SELECT `+claimFields+` FROM claims WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, dibs.Errorf(dibs.ENOTFOUND, "claim %s not found", id)
	} else if err != nil {
		return nil, fmt.Errorf("find claim: %w", translate(err))
	}
	return c, nil
}

// ScanActiveClaims implements dibs.Store. It reads the partial index
// claims_active_slot in slot order.
func (s *Store) ScanActiveClaims(ctx context.Context, dropID string, fn func(*dibs.Claim) error) error {
	rows, err := s.read.QueryContext(ctx, `SELECT `+claimFields+` FROM claims
		WHERE drop_id = ? AND state IN ('held', 'confirmed', 'paid') ORDER BY slot`, dropID)
	if err != nil {
		return fmt.Errorf("scan active claims: %w", translate(err))
	}
	defer rows.Close()
	for rows.Next() {
		c, err := scanClaim(rows)
		if err != nil {
			return fmt.Errorf("scan active claims: %w", err)
		}
		if err := fn(c); err != nil {
			return err
		}
	}
	return translate(rows.Err())
}

// CountClaims implements dibs.Store. It counts over claims_drop_state.
func (s *Store) CountClaims(ctx context.Context, dropID string) (dibs.ClaimCounts, error) {
	var n dibs.ClaimCounts
	rows, err := s.read.QueryContext(ctx, `SELECT state, COUNT(*) FROM claims WHERE drop_id = ? GROUP BY state`, dropID)
	if err != nil {
		return n, fmt.Errorf("count claims: %w", translate(err))
	}
	defer rows.Close()
	for rows.Next() {
		var state string
		var count int64
		if err := rows.Scan(&state, &count); err != nil {
			return n, fmt.Errorf("count claims: %w", err)
		}
		n.Add(dibs.ClaimState(state), count)
	}
	return n, translate(rows.Err())
}

func scanClaim(row scanner) (*dibs.Claim, error) {
	var (
		c                                dibs.Claim
		state                            string
		key, coupon                      sql.NullString
		created, updated                 int64
		holdExpires, pay, late, refunded sql.NullInt64
	)
	err := row.Scan(&c.ID, &c.DropID, &c.UserID, &c.Slot, &c.Nth, &state, &key, &created, &updated, &holdExpires, &coupon, &pay, &late, &refunded)
	if err != nil {
		return nil, err
	}
	c.State = dibs.ClaimState(state)
	c.IdempotencyKey, c.CouponCode = key.String, coupon.String
	c.CreatedAt, c.UpdatedAt = fromMicros(created), fromMicros(updated)
	c.HoldExpiresAt, c.PayRequestedAt = fromNullMicros(holdExpires), fromNullMicros(pay)
	c.LatePaidAt, c.RefundedAt = fromNullMicros(late), fromNullMicros(refunded)
	return &c, nil
}
