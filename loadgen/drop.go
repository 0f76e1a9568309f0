package loadgen

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/dibs-io/dibs"
)

// DropSpec describes a drop for CreateDrop.
type DropSpec struct {
	ID           string
	Title        string    // default "load test <id>"
	Kind         dibs.Kind // default coupon
	Stock        int64
	PerUserLimit int           // default 1 (the server's default)
	OpensAt      time.Time     // zero: the server opens it now
	ClosesAt     time.Time     // zero: never closes by itself
	HoldTTL      time.Duration // purchase drops; zero: the server's default
	QueueRate    int           // > 0: users go through a waiting room admitting this many per second
	Price        int64         // purchase drops: charged per claim, in the currency's minor unit
	Currency     string        // purchase drops; empty: the server's default
}

// CreateDrop creates the drop spec on the server at target with the admin
// token, through POST /v1/admin/drops.
func CreateDrop(ctx context.Context, c *http.Client, target, adminToken string, spec DropSpec) error {
	if c == nil {
		c = http.DefaultClient
	}
	body := map[string]any{
		"id":    spec.ID,
		"title": spec.Title,
		"kind":  spec.Kind,
		"stock": spec.Stock,
	}
	if spec.Title == "" {
		body["title"] = "load test " + spec.ID
	}
	if spec.Kind == "" {
		body["kind"] = dibs.KindCoupon
	}
	if spec.PerUserLimit > 0 {
		body["per_user_limit"] = spec.PerUserLimit
	}
	if !spec.OpensAt.IsZero() {
		body["opens_at"] = spec.OpensAt.Format(time.RFC3339Nano)
	}
	if !spec.ClosesAt.IsZero() {
		body["closes_at"] = spec.ClosesAt.Format(time.RFC3339Nano)
	}
	if spec.HoldTTL > 0 {
		body["hold_ttl"] = spec.HoldTTL.String()
	}
	if spec.Price > 0 {
		body["price"] = spec.Price
	}
	if spec.Currency != "" {
		body["currency"] = spec.Currency
	}
	if spec.QueueRate > 0 {
		body["admission"] = map[string]any{"mode": dibs.AdmissionQueue, "rate": spec.QueueRate}
	} else {
		body["admission"] = map[string]any{"mode": dibs.AdmissionDirect}
	}
	url := strings.TrimRight(target, "/") + "/v1/admin/drops"
	if err := doJSON(ctx, c, url, adminToken, http.MethodPost, body, nil); err != nil {
		return fmt.Errorf("create drop %s: %w", spec.ID, err)
	}
	return nil
}
