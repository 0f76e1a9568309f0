package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/engine"
	"github.com/dibs-io/dibs/httpapi"
	"github.com/dibs-io/dibs/memory"
	"github.com/dibs-io/dibs/passport"
	"github.com/dibs-io/dibs/sqlite"
)

var (
	secret     = []byte("0123456789abcdef0123456789abcdef")
	adminToken = "admin-token-0123456789"
)

// blockingStore makes claim writes wait while block is open.
type blockingStore struct {
	dibs.Store
	mu      sync.Mutex
	block   chan struct{}
	entered chan struct{} // receives once per write that waits on block
}

func (s *blockingStore) RecordClaims(ctx context.Context, claims []*dibs.Claim) ([]error, error) {
	s.mu.Lock()
	b := s.block
	s.mu.Unlock()
	if b != nil {
		s.entered <- struct{}{}
		<-b
	}
	return s.Store.RecordClaims(ctx, claims)
}

type bundle struct {
	srv   *httptest.Server
	store *blockingStore
	raw   *sqlite.Store
}

func setup(t testing.TB, limits httpapi.Limits) *bundle {
	t.Helper()
	return setupWith(t, limits, nil)
}

// postServices is post-processing as the API sees it.
type postServices interface {
	dibs.PaymentService
	dibs.JobService
}

// setupWith is setup with post-processing made from the record.
func setupWith(t testing.TB, limits httpapi.Limits, newPost func(*sqlite.Store) postServices) *bundle {
	t.Helper()
	raw, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "dibs.db"))
	if err != nil {
		t.Fatal(err)
	}
	st := &blockingStore{Store: raw}
	e := engine.New(engine.Config{Store: st, Gate: memory.NewGate()})
	if err := e.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	v, err := passport.NewVerifier(secret, passport.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := httpapi.Config{Drops: e, Claims: e, Passports: v, AdminToken: adminToken, Limits: limits}
	if newPost != nil {
		p := newPost(raw)
		cfg.Payments, cfg.Jobs = p, p
	}
	srv := httptest.NewServer(httpapi.New(cfg))
	t.Cleanup(func() { srv.Close(); e.Close(); raw.Close() })
	return &bundle{srv: srv, store: st, raw: raw}
}

