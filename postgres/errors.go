package postgres

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/dibs-io/dibs"
)

// SQLSTATEs this package acts on
// (https://www.postgresql.org/docs/current/errcodes-appendix.html).
const (
	uniqueViolation        = "23505"
	readOnlySQLTransaction = "25006"
	serializationFailure   = "40001"
	deadlockDetected       = "40P01"
	duplicateSchema        = "42P06"
	lockNotAvailable       = "55P03"
	queryCanceled          = "57014"
	adminShutdown          = "57P01"
	crashShutdown          = "57P02"
	cannotConnectNow       = "57P03"
)

// sqlstate is the SQLSTATE of the server error in err's chain, or "".
func sqlstate(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// translate turns driver errors into dibs errors, by SQLSTATE and error
// type, never by message text. The original error stays wrapped for logs.
//
//   - a unique violation is ECONFLICT;
//   - a server that cannot take the write now (read-only after a failover,
//     shutting down, out of connections or disk, a deadlock or
//     serialization failure, a lost or refused connection, a deadline) is
//     EUNAVAILABLE: the caller may retry;
//   - anything else keeps its chain and reads as EINTERNAL.
func translate(err error) error {
	if err == nil {
		return nil
	}
	code := sqlstate(err)
	switch {
	case code == uniqueViolation:
		return dibs.WrapError(dibs.ECONFLICT, "Already exists.", err)
	case code == readOnlySQLTransaction:
		return dibs.WrapError(dibs.EUNAVAILABLE, "The record is read-only right now; please retry.", err)
	case unavailableState(code), code == "" && (connLost(err) || errors.Is(err, context.DeadlineExceeded)):
		return dibs.WrapError(dibs.EUNAVAILABLE, "The record is unavailable right now; please retry.", err)
	}
	return err
}

// unavailableState reports whether a SQLSTATE says "not now" rather than
// "never": the same statement may succeed later.
func unavailableState(code string) bool {
	if len(code) != 5 {
		return false
	}
	switch code[:2] {
	case "08", // connection exception
		"53", // insufficient resources: disk full, out of memory, too many connections
		"58": // system error: I/O
		return true
	}
	switch code {
	case serializationFailure, deadlockDetected, lockNotAvailable, queryCanceled,
		adminShutdown, crashShutdown, cannotConnectNow:
		return true
	}
	return false
}

// connLost reports whether err says the connection could not be made or
// went away, with no answer from the server about the statement.
func connLost(err error) bool {
	var ce *pgconn.ConnectError
	var ne net.Error
	return errors.As(err, &ce) ||
		errors.Is(err, pgconn.ErrConnClosed) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ECONNREFUSED) ||
		(errors.As(err, &ne) && !ne.Timeout())
}

// staleServer reports whether err means that the pooled connections lead
// to a server that is gone or no longer takes writes: it shut down,
// restarted, or a failover turned it read-only. A connection attempt that
// failed leaves nothing stale behind.
func staleServer(err error) bool {
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return false
	}
	switch code := sqlstate(err); {
	case code == readOnlySQLTransaction, code == adminShutdown, code == crashShutdown,
		code == cannotConnectNow, len(code) == 5 && code[:2] == "08":
		return true
	case code != "":
		return false
	}
	return connLost(err)
}
