package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/internal/testenv"
)

func pgErr(code, severity string) error {
	return fmt.Errorf("insert: %w", &pgconn.PgError{Code: code, Severity: severity, SeverityUnlocalized: severity, Message: "any text"})
}

func TestTranslate(t *testing.T) {
	t.Parallel()
	_, refused := pgconn.Connect(context.Background(), "postgres://nobody@127.0.0.1:1/none?connect_timeout=5")
	for _, tt := range []struct {
		name  string
		err   error
		code  string // dibs code after translation
		stale bool   // the pools should drop their connections
	}{
		{"unique violation", pgErr("23505", "ERROR"), dibs.ECONFLICT, false},
		{"read-only transaction", pgErr("25006", "ERROR"), dibs.EUNAVAILABLE, true},
		{"admin shutdown", pgErr("57P01", "FATAL"), dibs.EUNAVAILABLE, true},
		{"crash shutdown", pgErr("57P02", "FATAL"), dibs.EUNAVAILABLE, true},
		{"starting up", pgErr("57P03", "FATAL"), dibs.EUNAVAILABLE, true},
		{"connection failure", pgErr("08006", "FATAL"), dibs.EUNAVAILABLE, true},
		{"too many connections", pgErr("53300", "FATAL"), dibs.EUNAVAILABLE, false},
		{"disk full", pgErr("53100", "ERROR"), dibs.EUNAVAILABLE, false},
		{"io error", pgErr("58030", "ERROR"), dibs.EUNAVAILABLE, false},
		{"deadlock", pgErr("40P01", "ERROR"), dibs.EUNAVAILABLE, false},
		{"serialization failure", pgErr("40001", "ERROR"), dibs.EUNAVAILABLE, false},
		{"statement canceled", pgErr("57014", "ERROR"), dibs.EUNAVAILABLE, false},
		{"foreign key violation", pgErr("23503", "ERROR"), dibs.EINTERNAL, false},
		{"syntax error", pgErr("42601", "ERROR"), dibs.EINTERNAL, false},
		{"connect refused", refused, dibs.EUNAVAILABLE, false},
		{"connection closed", fmt.Errorf("batch: %w", pgconn.ErrConnClosed), dibs.EUNAVAILABLE, true},
		{"unexpected EOF", fmt.Errorf("read: %w", io.ErrUnexpectedEOF), dibs.EUNAVAILABLE, true},
		{"reset by peer", &net.OpError{Op: "read", Err: syscall.ECONNRESET}, dibs.EUNAVAILABLE, true},
		{"deadline", fmt.Errorf("timeout: %w", context.DeadlineExceeded), dibs.EUNAVAILABLE, false},
		{"canceled", context.Canceled, dibs.EINTERNAL, false},
		{"no rows", pgx.ErrNoRows, dibs.EINTERNAL, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := translate(tt.err)
			if c := dibs.ErrorCode(got); c != tt.code {
				t.Errorf("code = %q, want %q", c, tt.code)
			}
			if !errors.Is(got, tt.err) {
				t.Errorf("translation lost the original error: %v", got)
			}
			if s := staleServer(tt.err); s != tt.stale {
				t.Errorf("stale = %v, want %v", s, tt.stale)
			}
		})
	}
	if translate(nil) != nil {
		t.Error("translate(nil) != nil")
	}
}

func TestServerRefused(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{pgErr("57014", "ERROR"), true},   // canceled during COMMIT: rolled back
		{pgErr("40001", "ERROR"), true},   // serialization failure at COMMIT
		{pgErr("57P01", "FATAL"), false},  // may follow a local commit
		{pgErr("XX000", "PANIC"), false},  // server crashed
		{io.ErrUnexpectedEOF, false},      // no answer at all
		{context.DeadlineExceeded, false}, // gave up waiting
		{pgconn.ErrConnClosed, false},     // connection gone
		{&pgconn.PgError{Code: "23505", Severity: "ERROR"}, true},
	} {
		if got := serverRefused(tt.err); got != tt.want {
			t.Errorf("serverRefused(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

// A connection that would acknowledge commits before they are flushed is
// refused.
func TestCheckDurability(t *testing.T) {
	t.Parallel()
	url := testenv.DatabaseURL(t)
	for _, tt := range []struct {
		sync string
		ok   bool
	}{{"on", true}, {"remote_apply", true}, {"off", false}, {"local", false}, {"remote_write", false}} {
		cfg, err := pgx.ParseConfig(url)
		if err != nil {
			t.Fatal(err)
		}
		cfg.RuntimeParams["synchronous_commit"] = tt.sync
		conn, err := pgx.ConnectConfig(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		err = checkDurability(context.Background(), conn)
		conn.Close(context.Background())
		if (err == nil) != tt.ok {
			t.Errorf("synchronous_commit=%s: check = %v, want ok=%v", tt.sync, err, tt.ok)
		}
	}
}
