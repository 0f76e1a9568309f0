package httpapi_test

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/engine"
	"github.com/dibs-io/dibs/httpapi"
	"github.com/dibs-io/dibs/internal/testenv"
	"github.com/dibs-io/dibs/memory"
	"github.com/dibs-io/dibs/passport"
	"github.com/dibs-io/dibs/room"
	"github.com/dibs-io/dibs/sqlite"
)

var roomSecret = []byte("httpapi-test-room-secret-0123456")

type roomSetup struct {
	room   func(dibs.QueueService) dibs.QueueService // wraps the room the API serves
	limits httpapi.Limits
	joins  httpapi.JoinLimit
	header string
	ttl    time.Duration
	clock  *aheadClock // the room's and the engine's clock; the wall clock if nil
	wrap   func(http.Handler) http.Handler
	server func(*http.Server) // tunes the server before it starts
}

type roomBundle struct {
	*bundle
	engine *engine.Engine
	room   *room.Service
	api    *httpapi.Server
}

// setupRoom starts a server whose queued drops have a memory waiting room,
// its loop running every 20ms.
func setupRoom(t testing.TB, o roomSetup) *roomBundle {
	t.Helper()
	raw, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "dibs.db"))
	if err != nil {
		t.Fatal(err)
	}
	var now func() time.Time
	if o.clock != nil {
		now = o.clock.Now
	}
	svc, err := room.New(room.Config{Backend: memory.NewRoom(), Secret: roomSecret, Tick: 20 * time.Millisecond, AdmissionTTL: o.ttl, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	st := &blockingStore{Store: raw}
	e := engine.New(engine.Config{Store: st, Gate: memory.NewGate(), Admissions: svc, Now: now})
	if err := e.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	leader := svc.Leader(e)
	leader.Start(context.Background())
	v, err := passport.NewVerifier(secret, passport.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var served dibs.QueueService = svc
	if o.room != nil {
		served = o.room(svc)
	}
	api := httpapi.New(httpapi.Config{
		Drops: e, Claims: e, Queue: served,
		Passports: v, AdminToken: adminToken, Limits: o.limits,
		Joins: o.joins, ClientIPHeader: o.header,
	})
	var h http.Handler = api
	if o.wrap != nil {
		h = o.wrap(api)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Config.RegisterOnShutdown(api.CloseStreams)
	if o.server != nil {
		o.server(srv.Config)
	}
	srv.Start()
	t.Cleanup(func() { api.CloseStreams(); srv.Close(); leader.Stop(); e.Close(); raw.Close() })
	return &roomBundle{bundle: &bundle{srv: srv, store: st, raw: raw}, engine: e, room: svc, api: api}
}

// aheadClock is the wall clock moved ahead by what a test adds. The room
// runs on it as on time (its ticks, its admission rate), and a test that
// must get past an expiry or an opening moves the clock past it, where a
// sleep would have to guess how slow the machine is: the admission TTLs
// and openings of these tests are far enough that a starved machine does
// not reach them by itself.
type aheadClock struct{ ahead atomic.Int64 }

func (c *aheadClock) Now() time.Time      { return time.Now().Add(time.Duration(c.ahead.Load())) }
func (c *aheadClock) Add(d time.Duration) { c.ahead.Add(int64(d)) }

// waitAdmitted polls the ticket until it is admitted.
func (b *roomBundle) waitAdmitted(t testing.TB, drop, pass, ticket string) response {
	t.Helper()
	var r response
	testenv.WaitFor(t, "the admission of "+ticket, func() bool {
		r = b.do(t, "GET", "/v1/drops/"+drop+"/queue/"+ticket, pass, "")
		if r.status != http.StatusOK {
			t.Fatalf("status: %d %s", r.status, r.raw)
		}
		return r.body["state"] == "admitted"
	})
	return r
}

func wantProblem(t *testing.T, r response, status int, code string) {
	t.Helper()
	if r.status != status || r.problem.Code != code {
		t.Fatalf("got %d %q (%s), want %d %q", r.status, r.problem.Code, r.raw, status, code)
	}
}

// TestQueueFlow: join (again: the same place), follow the ticket, claim
// with the admission; every way around the admission is refused.
func TestQueueFlow(t *testing.T) {
	t.Parallel()
	b := setupRoom(t, roomSetup{})
	b.mustCreateDrop(t, `{"id":"iphone","title":"iPhone","kind":"coupon","stock":2,"admission":{"mode":"queue","rate":50}}`)
	b.mustCreateDrop(t, `{"id":"ipad","title":"iPad","kind":"coupon","stock":2,"admission":{"mode":"queue","rate":50}}`)
	alice, bob := pass(t, "alice"), pass(t, "bob")

	joined := b.do(t, "POST", "/v1/drops/iphone/queue", alice, "")
	ticket, _ := joined.body["ticket"].(string)
	if joined.status != http.StatusCreated || ticket == "" || joined.body["number"] != 1.0 {
		t.Fatalf("join: %d %s", joined.status, joined.raw)
	}
	if loc := joined.header.Get("Location"); loc != "/v1/drops/iphone/queue/"+ticket {
		t.Fatalf("Location = %q", loc)
	}
	again := b.do(t, "POST", "/v1/drops/iphone/queue", alice, "")
	if again.status != http.StatusOK || again.body["number"] != 1.0 {
		t.Fatalf("join again: %d %s, want 200 and number 1", again.status, again.raw)
	}
	wantProblem(t, b.do(t, "POST", "/v1/drops/iphone/queue", "", ""), 401, "unauthorized")
	wantProblem(t, b.do(t, "POST", "/v1/drops/iphone/queue", alice, `{"extra":1}`), 400, "invalid")
	wantProblem(t, b.do(t, "GET", "/v1/drops/iphone/queue/"+ticket, bob, ""), 404, "not_found")
	wantProblem(t, b.do(t, "GET", "/v1/drops/ipad/queue/"+ticket, alice, ""), 404, "not_found")

	adm := b.waitAdmitted(t, "iphone", alice, ticket)
	token, _ := adm.body["admission"].(string)
	if token == "" || adm.body["admission_expires_at"] == nil || adm.body["poll_after_ms"] == 0.0 {
		t.Fatalf("admitted: %s", adm.raw)
	}
	bobJoin := b.do(t, "POST", "/v1/drops/iphone/queue", bob, "")
	bobAdm := b.waitAdmitted(t, "iphone", bob, bobJoin.body["ticket"].(string))
	ipadJoin := b.do(t, "POST", "/v1/drops/ipad/queue", alice, "")
	ipadAdm := b.waitAdmitted(t, "ipad", alice, ipadJoin.body["ticket"].(string))

	claim := func(passport string, headers ...string) response {
		return b.do(t, "POST", "/v1/drops/iphone/claims", passport, "", headers...)
	}
	forged := []byte(token)
	forged[len(forged)-3] ^= 0x01
	wantProblem(t, claim(alice), 403, "admission_required")
	wantProblem(t, claim(alice, "Dibs-Admission", string(forged)), 403, "admission_invalid")
	wantProblem(t, claim(alice, "Dibs-Admission", ticket), 403, "admission_invalid")
	wantProblem(t, claim(alice, "Dibs-Admission", bobAdm.body["admission"].(string)), 403, "admission_invalid")
	wantProblem(t, claim(bob, "Dibs-Admission", token), 403, "admission_invalid")
	wantProblem(t, claim(alice, "Dibs-Admission", ipadAdm.body["admission"].(string)), 403, "admission_invalid")

	won := claim(alice, "Dibs-Admission", token)
	if won.status != http.StatusCreated {
		t.Fatalf("claim with admission: %d %s", won.status, won.raw)
	}
	for _, key := range []string{"", "another-key"} {
		dup := claim(alice, "Dibs-Admission", token, "Idempotency-Key", key)
		if dup.status != http.StatusOK || dup.body["claim_id"] != won.body["claim_id"] {
			t.Fatalf("second claim with the same admission: %d %s, want 200 and the same claim", dup.status, dup.raw)
		}
	}
	if r := b.do(t, "GET", "/v1/drops/iphone", "", ""); r.body["remaining"] != 1.0 {
		t.Fatalf("remaining after one admitted win: %s", r.raw)
	}
}

// TestAdmissionReplay: one admission sent a thousand times at once wins
// once; every other claim gets that claim back.
func TestAdmissionReplay(t *testing.T) {
	t.Parallel()
	// No bound on the claim handlers at once: on a starved machine a claim
	// could wait past DefaultClaimWait for a turn and be shed (503), which
	// is the run limit's own business (TestRunLimit), not the replay's.
	limits := httpapi.DefaultLimits
	limits.ClaimWorkers = -1
	b := setupRoom(t, roomSetup{limits: limits})
	b.mustCreateDrop(t, `{"id":"q","title":"q","kind":"coupon","stock":100,"per_user_limit":5,"admission":{"mode":"queue","rate":100}}`)
	alice := pass(t, "alice")
	j := b.do(t, "POST", "/v1/drops/q/queue", alice, "")
	adm := b.waitAdmitted(t, "q", alice, j.body["ticket"].(string)).body["admission"].(string)
	const workers, each = 100, 10
	type answer struct {
		status int
		claim  string
	}
	answers := make(chan answer, workers*each)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				key := fmt.Sprintf("k%d-%d", w, i) // a different Idempotency-Key each time changes nothing
				r := b.do(t, "POST", "/v1/drops/q/claims", alice, "", "Dibs-Admission", adm, "Idempotency-Key", key)
				id, _ := r.body["claim_id"].(string)
				answers <- answer{r.status, id}
			}
		})
	}
	wg.Wait()
	close(answers)
	created, claims := 0, map[string]bool{}
	for a := range answers {
		switch a.status {
		case http.StatusCreated:
			created++
		case http.StatusOK:
		default:
			t.Fatalf("a replay was answered %d", a.status)
		}
		claims[a.claim] = true
	}
	if created != 1 || len(claims) != 1 {
		t.Fatalf("%d created, %d distinct claims from one admission; want 1 and 1", created, len(claims))
	}
	if r := b.do(t, "GET", "/v1/drops/q", "", ""); r.body["remaining"] != 99.0 {
		t.Fatalf("remaining %v, want 99", r.body["remaining"])
	}
}

