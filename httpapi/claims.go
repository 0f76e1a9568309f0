package httpapi

import (
	"net/http"
	"regexp"
	"strconv"
	"time"

	"github.com/dibs-io/dibs"
)

// claimJSON is a claim on the wire.
type claimJSON struct {
	ClaimID       string          `json:"claim_id"`
	DropID        string          `json:"drop_id"`
	UserID        string          `json:"user_id"`
	Slot          int64           `json:"slot"`
	State         dibs.ClaimState `json:"state"`
	HoldExpiresAt *time.Time      `json:"hold_expires_at,omitempty"`
	PayRequested  *time.Time      `json:"pay_requested_at,omitempty"`
	CouponCode    string          `json:"coupon_code,omitempty"`
	CreatedAt     time.Time       `json:"created_at"`
}

func newClaimJSON(c *dibs.Claim) claimJSON {
	return claimJSON{
		ClaimID: c.ID, DropID: c.DropID, UserID: c.UserID, Slot: c.Slot, State: c.State,
		HoldExpiresAt: timePtr(c.HoldExpiresAt), PayRequested: timePtr(c.PayRequestedAt), CouponCode: c.CouponCode, CreatedAt: c.CreatedAt,
	}
}

var claimIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// createClaim answers 201 with a new claim once it is durable, 200 with the
// user's existing claim, or a problem: losers never wait for the record.
// The claim takes a claim worker's turn up to the gate's answer; a winner
// waits for its group commit without one, since waiting needs no core.
func (s *Server) createClaim(w http.ResponseWriter, r *http.Request) error {
	run, err := s.claimRun.acquire(r.Context())
	if err != nil {
		return err
	}
	w.Header()["Cache-Control"] = noStore
	claiming, err := s.claim(r)
	run()
	if err != nil {
		return err
	}
	c, created, err := claiming.Wait(r.Context())
	if err != nil {
		return err // if the client is gone, a won claim stays won and a retry returns it
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
		w.Header().Set("Location", "/v1/claims/"+c.ID)
	}
	writeJSON(w, status, newClaimJSON(c))
	return nil
}

// claim checks the claim request and asks the claim service for it.
func (s *Server) claim(r *http.Request) (dibs.Claiming, error) {
	id, err := pathDropID(r)
	if err != nil {
		return nil, err
	}
	user, err := s.user(r)
	if err != nil {
		return nil, err
	}
	key := r.Header.Get("Idempotency-Key")
	if key != "" && !dibs.ValidIdempotencyKey(key) {
		return nil, dibs.Errorf(dibs.EINVALID, "Idempotency-Key must be 1 to %d printable bytes.", dibs.MaxIdempotencyKey)
	}
	if err := s.switchedOff(dibs.SwitchClaims, "claims"); err != nil {
		return nil, err
	}
	return s.claims.Claim(r.Context(), dibs.ClaimRequest{
		DropID: id, UserID: user, IdempotencyKey: key, Admission: r.Header.Get("Dibs-Admission"),
	})
}

// timed answers with Server-Timing (serverTiming), timing from the moment
// next is called.
func timed(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(serverTiming{w, time.Now()}, r)
	})
}

// serverTiming answers with Server-Timing: app;dur=<ms>, the time the
// handler took, so a load generator can tell the server's share of the
// latency it measures from its own.
type serverTiming struct {
	http.ResponseWriter
	start time.Time
}

func (t serverTiming) WriteHeader(status int) {
	dur := float64(time.Since(t.start).Microseconds()) / 1000
	t.Header()["Server-Timing"] = []string{"app;dur=" + strconv.FormatFloat(dur, 'f', -1, 64)}
	t.ResponseWriter.WriteHeader(status)
}

// getClaim returns the caller's claim; other users' claims are 404.
func (s *Server) getClaim(w http.ResponseWriter, r *http.Request) error {
	user, err := s.user(r)
	if err != nil {
		return err
	}
	id, err := pathClaimID(r)
	if err != nil {
		return err
	}
	c, err := s.claims.FindClaim(r.Context(), id, user)
	if err != nil {
		return err
	}
	w.Header()["Cache-Control"] = noStore
	writeJSON(w, http.StatusOK, newClaimJSON(c))
	return nil
}
