package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/dibs-io/dibs"
)

var _ dibs.AdminStore = (*Store)(nil)

// LoadSwitches implements dibs.AdminStore. It reads admin_switches_pkey.
func (s *Store) LoadSwitches(ctx context.Context) (dibs.Switches, int64, error) {
	var (
		state   []byte
		version int64
		sw      dibs.Switches
	)
	err := s.read.QueryRow(ctx, `SELECT state, version FROM admin_switches WHERE id = 1`).Scan(&state, &version)
	if err != nil {
		return sw, 0, fmt.Errorf("load switches: %w", s.failed(ctx, err))
	}
	sw, err = dibs.SwitchesFromRecord(state)
	if err != nil {
		return sw, 0, fmt.Errorf("load switches: %w", err)
	}
	return sw, version, nil
}

// SaveSwitches implements dibs.AdminStore. The update is conditional on
// the version, so of two nodes saving at once one waits for the other's
// row lock and then finds the version gone.
func (s *Store) SaveSwitches(ctx context.Context, sw dibs.Switches, version int64) (int64, error) {
	tag, err := s.read.Exec(ctx, `UPDATE admin_switches SET state = $1, version = version + 1
		WHERE id = 1 AND version = $2`, sw.String(), version)
	if err != nil {
		return 0, fmt.Errorf("save switches: %w", s.failed(ctx, err))
	}
	if tag.RowsAffected() == 0 {
		return 0, dibs.Errorf(dibs.ECONFLICT, "The switches changed meanwhile (not at version %d); load them again.", version)
	}
	return version + 1, nil
}

// AppendAction implements dibs.AdminStore.
func (s *Store) AppendAction(ctx context.Context, a dibs.Action) (int64, error) {
	if err := a.Validate(); err != nil {
		return 0, err
	}
	var detail *string
	if len(a.Detail) > 0 {
		d := string(a.Detail)
		detail = &d
	}
	var id int64
	err := s.read.QueryRow(ctx, `INSERT INTO admin_actions (at, actor, kind, drop_id, detail)
		VALUES ($1, $2, $3, $4, $5) RETURNING id`, a.At, a.Actor, a.Kind, a.DropID, detail).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("append action: %w", s.failed(ctx, err))
	}
	return id, nil
}

// ListActions implements dibs.AdminStore. It reads admin_actions_pkey
// backwards.
func (s *Store) ListActions(ctx context.Context, limit int) ([]dibs.Action, error) {
	limit, err := dibs.ActionListLimit(limit)
	if err != nil {
		return nil, err
	}
	rows, err := s.read.Query(ctx, `SELECT id, at, actor, kind, drop_id, detail
		FROM admin_actions ORDER BY id DESC LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("list actions: %w", s.failed(ctx, err))
	}
	defer rows.Close()
	out := []dibs.Action{}
	for rows.Next() {
		var (
			a      dibs.Action
			at     time.Time
			detail []byte
		)
		if err := rows.Scan(&a.ID, &at, &a.Actor, &a.Kind, &a.DropID, &detail); err != nil {
			return nil, fmt.Errorf("list actions: %w", s.failed(ctx, err))
		}
		a.At = at.UTC()
		if detail != nil {
			a.Detail = json.RawMessage(detail)
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list actions: %w", s.failed(ctx, err))
	}
	return out, nil
}
