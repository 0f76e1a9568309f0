package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	"github.com/riverqueue/river/rivermigrate"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/post"
)

// The store's job queue is River's, in the store's own file: its tables
// are migrated at Open, jobs are inserted in the store's transactions with
// the claim change that calls for them, and NewJobClient makes the client
// that works them.

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

// inserter is the River client the store enqueues jobs with.
type inserter = river.Client[*sql.Tx]

// newInserter is the River client the store enqueues jobs with, inside
// its own transactions. It has no workers and is never started.
func newInserter(db *sql.DB) (*river.Client[*sql.Tx], error) {
	c, err := river.NewClient(riversqlite.New(db), &river.Config{Logger: discard})
	if err != nil {
		return nil, fmt.Errorf("river client: %w", err)
	}
	return c, nil
}

// insertJobs enqueues jobs in tx: they commit with it or not at all.
func (s *Store) insertJobs(ctx context.Context, tx *sql.Tx, jobs ...post.JobParams) error {
	if len(jobs) == 0 {
		return nil
	}
	params, err := post.InsertManyParams(jobs)
	if err != nil {
		return fmt.Errorf("enqueue: %w", err)
	}
	if _, err := s.jobs.InsertManyTx(ctx, tx, params); err != nil {
		return fmt.Errorf("enqueue: %w", translate(err))
	}
	return nil
}

// NewJobClient returns a River client over s's job connection (one
// connection, as River's SQLite driver wants), configured by cfg: the
// post.JobClientFunc of a SQLite record. Stop the client before closing
// the store.
func NewJobClient(s *Store, cfg *river.Config) (*river.Client[*sql.Tx], error) {
	c, err := river.NewClient(riversqlite.New(s.runner), cfg)
	if err != nil {
		return nil, fmt.Errorf("job client: %w", err)
	}
	return c, nil
}

// JobCounts implements post.Store. It reads river_job_drop.
func (s *Store) JobCounts(ctx context.Context, dropID string) ([]dibs.JobCount, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT kind, state, count(*) FROM river_job
		WHERE `+jobDropID+` = ? GROUP BY kind, state ORDER BY kind, state`, dropID)
	if err != nil {
		return nil, fmt.Errorf("job counts: %w", translate(err))
	}
	defer rows.Close()
	var out []dibs.JobCount
	for rows.Next() {
		var jc dibs.JobCount
		if err := rows.Scan(&jc.Kind, &jc.State, &jc.Count); err != nil {
			return nil, fmt.Errorf("job counts: %w", err)
		}
		out = append(out, jc)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("job counts: %w", translate(err))
	}
	return out, nil
}