func pass(t testing.TB, user string) string {
	t.Helper()
	tok, err := passport.Issue(secret, user, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

type response struct {
	status  int
	header  http.Header
	body    map[string]any
	raw     string
	problem httpapi.Problem
}

func (b *bundle) do(t testing.TB, method, path, auth, body string, headers ...string) response {
	t.Helper()
	req, err := http.NewRequest(method, b.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	r := response{status: res.StatusCode, header: res.Header, raw: string(raw)}
	json.Unmarshal(raw, &r.body)
	if res.Header.Get("Content-Type") == "application/problem+json" {
		if err := json.Unmarshal(raw, &r.problem); err != nil {
			t.Fatalf("problem body %q: %v", raw, err)
		}
	}
	return r
}

func (b *bundle) mustCreateDrop(t testing.TB, body string) {
	t.Helper()
	if r := b.do(t, "POST", "/v1/admin/drops", adminToken, body); r.status != http.StatusCreated {
		t.Fatalf("create drop: %d %s", r.status, r.raw)
	}
}

func TestClaimFlow(t *testing.T) {
	t.Parallel()
	b := setup(t, httpapi.Limits{})
	b.mustCreateDrop(t, `{"id":"pepero","title":"Pepero Day","kind":"coupon","stock":2}`)

	alice := pass(t, "alice")
	won := b.do(t, "POST", "/v1/drops/pepero/claims", alice, "")
	if won.status != http.StatusCreated || won.body["user_id"] != "alice" || won.body["state"] != "confirmed" {
		t.Fatalf("first claim: %d %s", won.status, won.raw)
	}
	id := won.body["claim_id"].(string)
	if loc := won.header.Get("Location"); loc != "/v1/claims/"+id {
		t.Fatalf("Location = %q", loc)
	}
	again := b.do(t, "POST", "/v1/drops/pepero/claims", alice, "{}")
	if again.status != http.StatusOK || again.body["claim_id"] != id || again.body["slot"] != won.body["slot"] {
		t.Fatalf("retry: %d %s, want 200 with %s", again.status, again.raw, id)
	}
	if r := b.do(t, "POST", "/v1/drops/pepero/claims", pass(t, "bob"), ""); r.status != http.StatusCreated {
		t.Fatalf("bob: %d %s", r.status, r.raw)
	}
	late := b.do(t, "POST", "/v1/drops/pepero/claims", pass(t, "carol"), "")
	if late.status != http.StatusGone || late.problem.Code != dibs.ESOLDOUT {
		t.Fatalf("carol: %d %s, want 410 sold_out", late.status, late.raw)
	}

	if r := b.do(t, "GET", "/v1/claims/"+id, alice, ""); r.status != http.StatusOK || r.body["claim_id"] != id {
		t.Fatalf("owner reads claim: %d %s", r.status, r.raw)
	}
	if r := b.do(t, "GET", "/v1/claims/"+id, pass(t, "bob"), ""); r.status != http.StatusNotFound {
		t.Fatalf("other user reads claim: %d %s, want 404", r.status, r.raw)
	}
	pub := b.do(t, "GET", "/v1/drops/pepero", "", "")
	if pub.status != http.StatusOK || pub.body["state"] != "sold_out" || pub.body["remaining"] != 0.0 {
		t.Fatalf("public drop: %d %s", pub.status, pub.raw)
	}
	stats := b.do(t, "GET", "/v1/admin/drops/pepero", adminToken, "")
	if stats.body["confirmed"] != 2.0 || stats.body["claims_total"] != 4.0 || stats.body["remaining"] != 0.0 {
		t.Fatalf("admin stats: %s", stats.raw)
	}
}

func TestWinnersExport(t *testing.T) {
	t.Parallel()
	b := setup(t, httpapi.Limits{})
	b.mustCreateDrop(t, `{"id":"d","title":"d","kind":"coupon","stock":5}`)
	for _, u := range []string{"u1", "u2", "u3"} {
		b.do(t, "POST", "/v1/drops/d/claims", pass(t, u), "")
	}
	nd := b.do(t, "GET", "/v1/admin/drops/d/winners", adminToken, "")
	lines := strings.Split(strings.TrimSpace(nd.raw), "\n")
	if nd.header.Get("Content-Type") != "application/x-ndjson" || len(lines) != 3 {
		t.Fatalf("ndjson export: %s %q", nd.header.Get("Content-Type"), nd.raw)
	}
	var w struct {
		ClaimID, UserID, State string
		Slot                   int64
	}
	for i, l := range lines {
		if err := json.Unmarshal([]byte(l), &w); err != nil || w.Slot != int64(i+1) {
			t.Fatalf("line %d = %q (%v)", i, l, err)
		}
	}
	csv := b.do(t, "GET", "/v1/admin/drops/d/winners", adminToken, "", "Accept", "text/csv")
	rows := strings.Split(strings.TrimSpace(csv.raw), "\n")
	if !strings.HasPrefix(csv.header.Get("Content-Type"), "text/csv") || len(rows) != 4 || rows[0] != "claim_id,user_id,slot,state,created_at,coupon_code" {
		t.Fatalf("csv export: %q", csv.raw)
	}
}

// TestBadInput: every malformed or unauthorised request gets its documented
// status and code, never a 500.
func TestBadInput(t *testing.T) {
	t.Parallel()
	b := setup(t, httpapi.Limits{})
	b.mustCreateDrop(t, `{"id":"open","title":"t","kind":"coupon","stock":5}`)
	b.mustCreateDrop(t, fmt.Sprintf(`{"id":"later","title":"t","kind":"coupon","stock":5,"opens_at":%q}`, time.Now().Add(time.Hour).Format(time.RFC3339)))
	b.mustCreateDrop(t, `{"id":"paused","title":"t","kind":"coupon","stock":5}`)
	b.do(t, "POST", "/v1/admin/drops/paused/pause", adminToken, "")
	b.mustCreateDrop(t, `{"id":"closed","title":"t","kind":"coupon","stock":5}`)
	b.do(t, "POST", "/v1/admin/drops/closed/close", adminToken, "")
	b.mustCreateDrop(t, `{"id":"limit","title":"t","kind":"coupon","stock":5,"per_user_limit":2}`)
	user := pass(t, "u")
	b.do(t, "POST", "/v1/drops/limit/claims", user, "", "Idempotency-Key", "a")
	b.do(t, "POST", "/v1/drops/limit/claims", user, "", "Idempotency-Key", "b")

	exp := time.Now().Add(time.Hour).Unix()
	sign := func(m jwt.SigningMethod, key any, c jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(m, c).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	valid := pass(t, "mallory")
	forged := valid[:len(valid)-4] + "AAAA"
	if forged == valid {
		forged = valid[:len(valid)-4] + "BBBB"
	}

	tests := []struct {
		name, method, path, auth, body string
		headers                        []string
		status                         int
		code                           string
	}{
		{"malformed json", "POST", "/v1/admin/drops", adminToken, `{"id":`, nil, 400, dibs.EINVALID},
		{"not an object", "POST", "/v1/admin/drops", adminToken, `[1,2]`, nil, 400, dibs.EINVALID},
		{"two values", "POST", "/v1/admin/drops", adminToken, `{"title":"a"} {}`, nil, 400, dibs.EINVALID},
		{"empty body", "POST", "/v1/admin/drops", adminToken, ``, nil, 400, dibs.EINVALID},
		{"oversized", "POST", "/v1/admin/drops", adminToken, `{"title":"` + strings.Repeat("x", httpapi.MaxAdminBody) + `"}`, nil, 413, dibs.ETOOLARGE},
		{"unknown field", "POST", "/v1/admin/drops", adminToken, `{"title":"t","kind":"coupon","stock":1,"user_id":"me"}`, nil, 400, dibs.EINVALID},
		{"wrong type", "POST", "/v1/admin/drops", adminToken, `{"title":"t","kind":"coupon","stock":"many"}`, nil, 400, dibs.EINVALID},
		{"wrong type of kind", "POST", "/v1/admin/drops", adminToken, `{"title":"t","kind":5,"stock":1}`, nil, 400, dibs.EINVALID},
		{"wrong type of admission", "POST", "/v1/admin/drops", adminToken, `{"title":"t","kind":"coupon","stock":1,"admission":"queue"}`, nil, 400, dibs.EINVALID},
		{"duplicate names", "POST", "/v1/admin/drops", adminToken, `{"id":"a","ID":"b","title":"t","kind":"coupon","stock":1}`, nil, 400, dibs.EINVALID},
		{"bad drop id", "POST", "/v1/admin/drops", adminToken, `{"id":"Bad_ID","title":"t","kind":"coupon","stock":1}`, nil, 400, dibs.EINVALID},
		{"stock zero", "POST", "/v1/admin/drops", adminToken, `{"title":"t","kind":"coupon","stock":0}`, nil, 400, dibs.EINVALID},
		{"stock too big", "POST", "/v1/admin/drops", adminToken, `{"title":"t","kind":"coupon","stock":10000001}`, nil, 400, dibs.EINVALID},
		{"unknown kind", "POST", "/v1/admin/drops", adminToken, `{"title":"t","kind":"raffle","stock":1}`, nil, 400, dibs.EINVALID},
		{"bad hold_ttl", "POST", "/v1/admin/drops", adminToken, `{"title":"t","kind":"purchase","stock":1,"hold_ttl":"soon"}`, nil, 400, dibs.EINVALID},
		{"bad opens_at", "POST", "/v1/admin/drops", adminToken, `{"title":"t","kind":"coupon","stock":1,"opens_at":"noon"}`, nil, 400, dibs.EINVALID},
		{"duplicate drop", "POST", "/v1/admin/drops", adminToken, `{"id":"open","title":"t","kind":"coupon","stock":1}`, nil, 409, dibs.ECONFLICT},
		{"no admin token", "POST", "/v1/admin/drops", "", `{}`, nil, 401, dibs.EUNAUTHORIZED},
		{"wrong admin token", "GET", "/v1/admin/drops/open", "admin-token-0123456788", ``, nil, 401, dibs.EUNAUTHORIZED},
		{"passport as admin", "GET", "/v1/admin/drops/open", valid, ``, nil, 401, dibs.EUNAUTHORIZED},
		{"bad path id", "GET", "/v1/drops/NOT_AN_ID", "", ``, nil, 400, dibs.EINVALID},
		{"unknown drop", "GET", "/v1/drops/nope", "", ``, nil, 404, dibs.ENOTFOUND},
		{"unknown drop claim", "POST", "/v1/drops/nope/claims", valid, ``, nil, 404, dibs.ENOTFOUND},
		{"no passport", "POST", "/v1/drops/open/claims", "", ``, nil, 401, dibs.EUNAUTHORIZED},
		{"forged passport", "POST", "/v1/drops/open/claims", forged, ``, nil, 401, dibs.EUNAUTHORIZED},
		{"expired passport", "POST", "/v1/drops/open/claims", sign(jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "x", "exp": time.Now().Add(-time.Hour).Unix()}), ``, nil, 401, dibs.EUNAUTHORIZED},
		{"alg none", "POST", "/v1/drops/open/claims", sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwt.MapClaims{"sub": "x", "exp": exp}), ``, nil, 401, dibs.EUNAUTHORIZED},
		{"other secret", "POST", "/v1/drops/open/claims", sign(jwt.SigningMethodHS256, []byte("ffffffffffffffffffffffffffffffff"), jwt.MapClaims{"sub": "x", "exp": exp}), ``, nil, 401, dibs.EUNAUTHORIZED},
		{"claim body unknown field", "POST", "/v1/drops/open/claims", valid, `{"slot":1}`, nil, 400, dibs.EINVALID},
		{"claim body too large", "POST", "/v1/drops/open/claims", valid, `{"a":"` + strings.Repeat("x", httpapi.MaxNoBody) + `"}`, nil, 413, dibs.ETOOLARGE},
		{"bad idempotency key", "POST", "/v1/drops/open/claims", valid, ``, []string{"Idempotency-Key", strings.Repeat("k", dibs.MaxIdempotencyKey+1)}, 400, dibs.EINVALID},
		{"not open", "POST", "/v1/drops/later/claims", valid, ``, nil, 425, dibs.ENOTOPEN},
		{"paused", "POST", "/v1/drops/paused/claims", valid, ``, nil, 503, dibs.EPAUSED},
		{"closed", "POST", "/v1/drops/closed/claims", valid, ``, nil, 410, dibs.ECLOSED},
		{"limit reached", "POST", "/v1/drops/limit/claims", user, ``, []string{"Idempotency-Key", "c"}, 409, dibs.ELIMIT},
		{"resume closed", "POST", "/v1/admin/drops/closed/resume", adminToken, ``, nil, 409, dibs.ECONFLICT},
		{"bad claim id", "GET", "/v1/claims/" + strings.Repeat("z", 65), valid, ``, nil, 400, dibs.EINVALID},
		{"unknown claim", "GET", "/v1/claims/nope", valid, ``, nil, 404, dibs.ENOTFOUND},
		{"claim without passport", "GET", "/v1/claims/nope", "", ``, nil, 401, dibs.EUNAUTHORIZED},
		{"unknown route", "GET", "/v2/drops", "", ``, nil, 404, dibs.ENOTFOUND},
		{"wrong method", "DELETE", "/v1/drops/open", "", ``, nil, 405, "method_not_allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := b.do(t, tt.method, tt.path, tt.auth, tt.body, tt.headers...)
			if r.status != tt.status || r.problem.Code != tt.code || r.problem.Status != tt.status {
				t.Fatalf("%s %s = %d %s, want %d %s", tt.method, tt.path, r.status, r.raw, tt.status, tt.code)
			}
			if r.problem.Type != httpapi.ProblemType(tt.code) || r.problem.Detail == "" {
				t.Fatalf("problem %+v lacks type or detail", r.problem)
			}
			for _, goism := range []string{"httpapi.", "dibs.", "Go ", "json:", "struct", "int64", "*"} {
				if strings.Contains(r.problem.Detail, goism) {
					t.Fatalf("detail %q speaks of Go (%q), not of the API", r.problem.Detail, goism)
				}
			}
			if r.status == 503 && r.header.Get("Retry-After") == "" {
				t.Fatal("503 without Retry-After")
			}
		})
	}
}

// TestShedding: with claims at their in-flight limit, another claim is
// answered 503 at once, and reads keep being served.
func TestShedding(t *testing.T) {
	t.Parallel()
	b := setup(t, httpapi.Limits{Claim: 1, Read: 8, Admin: 8, Ops: 8})
	b.mustCreateDrop(t, `{"id":"d","title":"d","kind":"coupon","stock":5}`)
	block := make(chan struct{})
	b.store.mu.Lock()
	b.store.block, b.store.entered = block, make(chan struct{}, 1)
	b.store.mu.Unlock()

	first := make(chan response, 1)
	go func() { first <- b.do(t, "POST", "/v1/drops/d/claims", pass(t, "a"), "") }()
	select {
	case <-b.store.entered: // the first claim holds the only claim slot
	case <-time.After(5 * time.Second):
		t.Fatal("first claim never reached the record")
	}
	r := b.do(t, "POST", "/v1/drops/d/claims", pass(t, "b"), "")
	if r.status != http.StatusServiceUnavailable || r.problem.Code != dibs.EOVERLOADED || r.header.Get("Retry-After") == "" {
		t.Fatalf("claim beyond the limit: %d %s %v, want 503 overloaded with Retry-After", r.status, r.raw, r.header)
	}
	if r := b.do(t, "GET", "/v1/drops/d", "", ""); r.status != http.StatusOK {
		t.Fatalf("read while claims are saturated: %d", r.status)
	}
	if r := b.do(t, "GET", "/healthz", "", ""); r.status != http.StatusOK {
		t.Fatalf("healthz while claims are saturated: %d", r.status)
	}
	close(block)
	if r := <-first; r.status != http.StatusCreated {
		t.Fatalf("blocked claim: %d %s", r.status, r.raw)
	}
}

// TestHealthNeverTouchesStore: with the record gone, liveness stays 200 and
// readiness says 503.
func TestHealthNeverTouchesStore(t *testing.T) {
	t.Parallel()
	b := setup(t, httpapi.Limits{})
	b.raw.Close()
	if r := b.do(t, "GET", "/healthz", "", ""); r.status != http.StatusOK {
		t.Fatalf("healthz = %d", r.status)
	}
	if r := b.do(t, "GET", "/readyz", "", ""); r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
		t.Fatalf("readyz = %d %s", r.status, r.raw)
	}
}