func TestExpiredAdmissionIsRefused(t *testing.T) {
	t.Parallel()
	const ttl = time.Minute
	clock := &aheadClock{}
	b := setupRoom(t, roomSetup{ttl: ttl, clock: clock})
	b.mustCreateDrop(t, `{"id":"q","title":"q","kind":"coupon","stock":5,"admission":{"mode":"queue","rate":100}}`)
	alice := pass(t, "alice")
	j := b.do(t, "POST", "/v1/drops/q/queue", alice, "")
	adm := b.waitAdmitted(t, "q", alice, j.body["ticket"].(string))
	clock.Add(ttl + time.Second)
	wantProblem(t, b.do(t, "POST", "/v1/drops/q/claims", alice, "", "Dibs-Admission", adm.body["admission"].(string)), 403, "admission_invalid")
	var r response
	testenv.WaitFor(t, "the passed turn to read expired", func() bool {
		r = b.do(t, "GET", "/v1/drops/q/queue/"+j.body["ticket"].(string), alice, "")
		return r.body["state"] == "expired"
	})
}

// TestWinnerReadsWon: a winner who comes back after the admission has
// expired (a reload of the page) reads won, by status and by joining
// again, also once the drop has sold out; nobody else gets in then.
func TestWinnerReadsWon(t *testing.T) {
	t.Parallel()
	const ttl = time.Minute
	clock := &aheadClock{}
	b := setupRoom(t, roomSetup{ttl: ttl, clock: clock})
	b.mustCreateDrop(t, `{"id":"q","title":"q","kind":"coupon","stock":1,"admission":{"mode":"queue","rate":100}}`)
	alice := pass(t, "alice")
	j := b.do(t, "POST", "/v1/drops/q/queue", alice, "")
	ticket := j.body["ticket"].(string)
	adm := b.waitAdmitted(t, "q", alice, ticket)
	if r := b.do(t, "POST", "/v1/drops/q/claims", alice, "", "Dibs-Admission", adm.body["admission"].(string)); r.status != http.StatusCreated {
		t.Fatalf("claim: %d %s", r.status, r.raw)
	}
	clock.Add(ttl + time.Second)
	st := b.do(t, "GET", "/v1/drops/q/queue/"+ticket, alice, "")
	if st.status != http.StatusOK || st.body["state"] != "won" || st.body["poll_after_ms"] != 0.0 || st.body["admission"] != nil {
		t.Fatalf("the winner's ticket after the admission expired: %d %s, want won", st.status, st.raw)
	}
	// The room learns the sell-out at its leader's next step, which a
	// starved machine may run late: until then a newcomer is let in to
	// wait (and told sold_out at the first poll). Each try is a new user.
	tries := 0
	testenv.WaitFor(t, "the sold-out room to refuse newcomers", func() bool {
		tries++
		r := b.do(t, "POST", "/v1/drops/q/queue", pass(t, fmt.Sprint("bob", tries)), "")
		if r.status == http.StatusCreated {
			return false
		}
		wantProblem(t, r, 410, "sold_out")
		return true
	})
	again := b.do(t, "POST", "/v1/drops/q/queue", alice, "")
	if again.status != http.StatusOK || again.body["state"] != "won" || again.body["number"] != j.body["number"] || again.body["ticket"] == "" {
		t.Fatalf("the winner joins the sold-out room again: %d %s, want 200, won, the same number", again.status, again.raw)
	}
}

