package httpapi_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/httpapi"
	"github.com/dibs-io/dibs/mock"
	"github.com/dibs-io/dibs/passport"
)

// The tests of this file serve the API over test doubles of its services
// (package mock): no gate, no record. A double whose function a test did
// not set panics when called, so each test also says which services a
// request may reach.

// mocks are the services a double-backed server asks.
type mocks struct {
	drops    mock.DropService
	claims   mock.ClaimService
	queue    *mock.QueueService
	payments *mock.PaymentService
	jobs     *mock.JobService
	limits   httpapi.Limits
}

// serve starts the API over m's doubles.
func serve(t *testing.T, m *mocks) *bundle {
	t.Helper()
	v, err := passport.NewVerifier(secret, passport.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := httpapi.Config{
		Drops: &m.drops, Claims: &m.claims,
		Passports: v, AdminToken: adminToken, Limits: m.limits,
	}
	if m.queue != nil {
		cfg.Queue = m.queue
	}
	if m.payments != nil {
		cfg.Payments = m.payments
	}
	if m.jobs != nil {
		cfg.Jobs = m.jobs
	}
	srv := httptest.NewServer(httpapi.New(cfg))
	t.Cleanup(srv.Close)
	return &bundle{srv: srv}
}

// couponDrop is a drop the doubles serve.
func couponDrop(id string) *dibs.Drop {
	return &dibs.Drop{ID: id, Title: id, Kind: dibs.KindCoupon, Stock: 10, PerUserLimit: 1, Status: dibs.StatusActive}
}

func knownDrop(d *dibs.Drop) func(string) (*dibs.Drop, error) {
	return func(id string) (*dibs.Drop, error) {
		if id != d.ID {
			return nil, dibs.Errorf(dibs.ENOTFOUND, "drop %s not found", id)
		}
		return d, nil
	}
}

// TestClaimProblems: every refusal of the claim service is answered with
// its code's status, and a request the API refuses itself never reaches
// the service.
func TestClaimProblems(t *testing.T) {
	t.Parallel()
	for _, code := range []string{dibs.ESOLDOUT, dibs.ELIMIT, dibs.ECLOSED, dibs.ENOTOPEN, dibs.EPAUSED, dibs.ENOTFOUND,
		dibs.EADMISSIONREQUIRED, dibs.EADMISSIONINVALID, dibs.EUNAVAILABLE, dibs.EOVERLOADED} {
		t.Run(code, func(t *testing.T) {
			t.Parallel()
			m := &mocks{}
			m.claims.ClaimFn = func(context.Context, dibs.ClaimRequest) (dibs.Claiming, error) {
				return nil, dibs.Errorf(code, "refused: %s", code)
			}
			b := serve(t, m)
			r := b.do(t, "POST", "/v1/drops/d/claims", pass(t, "alice"), "")
			wantProblem(t, r, httpapi.StatusOf(code), code)
			if r.problem.Detail != "refused: "+code {
				t.Errorf("detail = %q, want the service's message", r.problem.Detail)
			}
			if r.header.Get("Server-Timing") == "" {
				t.Error("a refused claim has no Server-Timing")
			}
		})
	}

	m := &mocks{} // ClaimFn unset: these never reach the service
	b := serve(t, m)
	wantProblem(t, b.do(t, "POST", "/v1/drops/d/claims", "", ""), 401, dibs.EUNAUTHORIZED)
	wantProblem(t, b.do(t, "POST", "/v1/drops/d/claims", "not-a-passport", ""), 401, dibs.EUNAUTHORIZED)
	wantProblem(t, b.do(t, "POST", "/v1/drops/D_D/claims", pass(t, "alice"), ""), 400, dibs.EINVALID)
	wantProblem(t, b.do(t, "POST", "/v1/drops/d/claims", pass(t, "alice"), "", "Idempotency-Key", strings.Repeat("k", dibs.MaxIdempotencyKey+1)), 400, dibs.EINVALID)
	wantProblem(t, b.do(t, "POST", "/v1/drops/d/claims", pass(t, "alice"), `{"x":1}`), 400, dibs.EINVALID)
}

// TestClaimRequestAndAnswer: the request the claim service gets, and the
// answers of a new claim (201, Location), a retry (200) and a claim that
// could not be recorded (503).
func TestClaimRequestAndAnswer(t *testing.T) {
	t.Parallel()
	c := &dibs.Claim{ID: "c1", DropID: "d", UserID: "alice", Slot: 3, State: dibs.ClaimConfirmed, CreatedAt: time.Now().UTC()}
	var got dibs.ClaimRequest
	created := true
	m := &mocks{}
	m.claims.ClaimFn = func(_ context.Context, req dibs.ClaimRequest) (dibs.Claiming, error) {
		got = req
		if req.UserID == "bob" {
			return &mock.Claiming{WaitFn: func(context.Context) (*dibs.Claim, bool, error) {
				return nil, false, dibs.Errorf(dibs.EUNAVAILABLE, "The record is unavailable; please retry.")
			}}, nil
		}
		return mock.Won(c, created), nil
	}
	b := serve(t, m)

	r := b.do(t, "POST", "/v1/drops/d/claims", pass(t, "alice"), "", "Idempotency-Key", "order-1", "Dibs-Admission", "a1.x")
	want := dibs.ClaimRequest{DropID: "d", UserID: "alice", IdempotencyKey: "order-1", Admission: "a1.x"}
	if got != want {
		t.Errorf("request = %+v, want %+v", got, want)
	}
	if r.status != 201 || r.body["claim_id"] != "c1" || r.header.Get("Location") != "/v1/claims/c1" || r.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("new claim: %d %v %s", r.status, r.header, r.raw)
	}
	created = false
	if r := b.do(t, "POST", "/v1/drops/d/claims", pass(t, "alice"), ""); r.status != 200 || r.body["claim_id"] != "c1" || r.header.Get("Location") != "" {
		t.Fatalf("retry: %d %v %s, want 200 without Location", r.status, r.header, r.raw)
	}
	wantProblem(t, b.do(t, "POST", "/v1/drops/d/claims", pass(t, "bob"), ""), 503, dibs.EUNAVAILABLE)
}

