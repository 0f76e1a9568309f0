package httpapi

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

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
	dibs.ESWITCHEDOFF:       http.StatusServiceUnavailable,
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
	// An operator turned the work off; a client asking more often than
	// this only adds load to a sale in trouble.
	dibs.ESWITCHEDOFF: 5,
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
// with their cause (unavailable ones as warnings: a dependency is down, and
// says so in its own log), at most a line per code every few seconds (see
// failures); the client sees only the code's generic message.
func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	code := dibs.ErrorCode(err)
	status := StatusOf(code)
	if status >= 500 && code != dibs.EOVERLOADED && code != dibs.EPAUSED && code != dibs.ESWITCHEDOFF {
		failures.log(log, r, code, err)
	}
	if code == dibs.EINTERNAL {
		err = dibs.Errorf(dibs.EINTERNAL, "An internal error occurred.")
	}
	writeProblem(w, status, code, dibs.ErrorMessage(err))
}

// failures limits the lines failed requests write: a Redis outage during a
// spike would otherwise write one per claim.
var failures = newFailureLog(10 * time.Second)

// failureLog logs the first failed request of a burst, per logger and
// code, at once and in full; the others of the next window are only
// counted, and one line at the end of the window says how many there were
// and the last one's cause. The next failure after that starts a new burst.
// Its memory is one entry per logger and code failing in the last window.
type failureLog struct {
	window time.Duration
	mu     sync.Mutex
	bursts map[burstKey]*burst
}

type burstKey struct {
	log  *slog.Logger
	code string
}

type burst struct {
	n             int // failures after the first
	method, path  string
	err           error // the last one's
	first, latest time.Time
}

func newFailureLog(window time.Duration) *failureLog {
	return &failureLog{window: window, bursts: make(map[burstKey]*burst)}
}

func levelOf(code string) slog.Level {
	if code == dibs.EUNAVAILABLE {
		return slog.LevelWarn
	}
	return slog.LevelError
}

func (f *failureLog) log(log *slog.Logger, r *http.Request, code string, err error) {
	k := burstKey{log, code}
	now := time.Now()
	f.mu.Lock()
	if b := f.bursts[k]; b != nil {
		b.n++
		b.method, b.path, b.err, b.latest = r.Method, r.URL.Path, err, now
		f.mu.Unlock()
		return
	}
	f.bursts[k] = &burst{first: now}
	f.mu.Unlock()
	time.AfterFunc(f.window, func() { f.end(k) })
	log.Log(r.Context(), levelOf(code), "request failed", "method", r.Method, "path", r.URL.Path, "code", code, "err", err)
}

// end closes the burst k and sums it up.
func (f *failureLog) end(k burstKey) {
	f.mu.Lock()
	b := f.bursts[k]
	delete(f.bursts, k)
	f.mu.Unlock()
	if b == nil || b.n == 0 {
		return
	}
	k.log.Log(context.Background(), levelOf(k.code), "requests failed like the one before; not logged one by one",
		"code", k.code, "count", b.n, "over", b.latest.Sub(b.first).Round(time.Millisecond),
		"last_method", b.method, "last_path", b.path, "last_err", b.err)
}

func writeProblem(w http.ResponseWriter, status int, code, detail string) {
	h := w.Header()
	// Shared value slices (never changed after a write) spare every loser
	// of a spike an allocation per header.
	h["Content-Type"] = problemContentType
	h["Cache-Control"] = noStore
	if v, ok := retryAfterHeader[code]; ok && h.Get("Retry-After") == "" {
		h["Retry-After"] = v
	}
	if status == http.StatusUnauthorized {
		h["Www-Authenticate"] = invalidToken
	}
	w.WriteHeader(status)
	w.Write(problemBody(status, code, detail))
}

// bodies remembers encoded problem bodies: the losers of a spike get the
// same few answers (the drop is sold out) tens of thousands of times a
// second. It stops growing at maxBodies, past which bodies are encoded
// each time, so details that vary cannot fill memory.
var (
	bodies     sync.Map // problemKey → []byte
	bodiesKept atomic.Int64
)

const maxBodies = 4096

type problemKey struct {
	status       int
	code, detail string
}

func problemBody(status int, code, detail string) []byte {
	k := problemKey{status, code, detail}
	if b, ok := bodies.Load(k); ok {
		return b.([]byte)
	}
	b := appendProblem(make([]byte, 0, 256), status, code, detail)
	if bodiesKept.Load() < maxBodies {
		if _, loaded := bodies.LoadOrStore(k, b); !loaded {
			bodiesKept.Add(1)
		}
	}
	return b
}

var (
	problemContentType = []string{"application/problem+json"}
	noStore            = []string{"no-store"}
	invalidToken       = []string{`Bearer error="invalid_token"`}
	retryAfterHeader   = func() map[string][]string {
		m := make(map[string][]string, len(retryAfter))
		for code, s := range retryAfter {
			m[code] = []string{strconv.Itoa(s)}
		}
		return m
	}()
)

// appendProblem appends the problem+json body: the same bytes
// json.Marshal(Problem{...}) gives, without reflection, because losers of a
// spike get this answer tens of thousands of times a second.
func appendProblem(b []byte, status int, code, detail string) []byte {
	b = append(b, `{"type":`...)
	b = appendJSONString(b, ProblemType(code))
	b = append(b, `,"title":`...)
	b = appendJSONString(b, http.StatusText(status))
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, `,"detail":`...)
	b = appendJSONString(b, detail)
	b = append(b, `,"code":`...)
	b = appendJSONString(b, code)
	return append(b, "}\n"...)
}

// appendJSONString appends s as a JSON string, escaped as encoding/json
// escapes it.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' || c >= 0x80 {
			q, _ := json.Marshal(s) // rare: anything to escape
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// writeJSON answers with v as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