// TestJoinLimitCountsRealJoins: requests without a valid passport, with a
// body, or for a drop that does not queue are refused before the
// per-address limit and take none of its joins.
func TestJoinLimitCountsRealJoins(t *testing.T) {
	t.Parallel()
	b := setupRoom(t, roomSetup{joins: httpapi.JoinLimit{Rate: 0.01, Burst: 2}})
	b.mustCreateDrop(t, `{"id":"q","title":"q","kind":"coupon","stock":5,"admission":{"mode":"queue","rate":1}}`)
	b.mustCreateDrop(t, `{"id":"d","title":"d","kind":"coupon","stock":5}`)
	for range 5 {
		wantProblem(t, b.do(t, "POST", "/v1/drops/q/queue", "", ""), 401, "unauthorized")
		wantProblem(t, b.do(t, "POST", "/v1/drops/q/queue", "junk", ""), 401, "unauthorized")
		wantProblem(t, b.do(t, "POST", "/v1/drops/q/queue", pass(t, "x"), `{"a":1}`), 400, "invalid")
		wantProblem(t, b.do(t, "POST", "/v1/drops/nope/queue", pass(t, "x"), ""), 404, "not_found")
		wantProblem(t, b.do(t, "POST", "/v1/drops/d/queue", pass(t, "x"), ""), 409, "conflict")
	}
	for _, u := range []string{"u1", "u2"} {
		if r := b.do(t, "POST", "/v1/drops/q/queue", pass(t, u), ""); r.status != http.StatusCreated {
			t.Fatalf("%s after the junk: %d %s, want 201", u, r.status, r.raw)
		}
	}
	wantProblem(t, b.do(t, "POST", "/v1/drops/q/queue", pass(t, "u3"), ""), 429, "throttled")
}