// TestClaimWaitsWithoutWorker: a claim waiting for the record holds no
// claim worker, so that with one worker a second claim is decided while
// the first waits.
func TestClaimWaitsWithoutWorker(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	waiting := make(chan struct{})
	m := &mocks{limits: httpapi.Limits{Claim: 8, Read: 8, Admin: 8, Ops: 8, ClaimWorkers: 1}}
	m.claims.ClaimFn = func(_ context.Context, req dibs.ClaimRequest) (dibs.Claiming, error) {
		if req.UserID == "bob" {
			return nil, dibs.Errorf(dibs.ESOLDOUT, "sold out")
		}
		return &mock.Claiming{WaitFn: func(context.Context) (*dibs.Claim, bool, error) {
			close(waiting)
			<-release
			return &dibs.Claim{ID: "c1", DropID: "d", UserID: "alice"}, true, nil
		}}, nil
	}
	b := serve(t, m)
	first := make(chan response, 1)
	go func() { first <- b.do(t, "POST", "/v1/drops/d/claims", pass(t, "alice"), "") }()
	<-waiting
	wantProblem(t, b.do(t, "POST", "/v1/drops/d/claims", pass(t, "bob"), ""), 410, dibs.ESOLDOUT)
	close(release)
	if r := <-first; r.status != 201 {
		t.Fatalf("first claim: %d %s", r.status, r.raw)
	}
}

// TestClaimClassLimit: claims in flight over the class's bound are shed
// at once (503 overloaded), without asking the claim service.
func TestClaimClassLimit(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	waiting := make(chan struct{})
	m := &mocks{limits: httpapi.Limits{Claim: 1, Read: 8, Admin: 8, Ops: 8}}
	m.claims.ClaimFn = func(context.Context, dibs.ClaimRequest) (dibs.Claiming, error) {
		return &mock.Claiming{WaitFn: func(context.Context) (*dibs.Claim, bool, error) {
			close(waiting)
			<-release
			return &dibs.Claim{ID: "c1", DropID: "d", UserID: "alice"}, true, nil
		}}, nil
	}
	b := serve(t, m)
	first := make(chan response, 1)
	go func() { first <- b.do(t, "POST", "/v1/drops/d/claims", pass(t, "alice"), "") }()
	<-waiting
	r := b.do(t, "POST", "/v1/drops/d/claims", pass(t, "bob"), "")
	wantProblem(t, r, 503, dibs.EOVERLOADED)
	if r.header.Get("Retry-After") == "" {
		t.Error("a shed claim has no Retry-After")
	}
	close(release)
	if r := <-first; r.status != 201 {
		t.Fatalf("first claim: %d %s", r.status, r.raw)
	}
}

