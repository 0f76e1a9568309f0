package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/post"
)

// The store's job queue is River's, in the store's schema: its tables are
// migrated at Open, jobs are inserted in the store's transactions with the
// claim change that calls for them, and NewJobClient makes the client that
// works them.

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

// inserter is the River client the store enqueues jobs with.
type inserter = river.Client[pgx.Tx]

// newInserter is the River client the store enqueues jobs with, inside
// its own transactions. It has no workers and is never started.
func newInserter(pool *pgxpool.Pool, schema string) (*river.Client[pgx.Tx], error) {
	c, err := river.NewClient(riverpgxv5.New(pool), &river.Config{Logger: discard, Schema: schema})
	if err != nil {
		return nil, fmt.Errorf("river client: %w", err)
	}
	return c, nil
}

// insertJobs enqueues jobs in tx: they commit with it or not at all.
func (s *Store) insertJobs(ctx context.Context, tx pgx.Tx, jobs ...post.JobParams) error {
	if len(jobs) == 0 {
		return nil
	}
	params, err := post.InsertManyParams(jobs)
	if err != nil {
		return fmt.Errorf("enqueue: %w", err)
	}
	if _, err := s.jobs.InsertManyTx(ctx, tx, params); err != nil {
		return fmt.Errorf("enqueue: %w", s.failed(ctx, err))
	}
	return nil
}

// NewJobClient returns a River client over s's background pool, configured
// by cfg with the store's schema: the post.JobClientFunc of a PostgreSQL
// record. Unless cfg.PollOnly is set, a started client takes one
// connection out of the background pool for LISTEN and keeps it until it
// stops: the pool may then open another, so the store holds one
// connection more than its pools' bounds. Stop the client before closing
// the store.
func NewJobClient(s *Store, cfg *river.Config) (*river.Client[pgx.Tx], error) {
	c := *cfg
	c.Schema = s.schema
	client, err := river.NewClient(riverpgxv5.New(s.background), &c)
	if err != nil {
		return nil, fmt.Errorf("job client: %w", err)
	}
	return client, nil
}

// JobCounts implements post.Store. The containment test reads River's GIN
// index river_job_args_index.
func (s *Store) JobCounts(ctx context.Context, dropID string) ([]dibs.JobCount, error) {
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
	var out []dibs.JobCount
	for rows.Next() {
		var jc dibs.JobCount
		if err := rows.Scan(&jc.Kind, &jc.State, &jc.Count); err != nil {
			return nil, fmt.Errorf("job counts: %w", err)
		}
		out = append(out, jc)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("job counts: %w", s.failed(ctx, err))
	}
	return out, nil
}
