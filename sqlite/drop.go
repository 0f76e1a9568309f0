package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/dibs-io/dibs"
)

const dropColumns = `id, title, kind, stock, per_user_limit, opens_at, closes_at, hold_ttl_ms, price, currency,
	admission_mode, admission_rate, admission_order, status, created_at, updated_at,
	admission_pace, admission_rate_min, admission_rate_max`

// CreateDrop implements dibs.Store.
func (s *Store) CreateDrop(ctx context.Context, d *dibs.Drop) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO drops (`+dropColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		d.ID, d.Title, string(d.Kind), d.Stock, d.PerUserLimit, micros(d.OpensAt), nullMicros(d.ClosesAt),
		d.HoldTTL.Milliseconds(), d.Price, d.Currency, d.Admission.Mode, d.Admission.Rate, d.Admission.Order, string(d.Status),
		micros(d.CreatedAt), micros(d.UpdatedAt), d.Admission.Pace, d.Admission.MinRate, d.Admission.MaxRate)
	if err = translate(err); dibs.ErrorCode(err) == dibs.ECONFLICT {
		return dibs.WrapError(dibs.ECONFLICT, fmt.Sprintf("drop %s already exists", d.ID), err)
	} else if err != nil {
		return fmt.Errorf("insert drop: %w", err)
	}
	return nil
}

// FindDrop implements dibs.Store.
func (s *Store) FindDrop(ctx context.Context, id string) (*dibs.Drop, error) {
	d, err := scanDrop(s.read.QueryRowContext(ctx, `SELECT `+dropColumns+` FROM drops WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, dibs.Errorf(dibs.ENOTFOUND, "drop %s not found", id)
	} else if err != nil {
		return nil, fmt.Errorf("find drop: %w", translate(err))
	}
	return d, nil
}

// ListDrops implements dibs.Store.
func (s *Store) ListDrops(ctx context.Context) ([]*dibs.Drop, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT `+dropColumns+` FROM drops ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("list drops: %w", translate(err))
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
	return out, rows.Err()
}

// SetDropStatus implements dibs.Store.
func (s *Store) SetDropStatus(ctx context.Context, id string, st dibs.Status, now time.Time) error {
	res, err := s.db.ExecContext(ctx, `UPDATE drops SET status = ?, updated_at = ? WHERE id = ?`, string(st), micros(now), id)
	if err != nil {
		return fmt.Errorf("set drop status: %w", translate(err))
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return dibs.Errorf(dibs.ENOTFOUND, "drop %s not found", id)
	}
	return nil
}

// SetDropAdmission implements dibs.Store.
func (s *Store) SetDropAdmission(ctx context.Context, id string, a dibs.Admission, now time.Time) error {
	res, err := s.db.ExecContext(ctx, `UPDATE drops SET admission_rate = ?, admission_pace = ?, admission_rate_min = ?,
		admission_rate_max = ?, updated_at = ? WHERE id = ?`, a.Rate, a.Pace, a.MinRate, a.MaxRate, micros(now), id)
	if err != nil {
		return fmt.Errorf("set drop admission: %w", translate(err))
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return dibs.Errorf(dibs.ENOTFOUND, "drop %s not found", id)
	}
	return nil
}

// SetPacedRate implements dibs.Store.
func (s *Store) SetPacedRate(ctx context.Context, id string, rate int, now time.Time) (bool, error) {
	res, err := s.db.ExecContext(ctx, `UPDATE drops
		SET admission_rate = MIN(MAX(?, admission_rate_min), admission_rate_max), updated_at = ?
		WHERE id = ? AND admission_pace = 'auto' AND admission_rate <> MIN(MAX(?, admission_rate_min), admission_rate_max)`,
		rate, micros(now), id, rate)
	if err != nil {
		return false, fmt.Errorf("set paced rate: %w", translate(err))
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

type scanner interface{ Scan(dest ...any) error }

func scanDrop(row scanner) (*dibs.Drop, error) {
	var (
		d                       dibs.Drop
		kind, status            string
		opens, created, updated int64
		closes                  sql.NullInt64
		holdTTL                 int64
	)
	err := row.Scan(&d.ID, &d.Title, &kind, &d.Stock, &d.PerUserLimit, &opens, &closes, &holdTTL, &d.Price, &d.Currency,
		&d.Admission.Mode, &d.Admission.Rate, &d.Admission.Order, &status, &created, &updated,
		&d.Admission.Pace, &d.Admission.MinRate, &d.Admission.MaxRate)
	if err != nil {
		return nil, err
	}
	d.Kind, d.Status = dibs.Kind(kind), dibs.Status(status)
	d.OpensAt, d.ClosesAt = fromMicros(opens), fromNullMicros(closes)
	d.HoldTTL = time.Duration(holdTTL) * time.Millisecond
	d.CreatedAt, d.UpdatedAt = fromMicros(created), fromMicros(updated)
	return &d, nil
}
