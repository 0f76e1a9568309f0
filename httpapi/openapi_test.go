package httpapi_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/engine"
	"github.com/dibs-io/dibs/httpapi"
	"github.com/dibs-io/dibs/httpapi/console"
	"github.com/dibs-io/dibs/httpapi/openapi"
	"github.com/dibs-io/dibs/internal/apispec"
	"github.com/dibs-io/dibs/memory"
	"github.com/dibs-io/dibs/passport"
	"github.com/dibs-io/dibs/post"
	"github.com/dibs-io/dibs/room"
	"github.com/dibs-io/dibs/sqlite"
)

// specRoutes lists "METHOD /path" for every operation of the document.
func specRoutes(t *testing.T) []string {
	t.Helper()
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(openapi.JSON(), &doc); err != nil {
		t.Fatal(err)
	}
	var routes []string
	for path, item := range doc.Paths {
		for method := range item {
			switch method {
			case "get", "put", "post", "delete", "patch", "head", "options":
				routes = append(routes, strings.ToUpper(method)+" "+path)
			}
		}
	}
	return routes
}

// The document and the server describe the same routes: every pattern the
// server registers is an operation of the document and the reverse. A
// pattern ending in "/" (a subtree) matches the path with one parameter
// after it.
func TestSpecCoversRoutes(t *testing.T) {
	t.Parallel()
	served, spec := httpapi.New(httpapi.Config{}).Routes(), specRoutes(t)
	if len(served) < 20 {
		t.Fatalf("the server lists %d routes; it serves more", len(served))
	}
	matches := func(pattern, op string) bool {
		if pattern == op {
			return true
		}
		prefix, ok := strings.CutSuffix(pattern, "/")
		if !ok {
			return false
		}
		rest, ok := strings.CutPrefix(op, prefix+"/{")
		return ok && strings.HasSuffix(rest, "}") && !strings.Contains(rest, "/")
	}
	for _, p := range served {
		if !slices.ContainsFunc(spec, func(op string) bool { return matches(p, op) }) {
			t.Errorf("the server registers %q; httpapi/openapi/openapi.yaml has no such operation", p)
		}
	}
	for _, op := range spec {
		if !slices.ContainsFunc(served, func(p string) bool { return matches(p, op) }) {
			t.Errorf("httpapi/openapi/openapi.yaml has %q; the server registers no such route", op)
		}
	}
}

// specPost is post-processing from the record, with one failed webhook
// job (id 7).
type specPost struct{ *sqlite.Store }

// RequestPayment takes the request as a node with a gateway does.
func (p specPost) RequestPayment(ctx context.Context, claimID, userID string) (*dibs.Claim, error) {
	pay := &post.Payments{Store: p.Store, Gateway: true, Now: time.Now}
	return pay.RequestPayment(ctx, claimID, userID)
}

func (p specPost) FailedWebhooks(ctx context.Context, dropID string, limit int) ([]dibs.FailedJob, error) {
	return []dibs.FailedJob{{ID: 7, Kind: post.KindNotifyWinner, ClaimID: "c1", DropID: "spec-coupon", Attempts: post.WebhookAttempts,
		LastError: "receiver answered 500", FinalizedAt: time.Now().UTC()}}, nil
}

func (p specPost) Retry(ctx context.Context, id int64) error {
	if id != 7 {
		return dibs.Errorf(dibs.ENOTFOUND, "No failed webhook job %d.", id)
	}
	return nil
}

