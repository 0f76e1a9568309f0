package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

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

// insertClaims writes a whole batch in one statement from one array per
// column: one statement text whatever the batch size, so it is prepared
// once per connection, and its plan, which the size of the table does not
// change, is cached. Rows that would break a unique index are skipped, the
// trigger claims_within_drop skips rows beyond the drop's stock or
// per-user limit, and the ids of the rows written come back. It was
// measured against a multi-row VALUES insert and against COPY into a
// temporary table followed by INSERT ... SELECT; see
// BenchmarkInsertStrategies and docs/benchmarks.md.
const insertClaims = `INSERT INTO claims (` + claimColumns + `)
	SELECT ` + claimColumns + `
	FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::integer[], $6::text[], $7::text[],
		$8::timestamptz[], $9::timestamptz[], $10::timestamptz[], $11::text[])
		AS c (` + claimColumns + `)
	ON CONFLICT DO NOTHING
	RETURNING id`

// recordedClaims finds which of the claims the insert skipped exist
// (recorded before: a retry), through claims_pkey. It runs after
// insertClaims as a statement of its own, so under READ COMMITTED it also
// sees a row that a concurrent transaction committed while the insert
// waited on it. It runs only when the insert skipped rows, and is planned
// for its ids each time (an unnamed statement): a plan cached while the
// table was small would scan the whole table once it has grown.
const recordedClaims = `SELECT id FROM claims WHERE id = ANY($1)`

// recordAttempts bounds the tries of one batch when a try fails before
// COMMIT in a way a fresh connection may cure (a connection that died
// with a restarted server, a deadlock). Nothing was committed by such a
// try, and the insert is idempotent anyway.
const recordAttempts = 3

// RecordClaims implements dibs.Store with group commit: the whole batch is
// one transaction on a recording connection, BEGIN and the insert
// pipelined in one round trip, then COMMIT in a second. When the insert
// skipped claims, a look-up between them tells a retry of a recorded
// claim (nil) from a refused one (ECONFLICT).
//
// A failure before COMMIT is definite: nothing was committed. A failure
// during COMMIT other than an error the server reported (the connection
// died, the deadline passed, the server was shutting down) wraps
// dibs.ErrOutcomeUnknown. Errors carry EUNAVAILABLE when a retry may
// succeed.
func (s *Store) RecordClaims(ctx context.Context, claims []*dibs.Claim) ([]error, error) {
	results := make([]error, len(claims))
	if len(claims) == 0 {
		return results, nil
	}
	args := claimArgs(claims)
	var recorded map[string]bool
	var err error
	for try := 1; ; try++ {
		recorded, err = s.recordOnce(ctx, args)
		if err == nil || try == recordAttempts || ctx.Err() != nil || !retryBatch(err) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("record claims: %w", err)
	}
	for i, c := range claims {
		if !recorded[c.ID] {
			results[i] = dibs.Errorf(dibs.ECONFLICT, "slot %d or place %d of user %s in drop %s is taken", c.Slot, c.Nth, c.UserID, c.DropID)
		}
	}
	return results, nil
}

func (s *Store) recordOnce(ctx context.Context, args []any) (map[string]bool, error) {
	conn, err := s.record.Acquire(ctx)
	if err != nil {
		return nil, s.failed(ctx, err)
	}
	// A connection left inside the transaction by a failure is destroyed
	// on release, which rolls the transaction back.
	defer conn.Release()

	b := &pgx.Batch{}
	b.Queue(`BEGIN`)
	b.Queue(insertClaims, args...)
	recorded, err := readInsertBatch(conn.SendBatch(ctx, b))
	if err != nil {
		return nil, s.failed(ctx, err)
	}
	var skipped []string
	for _, id := range args[0].([]string) {
		if !recorded[id] {
			skipped = append(skipped, id)
		}
	}
	if len(skipped) > 0 {
		if err := lookUpClaims(ctx, conn.Conn(), skipped, recorded); err != nil {
			return nil, s.failed(ctx, err)
		}
	}

	tag, err := conn.Exec(ctx, `COMMIT`)
	switch {
	case err != nil && !serverRefused(err):
		return nil, dibs.WrapError(dibs.EUNAVAILABLE, "The record may or may not have taken these claims.",
			fmt.Errorf("commit: %w: %w", dibs.ErrOutcomeUnknown, s.failed(ctx, err)))
	case err != nil:
		return nil, fmt.Errorf("commit: %w", s.failed(ctx, err))
	case tag.String() != "COMMIT":
		return nil, fmt.Errorf("commit: transaction rolled back (%s)", tag)
	}
	return recorded, nil
}

// readInsertBatch reads the results of BEGIN and insertClaims: the ids of
// the claims written.
func readInsertBatch(br pgx.BatchResults) (map[string]bool, error) {
	defer br.Close()
	if _, err := br.Exec(); err != nil {
		return nil, fmt.Errorf("begin: %w", err)
	}
	rows, err := br.Query()
	if err != nil {
		return nil, fmt.Errorf("insert: %w", err)
	}
	recorded, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("insert: %w", err)
	}
	ids := make(map[string]bool, len(recorded))
	for _, id := range recorded {
		ids[id] = true
	}
	return ids, br.Close()
}

// lookUpClaims adds to recorded the ids of those that exist.
func lookUpClaims(ctx context.Context, conn *pgx.Conn, ids []string, recorded map[string]bool) error {
	rows, err := conn.Query(ctx, recordedClaims, pgx.QueryExecModeExec, ids)
	if err != nil {
		return fmt.Errorf("look up: %w", err)
	}
	found, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("look up: %w", err)
	}
	for _, id := range found {
		recorded[id] = true
	}
	return nil
}