// FuzzCreateDrop: no body makes the admin API fail with a 5xx or panic,
// and an accepted drop reads back as it was created.
func FuzzCreateDrop(f *testing.F) {
	f.Add(`{"title":"t","kind":"coupon","stock":1}`)
	f.Add(`{"id":"a-b","title":"t","kind":"purchase","stock":10,"hold_ttl":"1m","per_user_limit":3}`)
	f.Add(`{"title":"t","kind":"coupon","stock":1,"admission":{"mode":"queue","rate":5}}`)
	f.Add(`{"title":"\u0000","kind":"coupon","stock":1e3}`)
	b := setup(f, httpapi.Limits{})
	f.Fuzz(func(t *testing.T, body string) {
		r := b.do(t, "POST", "/v1/admin/drops", adminToken, body)
		if r.status >= 500 {
			t.Fatalf("body %q: %d %s", body, r.status, r.raw)
		}
		if r.status != http.StatusCreated {
			return
		}
		got := b.do(t, "GET", "/v1/admin/drops/"+r.body["id"].(string), adminToken, "")
		for _, k := range []string{"id", "title", "kind", "stock", "per_user_limit", "opens_at", "hold_ttl", "admission"} {
			if fmt.Sprint(got.body[k]) != fmt.Sprint(r.body[k]) {
				t.Fatalf("%s: created %v, read back %v", k, r.body[k], got.body[k])
			}
		}
	})
}