// TestInternalErrorHidden: an error without a code is a 500 whose message
// says nothing of its cause.
func TestInternalErrorHidden(t *testing.T) {
	t.Parallel()
	m := &mocks{}
	m.drops.ViewFn = func(context.Context, string) (dibs.DropView, error) {
		return dibs.DropView{}, errors.New("dial tcp 10.0.0.7:5432: secret-host refused")
	}
	b := serve(t, m)
	r := b.do(t, "GET", "/v1/drops/d", "", "")
	wantProblem(t, r, 500, dibs.EINTERNAL)
	if strings.Contains(r.raw, "secret-host") {
		t.Fatalf("the answer leaks the cause: %s", r.raw)
	}
}

// TestAdminAuth: admin routes want the admin token, whatever the drop
// service would say, and are never cached.
func TestAdminAuth(t *testing.T) {
	t.Parallel()
	b := serve(t, &mocks{}) // nothing set: no request may reach a service
	for _, route := range []struct{ method, path string }{
		{"POST", "/v1/admin/drops"}, {"GET", "/v1/admin/drops"}, {"GET", "/v1/admin/drops/d"},
		{"GET", "/v1/admin/drops/d/winners"}, {"POST", "/v1/admin/drops/d/pause"}, {"POST", "/v1/admin/drops/d/resume"},
		{"POST", "/v1/admin/drops/d/close"}, {"GET", "/v1/admin/drops/d/jobs"}, {"GET", "/v1/admin/webhooks/failed"},
		{"POST", "/v1/admin/webhooks/failed/7/retry"},
	} {
		for _, token := range []string{"", "wrong", adminToken + "x", pass(t, "alice")} {
			r := b.do(t, route.method, route.path, token, "")
			if r.status != 401 || r.problem.Code != dibs.EUNAUTHORIZED || r.header.Get("Cache-Control") != "no-store" {
				t.Errorf("%s %s with %q: %d %q %q, want 401 unauthorized no-store", route.method, route.path, token, r.status, r.problem.Code, r.header.Get("Cache-Control"))
			}
		}
	}
}

// TestCreateDropInput: bad input is refused before the drop service
// sees it; the service's own refusals keep their code.
func TestCreateDropInput(t *testing.T) {
	t.Parallel()
	m := &mocks{}
	m.drops.CreateDropFn = func(_ context.Context, d *dibs.Drop) error {
		if d.ID == "taken" {
			return dibs.Errorf(dibs.ECONFLICT, "drop taken exists")
		}
		d.Normalize(time.Now().UTC())
		return d.Validate()
	}
	m.drops.ViewFn = func(_ context.Context, id string) (dibs.DropView, error) {
		return dibs.DropView{Drop: couponDrop(id), State: dibs.StateOpen, Remaining: 10}, nil
	}
	b := serve(t, m)
	for _, c := range []struct {
		body   string
		status int
		code   string
	}{
		{`{`, 400, dibs.EINVALID},
		{`[]`, 400, dibs.EINVALID},
		{`{"id":"x","title":"x","kind":"coupon","stock":1,"bogus":1}`, 400, dibs.EINVALID},
		{`{"id":"x","title":"x","kind":"coupon","stock":"1"}`, 400, dibs.EINVALID},
		{`{"id":"x","title":"x","kind":"purchase","stock":1,"hold_ttl":"soon"}`, 400, dibs.EINVALID},
		{`{"id":"x","title":"x","kind":"coupon","stock":1,"per_user_limit":-1}`, 400, dibs.EINVALID},
		{`{"id":"taken","title":"x","kind":"coupon","stock":1}`, 409, dibs.ECONFLICT},
		{`{"id":"x","title":"x","kind":"coupon","stock":1,"pad":"` + strings.Repeat("a", httpapi.MaxAdminBody) + `"}`, 413, dibs.ETOOLARGE},
	} {
		r := b.do(t, "POST", "/v1/admin/drops", adminToken, c.body)
		if r.status != c.status || r.problem.Code != c.code {
			t.Errorf("%.60s: %d %q, want %d %q", c.body, r.status, r.problem.Code, c.status, c.code)
		}
	}
	r := b.do(t, "POST", "/v1/admin/drops", adminToken, `{"id":"x","title":"x","kind":"coupon","stock":1}`)
	if r.status != 201 || r.body["id"] != "x" || r.header.Get("Location") != "/v1/admin/drops/x" {
		t.Fatalf("create: %d %s", r.status, r.raw)
	}

	// Recorded while the gate cannot show it yet: 201 all the same, with
	// the whole stock left.
	m.drops.ViewFn = func(context.Context, string) (dibs.DropView, error) {
		return dibs.DropView{}, dibs.Errorf(dibs.EUNAVAILABLE, "The drop is not ready on this node; please retry.")
	}
	r = b.do(t, "POST", "/v1/admin/drops", adminToken, `{"id":"y","title":"y","kind":"coupon","stock":7}`)
	if r.status != 201 || r.body["id"] != "y" || r.body["remaining"] != 7.0 {
		t.Fatalf("create while the gate is not ready: %d %s", r.status, r.raw)
	}
}

