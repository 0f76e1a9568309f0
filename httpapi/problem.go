package httpapi

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/dibs-io/dibs"
)

// statuses maps error codes to HTTP statuses: the one place that does.
var statuses = map[string]int{
	dibs.EINVALID:           http.StatusBadRequest,
	dibs.ETOOLARGE:          http.StatusRequestEntityTooLarge,
	dibs.EUNAUTHORIZED:      http.StatusUnauthorized,
	dibs.EFORBIDDEN:         http.StatusForbidden,
	dibs.EADMISSIONREQUIRED: http.StatusForbidden,
	dibs.EADMISSIONINVALID:  http.StatusForbidden,
	dibs.ENOTFOUND:          http.StatusNotFound,
	dibs.ECONFLICT:          http.StatusConflict,
	dibs.ELIMIT:             http.StatusConflict,
	dibs.ESOLDOUT:           http.StatusGone,
	dibs.ECLOSED:            http.StatusGone,
	dibs.ENOTOPEN:           http.StatusTooEarly,
	dibs.ETHROTTLED:         http.StatusTooManyRequests,
	dibs.EPAUSED:            http.StatusServiceUnavailable,
	dibs.EOVERLOADED:        http.StatusServiceUnavailable,
	dibs.EUNAVAILABLE:       http.StatusServiceUnavailable,
	dibs.EINTERNAL:          http.StatusInternalServerError,
	codeMethodNotAllowed:    http.StatusMethodNotAllowed,
	codeNotAcceptable:       http.StatusNotAcceptable,
}

// Codes only the HTTP layer produces.
const (
	codeMethodNotAllowed = "method_not_allowed"
	codeNotAcceptable    = "not_acceptable"
)

// retryAfter is the Retry-After (seconds) sent with codes a client should
// retry after waiting.
var retryAfter = map[string]int{
	dibs.ETHROTTLED:   1,
	dibs.EOVERLOADED:  1,
	dibs.EUNAVAILABLE: 1,
	dibs.EPAUSED:      5,
}

// Problem is an RFC 9457 problem detail with dibs's stable code.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	Code   string `json:"code"`
}

// ProblemType is the type URI of problems with code.
func ProblemType(code string) string { return "urn:dibs:problem:" + code }

// StatusOf is the HTTP status of an error code.
func StatusOf(code string) int {
	if s, ok := statuses[code]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// writeError answers with err as problem+json. Internal errors are logged
// with their cause; the client sees only the code's generic message.
func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	code := dibs.ErrorCode(err)
	status := StatusOf(code)
	if status >= 500 && code != dibs.EOVERLOADED && code != dibs.EPAUSED {
		log.Error("request failed", "method", r.Method, "path", r.URL.Path, "code", code, "err", err)
	}
	if code == dibs.EINTERNAL {
		err = dibs.Errorf(dibs.EINTERNAL, "An internal error occurred.")
	}
	writeProblem(w, status, code, dibs.ErrorMessage(err))
}

func writeProblem(w http.ResponseWriter, status int, code, detail string) {
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Set("Cache-Control", "no-store")
	if s, ok := retryAfter[code]; ok && h.Get("Retry-After") == "" {
		h.Set("Retry-After", strconv.Itoa(s))
	}
	if status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", `Bearer error="invalid_token"`)
	}
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(Problem{
		Type: ProblemType(code), Title: http.StatusText(status), Status: status, Detail: detail, Code: code,
	})
}

// writeJSON answers with v as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
