package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// FailedWebhook is a webhook job that gave up.
type FailedWebhook struct {
	ID          int64     `json:"id"` // for RetryWebhook
	Kind        string    `json:"kind"`
	ClaimID     string    `json:"claim_id"`
	DropID      string    `json:"drop_id"`
	Attempts    int       `json:"attempts"`
	LastError   string    `json:"last_error"`
	FinalizedAt time.Time `json:"finalized_at"`
}

// FailedWebhooksQuery narrows FailedWebhooks: one drop ("" = every drop),
// at most Limit (0 = the server's default, 100; at most 1000).
type FailedWebhooksQuery struct {
	DropID string
	Limit  int
}

// FailedWebhooks lists webhook jobs that exhausted their attempts or were
// refused for good, newest first (admin).
func (c *Client) FailedWebhooks(ctx context.Context, q FailedWebhooksQuery) ([]FailedWebhook, error) {
	v := url.Values{}
	if q.DropID != "" {
		v.Set("drop", q.DropID)
	}
	if q.Limit != 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	path := "/v1/admin/webhooks/failed"
	if len(v) > 0 {
		path += "?" + v.Encode()
	}
	cl, err := c.adminCall(http.MethodGet, path, true)
	if err != nil {
		return nil, err
	}
	var out struct {
		Failed []FailedWebhook `json:"failed"`
	}
	if _, err := c.do(ctx, cl, &out); err != nil {
		return nil, err
	}
	return out.Failed, nil
}

// RetryWebhook sends a failed webhook job again now (admin). Errors:
// CodeNotFound. It is not retried: a second call could meet the job
// running.
func (c *Client) RetryWebhook(ctx context.Context, jobID int64) error {
	cl, err := c.adminCall(http.MethodPost, "/v1/admin/webhooks/failed/"+strconv.FormatInt(jobID, 10)+"/retry", false)
	if err != nil {
		return err
	}
	_, err = c.do(ctx, cl, nil)
	return err
}
