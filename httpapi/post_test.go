package httpapi_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/httpapi"
	"github.com/dibs-io/dibs/post"
	"github.com/dibs-io/dibs/sqlite"
)

// recordPost is post-processing straight from the record, with one failed
// webhook job (id 7) that can be retried once.
type recordPost struct {
	*sqlite.Store
	retried bool
}

// RequestPayment takes the request as a node with a gateway does.
func (p *recordPost) RequestPayment(ctx context.Context, claimID, userID string) (*dibs.Claim, error) {
	pay := &post.Payments{Store: p.Store, Gateway: true, Now: time.Now}
	return pay.RequestPayment(ctx, claimID, userID)
}

func (p *recordPost) FailedWebhooks(ctx context.Context, dropID string, limit int) ([]dibs.FailedJob, error) {
	if p.retried || (dropID != "" && dropID != "phones") {
		return []dibs.FailedJob{}, nil
	}
	return []dibs.FailedJob{{ID: 7, Kind: post.KindNotifyWinner, DropID: "phones", Attempts: post.WebhookAttempts}}, nil
}

func (p *recordPost) Retry(ctx context.Context, id int64) error {
	if id != 7 || p.retried {
		return dibs.Errorf(dibs.ENOTFOUND, "no failed webhook job %d", id)
	}
	p.retried = true
	return nil
}

func TestPayment(t *testing.T) {
	t.Parallel()
	b := setupWith(t, httpapi.Limits{}, func(s *sqlite.Store) postServices { return &recordPost{Store: s} })
	b.mustCreateDrop(t, `{"id":"phones","title":"Phones","kind":"purchase","stock":2,"price":990000,"hold_ttl":"1h"}`)

	drop := b.do(t, "GET", "/v1/drops/phones", "", "")
	if drop.body["price"] != 990000.0 || drop.body["currency"] != "KRW" {
		t.Fatalf("public drop: %s", drop.raw)
	}
	alice, bob := pass(t, "alice"), pass(t, "bob")
	won := b.do(t, "POST", "/v1/drops/phones/claims", alice, "")
	if won.status != http.StatusCreated || won.body["state"] != "held" {
		t.Fatalf("claim: %d %s", won.status, won.raw)
	}
	id := won.body["claim_id"].(string)

	if r := b.do(t, "POST", "/v1/claims/"+id+"/pay", bob, ""); r.status != http.StatusNotFound || r.problem.Code != dibs.ENOTFOUND {
		t.Errorf("someone else pays: %d %s", r.status, r.raw)
	}
	if r := b.do(t, "POST", "/v1/claims/"+id+"/pay", "", ""); r.status != http.StatusUnauthorized {
		t.Errorf("no passport: %d %s", r.status, r.raw)
	}
	if r := b.do(t, "POST", "/v1/claims/bad!id/pay", alice, ""); r.status != http.StatusBadRequest || r.problem.Code != dibs.EINVALID {
		t.Errorf("bad claim id: %d %s", r.status, r.raw)
	}
	if r := b.do(t, "POST", "/v1/claims/"+id+"/pay", alice, `{"amount":1}`); r.status != http.StatusBadRequest || r.problem.Code != dibs.EINVALID {
		t.Errorf("unknown body field: %d %s", r.status, r.raw)
	}
	for range 2 { // asking twice answers the same
		r := b.do(t, "POST", "/v1/claims/"+id+"/pay", alice, "")
		if r.status != http.StatusAccepted || r.body["state"] != "held" || r.body["pay_requested_at"] == nil {
			t.Fatalf("pay: %d %s", r.status, r.raw)
		}
	}
	jobs := b.do(t, "GET", "/v1/admin/drops/phones/jobs", adminToken, "")
	if jobs.status != http.StatusOK || !strings.Contains(jobs.raw, `"kind":"charge_payment"`) {
		t.Errorf("jobs: %d %s", jobs.status, jobs.raw)
	}
	if r := b.do(t, "GET", "/v1/admin/drops/nope/jobs", adminToken, ""); r.status != http.StatusNotFound {
		t.Errorf("jobs of an unknown drop: %d %s", r.status, r.raw)
	}
	if r := b.do(t, "GET", "/v1/admin/drops/phones/jobs", alice, ""); r.status != http.StatusUnauthorized {
		t.Errorf("jobs with a passport: %d %s", r.status, r.raw)
	}
}