// TestOptionalServices: without a waiting room, payments or jobs, their
// routes answer as a node without them does.
func TestOptionalServices(t *testing.T) {
	t.Parallel()
	queued := couponDrop("q")
	queued.Admission = dibs.Admission{Mode: dibs.AdmissionQueue, Rate: 10}
	m := &mocks{}
	m.drops.DropFn = func(id string) (*dibs.Drop, error) {
		if id == "q" {
			return queued, nil
		}
		return knownDrop(couponDrop("d"))(id)
	}
	b := serve(t, m)
	alice := pass(t, "alice")
	wantProblem(t, b.do(t, "POST", "/v1/drops/q/queue", alice, ""), 503, dibs.EUNAVAILABLE)
	wantProblem(t, b.do(t, "GET", "/v1/drops/q/queue", "", ""), 503, dibs.EUNAVAILABLE)
	wantProblem(t, b.do(t, "POST", "/v1/drops/d/queue", alice, ""), 409, dibs.ECONFLICT)
	wantProblem(t, b.do(t, "POST", "/v1/drops/nope/queue", alice, ""), 404, dibs.ENOTFOUND)
	wantProblem(t, b.do(t, "POST", "/v1/claims/c1/pay", alice, ""), 503, dibs.EUNAVAILABLE)
	if r := b.do(t, "GET", "/v1/admin/drops/d/jobs", adminToken, ""); r.status != 200 || !strings.Contains(r.raw, `"jobs":[]`) {
		t.Errorf("jobs: %d %s, want 200 with none", r.status, r.raw)
	}
	wantProblem(t, b.do(t, "GET", "/v1/admin/drops/nope/jobs", adminToken, ""), 404, dibs.ENOTFOUND)
	if r := b.do(t, "GET", "/v1/admin/webhooks/failed", adminToken, ""); r.status != 200 || !strings.Contains(r.raw, `"failed":[]`) {
		t.Errorf("failed webhooks: %d %s, want 200 with none", r.status, r.raw)
	}
	wantProblem(t, b.do(t, "POST", "/v1/admin/webhooks/failed/7/retry", adminToken, ""), 404, dibs.ENOTFOUND)
}

