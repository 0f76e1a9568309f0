package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/dibs-io/dibs"
)

// Problem codes the API answers with, as in the problem+json "code"
// member. They are the root package's codes, repeated here so that callers
// need import only the client.
const (
	CodeInvalid           = dibs.EINVALID
	CodeTooLarge          = dibs.ETOOLARGE
	CodeUnauthorized      = dibs.EUNAUTHORIZED
	CodeForbidden         = dibs.EFORBIDDEN
	CodeAdmissionRequired = dibs.EADMISSIONREQUIRED
	CodeAdmissionInvalid  = dibs.EADMISSIONINVALID
	CodeNotFound          = dibs.ENOTFOUND
	CodeConflict          = dibs.ECONFLICT
	CodeLimitReached      = dibs.ELIMIT
	CodeSoldOut           = dibs.ESOLDOUT
	CodeClosed            = dibs.ECLOSED
	CodeNotOpen           = dibs.ENOTOPEN
	CodeThrottled         = dibs.ETHROTTLED
	CodePaused            = dibs.EPAUSED
	CodeOverloaded        = dibs.EOVERLOADED
	CodeUnavailable       = dibs.EUNAVAILABLE
	CodeInternal          = dibs.EINTERNAL
)

// Error is an answer of the API that is not a success: its problem+json
// body, or what could be made of a body that was not one (Code is then
// empty). Get it with errors.As, or test its code with HasCode and the Is
// helpers.
type Error struct {
	Status int    // the HTTP status
	Code   string // the stable problem code, one of the Code constants
	Title  string // the status's text
	Detail string // a message safe to show, not for matching
	// RetryAfter is what the Retry-After header asked for; 0 if absent.
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("dibs: %d %s: %s", e.Status, e.Title, e.Detail)
	}
	return fmt.Sprintf("dibs: %d %s: %s", e.Status, e.Code, e.Detail)
}

// Code returns the problem code of the first *Error in err's chain, or "".
func Code(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// HasCode reports whether err is an *Error with code.
func HasCode(err error, code string) bool { return err != nil && Code(err) == code }

// IsSoldOut reports whether the drop had no slot left (410 sold_out).
func IsSoldOut(err error) bool { return HasCode(err, CodeSoldOut) }

// IsClosed reports whether the drop no longer takes claims (410 closed).
func IsClosed(err error) bool { return HasCode(err, CodeClosed) }

// IsNotOpen reports whether the drop does not take claims yet (425 not_open).
func IsNotOpen(err error) bool { return HasCode(err, CodeNotOpen) }

// IsLimitReached reports whether the user holds as many claims as the drop
// allows (409 limit_reached).
func IsLimitReached(err error) bool { return HasCode(err, CodeLimitReached) }

// IsNotFound reports whether the thing does not exist, or is not the
// caller's (404 not_found).
func IsNotFound(err error) bool { return HasCode(err, CodeNotFound) }

// IsAdmissionRequired reports whether the drop admits claims from its
// waiting room only and none was presented (403 admission_required).
func IsAdmissionRequired(err error) bool { return HasCode(err, CodeAdmissionRequired) }

// Temporary reports whether err is worth retrying later: throttled,
// paused, overloaded or unavailable (429 or 503), or no answer at all
// (a transport error). Errors of a ctx that ended are not.
func Temporary(err error) bool {
	var e *Error
	if errors.As(err, &e) {
		return e.Status == http.StatusTooManyRequests || e.Status == http.StatusServiceUnavailable
	}
	return err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

// maxProblem bounds the error body read.
const maxProblem = 16 << 10

// readError turns a non-2xx response into an *Error. It reads and closes
// the body.
func readError(resp *http.Response, now time.Time) *Error {
	defer resp.Body.Close()
	e := &Error{Status: resp.StatusCode, Title: http.StatusText(resp.StatusCode), RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), now)}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxProblem))
	var p struct {
		Title, Detail, Code string
	}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/problem+json") && json.Unmarshal(b, &p) == nil {
		e.Code, e.Detail = p.Code, p.Detail
		if p.Title != "" {
			e.Title = p.Title
		}
		return e
	}
	e.Detail = strings.TrimSpace(string(b))
	return e
}

// parseRetryAfter reads delay seconds or an HTTP date; 0 if neither.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
		if n < 0 || n > int64(time.Hour/time.Second) {
			n = int64(time.Hour / time.Second)
		}
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0)
	}
	return 0
}
