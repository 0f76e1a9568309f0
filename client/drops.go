package client

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// Admission says who may claim: "direct" (anyone with a passport) or
// "queue" (people the waiting room admits, Rate per second, in Order
// "shuffle" or "fifo" for those who joined before the opening).
type Admission struct {
	Mode  string `json:"mode"`
	Rate  int    `json:"rate,omitempty"`
	Order string `json:"order,omitempty"`
}

// NewDrop is what CreateDrop sends. Zero fields take the server's
// defaults (an id it chooses, one claim per user, opening now, a hold of
// 10m and KRW for purchase drops, direct admission).
type NewDrop struct {
	ID           string     `json:"id,omitempty"`
	Title        string     `json:"title"`
	Kind         string     `json:"kind"` // "coupon" or "purchase"
	Stock        int64      `json:"stock"`
	PerUserLimit int        `json:"per_user_limit,omitempty"`
	OpensAt      *time.Time `json:"opens_at,omitempty"`
	ClosesAt     *time.Time `json:"closes_at,omitempty"`
	HoldTTL      string     `json:"hold_ttl,omitempty"` // a Go duration, "10m"
	Price        int64      `json:"price,omitempty"`    // in the currency's minor unit
	Currency     string     `json:"currency,omitempty"`
	Admission    *Admission `json:"admission,omitempty"`
}

// Drop is a drop as operators see it.
type Drop struct {
	ID           string     `json:"id"`
	Title        string     `json:"title"`
	Kind         string     `json:"kind"`
	Stock        int64      `json:"stock"`
	PerUserLimit int        `json:"per_user_limit"`
	OpensAt      time.Time  `json:"opens_at"`
	ClosesAt     *time.Time `json:"closes_at,omitempty"`
	HoldTTL      string     `json:"hold_ttl,omitempty"`
	Price        int64      `json:"price,omitempty"`
	Currency     string     `json:"currency,omitempty"`
	Admission    Admission  `json:"admission"`
	Status       string     `json:"status"` // active, paused, closed: what the operator set
	State        string     `json:"state"`  // upcoming, open, paused, sold_out, closed: what a claim meets
	Remaining    int64      `json:"remaining"`
	CreatedAt    time.Time  `json:"created_at"`
	UpdatedAt    time.Time  `json:"updated_at"`
}

// DropStats is a drop with its live numbers: claims by state from the
// record, claim requests by outcome as the node that answered counted them.
type DropStats struct {
	Drop
	Held        int64            `json:"held"`
	Confirmed   int64            `json:"confirmed"`
	Paid        int64            `json:"paid"`
	Released    int64            `json:"released"`
	Expired     int64            `json:"expired"`
	ClaimsTotal int64            `json:"claims_total"`
	Outcomes    map[string]int64 `json:"outcomes"`
}

// PublicDrop is what anyone may see of a drop; Queue is set for queued
// drops.
type PublicDrop struct {
	ID        string     `json:"id"`
	Title     string     `json:"title"`
	Kind      string     `json:"kind"`
	State     string     `json:"state"`
	OpensAt   time.Time  `json:"opens_at"`
	ClosesAt  *time.Time `json:"closes_at,omitempty"`
	Stock     int64      `json:"stock"`
	Remaining int64      `json:"remaining"`
	Price     int64      `json:"price,omitempty"`
	Currency  string     `json:"currency,omitempty"`
	Admission string     `json:"admission"`
	Queue     *QueueInfo `json:"queue,omitempty"`
}

// CreateDrop creates a drop (admin). Errors: CodeInvalid, CodeConflict (the
// id is taken). It is not retried: a retry after a lost answer would meet
// the drop it created.
func (c *Client) CreateDrop(ctx context.Context, d NewDrop) (*Drop, error) {
	cl, err := c.adminCall(http.MethodPost, "/v1/admin/drops", false)
	if err != nil {
		return nil, err
	}
	cl.body = d
	var out Drop
	if _, err := c.do(ctx, cl, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Drops lists every drop (admin).
func (c *Client) Drops(ctx context.Context) ([]Drop, error) {
	cl, err := c.adminCall(http.MethodGet, "/v1/admin/drops", true)
	if err != nil {
		return nil, err
	}
	var out struct {
		Drops []Drop `json:"drops"`
	}
	if _, err := c.do(ctx, cl, &out); err != nil {
		return nil, err
	}
	return out.Drops, nil
}

// DropStats reads a drop's live numbers (admin). Errors: CodeNotFound.
func (c *Client) DropStats(ctx context.Context, id string) (*DropStats, error) {
	cl, err := c.adminCall(http.MethodGet, "/v1/admin/drops/"+url.PathEscape(id), true)
	if err != nil {
		return nil, err
	}
	var out DropStats
	if _, err := c.do(ctx, cl, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// PauseDrop pauses a drop (admin): claims answer CodePaused until
// ResumeDrop.
func (c *Client) PauseDrop(ctx context.Context, id string) (*Drop, error) {
	return c.setStatus(ctx, id, "pause")
}

// ResumeDrop resumes a paused drop (admin).
func (c *Client) ResumeDrop(ctx context.Context, id string) (*Drop, error) {
	return c.setStatus(ctx, id, "resume")
}

// CloseDrop closes a drop for good (admin).
func (c *Client) CloseDrop(ctx context.Context, id string) (*Drop, error) {
	return c.setStatus(ctx, id, "close")
}

// setStatus sets a status, which may be set again: it is retried.
func (c *Client) setStatus(ctx context.Context, id, action string) (*Drop, error) {
	cl, err := c.adminCall(http.MethodPost, "/v1/admin/drops/"+url.PathEscape(id)+"/"+action, true)
	if err != nil {
		return nil, err
	}
	var out Drop
	if _, err := c.do(ctx, cl, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// PublicDrop reads what anyone may see of a drop; it needs no credentials.
func (c *Client) PublicDrop(ctx context.Context, id string) (*PublicDrop, error) {
	var out PublicDrop
	if _, err := c.do(ctx, call{method: http.MethodGet, path: "/v1/drops/" + url.PathEscape(id), retry: true}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// JobCount counts a drop's post-processing jobs of one kind in one state.
type JobCount struct {
	Kind  string `json:"kind"`
	State string `json:"state"`
	Count int64  `json:"count"`
}

// Jobs counts a drop's post-processing jobs by kind and state (admin).
func (c *Client) Jobs(ctx context.Context, dropID string) ([]JobCount, error) {
	cl, err := c.adminCall(http.MethodGet, "/v1/admin/drops/"+url.PathEscape(dropID)+"/jobs", true)
	if err != nil {
		return nil, err
	}
	var out struct {
		Jobs []JobCount `json:"jobs"`
	}
	if _, err := c.do(ctx, cl, &out); err != nil {
		return nil, err
	}
	return out.Jobs, nil
}