// verifyCounter counts the ticket verifications of the room it wraps.
type verifyCounter struct {
	dibs.QueueService
	n atomic.Int64
}

func (c *verifyCounter) Verify(ctx context.Context, d *dibs.Drop, userID, ticket string) (dibs.HeldTicket, error) {
	c.n.Add(1)
	return c.QueueService.Verify(ctx, d, userID, ticket)
}

// TestStreamVerifiesOnce: a stream verifies its ticket when it opens, not
// on each of its many wakes.
func TestStreamVerifiesOnce(t *testing.T) {
	t.Parallel()
	counter := &verifyCounter{}
	b := setupRoom(t, roomSetup{room: func(r dibs.QueueService) dibs.QueueService { counter.QueueService = r; return counter }})
	b.mustCreateDrop(t, `{"id":"q","title":"q","kind":"coupon","stock":50,"admission":{"mode":"queue","rate":20}}`)
	var tickets []string
	for i := range 20 {
		tickets = append(tickets, b.do(t, "POST", "/v1/drops/q/queue", pass(t, fmt.Sprint("u", i)), "").body["ticket"].(string))
	}
	before := counter.n.Load()
	events := 0
	for ev := range readEvents(openStream(t, b, "q", pass(t, "u19"), tickets[19])) {
		events++
		if ev["state"] == "admitted" {
			break
		}
	}
	if got := counter.n.Load() - before; events < 2 || got != 1 {
		t.Fatalf("a stream of %d events over about a second of 20ms ticks verified its ticket %d times, want once", events, got)
	}
}

