package httpapi

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/post"
)

// Post is the post-processing the API exposes: payment requests, job
// counts and failed webhooks. Without it, paying answers 503 and the job
// endpoints 404.
type Post interface {
	// RequestPayment records that userID asks to pay the held claim.
	RequestPayment(ctx context.Context, claimID, userID string, now time.Time) (*dibs.Claim, error)
	// JobCounts counts the drop's jobs by kind and state.
	JobCounts(ctx context.Context, dropID string) ([]post.JobCount, error)
	// FailedWebhooks lists webhook jobs that gave up ("" = every drop).
	FailedWebhooks(ctx context.Context, dropID string, limit int) ([]post.FailedJob, error)
	// Retry runs a failed webhook job again.
	Retry(ctx context.Context, jobID int64) error
}

// Bounds of the failed-webhook listing.
const (
	DefaultFailedLimit = 100
	MaxFailedLimit     = 1000
)

// pay records the owner's payment request for a held claim and answers 202:
// the outcome shows on the claim and in the webhook. Asking again changes
// nothing and answers the same.
func (s *Server) pay(w http.ResponseWriter, r *http.Request) {
	user, err := s.user(r)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	id, err := pathClaimID(r)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	if s.post == nil {
		writeError(w, r, s.log, dibs.Errorf(dibs.EUNAVAILABLE, "Payments are not enabled on this server."))
		return
	}
	c, err := s.post.RequestPayment(r.Context(), id, user, time.Now())
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	w.Header().Set("Location", "/v1/claims/"+c.ID)
	w.Header()["Cache-Control"] = noStore
	writeJSON(w, http.StatusAccepted, newClaimJSON(c))
}

// jobCounts lists the drop's jobs by kind and state.
func (s *Server) jobCounts(w http.ResponseWriter, r *http.Request) {
	id, err := pathDropID(r)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	if _, err := s.engine.Drop(id); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	counts := []post.JobCount{}
	if s.post != nil {
		if counts, err = s.post.JobCounts(r.Context(), id); err != nil {
			writeError(w, r, s.log, err)
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"drop_id": id, "jobs": counts})
}

// failedWebhooks lists webhook jobs that exhausted their attempts or were
// refused for good, newest first; ?drop=ID narrows to one drop.
func (s *Server) failedWebhooks(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	drop := q.Get("drop")
	if drop != "" && !dibs.ValidDropID(drop) {
		writeError(w, r, s.log, dibs.Errorf(dibs.EINVALID, "drop must match [a-z0-9-]{1,64}."))
		return
	}
	limit := DefaultFailedLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxFailedLimit {
			writeError(w, r, s.log, dibs.Errorf(dibs.EINVALID, "limit must be between 1 and %d.", MaxFailedLimit))
			return
		}
		limit = n
	}
	failed := []post.FailedJob{}
	if s.post != nil {
		var err error
		if failed, err = s.post.FailedWebhooks(r.Context(), drop, limit); err != nil {
			writeError(w, r, s.log, err)
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"failed": failed})
}

// retryWebhook schedules a failed webhook job to run again now.
func (s *Server) retryWebhook(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.PathValue("job"), 10, 64)
	if err != nil || id < 1 {
		writeError(w, r, s.log, dibs.Errorf(dibs.EINVALID, "Job ids are positive integers."))
		return
	}
	if s.post == nil {
		writeError(w, r, s.log, dibs.Errorf(dibs.ENOTFOUND, "No failed webhook job %d.", id))
		return
	}
	if err := s.post.Retry(r.Context(), id); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	s.log.Info("webhook retried", "job", id)
	writeJSON(w, http.StatusAccepted, map[string]any{"job_id": id, "state": "available"})
}

// pathClaimID is the {id} of a claim route, validated.
func pathClaimID(r *http.Request) (string, error) {
	id := r.PathValue("id")
	if !claimIDPattern.MatchString(id) {
		return "", dibs.Errorf(dibs.EINVALID, "Claim ids match [A-Za-z0-9_-]{1,64}.")
	}
	return id, nil
}