// specNode serves the API with every part a node has: a record, a memory
// gate, a waiting room and post-processing.
func specNode(t *testing.T) string {
	t.Helper()
	raw, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "dibs.db"))
	if err != nil {
		t.Fatal(err)
	}
	svc, err := room.New(room.Config{Backend: memory.NewRoom(), Secret: roomSecret, Tick: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	e := engine.New(engine.Config{Store: raw, Gate: memory.NewGate(), Admissions: svc})
	if err := e.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	leader := svc.Leader(e)
	leader.Start(context.Background())
	v, err := passport.NewVerifier(secret, passport.Options{})
	if err != nil {
		t.Fatal(err)
	}
	a := httpapi.New(httpapi.Config{
		Drops: e, Claims: e, Queue: svc, Payments: specPost{raw}, Jobs: specPost{raw},
		Passports: v, AdminToken: adminToken,
		Joins:    httpapi.JoinLimit{Rate: -1},
		Switches: newSwitchBoard().mock(), Actions: (&actionLog{}).mock(), Console: console.Handler(),
	})
	srv := httptest.NewServer(a)
	t.Cleanup(func() { a.CloseStreams(); srv.Close(); leader.Stop(); e.Close(); raw.Close() })
	return srv.URL
}

// specCase is one request and the status it must get.
type specCase struct {
	method, path, auth, body string
	header                   map[string]string
	status                   int
	// badRequest: the request itself breaks the document on purpose (an
	// invalid id, a body too large): only the answer is checked.
	badRequest bool
}

type specRun struct {
	t    *testing.T
	base string
	spec *apispec.Spec
}

// do sends c, checks its status and validates the exchange, and returns
// the body.
func (r *specRun) do(c specCase) []byte {
	r.t.Helper()
	req, err := http.NewRequest(c.method, r.base+c.path, strings.NewReader(c.body))
	if err != nil {
		r.t.Fatal(err)
	}
	if c.body == "" {
		req.Body = http.NoBody
	} else {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.auth != "" {
		req.Header.Set("Authorization", "Bearer "+c.auth)
	}
	for k, v := range c.header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if req.GetBody != nil { // Do consumed it
		req.Body, _ = req.GetBody()
	}
	if resp.StatusCode != c.status {
		r.t.Fatalf("%s %s: status %d, want %d: %s", c.method, c.path, resp.StatusCode, c.status, body)
	}
	check := r.spec.Exchange
	if c.badRequest {
		check = r.spec.Response
	}
	if err := check(req, resp); err != nil {
		r.t.Errorf("%s %s: %v", c.method, c.path, err)
	}
	return body
}

// Every route answers, in its happy path and its main errors, what the
// document says: status, headers, content type and body, members the
// document does not declare included.
func TestResponsesMatchSpec(t *testing.T) {
	t.Parallel()
	spec, err := apispec.Load()
	if err != nil {
		t.Fatal(err)
	}
	r := &specRun{t: t, base: specNode(t), spec: spec}
	u1, u2, u3 := mustPass(t, "spec-u1"), mustPass(t, "spec-u2"), mustPass(t, "spec-u3")
	later := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)

	// Drops.
	r.do(specCase{method: "POST", path: "/v1/admin/drops", auth: adminToken, status: 201,
		body: `{"id":"spec-coupon","title":"Coupons","kind":"coupon","stock":2}`})
	r.do(specCase{method: "POST", path: "/v1/admin/drops", auth: adminToken, status: 201,
		body: `{"id":"spec-buy","title":"Shoes","kind":"purchase","stock":2,"price":129000,"currency":"KRW","hold_ttl":"10m","per_user_limit":1}`})
	r.do(specCase{method: "POST", path: "/v1/admin/drops", auth: adminToken, status: 201,
		body: `{"id":"spec-later","title":"Later","kind":"coupon","stock":1,"opens_at":"` + later + `"}`})
	r.do(specCase{method: "POST", path: "/v1/admin/drops", auth: adminToken, status: 201,
		body: `{"id":"spec-queue","title":"Queued","kind":"coupon","stock":5,"admission":{"mode":"queue","rate":1000}}`})
	r.do(specCase{method: "POST", path: "/v1/admin/drops", auth: adminToken, status: 409,
		body: `{"id":"spec-coupon","title":"Again","kind":"coupon","stock":2}`})
	r.do(specCase{method: "POST", path: "/v1/admin/drops", status: 401, badRequest: true,
		body: `{"title":"No token","kind":"coupon","stock":2}`})
	r.do(specCase{method: "POST", path: "/v1/admin/drops", auth: adminToken, status: 400, badRequest: true, body: `{"title":`})
	r.do(specCase{method: "POST", path: "/v1/admin/drops", auth: adminToken, status: 400, badRequest: true,
		body: `{"title":"x","kind":"coupon","stock":2,"color":"red"}`})
	r.do(specCase{method: "POST", path: "/v1/admin/drops", auth: adminToken, status: 413, badRequest: true,
		body: `{"title":"` + strings.Repeat("x", httpapi.MaxAdminBody) + `"}`})
	r.do(specCase{method: "GET", path: "/v1/admin/drops", auth: adminToken, status: 200})
	r.do(specCase{method: "GET", path: "/v1/admin/drops", auth: "wrong-token", status: 401})
	r.do(specCase{method: "GET", path: "/v1/admin/drops/spec-coupon", auth: adminToken, status: 200})
	r.do(specCase{method: "GET", path: "/v1/admin/drops/nope", auth: adminToken, status: 404})
	r.do(specCase{method: "GET", path: "/v1/admin/drops/Not_An_Id", auth: adminToken, status: 400, badRequest: true})
	r.do(specCase{method: "GET", path: "/v1/drops/spec-coupon", status: 200})
	r.do(specCase{method: "GET", path: "/v1/drops/spec-queue", status: 200})
	r.do(specCase{method: "GET", path: "/v1/drops/nope", status: 404})

	// Claims.
	var won struct {
		ClaimID string `json:"claim_id"`
	}
	json.Unmarshal(r.do(specCase{method: "POST", path: "/v1/drops/spec-coupon/claims", auth: u1, status: 201,
		header: map[string]string{"Idempotency-Key": "order-1"}}), &won)
	r.do(specCase{method: "POST", path: "/v1/drops/spec-coupon/claims", auth: u1, status: 200,
		header: map[string]string{"Idempotency-Key": "order-1"}})
	r.do(specCase{method: "POST", path: "/v1/drops/spec-coupon/claims", auth: u2, status: 201, body: `{}`})
	r.do(specCase{method: "POST", path: "/v1/drops/spec-coupon/claims", auth: u3, status: 410})
	r.do(specCase{method: "POST", path: "/v1/drops/spec-coupon/claims", status: 401, badRequest: true})
	r.do(specCase{method: "POST", path: "/v1/drops/spec-later/claims", auth: u1, status: 425})
	r.do(specCase{method: "POST", path: "/v1/drops/spec-queue/claims", auth: u1, status: 403})
	r.do(specCase{method: "POST", path: "/v1/drops/nope/claims", auth: u1, status: 404})
	r.do(specCase{method: "POST", path: "/v1/drops/spec-buy/claims", auth: u1, status: 400, badRequest: true,
		header: map[string]string{"Idempotency-Key": strings.Repeat("k", dibs.MaxIdempotencyKey+1)}})
	r.do(specCase{method: "POST", path: "/v1/drops/spec-buy/claims", auth: u1, status: 413, badRequest: true,
		body: `{"pad":"` + strings.Repeat("x", httpapi.MaxNoBody) + `"}`})
	r.do(specCase{method: "GET", path: "/v1/claims/" + won.ClaimID, auth: u1, status: 200})
	r.do(specCase{method: "GET", path: "/v1/claims/" + won.ClaimID, auth: u2, status: 404})
	r.do(specCase{method: "GET", path: "/v1/claims/" + won.ClaimID, status: 401, badRequest: true})
	r.do(specCase{method: "GET", path: "/v1/claims/bad.id", auth: u1, status: 400, badRequest: true})

	// Paying a hold; a paused drop.
	var held struct {
		ClaimID string `json:"claim_id"`
	}
	json.Unmarshal(r.do(specCase{method: "POST", path: "/v1/drops/spec-buy/claims", auth: u1, status: 201}), &held)
	r.do(specCase{method: "POST", path: "/v1/drops/spec-buy/claims", auth: u1, status: 200})
	r.do(specCase{method: "POST", path: "/v1/admin/drops", auth: adminToken, status: 201,
		body: `{"id":"spec-two","title":"Two each","kind":"coupon","stock":5,"per_user_limit":2}`})
	for i, status := range []int{201, 201, 409} {
		r.do(specCase{method: "POST", path: "/v1/drops/spec-two/claims", auth: u1, status: status,
			header: map[string]string{"Idempotency-Key": "two-" + strconv.Itoa(i)}})
	}
	r.do(specCase{method: "POST", path: "/v1/claims/" + held.ClaimID + "/pay", auth: u1, status: 202})
	r.do(specCase{method: "POST", path: "/v1/claims/" + held.ClaimID + "/pay", auth: u2, status: 404})
	r.do(specCase{method: "POST", path: "/v1/admin/drops/spec-buy/pause", auth: adminToken, status: 200})
	r.do(specCase{method: "POST", path: "/v1/drops/spec-buy/claims", auth: u2, status: 503})
	r.do(specCase{method: "POST", path: "/v1/admin/drops/spec-buy/resume", auth: adminToken, status: 200})
	r.do(specCase{method: "POST", path: "/v1/admin/drops/spec-later/close", auth: adminToken, status: 200})
	r.do(specCase{method: "POST", path: "/v1/drops/spec-later/claims", auth: u1, status: 410})
	r.do(specCase{method: "POST", path: "/v1/admin/drops/spec-later/resume", auth: adminToken, status: 409})
	r.do(specCase{method: "POST", path: "/v1/admin/drops/nope/pause", auth: adminToken, status: 404})

	// Winners, jobs, failed webhooks.
	if body := r.do(specCase{method: "GET", path: "/v1/admin/drops/spec-coupon/winners", auth: adminToken, status: 200}); bytes.Count(body, []byte("\n")) != 2 {
		t.Errorf("winners: %q, want two lines", body)
	}
	r.do(specCase{method: "GET", path: "/v1/admin/drops/spec-coupon/winners", auth: adminToken, status: 200, header: map[string]string{"Accept": "text/csv"}})
	r.do(specCase{method: "GET", path: "/v1/admin/drops/nope/winners", auth: adminToken, status: 404})
	r.do(specCase{method: "GET", path: "/v1/admin/drops/spec-buy/jobs", auth: adminToken, status: 200})
	r.do(specCase{method: "GET", path: "/v1/admin/drops/nope/jobs", auth: adminToken, status: 404})
	r.do(specCase{method: "GET", path: "/v1/admin/webhooks/failed", auth: adminToken, status: 200})
	r.do(specCase{method: "GET", path: "/v1/admin/webhooks/failed?drop=spec-coupon&limit=10", auth: adminToken, status: 200})
	r.do(specCase{method: "GET", path: "/v1/admin/webhooks/failed?limit=0", auth: adminToken, status: 400, badRequest: true})
	r.do(specCase{method: "POST", path: "/v1/admin/webhooks/failed/7/retry", auth: adminToken, status: 202})
	r.do(specCase{method: "POST", path: "/v1/admin/webhooks/failed/8/retry", auth: adminToken, status: 404})
	r.do(specCase{method: "POST", path: "/v1/admin/webhooks/failed/x/retry", auth: adminToken, status: 400, badRequest: true})

	// The waiting room: join, read, follow the stream to the admission,
	// claim with it.
	var joined struct {
		Ticket string `json:"ticket"`
	}
	json.Unmarshal(r.do(specCase{method: "POST", path: "/v1/drops/spec-queue/queue", auth: u1, status: 201}), &joined)
	r.do(specCase{method: "POST", path: "/v1/drops/spec-queue/queue", auth: u1, status: 200})
	r.do(specCase{method: "POST", path: "/v1/drops/spec-coupon/queue", auth: u1, status: 409})
	r.do(specCase{method: "POST", path: "/v1/drops/spec-queue/queue", status: 401, badRequest: true})
	r.do(specCase{method: "GET", path: "/v1/drops/spec-queue/queue", status: 200})
	r.do(specCase{method: "GET", path: "/v1/drops/spec-coupon/queue", status: 409})
	r.do(specCase{method: "GET", path: "/v1/drops/spec-queue/queue/" + joined.Ticket, auth: u1, status: 200})
	r.do(specCase{method: "GET", path: "/v1/drops/spec-queue/queue/not-a-ticket", auth: u1, status: 404})
	admission := r.admission(u1, "/v1/drops/spec-queue/queue/"+joined.Ticket+"/events")
	r.do(specCase{method: "POST", path: "/v1/drops/spec-queue/claims", auth: u1, status: 201,
		header: map[string]string{"Dibs-Admission": admission}})
	r.do(specCase{method: "POST", path: "/v1/drops/spec-queue/claims", auth: u2, status: 403,
		header: map[string]string{"Dibs-Admission": admission}})
	r.do(specCase{method: "GET", path: "/v1/drops/spec-queue/queue/not-a-ticket/events", auth: u1, status: 404})

	// Pacing, switches, the action log, the console, profiles.
	r.do(specCase{method: "PATCH", path: "/v1/admin/drops/spec-queue", auth: adminToken, status: 200, body: `{"rate":500}`})
	r.do(specCase{method: "PATCH", path: "/v1/admin/drops/spec-queue", auth: adminToken, status: 200, body: `{"rate":"auto","min":10,"max":200}`})
	r.do(specCase{method: "PATCH", path: "/v1/admin/drops/spec-queue", auth: adminToken, status: 400, badRequest: true, body: `{"rate":0}`})
	r.do(specCase{method: "PATCH", path: "/v1/admin/drops/spec-queue", auth: adminToken, status: 400, badRequest: true, body: `{"rate":"auto","min":20,"max":10}`})
	r.do(specCase{method: "PATCH", path: "/v1/admin/drops/spec-coupon", auth: adminToken, status: 409, body: `{"rate":10}`})
	r.do(specCase{method: "PATCH", path: "/v1/admin/drops/nope", auth: adminToken, status: 404, body: `{"rate":10}`})
	r.do(specCase{method: "GET", path: "/v1/admin/switches", auth: adminToken, status: 200})
	r.do(specCase{method: "PATCH", path: "/v1/admin/switches", auth: adminToken, status: 200, body: `{"claims":"off"}`})
	r.do(specCase{method: "POST", path: "/v1/drops/spec-two/claims", auth: u3, status: 503})
	r.do(specCase{method: "PATCH", path: "/v1/admin/switches", auth: adminToken, status: 200, body: `{"claims":"on"}`})
	r.do(specCase{method: "PATCH", path: "/v1/admin/switches", auth: adminToken, status: 400, badRequest: true, body: `{"claims":"maybe"}`})
	r.do(specCase{method: "PATCH", path: "/v1/admin/switches", status: 401, badRequest: true, body: `{"claims":"on"}`})
	if body := r.do(specCase{method: "GET", path: "/v1/admin/actions", auth: adminToken, status: 200}); bytes.Count(body, []byte("\n")) < 5 {
		t.Errorf("actions: %q, want the ones above", body)
	}
	r.do(specCase{method: "GET", path: "/v1/admin/actions?limit=2", auth: adminToken, status: 200})
	r.do(specCase{method: "GET", path: "/v1/admin/actions?limit=2000", auth: adminToken, status: 400, badRequest: true})
	r.do(specCase{method: "GET", path: "/console", status: 200})
	r.do(specCase{method: "GET", path: "/console/assets/console.js", status: 200})
	r.do(specCase{method: "GET", path: "/console/assets/nope.js", status: 404})
	r.do(specCase{method: "GET", path: "/debug/pprof/", auth: adminToken, status: 200})
	r.do(specCase{method: "GET", path: "/debug/pprof/", status: 401, badRequest: true})
	r.do(specCase{method: "GET", path: "/debug/pprof/heap?debug=1", auth: adminToken, status: 200, badRequest: true})

	// The page, its assets, operations.
	r.do(specCase{method: "GET", path: "/d/spec-queue", status: 200})
	r.do(specCase{method: "GET", path: "/d/nope", status: 404})
	r.do(specCase{method: "GET", path: "/assets/room.js", status: 200})
	r.do(specCase{method: "GET", path: "/assets/room.css", status: 200})
	r.do(specCase{method: "GET", path: "/healthz", status: 200})
	r.do(specCase{method: "GET", path: "/readyz", status: 200})
	r.do(specCase{method: "GET", path: "/metrics", status: 200})
	if body := r.do(specCase{method: "GET", path: "/openapi.json", status: 200}); !bytes.Equal(body, openapi.JSON()) {
		t.Error("/openapi.json is not openapi.JSON()")
	}
}

// admission opens a ticket's event stream, checks its answer against the
// document, and reads status events until the ticket is admitted.
func (r *specRun) admission(pass, path string) string {
	r.t.Helper()
	// Generous: the room admits on its next tick, 20ms away, on a machine
	// that may be slow.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.base+path, nil)
	req.Header.Set("Authorization", "Bearer "+pass)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	var read bytes.Buffer
	sc := bufio.NewScanner(io.TeeReader(resp.Body, &read))
	admission := ""
	for admission == "" && sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var st struct{ State, Admission string }
		if err := json.Unmarshal([]byte(data), &st); err != nil {
			r.t.Fatalf("event data %q: %v", data, err)
		}
		if st.State == string(dibs.QueueAdmitted) {
			admission = st.Admission
		}
	}
	if admission == "" {
		r.t.Fatalf("stream ended without an admission (%v): %q", sc.Err(), read.String())
	}
	if !strings.HasPrefix(read.String(), "retry: 2000\n\nevent: status\ndata: {") {
		r.t.Errorf("stream starts %q", read.String())
	}
	resp.Body = io.NopCloser(bytes.NewReader(read.Bytes()))
	if err := r.spec.Exchange(req, resp); err != nil {
		r.t.Errorf("GET %s: %v", path, err)
	}
	return admission
}

func mustPass(t *testing.T, user string) string {
	t.Helper()
	tok, err := passport.Issue(secret, user, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
