package postgres

import (
	"context"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dibs-io/dibs"
)

// reader is a pool the store's reads run on, with the query options that
// keep their plans right on it.
type reader struct {
	pool *pgxpool.Pool
	opts []any // go before a query's arguments
}

// reads is the read pool, whose sessions plan every statement for its
// arguments (plan_cache_mode, see Open).
func (s *Store) reads() reader { return reader{pool: s.read} }

// backgroundReads is the background pool. Its sessions keep the server's
// default plan caching, which suits River's queries there; the store's
// reads get what the read pool gives them from the unnamed statement
// instead: parsed, hence planned for their arguments, on every execution
// (pgx's QueryExecModeCacheDescribe, still one round trip).
func (s *Store) backgroundReads() reader {
	return reader{pool: s.background, opts: []any{pgx.QueryExecModeCacheDescribe}}
}

func (r reader) args(args []any) []any {
	if len(r.opts) == 0 {
		return args
	}
	return slices.Concat(r.opts, args)
}

func (r reader) query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	return r.pool.Query(ctx, sql, r.args(args)...)
}

func (r reader) queryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return r.pool.QueryRow(ctx, sql, r.args(args)...)
}

// BackgroundReads returns the store as the node's background work sees
// it (engine.Config.Background): loading and refreshing drops, the gate's
// rebuild scans, the reconciler. Its reads (FindDrop, ListDrops,
// FindClaim, ScanActiveClaims, CountClaims) run on the background pool,
// so that a long rebuild neither waits for nor holds the read connections
// that claims, drop reads and /readyz need; everything else is the
// store's own. It holds no connections of its own: Close does nothing,
// and the store's Close ends it too. Safe for concurrent use.
func (s *Store) BackgroundReads() dibs.Store { return onBackground{s} }

// onBackground is the store with its reads on the background pool.
type onBackground struct{ s *Store }

var _ dibs.Store = onBackground{}

func (b onBackground) FindDrop(ctx context.Context, id string) (*dibs.Drop, error) {
	return b.s.findDrop(ctx, b.s.backgroundReads(), id)
}

func (b onBackground) ListDrops(ctx context.Context) ([]*dibs.Drop, error) {
	return b.s.listDrops(ctx, b.s.backgroundReads())
}

func (b onBackground) FindClaim(ctx context.Context, id string) (*dibs.Claim, error) {
	return b.s.findClaim(ctx, b.s.backgroundReads(), id)
}

func (b onBackground) ScanActiveClaims(ctx context.Context, dropID string, fn func(*dibs.Claim) error) error {
	return b.s.scanActiveClaims(ctx, b.s.backgroundReads(), dropID, fn)
}

func (b onBackground) CountClaims(ctx context.Context, dropID string) (dibs.ClaimCounts, error) {
	return b.s.countClaims(ctx, b.s.backgroundReads(), dropID)
}

func (b onBackground) CreateDrop(ctx context.Context, d *dibs.Drop) error {
	return b.s.CreateDrop(ctx, d)
}

func (b onBackground) SetDropStatus(ctx context.Context, id string, st dibs.Status, now time.Time) error {
	return b.s.SetDropStatus(ctx, id, st, now)
}

func (b onBackground) SetDropAdmission(ctx context.Context, id string, a dibs.Admission, now time.Time) error {
	return b.s.SetDropAdmission(ctx, id, a, now)
}

func (b onBackground) SetPacedRate(ctx context.Context, id string, rate int, now time.Time) (bool, error) {
	return b.s.SetPacedRate(ctx, id, rate, now)
}

func (b onBackground) RecordClaims(ctx context.Context, claims []*dibs.Claim) ([]error, error) {
	return b.s.RecordClaims(ctx, claims)
}

func (b onBackground) Ping(ctx context.Context) error { return b.s.Ping(ctx) }

// Close does nothing: the pools are the store's.
func (onBackground) Close() error { return nil }
