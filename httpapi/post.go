package httpapi

import (
	"net/http"
	"strconv"

	"github.com/dibs-io/dibs"
)

// Bounds of the failed-webhook listing.
const (
	DefaultFailedLimit = 100
	MaxFailedLimit     = 1000
)

// pay records the owner's payment request for a held claim and answers 202:
// the outcome shows on the claim and in the webhook. Asking again changes
// nothing and answers the same.
func (s *Server) pay(w http.ResponseWriter, r *http.Request) error {
	user, err := s.user(r)
	if err != nil {
		return err
	}
	id, err := pathClaimID(r)
	if err != nil {
		return err
	}
	if s.payments == nil {
		return dibs.Errorf(dibs.EUNAVAILABLE, "Payments are not enabled on this server.")
	}
	c, err := s.payments.RequestPayment(r.Context(), id, user)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/claims/"+c.ID)
	w.Header()["Cache-Control"] = noStore
	writeJSON(w, http.StatusAccepted, newClaimJSON(c))
	return nil
}

// jobCounts lists the drop's jobs by kind and state.
func (s *Server) jobCounts(w http.ResponseWriter, r *http.Request) error {
	id, err := pathDropID(r)
	if err != nil {
		return err
	}
	if _, err := s.drops.Drop(id); err != nil {
		return err
	}
	counts := []dibs.JobCount{}
	if s.jobs != nil {
		if counts, err = s.jobs.JobCounts(r.Context(), id); err != nil {
			return err
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"drop_id": id, "jobs": counts})
	return nil
}

// failedWebhooks lists webhook jobs that exhausted their attempts or were
// refused for good, newest first; ?drop=ID narrows to one drop.
func (s *Server) failedWebhooks(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	drop := q.Get("drop")
	if drop != "" && !dibs.ValidDropID(drop) {
		return dibs.Errorf(dibs.EINVALID, "drop must match [a-z0-9-]{1,64}.")
	}
	limit := DefaultFailedLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxFailedLimit {
			return dibs.Errorf(dibs.EINVALID, "limit must be between 1 and %d.", MaxFailedLimit)
		}
		limit = n
	}
	failed := []dibs.FailedJob{}
	if s.jobs != nil {
		var err error
		if failed, err = s.jobs.FailedWebhooks(r.Context(), drop, limit); err != nil {
			return err
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"failed": failed})
	return nil
}

// retryWebhook schedules a failed webhook job to run again now.
func (s *Server) retryWebhook(w http.ResponseWriter, r *http.Request) error {
	id, err := strconv.ParseInt(r.PathValue("job"), 10, 64)
	if err != nil || id < 1 {
		return dibs.Errorf(dibs.EINVALID, "Job ids are positive integers.")
	}
	if s.jobs == nil {
		return dibs.Errorf(dibs.ENOTFOUND, "No failed webhook job %d.", id)
	}
	if err := s.jobs.Retry(r.Context(), id); err != nil {
		return err
	}
	s.log.Info("webhook retried", "job", id, "by", adminLabel(r))
	s.logAction(r, dibs.ActionWebhookRetried, "", map[string]any{"job_id": id})
	writeJSON(w, http.StatusAccepted, map[string]any{"job_id": id, "state": "available"})
	return nil
}

// pathClaimID is the {id} of a claim route, validated.
func pathClaimID(r *http.Request) (string, error) {
	id := r.PathValue("id")
	if !claimIDPattern.MatchString(id) {
		return "", dibs.Errorf(dibs.EINVALID, "Claim ids match [A-Za-z0-9_-]{1,64}.")
	}
	return id, nil
}