func TestFailedWebhooks(t *testing.T) {
	t.Parallel()
	b := setupWith(t, httpapi.Limits{}, func(s *sqlite.Store) postServices { return &recordPost{Store: s} })

	list := b.do(t, "GET", "/v1/admin/webhooks/failed?drop=phones", adminToken, "")
	if list.status != http.StatusOK || !strings.Contains(list.raw, `"kind":"notify_winner"`) {
		t.Fatalf("failed webhooks: %d %s", list.status, list.raw)
	}
	for _, q := range []string{"?limit=0", "?limit=1001", "?limit=x", "?drop=Bad!"} {
		if r := b.do(t, "GET", "/v1/admin/webhooks/failed"+q, adminToken, ""); r.status != http.StatusBadRequest || r.problem.Code != dibs.EINVALID {
			t.Errorf("%s: %d %s", q, r.status, r.raw)
		}
	}
	for _, id := range []string{"0", "-1", "x", "99999999999999999999"} {
		if r := b.do(t, "POST", "/v1/admin/webhooks/failed/"+id+"/retry", adminToken, ""); r.status != http.StatusBadRequest {
			t.Errorf("retry %s: %d %s", id, r.status, r.raw)
		}
	}
	if r := b.do(t, "POST", "/v1/admin/webhooks/failed/7/retry", adminToken, ""); r.status != http.StatusAccepted {
		t.Fatalf("retry: %d %s", r.status, r.raw)
	}
	if r := b.do(t, "POST", "/v1/admin/webhooks/failed/7/retry", adminToken, ""); r.status != http.StatusNotFound {
		t.Errorf("retry again: %d %s", r.status, r.raw)
	}
	if r := b.do(t, "GET", "/v1/admin/webhooks/failed", adminToken, ""); r.status != http.StatusOK || strings.Contains(r.raw, "notify_winner") {
		t.Errorf("after the retry: %d %s", r.status, r.raw)
	}
}

// Without post-processing, paying is unavailable and nothing has failed.
func TestPaymentDisabled(t *testing.T) {
	t.Parallel()
	b := setup(t, httpapi.Limits{})
	b.mustCreateDrop(t, `{"id":"phones","title":"Phones","kind":"purchase","stock":1}`)
	won := b.do(t, "POST", "/v1/drops/phones/claims", pass(t, "alice"), "")
	id, _ := won.body["claim_id"].(string)
	if r := b.do(t, "POST", "/v1/claims/"+id+"/pay", pass(t, "alice"), ""); r.status != http.StatusServiceUnavailable || r.problem.Code != dibs.EUNAVAILABLE {
		t.Errorf("pay: %d %s", r.status, r.raw)
	}
	if r := b.do(t, "GET", "/v1/admin/webhooks/failed", adminToken, ""); r.status != http.StatusOK || !strings.Contains(r.raw, `"failed":[]`) {
		t.Errorf("failed webhooks: %d %s", r.status, r.raw)
	}
	// A coupon drop has no price.
	if r := b.do(t, "POST", "/v1/admin/drops", adminToken, `{"title":"c","kind":"coupon","stock":1,"price":5}`); r.status != http.StatusBadRequest {
		t.Errorf("priced coupon drop: %d %s", r.status, r.raw)
	}
	if r := b.do(t, "POST", "/v1/admin/drops", adminToken, `{"title":"p","kind":"purchase","stock":1,"currency":"won"}`); r.status != http.StatusBadRequest {
		t.Errorf("bad currency: %d %s", r.status, r.raw)
	}
}