// TestPaymentAndJobServices: the API passes the caller and the path to
// the payment and job services, checks what it can first, and answers
// their refusals with their codes.
func TestPaymentAndJobServices(t *testing.T) {
	t.Parallel()
	m := &mocks{payments: &mock.PaymentService{}, jobs: &mock.JobService{}}
	m.drops.DropFn = knownDrop(couponDrop("d"))
	m.payments.RequestPaymentFn = func(_ context.Context, claimID, userID string) (*dibs.Claim, error) {
		if userID != "alice" {
			return nil, dibs.Errorf(dibs.ENOTFOUND, "claim %s not found", claimID)
		}
		return &dibs.Claim{ID: claimID, DropID: "d", UserID: userID, State: dibs.ClaimHeld}, nil
	}
	var limit int
	m.jobs.FailedWebhooksFn = func(_ context.Context, dropID string, n int) ([]dibs.FailedJob, error) {
		limit = n
		return []dibs.FailedJob{{ID: 7, DropID: "d"}}, nil
	}
	m.jobs.JobCountsFn = func(context.Context, string) ([]dibs.JobCount, error) {
		return []dibs.JobCount{{Kind: "notify_winner", State: "completed", Count: 2}}, nil
	}
	m.jobs.RetryFn = func(_ context.Context, id int64) error {
		if id != 7 {
			return dibs.Errorf(dibs.ENOTFOUND, "No failed webhook job %d.", id)
		}
		return nil
	}
	b := serve(t, m)

	if r := b.do(t, "POST", "/v1/claims/c1/pay", pass(t, "alice"), ""); r.status != 202 || r.body["claim_id"] != "c1" || r.header.Get("Location") != "/v1/claims/c1" {
		t.Errorf("pay: %d %s", r.status, r.raw)
	}
	wantProblem(t, b.do(t, "POST", "/v1/claims/c1/pay", pass(t, "bob"), ""), 404, dibs.ENOTFOUND)
	wantProblem(t, b.do(t, "POST", "/v1/claims/c%201/pay", pass(t, "alice"), ""), 400, dibs.EINVALID)
	wantProblem(t, b.do(t, "POST", "/v1/claims/c1/pay", "", ""), 401, dibs.EUNAUTHORIZED)

	if r := b.do(t, "GET", "/v1/admin/drops/d/jobs", adminToken, ""); r.status != 200 || !strings.Contains(r.raw, `"count":2`) {
		t.Errorf("jobs: %d %s", r.status, r.raw)
	}
	if r := b.do(t, "GET", "/v1/admin/webhooks/failed", adminToken, ""); r.status != 200 || limit != httpapi.DefaultFailedLimit || !strings.Contains(r.raw, `"id":7`) {
		t.Errorf("failed webhooks: %d %s (limit %d), want the default limit %d", r.status, r.raw, limit, httpapi.DefaultFailedLimit)
	}
	for _, q := range []string{"limit=0", "limit=1001", "limit=x", "drop=Not_A_Drop"} {
		wantProblem(t, b.do(t, "GET", "/v1/admin/webhooks/failed?"+q, adminToken, ""), 400, dibs.EINVALID)
	}
	if r := b.do(t, "GET", "/v1/admin/webhooks/failed?limit=1000", adminToken, ""); r.status != 200 || limit != httpapi.MaxFailedLimit {
		t.Errorf("failed webhooks at the largest limit: %d %s (limit %d)", r.status, r.raw, limit)
	}
	if r := b.do(t, "POST", "/v1/admin/webhooks/failed/7/retry", adminToken, ""); r.status != 202 {
		t.Errorf("retry: %d %s", r.status, r.raw)
	}
	wantProblem(t, b.do(t, "POST", "/v1/admin/webhooks/failed/8/retry", adminToken, ""), 404, dibs.ENOTFOUND)
	wantProblem(t, b.do(t, "POST", "/v1/admin/webhooks/failed/0/retry", adminToken, ""), 400, dibs.EINVALID)
}

// TestGoneClientToldNothing: a claim whose client left while it waited for
// the record is not answered.
func TestGoneClientToldNothing(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	m := &mocks{}
	m.claims.ClaimFn = func(context.Context, dibs.ClaimRequest) (dibs.Claiming, error) {
		return &mock.Claiming{WaitFn: func(ctx context.Context) (*dibs.Claim, bool, error) {
			cancel()
			<-ctx.Done()
			return nil, false, ctx.Err()
		}}, nil
	}
	v, err := passport.NewVerifier(secret, passport.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h := httpapi.New(httpapi.Config{Drops: &m.drops, Claims: &m.claims, Passports: v, AdminToken: adminToken})
	req := httptest.NewRequestWithContext(ctx, "POST", "/v1/drops/d/claims", nil)
	req.Header.Set("Authorization", "Bearer "+pass(t, "alice"))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK || rec.Body.Len() != 0 || rec.Header().Get("Content-Type") != "" {
		t.Fatalf("a gone client was answered: %d %q %v", rec.Code, rec.Body, rec.Header())
	}
}
