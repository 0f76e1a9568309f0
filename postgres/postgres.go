// Package postgres is the system of record for many stateless dibs nodes:
// drops and claims in PostgreSQL, always on the primary, committed with
// synchronous_commit=on before anyone is told they won.
//
// Each workload has its own bounded pool (recording claims, background
// work, reads and admin), so a slow report never takes the connection a
// group commit needs, and the connections of a node never grow with
// traffic. Migrations are embedded and applied at Open under an advisory
// lock, so many nodes may start at once. Driver errors are translated into
// dibs error codes by SQLSTATE at the edge of this package.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

	"github.com/dibs-io/dibs"
)

var _ dibs.Store = (*Store)(nil)

//go:embed migrations/*.sql
var migrations embed.FS

// Default pool sizes: the connection budget of one node is their sum.
const (
	DefaultRecordConns     = 4
	DefaultBackgroundConns = 4
	DefaultReadConns       = 4
)

// Options tune a Store. The zero value is valid.
type Options struct {
	// Schema holds the store's tables and River's. When set, every
	// connection's search_path is this schema alone and Open creates it
	// if missing; it must be lower-case letters, digits and underscores,
	// since River names it unquoted. When empty, the search_path of the
	// URL applies (public by default).
	Schema string

	// RecordConns bounds the pool that records claims: the connections
	// group commits run on. Default DefaultRecordConns. The pool keeps
	// them open, so the first commits of a spike do not wait to connect.
	RecordConns int
	// BackgroundConns bounds the pool of background work: jobs, the
	// outbox pump, and the reads of BackgroundReads (loading drops, gate
	// rebuilds, reconciliation). Default DefaultBackgroundConns. A
	// running job client holds one connection more, outside this bound:
	// see NewJobClient.
	BackgroundConns int
	// ReadConns bounds the pool of reads and admin writes. Default
	// DefaultReadConns.
	ReadConns int

	// Tracer, if set, sees every query of every pool: a way to log slow
	// ones (pgx's tracelog) or to check query plans in tests.
	Tracer pgx.QueryTracer
}

func (o *Options) setDefaults() {
	if o.RecordConns <= 0 {
		o.RecordConns = DefaultRecordConns
	}
	if o.BackgroundConns <= 0 {
		o.BackgroundConns = DefaultBackgroundConns
	}
	if o.ReadConns <= 0 {
		o.ReadConns = DefaultReadConns
	}
}

// schemaName is a schema River's unquoted names reach as they are.
var schemaName = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

// Store is the PostgreSQL system of record. Safe for concurrent use.
type Store struct {
	record     *pgxpool.Pool // group commits of claims
	background *pgxpool.Pool // jobs, the outbox pump, BackgroundReads
	read       *pgxpool.Pool // reads, admin writes, migrations

	schema string    // Options.Schema: River's tables live there too
	jobs   *inserter // enqueues jobs in the store's transactions
}

// Open connects to the database at url (a postgres:// URL or a key=value
// string), applies pending migrations (the store's, then River's, in the
// same schema) and returns the store. It refuses to run on a connection
// that would acknowledge a commit before it is flushed (synchronous_commit
// below on) and connects only to a server that takes writes
// (target_session_attrs=read-write unless the URL says otherwise).
func Open(ctx context.Context, url string, opts Options) (*Store, error) {
	opts.setDefaults()
	if opts.Schema != "" && !schemaName.MatchString(opts.Schema) {
		return nil, fmt.Errorf("postgres: schema %q: want lower-case letters, digits and underscores", opts.Schema)
	}
	base, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	rt := base.ConnConfig.RuntimeParams
	rt["synchronous_commit"] = "on"
	if opts.Schema != "" {
		rt["search_path"] = pgx.Identifier{opts.Schema}.Sanitize()
	}
	if base.ConnConfig.ValidateConnect == nil {
		// The record decides winners: it must never be a standby, and a
		// connection made to a demoted primary must fail, not linger.
		base.ConnConfig.ValidateConnect = pgconn.ValidateConnectTargetSessionAttrsReadWrite
	}
	// When a context ends, ask the server to cancel the statement and wait
	// a moment for its answer, rather than drop the connection at once: a
	// dropped connection leaves its statement running on the server and a
	// new connection takes its place, so the server would see more
	// connections than the pools allow.
	base.ConnConfig.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: c, DeadlineDelay: time.Second}
	}
	if opts.Tracer != nil {
		base.ConnConfig.Tracer = opts.Tracer
	}
	base.AfterConnect = checkDurability

	s := &Store{schema: opts.Schema}
	var errs [3]error
	s.record, errs[0] = newPool(base, "record", opts.RecordConns, opts.RecordConns)
	s.background, errs[1] = newPool(base, "background", opts.BackgroundConns, 0)
	// Statements are prepared once per connection, and after five runs
	// the server may keep a generic plan, chosen for the tables as they
	// were then: a read planned while a drop was young would scan its
	// claims whole once the spike has grown them (a look-up of 300 ids by
	// a plan cached at a few hundred rows took 210 ms at 21,000). Reads
	// are cheap to plan, so they are planned each time; the recording
	// insert keeps its cached plan, which the table's size does not change
	// (planning it for each batch's arrays cost it 60-70% more).
	read := base.Copy()
	read.ConnConfig.RuntimeParams["plan_cache_mode"] = "force_custom_plan"
	s.read, errs[2] = newPool(read, "read", opts.ReadConns, 0)
	err = errors.Join(errs[:]...)
	if err == nil {
		err = s.open(ctx, opts.Schema)
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// newPool makes a pool of at most max connections that keeps min open.
// Connections show in pg_stat_activity as dibs-<name> unless the URL sets
// application_name.
func newPool(base *pgxpool.Config, name string, max, min int) (*pgxpool.Pool, error) {
	cfg := base.Copy()
	cfg.MaxConns, cfg.MinConns = int32(max), int32(min)
	if _, ok := cfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		cfg.ConnConfig.RuntimeParams["application_name"] = "dibs-" + name
	}
	p, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %s pool: %w", name, err)
	}
	return p, nil
}