// FuzzClaimRequest: no body or header makes a claim fail with a 5xx.
func FuzzClaimRequest(f *testing.F) {
	f.Add("", "")
	f.Add("{}", "key-1")
	f.Add(`{"x":1}`, "\x00")
	f.Add("[]", strings.Repeat("k", 200))
	b := setup(f, httpapi.Limits{})
	b.mustCreateDrop(f, `{"id":"d","title":"d","kind":"coupon","stock":1000000,"per_user_limit":100}`)
	user := pass(f, "fuzzer")
	f.Fuzz(func(t *testing.T, body, key string) {
		req, err := http.NewRequest("POST", b.srv.URL+"/v1/drops/d/claims", strings.NewReader(body))
		if err != nil {
			t.Skip()
		}
		req.Header.Set("Authorization", "Bearer "+user)
		if key != "" {
			req.Header["Idempotency-Key"] = []string{key}
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			return // the client refused to send it (invalid header)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode >= 500 {
			t.Fatalf("body %q key %q: %d", body, key, res.StatusCode)
		}
	})
}

// TestWinnerWaitingFreesItsTurn: a winner waiting for its group commit
// holds no claim worker, so with one worker other claims still run.
func TestWinnerWaitingFreesItsTurn(t *testing.T) {
	t.Parallel()
	b := setup(t, httpapi.Limits{Claim: 8, Read: 8, Admin: 8, Ops: 8, ClaimWorkers: 1})
	b.mustCreateDrop(t, `{"id":"open","title":"t","kind":"coupon","stock":5}`)
	b.mustCreateDrop(t, `{"id":"gone","title":"t","kind":"coupon","stock":1}`)
	if r := b.do(t, "POST", "/v1/drops/gone/claims", pass(t, "first"), ""); r.status != http.StatusCreated {
		t.Fatalf("sell out: %d %s", r.status, r.raw)
	}
	block := make(chan struct{})
	b.store.mu.Lock()
	b.store.block, b.store.entered = block, make(chan struct{}, 1)
	b.store.mu.Unlock()

	won := make(chan response, 1)
	go func() { won <- b.do(t, "POST", "/v1/drops/open/claims", pass(t, "a"), "") }()
	<-b.store.entered // the winner waits for its commit

	if r := b.do(t, "POST", "/v1/drops/gone/claims", pass(t, "b"), ""); r.status != http.StatusGone {
		t.Fatalf("a claim while the only worker's winner waits = %d %s, want 410 at once", r.status, r.raw)
	}
	close(block)
	if r := <-won; r.status != http.StatusCreated {
		t.Fatalf("the waiting winner: %d %s", r.status, r.raw)
	}
}
