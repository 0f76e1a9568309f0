package client

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// Ticket is a waiting-room ticket and where it stands.
type Ticket struct {
	Ticket string `json:"ticket,omitempty"` // set on joining; keep it to ask again
	Number uint64 `json:"number"`
	// State is waiting, admitted, expired, won, sold_out or closed.
	State string `json:"state"`
	// Position and Ahead are nil while not known or not waiting.
	Position   *uint64  `json:"position"`
	Ahead      *uint64  `json:"ahead"`
	ETASeconds *float64 `json:"eta_seconds"`
	// PollAfterMS is when to ask again; 0 once the wait is over.
	PollAfterMS int64 `json:"poll_after_ms"`
	// Admission, once admitted, goes with the claim (ClaimOptions).
	Admission          string     `json:"admission,omitempty"`
	AdmissionExpiresAt *time.Time `json:"admission_expires_at,omitempty"`
	OpensAt            time.Time  `json:"opens_at"`
	Joined             uint64     `json:"joined"`
	Remaining          int64      `json:"remaining"`
	ServerTime         time.Time  `json:"server_time"`
}

// PollAfter is how long to wait before asking again.
func (t *Ticket) PollAfter() time.Duration { return time.Duration(t.PollAfterMS) * time.Millisecond }

// QueueInfo is a waiting room's public state.
type QueueInfo struct {
	Order             string  `json:"order"`
	Rate              int     `json:"rate"`
	Opened            bool    `json:"opened"`
	PreQueue          *uint64 `json:"prequeue,omitempty"`
	Joined            uint64  `json:"joined"`
	Serving           uint64  `json:"serving"`
	SoldOut           bool    `json:"sold_out"`
	SeedSHA256        string  `json:"seed_sha256"`
	Seed              string  `json:"seed,omitempty"`
	Permutation       string  `json:"permutation"`
	AdmittedPerSecond float64 `json:"admitted_per_second"`
}

// JoinQueue joins drop dropID's waiting room for the passport's user, or
// answers the ticket they hold. Joining again answers the same ticket, so
// it is retried. Errors: CodeConflict (the drop has no waiting room),
// CodeThrottled (too many joins from one address), CodeSoldOut,
// CodeClosed.
func (c *Client) JoinQueue(ctx context.Context, pass, dropID string) (*Ticket, error) {
	var out Ticket
	if _, err := c.do(ctx, call{method: http.MethodPost, path: "/v1/drops/" + url.PathEscape(dropID) + "/queue", auth: pass, retry: true}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Ticket reads where a ticket stands. Ask again after its PollAfter until
// its State is no longer "waiting".
func (c *Client) Ticket(ctx context.Context, pass, dropID, ticket string) (*Ticket, error) {
	var out Ticket
	path := "/v1/drops/" + url.PathEscape(dropID) + "/queue/" + url.PathEscape(ticket)
	if _, err := c.do(ctx, call{method: http.MethodGet, path: path, auth: pass, retry: true}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Queue reads a waiting room's public state.
func (c *Client) Queue(ctx context.Context, dropID string) (*QueueInfo, error) {
	var out QueueInfo
	if _, err := c.do(ctx, call{method: http.MethodGet, path: "/v1/drops/" + url.PathEscape(dropID) + "/queue", retry: true}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
