package loadgen

import (
	"context"
	"encoding/json"
	"math"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/dibs-io/dibs"
)

// session is one user's visit: its passport, its random choices and the
// in-flight place the dispatcher handed it for its first request.
type session struct {
	r     *runner
	user  int
	id    string
	rng   *rand.Rand
	node  int  // the target of the next request
	held  bool // holds an in-flight place for the next request
	first bool // the next request is the arrival's first, not yet counted as missed
}

// user plays one user from its arrival to its last answer: through the
// waiting room when the drop queues, a claim, perhaps a second claim, and
// for a purchase drop the payment of what it won.
func (r *runner) user(ctx context.Context, i int, intended time.Time, missed bool) {
	s := &session{r: r, user: i, id: r.userID(i), node: i % len(r.targets), held: true, first: !missed,
		rng: rand.New(rand.NewPCG(uint64(r.cfg.Seed), uint64(i)))}
	defer func() {
		if s.held {
			r.spike.slots.release()
		}
	}()

	var admission string
	if r.drop.queued() {
		var ok bool
		if admission, intended, ok = s.waitingRoom(ctx, intended); !ok {
			return
		}
	}
	var key string
	if r.cfg.IdempotencyKeys {
		key = s.id + "-claim"
	}
	first := s.claim(ctx, intended, admission, key)
	won := []claimBody{}
	if first.claim != nil {
		won = append(won, *first.claim)
	}
	if first.res.code != codeCanceled && r.claimsTwice(i) {
		// Up to twice the mean delay: people press again after a moment.
		at := r.cfg.Now().Add(time.Duration(s.rng.Int64N(int64(2*r.cfg.RetryDelay) + 1)))
		if !r.sleepUntil(ctx, at) {
			return
		}
		second := s.claim(ctx, at, admission, key)
		r.book.secondClaim(first, second, r.drop.PerUserLimit == 1 || key != "")
		if second.claim != nil && (first.claim == nil || second.claim.ClaimID != first.claim.ClaimID) {
			won = append(won, *second.claim)
		}
	}
	if r.drop.purchase() {
		for _, c := range won {
			s.pay(ctx, c)
		}
	}
}

// claimsTwice reports whether user i claims a second time: exactly
// ⌊Users × RetryFraction⌋ users do, every 1/RetryFraction-th arrival, so a
// run's number of claims is known beforehand.
func (r *runner) claimsTwice(i int) bool {
	f := r.cfg.RetryFraction
	return math.Floor(float64(i+1)*f) > math.Floor(float64(i)*f)
}

// claimOutcome is the answer to a claim, and the claim when it was a win.
type claimOutcome struct {
	res   result
	claim *claimBody
}

// claim sends one claim (with its retries after 429 and 503) and books what
// the answer says.
func (s *session) claim(ctx context.Context, intended time.Time, admission, key string) claimOutcome {
	req := request{op: opClaim, method: http.MethodPost, path: s.r.claimPath, intended: intended}
	if admission != "" {
		req.headers = append(req.headers, [2]string{"Dibs-Admission", admission})
	}
	if key != "" {
		req.headers = append(req.headers, [2]string{"Idempotency-Key", key})
	}
	sent := s.r.cfg.Now() // before any wait for a place or a retry: the audit's evidence errs early
	out := claimOutcome{res: s.do(ctx, req)}
	b := s.r.book
	switch res := out.res; {
	case res.status == http.StatusCreated || res.status == http.StatusOK:
		var c claimBody
		if err := json.Unmarshal(res.body, &c); err != nil || c.ClaimID == "" {
			b.claimAnswer(s.user, sent, res, nil)
			return out
		}
		out.claim = &c
		b.claimAnswer(s.user, sent, res, &c)
	case res.status == http.StatusGone && res.code == dibs.ESOLDOUT:
		b.soldOut(res.done)
		b.claimAnswer(s.user, sent, res, nil)
	default:
		b.claimAnswer(s.user, sent, res, nil)
	}
	return out
}

