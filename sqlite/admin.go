package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"

	"github.com/dibs-io/dibs"
)

var _ dibs.AdminStore = (*Store)(nil)

// LoadSwitches implements dibs.AdminStore.
func (s *Store) LoadSwitches(ctx context.Context) (dibs.Switches, int64, error) {
	var (
		state   string
		version int64
		sw      dibs.Switches
	)
	err := s.read.QueryRowContext(ctx, `SELECT state, version FROM admin_switches WHERE id = 1`).Scan(&state, &version)
	if err != nil {
		return sw, 0, fmt.Errorf("load switches: %w", translate(err))
	}
	sw, err = dibs.SwitchesFromRecord([]byte(state))
	if err != nil {
		return sw, 0, fmt.Errorf("load switches: %w", err)
	}
	return sw, version, nil
}

// SaveSwitches implements dibs.AdminStore.
func (s *Store) SaveSwitches(ctx context.Context, sw dibs.Switches, version int64) (int64, error) {
	res, err := s.db.ExecContext(ctx, `UPDATE admin_switches SET state = ?, version = version + 1
		WHERE id = 1 AND version = ?`, sw.String(), version)
	if err != nil {
		return 0, fmt.Errorf("save switches: %w", translate(err))
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return 0, dibs.Errorf(dibs.ECONFLICT, "The switches changed meanwhile (not at version %d); load them again.", version)
	}
	return version + 1, nil
}

// AppendAction implements dibs.AdminStore.
func (s *Store) AppendAction(ctx context.Context, a dibs.Action) (int64, error) {
	if err := a.Validate(); err != nil {
		return 0, err
	}
	var id int64
	err := s.db.QueryRowContext(ctx, `INSERT INTO admin_actions (at, actor, kind, drop_id, detail)
		VALUES (?, ?, ?, ?, ?) RETURNING id`,
		micros(a.At), a.Actor, a.Kind, a.DropID, nullString(string(a.Detail))).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("append action: %w", translate(err))
	}
	return id, nil
}

// ListActions implements dibs.AdminStore. It reads the primary key
// backwards.
func (s *Store) ListActions(ctx context.Context, limit int) ([]dibs.Action, error) {
	limit, err := dibs.ActionListLimit(limit)
	if err != nil {
		return nil, err
	}
	rows, err := s.read.QueryContext(ctx, `SELECT id, at, actor, kind, drop_id, detail
		FROM admin_actions ORDER BY id DESC LIMIT ?`, limit)
	if err != nil {
		return nil, fmt.Errorf("list actions: %w", translate(err))
	}
	defer rows.Close()
	out := []dibs.Action{}
	for rows.Next() {
		var (
			a      dibs.Action
			at     int64
			detail sql.NullString
		)
		if err := rows.Scan(&a.ID, &at, &a.Actor, &a.Kind, &a.DropID, &detail); err != nil {
			return nil, fmt.Errorf("list actions: %w", translate(err))
		}
		a.At = fromMicros(at)
		if detail.Valid {
			a.Detail = json.RawMessage(detail.String)
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list actions: %w", translate(err))
	}
	return out, nil
}