// serverRefused reports whether the server answered a statement with an
// ERROR: the transaction was rolled back and the session lives on. FATAL
// and PANIC end the session; a FATAL during COMMIT can follow a local
// commit (a shutdown that interrupts the wait for a synchronous standby),
// so it tells nothing about the outcome.
func serverRefused(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && cmp.Or(pe.SeverityUnlocalized, pe.Severity) == "ERROR"
}

// retryBatch reports whether a batch that failed before COMMIT may succeed
// on another try at once.
func retryBatch(err error) bool {
	if errors.Is(err, dibs.ErrOutcomeUnknown) {
		return false
	}
	switch sqlstate(err) {
	case deadlockDetected, serializationFailure:
		return true
	}
	return staleServer(err)
}

// claimArgs are the parameters of insertClaims, one array per column. Rows
// go in (drop, slot) order, so that two batches that collide on slots (a
// gate gone wrong) wait on each other in the same order instead of
// deadlocking. The sort is stable: of two claims of one slot in a batch,
// the first still wins.
func claimArgs(claims []*dibs.Claim) []any {
	sorted := slices.Clone(claims)
	slices.SortStableFunc(sorted, func(a, b *dibs.Claim) int {
		return cmp.Or(cmp.Compare(a.DropID, b.DropID), cmp.Compare(a.Slot, b.Slot))
	})
	n := len(sorted)
	var (
		ids, drops, users, states = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		slots                     = make([]int64, n)
		nths                      = make([]int32, n)
		keys, coupons             = make([]pgtype.Text, n), make([]pgtype.Text, n)
		created, updated          = make([]time.Time, n), make([]time.Time, n)
		holds                     = make([]pgtype.Timestamptz, n)
	)
	for i, c := range sorted {
		ids[i], drops[i], users[i], states[i] = c.ID, c.DropID, c.UserID, string(c.State)
		slots[i], nths[i] = c.Slot, int32(c.Nth)
		keys[i], coupons[i] = nullText(c.IdempotencyKey), nullText(c.CouponCode)
		created[i], updated[i], holds[i] = c.CreatedAt, c.UpdatedAt, nullTime(c.HoldExpiresAt)
	}
	return []any{ids, drops, users, slots, nths, states, keys, created, updated, holds, coupons}
}

// FindClaim implements dibs.Store. It reads claims_pkey.
func (s *Store) FindClaim(ctx context.Context, id string) (*dibs.Claim, error) {
	return s.findClaim(ctx, s.reads(), id)
}

func (s *Store) findClaim(ctx context.Context, on reader, id string) (*dibs.Claim, error) {
	c, err := scanClaim(on.queryRow(ctx, `SELECT `+claimFields+` FROM claims WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, dibs.Errorf(dibs.ENOTFOUND, "claim %s not found", id)
	} else if err != nil {
		return nil, fmt.Errorf("find claim: %w", s.failed(ctx, err))
	}
	return c, nil
}

// ScanActiveClaims implements dibs.Store. It reads the partial index
// claims_active_slot in slot order, in one statement (one snapshot), on a
// read connection (a background one through BackgroundReads) that fn's
// pace holds.
func (s *Store) ScanActiveClaims(ctx context.Context, dropID string, fn func(*dibs.Claim) error) error {
	return s.scanActiveClaims(ctx, s.reads(), dropID, fn)
}

func (s *Store) scanActiveClaims(ctx context.Context, on reader, dropID string, fn func(*dibs.Claim) error) error {
	rows, err := on.query(ctx, `SELECT `+claimFields+` FROM claims
		WHERE drop_id = $1 AND state IN ('held', 'confirmed', 'paid') ORDER BY slot`, dropID)
	if err != nil {
		return fmt.Errorf("scan active claims: %w", s.failed(ctx, err))
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
	if err := rows.Err(); err != nil {
		return fmt.Errorf("scan active claims: %w", s.failed(ctx, err))
	}
	return nil
}

// CountClaims implements dibs.Store. It counts over claims_drop_state.
func (s *Store) CountClaims(ctx context.Context, dropID string) (dibs.ClaimCounts, error) {
	return s.countClaims(ctx, s.reads(), dropID)
}

func (s *Store) countClaims(ctx context.Context, on reader, dropID string) (dibs.ClaimCounts, error) {
	var n dibs.ClaimCounts
	rows, err := on.query(ctx, `SELECT state, count(*) FROM claims WHERE drop_id = $1 GROUP BY state`, dropID)
	if err != nil {
		return n, fmt.Errorf("count claims: %w", s.failed(ctx, err))
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
	if err := rows.Err(); err != nil {
		return n, fmt.Errorf("count claims: %w", s.failed(ctx, err))
	}
	return n, nil
}

func scanClaim(row pgx.Row) (*dibs.Claim, error) {
	var (
		c                                dibs.Claim
		state                            string
		key, coupon                      pgtype.Text
		created, updated                 time.Time
		holdExpires, pay, late, refunded pgtype.Timestamptz
	)
	err := row.Scan(&c.ID, &c.DropID, &c.UserID, &c.Slot, &c.Nth, &state, &key, &created, &updated, &holdExpires, &coupon, &pay, &late, &refunded)
	if err != nil {
		return nil, err
	}
	c.State = dibs.ClaimState(state)
	c.IdempotencyKey, c.CouponCode = key.String, coupon.String
	c.CreatedAt, c.UpdatedAt = created.UTC(), updated.UTC()
	c.HoldExpiresAt, c.PayRequestedAt = fromNullTime(holdExpires), fromNullTime(pay)
	c.LatePaidAt, c.RefundedAt = fromNullTime(late), fromNullTime(refunded)
	return &c, nil
}

// nullText is NULL for the empty string.
func nullText(s string) pgtype.Text { return pgtype.Text{String: s, Valid: s != ""} }