func TestQueueOnDirectDrop(t *testing.T) {
	t.Parallel()
	b := setupRoom(t, roomSetup{})
	b.mustCreateDrop(t, `{"id":"d","title":"d","kind":"coupon","stock":5}`)
	wantProblem(t, b.do(t, "POST", "/v1/drops/d/queue", pass(t, "alice"), ""), 409, "conflict")
	wantProblem(t, b.do(t, "GET", "/v1/drops/d/queue", "", ""), 409, "conflict")
	wantProblem(t, b.do(t, "POST", "/v1/drops/nope/queue", pass(t, "alice"), ""), 404, "not_found")
}

// TestQueueInfo: the seed stays hidden until the opening, its digest is
// public from the start, and the revealed seed matches it.
func TestQueueInfo(t *testing.T) {
	t.Parallel()
	clock := &aheadClock{}
	b := setupRoom(t, roomSetup{clock: clock})
	opens := clock.Now().Add(time.Hour).UTC().Format(time.RFC3339Nano)
	b.mustCreateDrop(t, `{"id":"q","title":"q","kind":"coupon","stock":5,"opens_at":"`+opens+`","admission":{"mode":"queue","rate":100}}`)
	for _, u := range []string{"a", "b", "c"} {
		b.do(t, "POST", "/v1/drops/q/queue", pass(t, u), "")
	}
	before := b.do(t, "GET", "/v1/drops/q/queue", "", "")
	digest, _ := before.body["seed_sha256"].(string)
	if before.status != 200 || len(digest) != 64 || before.body["seed"] != nil || before.body["opened"] != false || before.body["order"] != "shuffle" {
		t.Fatalf("before opening: %s", before.raw)
	}
	if view := b.do(t, "GET", "/v1/drops/q", "", ""); !strings.Contains(view.raw, `"seed_sha256":"`+digest) {
		t.Fatalf("the public drop view lacks the room: %s", view.raw)
	}
	clock.Add(time.Hour)
	var after response
	testenv.WaitFor(t, "the seed revealed at the opening", func() bool {
		after = b.do(t, "GET", "/v1/drops/q/queue", "", "")
		return after.body["seed"] != nil
	})
	seed, err := hex.DecodeString(after.body["seed"].(string))
	if err != nil || room.SeedDigest(seed) != digest || after.body["prequeue"] != 3.0 || after.body["permutation"] != httpapi.PermutationName {
		t.Fatalf("after opening: %s", after.raw)
	}
}

