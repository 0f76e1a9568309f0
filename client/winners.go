package client

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// Winner is one line of the winners export.
type Winner struct {
	ClaimID    string    `json:"claim_id"`
	UserID     string    `json:"user_id"`
	Slot       int64     `json:"slot"`
	State      string    `json:"state"`
	CreatedAt  time.Time `json:"created_at"`
	CouponCode string    `json:"coupon_code,omitempty"`
}

// MaxWinnerLine bounds one line of the export.
const MaxWinnerLine = 64 << 10

// Winners streams drop dropID's active claims in slot order to fn, one at
// a time (admin). It decodes a line at a time, so memory stays the same
// however many winners there are; fn must not keep the *Winner, which is
// reused. An error from fn stops the stream and is returned. The request is
// retried until the export starts, never after.
func (c *Client) Winners(ctx context.Context, dropID string, fn func(*Winner) error) error {
	cl, err := c.adminCall(http.MethodGet, "/v1/admin/drops/"+url.PathEscape(dropID)+"/winners", true)
	if err != nil {
		return err
	}
	cl.accept = "application/x-ndjson"
	resp, err := c.send(ctx, cl)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 4<<10), MaxWinnerLine)
	var w Winner
	for n := 1; sc.Scan(); n++ {
		line := sc.Bytes()
		if len(line) == 0 {
			continue
		}
		w = Winner{}
		if err := json.Unmarshal(line, &w); err != nil {
			return fmt.Errorf("client: winners of %s, line %d: %w", dropID, n, err)
		}
		if err := fn(&w); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("client: winners of %s: %w", dropID, err)
	}
	return nil
}