func (s *Store) open(ctx context.Context, schema string) error {
	if schema != "" {
		if err := s.createSchema(ctx, schema); err != nil {
			return fmt.Errorf("postgres: create schema: %w", s.failed(ctx, err))
		}
	}
	if err := s.migrate(ctx); err != nil {
		return fmt.Errorf("postgres: %w", s.failed(ctx, err))
	}
	var err error
	if s.jobs, err = newInserter(s.background, schema); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	// A recording connection checks its durability as it connects; make
	// one now so that a bad setting fails Open, not the first claim.
	c, err := s.record.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("postgres: %w", s.failed(ctx, err))
	}
	c.Release()
	return nil
}

// createSchema creates schema unless it exists. Looking first spares a
// role that owns the schema but may not create schemas in the database.
func (s *Store) createSchema(ctx context.Context, schema string) error {
	var exists bool
	err := s.read.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`, schema).Scan(&exists)
	if err != nil || exists {
		return err
	}
	_, err = s.read.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+pgx.Identifier{schema}.Sanitize())
	if code := sqlstate(err); code == uniqueViolation || code == duplicateSchema {
		return nil // another node starting at once created it
	}
	return err
}

// checkDurability refuses a connection that would acknowledge commits a
// crash can take back. Every connection of every pool runs it once.
func checkDurability(ctx context.Context, c *pgx.Conn) error {
	var sync string
	if err := c.QueryRow(ctx, `SHOW synchronous_commit`).Scan(&sync); err != nil {
		return fmt.Errorf("read synchronous_commit: %w", err)
	}
	if sync != "on" && sync != "remote_apply" {
		return fmt.Errorf("synchronous_commit=%s, need on (or remote_apply)", sync)
	}
	return nil
}

// migrate applies pending migrations, the store's and then River's, while
// it holds an advisory lock keyed by the schema, so that nodes starting at
// once migrate one after the other and the later ones find nothing to do.
// The lock covers all of goose's work: goose's own session locker leaves
// the creation of its version table unguarded (HasPending runs unlocked)
// and, when nodes race there, retries a second later. pg_advisory_lock
// blocks, so a waiting node goes on the moment the lock is free, and the
// lock belongs to the session, so a node that dies while migrating
// releases it.
//
// The lock is held on a read connection; goose and River's migrator run
// on the background pool, which is idle at start-up.
func (s *Store) migrate(ctx context.Context) error {
	conn, err := s.read.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	var schema string
	if err := conn.QueryRow(ctx, `SELECT coalesce(current_schema(), '')`).Scan(&schema); err != nil {
		return fmt.Errorf("lock migrations: %w", err)
	}
	key := lockKey(schema)
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, key); err != nil {
		return fmt.Errorf("lock migrations: %w", err)
	}
	defer func() {
		if _, err := conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, key); err != nil {
			// Never pool a session that may still hold the lock.
			conn.Conn().Close(context.WithoutCancel(ctx))
		}
	}()
	if err := s.migrateStore(ctx); err != nil {
		return err
	}
	return s.migrateRiver(ctx, s.schema)
}

// migrateStore applies the store's own migrations (goose). Its database
// handle gives its connections back to the background pool when it
// returns.
func (s *Store) migrateStore(ctx context.Context) error {
	fsys, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return err
	}
	db := stdlib.OpenDBFromPool(s.background)
	defer db.Close()
	p, err := goose.NewProvider(goose.DialectPostgres, db, fsys,
		goose.WithDisableGlobalRegistry(true), goose.WithTableName("dibs_migrations"))
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
}

// Background is the pool for background work (the job queue, the
// reads of BackgroundReads): its own bounded pool, so that such work never
// takes a connection claims need.
func (s *Store) Background() *pgxpool.Pool { return s.background }

// Ping implements dibs.Store: the store answers and takes writes. A server
// that turned read-only (a failover demoted it) is EUNAVAILABLE, and the
// pools drop their connections so that the next ones find the new primary.
func (s *Store) Ping(ctx context.Context) error {
	var readOnly string
	if err := s.read.QueryRow(ctx, `SHOW transaction_read_only`).Scan(&readOnly); err != nil {
		return fmt.Errorf("ping: %w", s.failed(ctx, err))
	}
	if readOnly == "on" {
		s.reset()
		return dibs.Errorf(dibs.EUNAVAILABLE, "The record is read-only right now.")
	}
	return nil
}

// Close closes the pools, waiting for connections in use to come back.
func (s *Store) Close() error {
	for _, p := range []*pgxpool.Pool{s.record, s.background, s.read} {
		if p != nil {
			p.Close()
		}
	}
	return nil
}

// reset closes every pooled connection; connections in use are closed when
// they come back. After a failover or a restart the old connections lead
// nowhere or to a read-only server, and all three pools share that fate.
func (s *Store) reset() {
	s.record.Reset()
	s.background.Reset()
	s.read.Reset()
}

// failed translates err and, when it says the server went away or turned
// read-only, resets the pools so that no stale connection fails again.
func (s *Store) failed(ctx context.Context, err error) error {
	if staleServer(err) && ctx.Err() == nil {
		s.reset()
	}
	return translate(err)
}

// lockKey is the advisory lock of the migrations of one schema.
func lockKey(schema string) int64 {
	h := fnv.New64a()
	h.Write([]byte("dibs migrations " + schema))
	return int64(h.Sum64())
}