// TestJoinRateLimit: joins are limited per client address; the trusted
// header is honoured only when configured.
func TestJoinRateLimit(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, header string
		separate     bool // do different X-Forwarded-For values count apart?
	}{
		{"connection address", "", false},
		{"trusted header", "X-Forwarded-For", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			// One join per 100 s once the burst is spent: no join comes back
			// between these requests, however slow the machine.
			b := setupRoom(t, roomSetup{joins: httpapi.JoinLimit{Rate: 0.01, Burst: 2}, header: c.header})
			b.mustCreateDrop(t, `{"id":"q","title":"q","kind":"coupon","stock":5,"admission":{"mode":"queue","rate":1}}`)
			join := func(user, xff string) response {
				return b.do(t, "POST", "/v1/drops/q/queue", pass(t, user), "", "X-Forwarded-For", xff)
			}
			for i, u := range []string{"u1", "u2"} {
				if r := join(u, "10.0.0.1, 192.0.2.1"); r.status != http.StatusCreated {
					t.Fatalf("join %d: %d %s", i, r.status, r.raw)
				}
			}
			r := join("u3", "10.0.0.1, 192.0.2.1")
			wantProblem(t, r, 429, "throttled")
			if s, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || s < 1 {
				t.Fatalf("Retry-After = %q", r.header.Get("Retry-After"))
			}
			other := join("u4", "10.0.0.1, 192.0.2.2")
			if got := other.status == http.StatusCreated; got != c.separate {
				t.Fatalf("another forwarded address: %d %s", other.status, other.raw)
			}
		})
	}
}

// readEvents reads server-sent events from r into a channel of their data.
func readEvents(r *http.Response) <-chan map[string]any {
	ch := make(chan map[string]any, 16)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(r.Body)
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				var m map[string]any
				if json.Unmarshal([]byte(data), &m) == nil {
					ch <- m
				}
			}
		}
	}()
	return ch
}

func openStream(t *testing.T, b *roomBundle, drop, pass, ticket string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("GET", b.srv.URL+"/v1/drops/"+drop+"/queue/"+ticket+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+pass)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Body.Close() })
	return res
}

// TestQueueEvents: a stream sends the ticket's status as it changes and
// ends with the admission; streams are bounded per node and end when the
// server shuts down.
func TestQueueEvents(t *testing.T) {
	t.Parallel()
	clock := &aheadClock{}
	b := setupRoom(t, roomSetup{limits: httpapi.Limits{Claim: 10, Read: 10, Admin: 10, Ops: 10, Stream: 2}, clock: clock})
	opens := clock.Now().Add(time.Hour).UTC().Format(time.RFC3339Nano)
	b.mustCreateDrop(t, `{"id":"q","title":"q","kind":"coupon","stock":5,"opens_at":"`+opens+`","admission":{"mode":"queue","rate":5}}`)
	b.mustCreateDrop(t, `{"id":"slow","title":"slow","kind":"coupon","stock":5,"opens_at":"2099-01-01T00:00:00Z","admission":{"mode":"queue","rate":1}}`)
	var tickets []string
	for _, u := range []string{"a", "b", "c"} {
		tickets = append(tickets, b.do(t, "POST", "/v1/drops/q/queue", pass(t, u), "").body["ticket"].(string))
	}
	res := openStream(t, b, "q", pass(t, "c"), tickets[2])
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	// The first event is sent before the opening; then the drop opens.
	events := readEvents(res)
	var states []string
	if ev, ok := <-events; ok {
		states = append(states, ev["state"].(string))
	}
	clock.Add(time.Hour)
	for ev := range events {
		states = append(states, ev["state"].(string))
	}
	if len(states) < 2 || states[0] != "waiting" || states[len(states)-1] != "admitted" {
		t.Fatalf("events %v, want waiting … admitted, then the end of the stream", states)
	}

	// The stream class is bounded apart from the others.
	d := b.do(t, "POST", "/v1/drops/slow/queue", pass(t, "d"), "").body["ticket"].(string)
	e := b.do(t, "POST", "/v1/drops/slow/queue", pass(t, "e"), "").body["ticket"].(string)
	f := b.do(t, "POST", "/v1/drops/slow/queue", pass(t, "f"), "").body["ticket"].(string)
	s1, s2 := openStream(t, b, "slow", pass(t, "d"), d), openStream(t, b, "slow", pass(t, "e"), e)
	ev1, ev2 := readEvents(s1), readEvents(s2)
	<-ev1
	<-ev2
	third := openStream(t, b, "slow", pass(t, "f"), f)
	if third.StatusCode != http.StatusServiceUnavailable || third.Header.Get("Retry-After") == "" {
		t.Fatalf("a stream beyond the limit: %d", third.StatusCode)
	}
	if r := b.do(t, "GET", "/v1/drops/slow/queue/"+f, pass(t, "f"), ""); r.status != http.StatusOK {
		t.Fatalf("a status read while the streams are full: %d %s", r.status, r.raw)
	}
	b.api.CloseStreams()
	for _, ch := range []<-chan map[string]any{ev1, ev2} {
		select {
		case <-waitClosed(ch):
		case <-time.After(testenv.WaitTimeout):
			t.Fatal("a stream outlived CloseStreams")
		}
	}
}

