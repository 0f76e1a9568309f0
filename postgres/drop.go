package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/dibs-io/dibs"
)

const dropColumns = `id, title, kind, stock, per_user_limit, opens_at, closes_at, hold_ttl_ms, price, currency,
	admission_mode, admission_rate, admission_order, status, created_at, updated_at,
	admission_pace, admission_rate_min, admission_rate_max`

// CreateDrop implements dibs.Store.
func (s *Store) CreateDrop(ctx context.Context, d *dibs.Drop) error {
	_, err := s.read.Exec(ctx, `INSERT INTO drops (`+dropColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)`,
		d.ID, d.Title, string(d.Kind), d.Stock, d.PerUserLimit, d.OpensAt, nullTime(d.ClosesAt),
		d.HoldTTL.Milliseconds(), d.Price, d.Currency, d.Admission.Mode, d.Admission.Rate, d.Admission.Order, string(d.Status),
		d.CreatedAt, d.UpdatedAt, d.Admission.Pace, d.Admission.MinRate, d.Admission.MaxRate)
	if err = s.failed(ctx, err); dibs.ErrorCode(err) == dibs.ECONFLICT {
		return dibs.WrapError(dibs.ECONFLICT, fmt.Sprintf("drop %s already exists", d.ID), err)
	} else if err != nil {
		return fmt.Errorf("insert drop: %w", err)
	}
	return nil
}

// FindDrop implements dibs.Store. It reads drops_pkey.
func (s *Store) FindDrop(ctx context.Context, id string) (*dibs.Drop, error) {
	return s.findDrop(ctx, s.reads(), id)
}

func (s *Store) findDrop(ctx context.Context, on reader, id string) (*dibs.Drop, error) {
	d, err := scanDrop(on.queryRow(ctx, `SELECT `+dropColumns+` FROM drops WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, dibs.Errorf(dibs.ENOTFOUND, "drop %s not found", id)
	} else if err != nil {
		return nil, fmt.Errorf("find drop: %w", s.failed(ctx, err))
	}
	return d, nil
}

// ListDrops implements dibs.Store. It reads drops_created in order.
func (s *Store) ListDrops(ctx context.Context) ([]*dibs.Drop, error) {
	return s.listDrops(ctx, s.reads())
}

func (s *Store) listDrops(ctx context.Context, on reader) ([]*dibs.Drop, error) {
	rows, err := on.query(ctx, `SELECT `+dropColumns+` FROM drops ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("list drops: %w", s.failed(ctx, err))
	}
	defer rows.Close()
	var out []*dibs.Drop
	for rows.Next() {
		d, err := scanDrop(rows)
		if err != nil {
			return nil, fmt.Errorf("list drops: %w", err)
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list drops: %w", s.failed(ctx, err))
	}
	return out, nil
}

// SetDropStatus implements dibs.Store. It updates through drops_pkey.
func (s *Store) SetDropStatus(ctx context.Context, id string, st dibs.Status, now time.Time) error {
	tag, err := s.read.Exec(ctx, `UPDATE drops SET status = $1, updated_at = $2 WHERE id = $3`, string(st), now, id)
	if err != nil {
		return fmt.Errorf("set drop status: %w", s.failed(ctx, err))
	}
	if tag.RowsAffected() == 0 {
		return dibs.Errorf(dibs.ENOTFOUND, "drop %s not found", id)
	}
	return nil
}

// SetDropAdmission implements dibs.Store. It updates through drops_pkey.
func (s *Store) SetDropAdmission(ctx context.Context, id string, a dibs.Admission, now time.Time) error {
	tag, err := s.read.Exec(ctx, `UPDATE drops SET admission_rate = $1, admission_pace = $2, admission_rate_min = $3,
		admission_rate_max = $4, updated_at = $5 WHERE id = $6`, a.Rate, a.Pace, a.MinRate, a.MaxRate, now, id)
	if err != nil {
		return fmt.Errorf("set drop admission: %w", s.failed(ctx, err))
	}
	if tag.RowsAffected() == 0 {
		return dibs.Errorf(dibs.ENOTFOUND, "drop %s not found", id)
	}
	return nil
}

// SetPacedRate implements dibs.Store. It updates through drops_pkey.
func (s *Store) SetPacedRate(ctx context.Context, id string, rate int, now time.Time) (bool, error) {
	tag, err := s.read.Exec(ctx, `UPDATE drops
		SET admission_rate = LEAST(GREATEST($1::integer, admission_rate_min), admission_rate_max), updated_at = $2
		WHERE id = $3 AND admission_pace = 'auto'
		  AND admission_rate <> LEAST(GREATEST($1::integer, admission_rate_min), admission_rate_max)`, rate, now, id)
	if err != nil {
		return false, fmt.Errorf("set paced rate: %w", s.failed(ctx, err))
	}
	return tag.RowsAffected() > 0, nil
}

func scanDrop(row pgx.Row) (*dibs.Drop, error) {
	var (
		d                       dibs.Drop
		kind, status            string
		opens, created, updated time.Time
		closes                  pgtype.Timestamptz
		holdTTL                 int64
	)
	err := row.Scan(&d.ID, &d.Title, &kind, &d.Stock, &d.PerUserLimit, &opens, &closes, &holdTTL, &d.Price, &d.Currency,
		&d.Admission.Mode, &d.Admission.Rate, &d.Admission.Order, &status, &created, &updated,
		&d.Admission.Pace, &d.Admission.MinRate, &d.Admission.MaxRate)
	if err != nil {
		return nil, err
	}
	d.Kind, d.Status = dibs.Kind(kind), dibs.Status(status)
	d.OpensAt, d.ClosesAt = opens.UTC(), fromNullTime(closes)
	d.HoldTTL = time.Duration(holdTTL) * time.Millisecond
	d.CreatedAt, d.UpdatedAt = created.UTC(), updated.UTC()
	return &d, nil
}

// nullTime is NULL for the zero time. Times are stored to the microsecond
// and read back in UTC.
func nullTime(t time.Time) pgtype.Timestamptz {
	return pgtype.Timestamptz{Time: t, Valid: !t.IsZero()}
}

func fromNullTime(t pgtype.Timestamptz) time.Time {
	if !t.Valid {
		return time.Time{}
	}
	return t.Time.UTC()
}