// waitingRoom joins the drop's queue and follows the ticket until admitted,
// sold out, closed or QueueWait has passed. It returns the admission and the
// moment the claim is due.
func (s *session) waitingRoom(ctx context.Context, intended time.Time) (string, time.Time, bool) {
	r := s.r
	deadline := intended.Add(r.cfg.QueueWait)
	res := s.do(ctx, request{op: opQueueJoin, method: http.MethodPost, path: "/v1/drops/" + r.drop.ID + "/queue", intended: intended})
	if res.status != http.StatusCreated && res.status != http.StatusOK {
		r.book.queueEnded(queueRefused)
		return "", time.Time{}, false
	}
	var t ticketBody
	if err := json.Unmarshal(res.body, &t); err != nil || t.Ticket == "" {
		r.book.queueEnded(queueRefused)
		return "", time.Time{}, false
	}
	path := "/v1/drops/" + r.drop.ID + "/queue/" + t.Ticket
	for {
		switch t.State {
		case "admitted":
			if t.Admission != "" {
				r.book.queueEnded(queueAdmitted)
				return t.Admission, r.cfg.Now(), true
			}
		case string(dibs.StateSoldOut), string(dibs.StateClosed):
			r.book.queueEnded(queueEnded)
			return "", time.Time{}, false
		}
		next := r.cfg.Now().Add(r.cfg.PollInterval)
		if t.PollAfterMS > 0 {
			next = r.cfg.Now().Add(time.Duration(t.PollAfterMS) * time.Millisecond)
		}
		if next.After(deadline) {
			r.book.queueEnded(queueGaveUp)
			return "", time.Time{}, false
		}
		if !r.sleepUntil(ctx, next) {
			return "", time.Time{}, false
		}
		res = s.do(ctx, request{op: opQueuePoll, method: http.MethodGet, path: path, bearer: r.passports[s.user], intended: next})
		switch {
		case res.status == http.StatusOK:
			t = ticketBody{}
			if json.Unmarshal(res.body, &t) != nil {
				t.State = ""
			}
		case res.status >= 400 && res.status < 500 && !res.shed():
			r.book.queueEnded(queueRefused)
			return "", time.Time{}, false
		default:
			t.State, t.PollAfterMS = "", 0 // no news: poll again
		}
	}
}

// pay pays a won claim and polls it until its payment settles (paid,
// released or expired) or PayWait has passed.
func (s *session) pay(ctx context.Context, c claimBody) {
	r := s.r
	path := "/v1/claims/" + c.ClaimID
	res := s.do(ctx, request{op: opPay, method: http.MethodPost, path: path + "/pay", intended: r.cfg.Now()})
	if res.status/100 != 2 {
		return
	}
	deadline := r.cfg.Now().Add(r.cfg.PayWait)
	for {
		next := r.cfg.Now().Add(r.cfg.PollInterval)
		if next.After(deadline) {
			r.book.payUnsettled()
			return
		}
		if !r.sleepUntil(ctx, next) {
			return
		}
		res := s.do(ctx, request{op: opClaimPoll, method: http.MethodGet, path: path, intended: next})
		if res.status != http.StatusOK {
			continue
		}
		var got claimBody
		if json.Unmarshal(res.body, &got) != nil {
			continue
		}
		switch dibs.ClaimState(got.State) {
		case dibs.ClaimPaid, dibs.ClaimReleased, dibs.ClaimExpired:
			r.book.settled(c.ClaimID, got.State, r.cfg.Now())
			return
		}
	}
}

// do sends req with the user's passport, retrying answers 429 and 503 up to
// MaxRetries times after their Retry-After (at least) and an exponential,
// jittered backoff. Each retry is measured from its own intended time.
// Each request goes to the user's node; without Sticky the user moves on to
// the next node after each request, retries included.
func (s *session) do(ctx context.Context, req request) result {
	r := s.r
	if req.bearer == "" {
		req.bearer = r.passports[s.user]
	}
	for attempt := 0; ; attempt++ {
		if !s.held {
			if !r.spike.slots.acquire(ctx) {
				return result{code: codeCanceled, done: r.cfg.Now()}
			}
		}
		req.first, s.first = s.first, false
		req.node = s.node
		res := r.send(ctx, req)
		r.spike.slots.release()
		s.held = false
		s.node = res.node // where it went: another node if its own refused
		if !r.cfg.Sticky {
			s.node = (s.node + 1) % len(r.targets)
		}
		if !res.shed() || attempt >= r.cfg.MaxRetries {
			return res
		}
		if req.op == opClaim && res.unknown() {
			r.book.maybeWon(s.user, req.intended) // retried, yet this attempt may have won
		}
		req.intended = r.cfg.Now().Add(s.backoff(attempt, res))
		if !r.sleepUntil(ctx, req.intended) {
			return res
		}
	}
}

// maxRetryAfter caps the wait a server may ask for, so a misconfigured
// Retry-After cannot stall a run for hours.
const maxRetryAfter = 30 * time.Second

// backoff is the wait before retry attempt+1: the server's Retry-After, or
// more when the exponential backoff (RetryDelay × 2^attempt, capped at 5s,
// half of it jitter) is longer.
func (s *session) backoff(attempt int, res result) time.Duration {
	b := min(s.r.cfg.RetryDelay<<attempt, 5*time.Second)
	b = b/2 + time.Duration(s.rng.Int64N(int64(b/2)+1))
	return max(b, min(res.retryAfter, maxRetryAfter))
}

// sleepUntil waits until t by the configured clock; it reports false if ctx
// ended first.
func (r *runner) sleepUntil(ctx context.Context, t time.Time) bool {
	d := t.Sub(r.cfg.Now())
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}
