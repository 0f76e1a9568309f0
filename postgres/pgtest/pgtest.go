// Package pgtest opens PostgreSQL stores for tests. Each store lives in a
// schema of its own, created for the test and dropped with everything in
// it when the test ends, so tests run in parallel against one database.
//
// The database is the one internal/testenv names (TEST_DATABASE_URL): a
// test is skipped when it is unset, and fails under CI when it does not
// answer.
package pgtest

import (
	"context"
	"crypto/rand"
	neturl "net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dibs-io/dibs/internal/testenv"
	"github.com/dibs-io/dibs/postgres"
)

// Conns is the size of each pool of a test store: small, because every
// parallel test holds its own pools on a shared server.
const Conns = 2

// URL returns the test database URL, or skips or fails tb.
func URL(tb testing.TB) string {
	tb.Helper()
	return testenv.DatabaseURL(tb)
}

// SchemaURL returns the test database URL with a new schema (NewSchema)
// as its search_path: what a node started with --postgres needs to keep
// its record, River's tables included, apart from every other test.
func SchemaURL(tb testing.TB) string {
	tb.Helper()
	base := URL(tb)
	u, err := neturl.Parse(base)
	if err != nil {
		tb.Fatalf("parse %s: %v", base, err)
	}
	q := u.Query()
	q.Set("search_path", NewSchema(tb, base))
	u.RawQuery = q.Encode()
	return u.String()
}

// NewSchema creates an empty schema in the database at url, drops it with
// everything in it when tb ends, and returns its name.
func NewSchema(tb testing.TB, url string) string {
	tb.Helper()
	schema := "dibs_test_" + strings.ToLower(rand.Text()[:16])
	if err := execSQL(url, `CREATE SCHEMA `+pgx.Identifier{schema}.Sanitize()); err != nil {
		tb.Fatalf("create schema: %v", err)
	}
	tb.Cleanup(func() {
		if err := execSQL(url, `DROP SCHEMA `+pgx.Identifier{schema}.Sanitize()+` CASCADE`); err != nil {
			tb.Errorf("drop schema %s: %v", schema, err)
		}
	})
	return schema
}

// MustOpen opens a store in a new schema of the test database.
func MustOpen(tb testing.TB) *postgres.Store {
	tb.Helper()
	return MustOpenWith(tb, URL(tb), postgres.Options{})
}

// MustOpenWith opens a store at url with opts and closes it when tb ends.
// An empty opts.Schema becomes a new schema; pool sizes left at zero
// become Conns.
func MustOpenWith(tb testing.TB, url string, opts postgres.Options) *postgres.Store {
	tb.Helper()
	if opts.Schema == "" {
		opts.Schema = NewSchema(tb, url)
	}
	for _, n := range []*int{&opts.RecordConns, &opts.BackgroundConns, &opts.ReadConns} {
		if *n == 0 {
			*n = Conns
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := postgres.Open(ctx, url, opts)
	if err != nil {
		tb.Fatalf("open store: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// Exec runs one statement on a connection of its own, for test set-up
// that the store does not offer (roles, settings).
func Exec(tb testing.TB, url, sql string, args ...any) {
	tb.Helper()
	if err := execSQL(url, sql, args...); err != nil {
		tb.Fatalf("%s: %v", sql, err)
	}
}

func execSQL(url, sql string, args ...any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql, args...)
	return err
}
