package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/dibs-io/dibs"
)

// The bodies of the dibs API v1 that the generator reads. Unknown fields are
// ignored: the generator must keep working against newer servers.
type (
	claimBody struct {
		ClaimID string `json:"claim_id"`
		DropID  string `json:"drop_id"`
		UserID  string `json:"user_id"`
		Slot    int64  `json:"slot"`
		State   string `json:"state"`
	}
	problemBody struct {
		Code string `json:"code"`
	}
	ticketBody struct {
		Ticket      string `json:"ticket"`
		State       string `json:"state"`
		Position    int64  `json:"position"`
		Admission   string `json:"admission"`
		PollAfterMS int64  `json:"poll_after_ms"`
	}
	publicDrop struct {
		State     string `json:"state"`
		Remaining int64  `json:"remaining"`
	}
	// adminDrop is GET /v1/admin/drops/{id}: the drop and its live stats.
	adminDrop struct {
		ID           string `json:"id"`
		Title        string `json:"title"`
		Kind         string `json:"kind"`
		Stock        int64  `json:"stock"`
		PerUserLimit int    `json:"per_user_limit"`
		Price        int64  `json:"price"`
		Admission    struct {
			Mode string `json:"mode"`
			Rate int    `json:"rate"`
		} `json:"admission"`
		Remaining   int64 `json:"remaining"`
		Held        int64 `json:"held"`
		Confirmed   int64 `json:"confirmed"`
		Paid        int64 `json:"paid"`
		Released    int64 `json:"released"`
		Expired     int64 `json:"expired"`
		ClaimsTotal int64 `json:"claims_total"`
	}
	// winner is one line of GET /v1/admin/drops/{id}/winners.
	winner struct {
		ClaimID string `json:"claim_id"`
		UserID  string `json:"user_id"`
		Slot    int64  `json:"slot"`
		State   string `json:"state"`
	}
)

func (d *adminDrop) queued() bool   { return d.Admission.Mode == dibs.AdmissionQueue }
func (d *adminDrop) purchase() bool { return d.Kind == string(dibs.KindPurchase) }

// result is the answer to one request, or why there was none.
type result struct {
	status     int    // 0: no answer
	code       string // problem code, or codeTimeout/codeTransport/codeCanceled
	body       []byte // kept for 2xx answers only
	retryAfter time.Duration
	hasRetry   bool // the answer carried a Retry-After
	// serverDur is the server's own time on the request, from its
	// Server-Timing header (hasServer: it sent one).
	serverDur time.Duration
	hasServer bool
	done      time.Time
	node      int // the target that answered, or the last one tried
}

// unknown reports whether the request may or may not have taken effect: no
// answer, a 5xx, or a 503 unavailable (dibs could not tell whether its gate
// took a slot), which is retried like a shed answer all the same.
func (r result) unknown() bool {
	return r.status == 0 || r.status >= 500 && (!r.shed() || r.code == dibs.EUNAVAILABLE)
}

// shed reports an answer that asks to come back later.
func (r result) shed() bool {
	return r.status == http.StatusTooManyRequests || r.status == http.StatusServiceUnavailable
}

// request is one HTTP request the generator sends.
type request struct {
	op       op
	method   string
	path     string
	bearer   string
	headers  [][2]string // extra headers: name, value
	node     int         // index of the target to send it to
	intended time.Time
	// first marks an arrival's first request: if it gets a connection
	// later than StartSlack after intended, the start was missed.
	first bool
}

// target is one node the generator sends to, and what it sent there.
type target struct {
	url      string
	wire     *wireClient  // the lean client for the load; nil: net/http
	requests atomic.Int64 // requests that reached it (answered or not)
	refused  atomic.Int64 // requests it refused to connect (sent on to the next node, if any)
}

// maxBody bounds what is read of an answer; dibs answers are small.
const maxBody = 64 << 10

// send sends req once, records its answer and returns it. ctx is the run's:
// its end marks the answer canceled, while RequestTimeout marks it timed out.
//
// A node that refuses the connection never saw the request, so send tries
// the next node, as a load balancer does with a backend that is down, until
// one takes the connection or every node was tried. Anything after the
// connection (a reset, a timeout) is the request's answer: the claim may
// have been taken, and a load balancer would not send it twice either.
func (r *runner) send(ctx context.Context, req request) result {
	deadline := time.Now().Add(r.cfg.RequestTimeout)
	var res result
	var err error
	for tries := 1; ; tries++ {
		res, err = r.roundTrip(ctx, &req, deadline)
		if !refused(err) {
			r.targets[req.node].requests.Add(1)
			break
		}
		r.targets[req.node].refused.Add(1)
		if ctx.Err() != nil || !time.Now().Before(deadline) || tries == len(r.targets) {
			break
		}
		req.node = (req.node + 1) % len(r.targets)
	}
	res.node = req.node
	if res.status == 0 {
		switch {
		case ctx.Err() != nil:
			res.code = codeCanceled
		case timedOut(err):
			res.code = codeTimeout
		default:
			res.code = codeTransport
		}
	}
	res.done = r.cfg.Now()
	r.rec.answer(req.op, res.status, res.code, req.intended, res.done, res.serverDur, res.hasServer)
	r.book.serverError(res)
	return res
}

// timedOut reports an error of a request that ran out of time.
func timedOut(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) ||
		errors.As(err, &ne) && ne.Timeout()
}