// TestStreamOutlivesServerTimeouts: a stream lives past the server's read
// and write timeouts, which bound ordinary requests. The drop and the
// ticket are made without HTTP, so that only the stream's own request has
// to be read within the timeout on a starved machine; the stream is
// watched for three times the timeouts.
func TestStreamOutlivesServerTimeouts(t *testing.T) {
	t.Parallel()
	const timeout = time.Second
	b := setupRoom(t, roomSetup{server: func(s *http.Server) {
		s.ReadTimeout, s.WriteTimeout = timeout, timeout
	}})
	d := &dibs.Drop{ID: "q", Title: "q", Kind: dibs.KindCoupon, Stock: 5, OpensAt: time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC),
		Admission: dibs.Admission{Mode: dibs.AdmissionQueue, Rate: 1}}
	if err := b.engine.CreateDrop(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	d, _ = b.engine.Drop("q")
	j, err := b.room.Join(context.Background(), d, "a")
	if err != nil {
		t.Fatal(err)
	}
	events := readEvents(openStream(t, b, "q", pass(t, "a"), j.Ticket))
	<-events
	select {
	case _, open := <-events:
		if !open {
			t.Fatal("the stream ended at the server's timeouts")
		}
	case <-time.After(3 * timeout):
	}
}

func waitClosed(ch <-chan map[string]any) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		for range ch {
		}
		close(done)
	}()
	return done
}

func TestPageAndAssets(t *testing.T) {
	t.Parallel()
	b := setupRoom(t, roomSetup{})
	b.mustCreateDrop(t, `{"id":"q","title":"q","kind":"coupon","stock":5,"admission":{"mode":"queue","rate":1}}`)
	page := b.do(t, "GET", "/d/q", "", "")
	if page.status != 200 || !strings.HasPrefix(page.header.Get("Content-Type"), "text/html") ||
		!strings.Contains(page.header.Get("Content-Security-Policy"), "default-src 'none'") || !strings.Contains(page.raw, "/assets/room.js") {
		t.Fatalf("page: %d %v", page.status, page.header)
	}
	if r := b.do(t, "GET", "/d/nope", "", ""); r.status != 404 || !strings.Contains(r.raw, "/assets/room.js") {
		t.Fatalf("page of an unknown drop: %d", r.status)
	}
	for _, asset := range []string{"/assets/room.js", "/assets/room.css"} {
		r := b.do(t, "GET", asset, "", "")
		if r.status != 200 || strings.Contains(r.raw, "http://") || strings.Contains(r.raw, "https://") || strings.Contains(r.raw, "//cdn") {
			t.Fatalf("%s: %d, or it loads something from elsewhere", asset, r.status)
		}
	}
	if r := b.do(t, "GET", "/assets/room.html", "", ""); r.status != 404 {
		t.Fatalf("/assets/room.html: %d, want 404", r.status)
	}
}
