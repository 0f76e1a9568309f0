// Package sqlite is the system of record of the embedded default: drops and
// claims in one SQLite file, in WAL mode with synchronous=FULL, so that a
// commit survives a process kill and a power cut.
//
// One connection writes (SQLite serialises writers anyway, and one
// connection avoids busy waits); a small pool reads beside it.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"strings"
	"time"

	"github.com/pressly/goose/v3"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/dibs-io/dibs"
)

var _ dibs.Store = (*Store)(nil)

//go:embed migrations/*.sql
var migrations embed.FS

// ReadConns is the size of the read pool.
const ReadConns = 4

// CheckpointEvery is how often the WAL is copied back into the database
// file, off the commit path.
const CheckpointEvery = 500 * time.Millisecond

// Store is the SQLite system of record. Safe for concurrent use.
type Store struct {
	db      *sql.DB // the single writer connection
	read    *sql.DB
	inserts insertStmts
	jobs    *inserter // enqueues jobs in the store's transactions
	runner  *sql.DB   // River's bookkeeping (NewJobClient), synchronous=NORMAL

	stop chan struct{}
	done chan struct{}
}

// Open opens (creating if needed) the database file at path, applies
// pending migrations (the store's, then River's), and refuses to run unless
// the file is in WAL mode with synchronous=FULL.
func Open(ctx context.Context, path string) (*Store, error) {
	db, err := sql.Open("sqlite", dsn(path, false))
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	s := &Store{db: db}
	if err := s.checkDurability(ctx); err != nil {
		db.Close()
		return nil, err
	}
	if err := migrate(ctx, db); err != nil {
		db.Close()
		return nil, err
	}
	if err := migrateRiver(ctx, db); err != nil {
		db.Close()
		return nil, err
	}
	if s.jobs, err = newInserter(db); err != nil {
		db.Close()
		return nil, err
	}
	if err := s.inserts.prepare(ctx, db); err != nil {
		s.inserts.close()
		db.Close()
		return nil, err
	}
	read, err := sql.Open("sqlite", dsn(path, true))
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s for reading: %w", path, err)
	}
	read.SetMaxOpenConns(ReadConns)
	read.SetMaxIdleConns(ReadConns)
	s.read = read
	// River's own bookkeeping (fetching jobs, marking them done) goes
	// through a connection of its own, so that its polling never queues in
	// front of a group commit for the writer connection, and without an
	// fsync per commit: a power cut may take back a job's "completed" mark,
	// and the job then runs again, which every handler allows. The jobs
	// themselves are inserted on the writer, durably, with the change that
	// calls for them.
	runner, err := sql.Open("sqlite", jobsDSN(path))
	if err != nil {
		read.Close()
		db.Close()
		return nil, fmt.Errorf("open %s for jobs: %w", path, err)
	}
	runner.SetMaxOpenConns(1)
	runner.SetMaxIdleConns(1)
	runner.SetConnMaxLifetime(0)
	s.runner = runner
	s.stop, s.done = make(chan struct{}), make(chan struct{})
	go s.checkpointer()
	return s, nil
}

// checkpointer copies committed WAL frames into the database file in the
// background (PASSIVE: it never blocks the writer), so that commits do not
// pay for checkpoints and the WAL does not grow without bound.
func (s *Store) checkpointer() {
	defer close(s.done)
	t := time.NewTicker(CheckpointEvery)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			var busy, frames, done int
			if err := s.read.QueryRow(`PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &frames, &done); err != nil {
				continue // the next tick tries again; Ping reports a store that is gone
			}
		}
	}
}

func dsn(path string, readOnly bool) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "cache_size(-65536)") // 64 MiB per connection: index pages stay in memory
	q.Add("_pragma", "mmap_size(268435456)")
	// Checkpoints run in the background (checkpointer), not inside a commit.
	q.Add("_pragma", "wal_autocheckpoint(0)")
	q.Set("_txlock", "immediate")
	if readOnly {
		q.Set("_query_only", "1")
	}
	return "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
}

// jobsDSN is the connection River's job client works through: the writer's
// settings, but commits synced at checkpoints rather than each one.
func jobsDSN(path string) string {
	return strings.Replace(dsn(path, false), url.QueryEscape("synchronous(FULL)"), url.QueryEscape("synchronous(NORMAL)"), 1)
}

// checkDurability refuses a connection that would acknowledge commits a
// power cut can take back: synchronous below FULL in WAL mode.
func (s *Store) checkDurability(ctx context.Context) error {
	var mode string
	var sync int
	if err := s.db.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
		return fmt.Errorf("read journal_mode: %w", err)
	}
	if err := s.db.QueryRowContext(ctx, `PRAGMA synchronous`).Scan(&sync); err != nil {
		return fmt.Errorf("read synchronous: %w", err)
	}
	if mode != "wal" || sync < 2 {
		return fmt.Errorf("sqlite: journal_mode=%s synchronous=%d, need wal and FULL (2) or EXTRA (3)", mode, sync)
	}
	return nil
}

func migrate(ctx context.Context, db *sql.DB) error {
	fsys, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return err
	}
	p, err := goose.NewProvider(goose.DialectSQLite3, db, fsys, goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
}

// Ping implements dibs.Store.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.read.PingContext(ctx); err != nil {
		return translate(err)
	}
	return nil
}

// Close stops the checkpointer, checkpoints what is left, and closes both
// pools. Safe to call twice.
func (s *Store) Close() error {
	select {
	case <-s.stop:
		return nil
	default:
	}
	close(s.stop)
	<-s.done
	s.db.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`)
	s.inserts.close()
	return errors.Join(s.runner.Close(), s.read.Close(), s.db.Close())
}

// translate turns driver errors into dibs errors. Constraint violations are
// conflicts; a full disk or an I/O error means the store cannot take writes.
func translate(err error) error {
	var se *sqlite.Error
	if err == nil || !errors.As(err, &se) {
		return err
	}
	switch se.Code() {
	case sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY, sqlite3.SQLITE_CONSTRAINT_UNIQUE:
		return dibs.WrapError(dibs.ECONFLICT, "already exists", err)
	}
	switch se.Code() & 0xff { // primary result code
	case sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_BUSY, sqlite3.SQLITE_READONLY:
		return dibs.WrapError(dibs.EUNAVAILABLE, "The record cannot take writes right now.", err)
	}
	return err
}

func micros(t time.Time) int64 { return t.UnixMicro() }

func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

func nullMicros(t time.Time) sql.NullInt64 {
	return sql.NullInt64{Int64: t.UnixMicro(), Valid: !t.IsZero()}
}

func fromNullMicros(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return fromMicros(n.Int64)
}

func nullString(s string) sql.NullString { return sql.NullString{String: s, Valid: s != ""} }