// gotConn notes, for an arrival's first request, the moment it got a
// connection: a request waiting for one has not started, and that wait is
// the generator's, not the server's.
//
// connWait is how long it waited for the connection: beyond the slack that
// wait is the server's backlog (every connection busy with an earlier
// request), else the lag is the generator's own (its goroutine started
// late).
func (r *runner) gotConn(req *request, connWait time.Duration) {
	if req.first {
		req.first = false // a second connection (another node) is not a second start
		r.spike.late(r.cfg.Now().Sub(req.intended), false, connWait > r.cfg.StartSlack)
	}
}

// roundTrip sends req to its node once, on the lean client when the node
// has one; with no answer it returns the error that prevented one.
func (r *runner) roundTrip(ctx context.Context, req *request, deadline time.Time) (result, error) {
	w := r.targets[req.node].wire
	if w == nil {
		return r.httpRoundTrip(ctx, req, deadline)
	}
	asked := r.cfg.Now()
	c, err := w.conn(ctx, deadline)
	if err != nil {
		return result{}, err
	}
	r.gotConn(req, r.cfg.Now().Sub(asked))
	a, err := c.do(w.host, req, deadline)
	if err != nil {
		w.release(c, false)
		if ctx.Err() != nil {
			err = errors.Join(err, ctx.Err())
		}
		return result{}, err
	}
	res := result{status: a.status, serverDur: a.serverDur, hasServer: a.hasServer}
	if res.status >= 300 {
		res.code = problemCode(a.body)
	} else {
		res.body = bytes.Clone(a.body)
	}
	w.release(c, !a.close) // a.body is the connection's: read before
	if a.retryAfter != "" {
		res.retryAfter, res.hasRetry = parseRetryAfter(a.retryAfter, r.cfg.Now())
	}
	return res, nil
}

// httpRoundTrip is roundTrip through net/http, for https targets and a
// caller's Config.Client.
func (r *runner) httpRoundTrip(ctx context.Context, req *request, deadline time.Time) (result, error) {
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	if req.first {
		// A copy for the trace, so that req stays on its caller's stack
		// on the lean client's path.
		traced := *req
		defer func() { req.first = traced.first }()
		asked := r.cfg.Now()
		ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { r.gotConn(&traced, r.cfg.Now().Sub(asked)) }})
	}
	hr, err := http.NewRequestWithContext(ctx, req.method, r.targets[req.node].url+req.path, nil)
	if err != nil {
		return result{}, err
	}
	if req.bearer != "" {
		hr.Header.Set("Authorization", "Bearer "+req.bearer)
	}
	for _, h := range req.headers {
		hr.Header.Set(h[0], h[1])
	}
	resp, err := r.cfg.Client.Do(hr)
	if err != nil {
		return result{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	// Drain what is left so the connection goes back to the pool.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return result{}, err
	}
	res := result{status: resp.StatusCode}
	if res.status >= 300 {
		var p problemBody
		if json.Unmarshal(body, &p) == nil {
			res.code = p.Code
		}
	} else {
		res.body = body
	}
	if v := resp.Header.Get("Retry-After"); v != "" {
		res.retryAfter, res.hasRetry = parseRetryAfter(v, r.cfg.Now())
	}
	if v := resp.Header.Get("Server-Timing"); v != "" {
		res.serverDur, res.hasServer = parseServerTiming([]byte(v))
	}
	return res, nil
}

// refused reports an error from dialling: the request never reached a
// server, so it may go to another node.
func refused(err error) bool {
	if err == nil {
		return false // without errors.As, whose target would escape on every answer
	}
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// parseRetryAfter reads a Retry-After header: delay-seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && s >= 0 {
		return time.Duration(s) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

// getAdmin reads an admin resource into v.
func (r *runner) getAdmin(ctx context.Context, path string, v any) error {
	return r.adminCall(func(base string) error {
		return doJSON(ctx, r.cfg.Client, base+path, r.cfg.AdminToken, http.MethodGet, nil, v)
	})
}

// adminCall runs call with the base URL of the admin node: the first
// target, or, once it refuses connections (a rehearsal may kill a node),
// the next. With one target it is that one, whatever happens.
func (r *runner) adminCall(call func(base string) error) error {
	var err error
	for range r.targets {
		k := r.admin.Load()
		if err = call(r.targets[k].url); err == nil || !refused(err) {
			return err
		}
		next := (k + 1) % int32(len(r.targets))
		if r.admin.CompareAndSwap(k, next) {
			r.log.Warn("admin node refuses connections; reading from the next target", "refused", r.targets[k].url, "next", r.targets[next].url)
		}
	}
	return err
}

// doJSON sends a request outside the measured load (setup, samples, the
// audit) with an optional JSON body and bearer token, and decodes a 2xx
// answer into out.
func doJSON(ctx context.Context, c *http.Client, url, token, method string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("%s %s: %s: %s", method, req.URL.Path, resp.Status, bytes.TrimSpace(b))
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode %s: %w", req.URL.Path, err)
	}
	return nil
}

// mintPassports signs one passport per user before the run, so signing
// costs nothing while the clock runs. It uses every core.
//
// Only the users that own says are signed (a shard's); the others are "".
func mintPassports(secret []byte, userID func(int) string, n int, exp time.Time, own func(int) bool) ([]string, error) {
	out := make([]string, n)
	workers := min(runtime.GOMAXPROCS(0), n)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				if !own(i) {
					continue
				}
				tok := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{
					Subject:   userID(i),
					ExpiresAt: jwt.NewNumericDate(exp),
				})
				s, err := tok.SignedString(secret)
				if err != nil {
					errs[w] = err
					return
				}
				out[i] = s
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("mint passports: %w", err)
	}
	return out, nil
}
