package dibs

import (
	"errors"
	"fmt"
)

// Error codes. They are part of the HTTP contract (the problem+json "code"
// member), so they never change once released.
const (
	ECONFLICT          = "conflict"           // the request conflicts with current state
	EINTERNAL          = "internal"           // a bug or an unexpected failure
	EINVALID           = "invalid"            // the request is malformed
	ENOTFOUND          = "not_found"          // no such thing, or not yours
	EUNAUTHORIZED      = "unauthorized"       // missing or bad credentials
	EFORBIDDEN         = "forbidden"          // credentials fine, action not allowed
	ESOLDOUT           = "sold_out"           // no slot left
	ECLOSED            = "closed"             // the drop no longer takes claims
	ENOTOPEN           = "not_open"           // the drop does not take claims yet
	EPAUSED            = "paused"             // an operator paused the drop
	ELIMIT             = "limit_reached"      // the user holds as many claims as allowed
	EADMISSIONREQUIRED = "admission_required" // queued drop, no admission presented
	EADMISSIONINVALID  = "admission_invalid"  // admission forged, expired or someone else's
	ETHROTTLED         = "throttled"          // this client is over its rate
	EOVERLOADED        = "overloaded"         // the server sheds load; retry later
	EUNAVAILABLE       = "unavailable"        // a dependency is down; retry later
	ETOOLARGE          = "too_large"          // request body over its limit
	ESWITCHEDOFF       = "switched_off"       // an operator turned this off everywhere; retry later
)

// Error is an error the client may see. Code is machine-readable; Message is
// safe to show. The wrapped error (if any) is for logs only.
type Error struct {
	Code    string
	Message string
	Err     error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("dibs error: code=%s message=%s: %v", e.Code, e.Message, e.Err)
	}
	return fmt.Sprintf("dibs error: code=%s message=%s", e.Code, e.Message)
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// WrapError returns an *Error with code and message that wraps err for logs.
func WrapError(code, message string, err error) *Error {
	return &Error{Code: code, Message: message, Err: err}
}

// ErrorCode returns the code of the first *Error in err's chain, EINTERNAL
// for any other error, and "" for nil.
func ErrorCode(err error) string {
	if e, ok := err.(*Error); ok { // the common case, without errors.As's reflection
		return e.Code
	}
	var e *Error
	if err == nil {
		return ""
	} else if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// ErrorMessage returns the client-safe message of err: the message of the
// first *Error in its chain, or a generic one.
func ErrorMessage(err error) string {
	if e, ok := err.(*Error); ok {
		return e.Message
	}
	var e *Error
	if err == nil {
		return ""
	} else if errors.As(err, &e) {
		return e.Message
	}
	return "Internal error."
}

// ErrOutcomeUnknown marks a store failure after which a write may or may not
// have committed (a connection lost during COMMIT). Slots of such writes are
// not returned to the gate at once; the reconciler decides from the record.
var ErrOutcomeUnknown = errors.New("outcome of the write is unknown")
