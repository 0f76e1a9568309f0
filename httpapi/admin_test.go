package httpapi_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/httpapi"
	"github.com/dibs-io/dibs/httpapi/console"
	"github.com/dibs-io/dibs/mock"
	"github.com/dibs-io/dibs/passport"
)

// bobToken is a second admin token, labelled "bob".
const bobToken = "bob-token-0123456789abcdef"

// switchBoard is a switch service double that keeps its state, as the
// real one does, and remembers who flipped what.
type switchBoard struct {
	state atomic.Value // dibs.Switches
	mu    sync.Mutex
	by    []string
}

func newSwitchBoard() *switchBoard {
	b := &switchBoard{}
	b.state.Store(dibs.Switches{})
	return b
}

func (b *switchBoard) mock() *mock.SwitchService {
	return &mock.SwitchService{
		SwitchesFn: func() dibs.Switches { return b.state.Load().(dibs.Switches) },
		SetSwitchesFn: func(_ context.Context, change map[dibs.Switch]bool, by string) (dibs.Switches, error) {
			b.mu.Lock()
			defer b.mu.Unlock()
			b.by = append(b.by, by)
			s := b.state.Load().(dibs.Switches).Apply(change)
			b.state.Store(s)
			return s, nil
		},
	}
}

func (b *switchBoard) flip(sw dibs.Switch, on bool) {
	b.state.Store(b.state.Load().(dibs.Switches).With(sw, on))
}

// actionLog is an action log double that keeps what it is given.
type actionLog struct {
	mu      sync.Mutex
	actions []dibs.Action
	fail    bool
}

func (l *actionLog) mock() *mock.ActionLog {
	return &mock.ActionLog{
		AppendFn: func(_ context.Context, a dibs.Action) error {
			l.mu.Lock()
			defer l.mu.Unlock()
			if l.fail {
				return dibs.Errorf(dibs.EUNAVAILABLE, "the log is down")
			}
			if err := a.Validate(); err != nil {
				return err
			}
			a.ID = int64(len(l.actions) + 1)
			l.actions = append(l.actions, a)
			return nil
		},
		ActionsFn: func(_ context.Context, limit int) ([]dibs.Action, error) {
			l.mu.Lock()
			defer l.mu.Unlock()
			var out []dibs.Action
			for i := len(l.actions) - 1; i >= 0 && len(out) < limit; i-- {
				out = append(out, l.actions[i])
			}
			return out, nil
		},
	}
}

func (l *actionLog) all() []dibs.Action {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]dibs.Action(nil), l.actions...)
}

// adminMocks are the doubles of an admin test server; nil services are
// left out of its Config.
type adminMocks struct {
	mocks
	switches *switchBoard
	actions  *actionLog
	live     *mock.LiveService
	separate bool
	console  bool
}

type adminBundle struct {
	*bundle
	api   *httpapi.Server
	admin *bundle // the admin listener, when separate
}

func serveAdmin(t *testing.T, m *adminMocks) *adminBundle {
	t.Helper()
	v, err := passport.NewVerifier(secret, passport.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := httpapi.Config{
		Drops: &m.drops, Claims: &m.claims, Passports: v,
		AdminToken:    adminToken,
		AdminTokens:   []httpapi.AdminToken{{Label: "bob", Token: bobToken}},
		SeparateAdmin: m.separate,
		Joins:         httpapi.JoinLimit{Rate: -1},
	}
	if m.queue != nil {
		cfg.Queue = m.queue
	}
	if m.jobs != nil {
		cfg.Jobs = m.jobs
	}
	if m.switches != nil {
		cfg.Switches = m.switches.mock()
	}
	if m.actions != nil {
		cfg.Actions = m.actions.mock()
	}
	if m.live != nil {
		cfg.Live = m.live
	}
	if m.console {
		cfg.Console = console.Handler()
	}
	api := httpapi.New(cfg)
	pub := httptest.NewServer(api)
	t.Cleanup(pub.Close)
	b := &adminBundle{bundle: &bundle{srv: pub}, api: api, admin: &bundle{srv: pub}}
	if m.separate {
		adm := httptest.NewServer(api.Admin())
		t.Cleanup(adm.Close)
		b.admin = &bundle{srv: adm}
	}
	t.Cleanup(api.CloseStreams)
	return b
}

func queueDrop(id string, rate int) *dibs.Drop {
	d := couponDrop(id)
	d.Admission = dibs.Admission{Mode: dibs.AdmissionQueue, Rate: rate, Order: dibs.OrderFIFO}
	return d
}

func viewOf(d *dibs.Drop) func(context.Context, string) (dibs.DropView, error) {
	return func(_ context.Context, id string) (dibs.DropView, error) {
		if id != d.ID {
			return dibs.DropView{}, dibs.Errorf(dibs.ENOTFOUND, "drop %s not found", id)
		}
		return dibs.DropView{Drop: d, State: dibs.StateOpen, Remaining: d.Stock}, nil
	}
}

// TestSwitchRoutes: the switches read and flip under the operator's
// label; bad names and values are 400 invalid; a server without switches
// answers 404.
func TestSwitchRoutes(t *testing.T) {
	t.Parallel()
	board := newSwitchBoard()
	b := serveAdmin(t, &adminMocks{switches: board})

	r := b.do(t, "GET", "/v1/admin/switches", adminToken, "")
	if r.status != 200 || strings.TrimSpace(r.raw) != `{"claims":"on","queue_joins":"on","payments":"on","webhooks":"on"}` {
		t.Fatalf("GET switches = %d %s", r.status, r.raw)
	}
	r = b.do(t, "PATCH", "/v1/admin/switches", bobToken, `{"claims":"off","webhooks":"off"}`)
	if r.status != 200 || strings.TrimSpace(r.raw) != `{"claims":"off","queue_joins":"on","payments":"on","webhooks":"off"}` {
		t.Fatalf("PATCH switches = %d %s", r.status, r.raw)
	}
	if got := board.by; len(got) != 1 || got[0] != "bob" {
		t.Errorf("flipped by %q, want [bob]", got)
	}

	for _, body := range []string{
		`{"claim":"off"}`, `{"claims":"maybe"}`, `{"claims":false}`, `{}`, `[]`, `null`,
		`{"claims":"off","claims":"on"}`, `{"claims":"off","CLAIMS":"on"}`, ``,
	} {
		wantProblem(t, b.do(t, "PATCH", "/v1/admin/switches", adminToken, body), 400, dibs.EINVALID)
	}
	wantProblem(t, b.do(t, "PATCH", "/v1/admin/switches", "", `{"claims":"on"}`), 401, dibs.EUNAUTHORIZED)
	wantProblem(t, b.do(t, "PATCH", "/v1/admin/switches", "not-a-token-at-all", `{"claims":"on"}`), 401, dibs.EUNAUTHORIZED)
	if len(board.by) != 1 {
		t.Errorf("refused flips reached the service: %q", board.by)
	}

	none := serveAdmin(t, &adminMocks{})
	wantProblem(t, none.do(t, "GET", "/v1/admin/switches", adminToken, ""), 404, dibs.ENOTFOUND)
	wantProblem(t, none.do(t, "PATCH", "/v1/admin/switches", adminToken, `{"claims":"off"}`), 404, dibs.ENOTFOUND)
}

// TestClaimsSwitchedOff: with claims off every claim is answered 503
// switched_off with Retry-After before it reaches the claim service; back
// on, claims are won again. Queue joins likewise.
func TestClaimsSwitchedOff(t *testing.T) {
	t.Parallel()
	board := newSwitchBoard()
	m := &adminMocks{switches: board}
	var calls atomic.Int32
	c := &dibs.Claim{ID: "c1", DropID: "d", UserID: "alice", Slot: 1, State: dibs.ClaimConfirmed, CreatedAt: time.Now().UTC()}
	m.claims.ClaimFn = func(context.Context, dibs.ClaimRequest) (dibs.Claiming, error) {
		calls.Add(1)
		return mock.Won(c, true), nil
	}
	q := queueDrop("q", 10)
	m.drops.DropFn = knownDrop(q)
	m.queue = &mock.QueueService{JoinFn: func(context.Context, *dibs.Drop, string) (dibs.QueueStatus, error) {
		return dibs.QueueStatus{Ticket: "t1", Number: 1, State: dibs.QueueWaiting, Position: 1, ETA: time.Second, PollAfter: time.Second, Now: time.Now()}, nil
	}}
	b := serveAdmin(t, m)
	alice := pass(t, "alice")

	board.flip(dibs.SwitchClaims, false)
	r := b.do(t, "POST", "/v1/drops/d/claims", alice, "")
	wantProblem(t, r, 503, dibs.ESWITCHEDOFF)
	if r.header.Get("Retry-After") == "" {
		t.Error("switched_off without Retry-After")
	}
	if calls.Load() != 0 {
		t.Errorf("a switched-off claim reached the claim service")
	}
	// The passport is checked first: a switch does not hide a bad request.
	wantProblem(t, b.do(t, "POST", "/v1/drops/d/claims", "", ""), 401, dibs.EUNAUTHORIZED)

	board.flip(dibs.SwitchClaims, true)
	if r := b.do(t, "POST", "/v1/drops/d/claims", alice, ""); r.status != 201 {
		t.Fatalf("claim with claims on = %d %s, want 201", r.status, r.raw)
	}

	board.flip(dibs.SwitchQueueJoins, false)
	r = b.do(t, "POST", "/v1/drops/q/queue", alice, "")
	wantProblem(t, r, 503, dibs.ESWITCHEDOFF)
	if r.header.Get("Retry-After") == "" {
		t.Error("switched_off join without Retry-After")
	}
	board.flip(dibs.SwitchQueueJoins, true)
	if r := b.do(t, "POST", "/v1/drops/q/queue", alice, ""); r.status != 201 {
		t.Fatalf("join with joins on = %d %s, want 201", r.status, r.raw)
	}
}

// TestPatchDropRate: a fixed rate and an auto pace reach SetAdmission and
// the answer shows them; the change is logged under the operator's label;
// bad bodies are 400, an unknown drop 404, a drop without a room 409.
func TestPatchDropRate(t *testing.T) {
	t.Parallel()
	log := &actionLog{}
	m := &adminMocks{actions: log}
	q := queueDrop("q", 50)
	direct := couponDrop("direct")
	drops := map[string]*dibs.Drop{"q": q, "direct": direct}
	var mu sync.Mutex
	m.drops.DropFn = func(id string) (*dibs.Drop, error) {
		mu.Lock()
		defer mu.Unlock()
		if d, ok := drops[id]; ok {
			return d, nil
		}
		return nil, dibs.Errorf(dibs.ENOTFOUND, "drop %s not found", id)
	}
	m.drops.ViewFn = func(_ context.Context, id string) (dibs.DropView, error) {
		d, err := m.drops.DropFn(id)
		if err != nil {
			return dibs.DropView{}, err
		}
		return dibs.DropView{Drop: d, State: dibs.StateOpen, Remaining: d.Stock}, nil
	}
	var got []dibs.Admission
	m.drops.SetAdmissionFn = func(_ context.Context, id string, a dibs.Admission) (*dibs.Drop, error) {
		if err := a.Validate(); err != nil {
			return nil, err
		}
		mu.Lock()
		defer mu.Unlock()
		got = append(got, a)
		next := *drops[id]
		next.Admission = a
		drops[id] = &next
		return &next, nil
	}
	b := serveAdmin(t, m)

	r := b.do(t, "PATCH", "/v1/admin/drops/q", bobToken, `{"rate":300}`)
	if r.status != 200 {
		t.Fatalf("fixed rate = %d %s", r.status, r.raw)
	}
	adm, _ := r.body["admission"].(map[string]any)
	if adm["rate"] != 300.0 || adm["pace"] != "fixed" || adm["min_rate"] != nil || adm["mode"] != "queue" {
		t.Errorf("fixed admission = %v", adm)
	}

	// An auto pace starts at the current rate (300), clamped to its bounds.
	r = b.do(t, "PATCH", "/v1/admin/drops/q", adminToken, `{"rate":"auto","min":10,"max":200}`)
	if r.status != 200 {
		t.Fatalf("auto rate = %d %s", r.status, r.raw)
	}
	adm, _ = r.body["admission"].(map[string]any)
	if adm["rate"] != 200.0 || adm["pace"] != "auto" || adm["min_rate"] != 10.0 || adm["max_rate"] != 200.0 {
		t.Errorf("auto admission = %v", adm)
	}
	want := []dibs.Admission{
		{Mode: dibs.AdmissionQueue, Order: dibs.OrderFIFO, Rate: 300},
		{Mode: dibs.AdmissionQueue, Order: dibs.OrderFIFO, Rate: 200, Pace: dibs.PaceAuto, MinRate: 10, MaxRate: 200},
	}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("SetAdmission got %+v, want %+v", got, want)
	}

	actions := log.all()
	if len(actions) != 2 {
		t.Fatalf("logged %d actions, want 2: %+v", len(actions), actions)
	}
	for i, who := range []string{"bob", "admin"} {
		if a := actions[i]; a.Actor != who || a.Kind != dibs.ActionDropRateChanged || a.DropID != "q" {
			t.Errorf("action %d = %+v, want %s changing q's rate", i, a, who)
		}
	}
	var detail map[string]any
	json.Unmarshal(actions[1].Detail, &detail)
	if detail["rate"] != 200.0 || detail["pace"] != "auto" || detail["min_rate"] != 10.0 || detail["max_rate"] != 200.0 {
		t.Errorf("detail = %s", actions[1].Detail)
	}

	for _, body := range []string{
		`{"rate":0}`, `{"rate":100001}`, `{"rate":-5}`, `{"rate":1.5}`, `{"rate":"fast"}`, `{"rate":null}`,
		`{"rate":"auto"}`, `{"rate":"auto","min":10}`, `{"rate":"auto","max":10}`,
		`{"rate":"auto","min":20,"max":10}`, `{"rate":"auto","min":0,"max":10}`, `{"rate":"auto","min":1,"max":100001}`,
		`{"rate":10,"min":1,"max":20}`, `{"rate":10,"burst":5}`, `{"rate":10,"rate":20}`, `{"rate":10,"Rate":20}`,
		`{}`, ``, `[]`, `{"rate":10}{}`,
	} {
		t.Run(body, func(t *testing.T) {
			wantProblem(t, b.do(t, "PATCH", "/v1/admin/drops/q", adminToken, body), 400, dibs.EINVALID)
		})
	}
	wantProblem(t, b.do(t, "PATCH", "/v1/admin/drops/nope", adminToken, `{"rate":10}`), 404, dibs.ENOTFOUND)
	wantProblem(t, b.do(t, "PATCH", "/v1/admin/drops/direct", adminToken, `{"rate":10}`), 409, dibs.ECONFLICT)
	wantProblem(t, b.do(t, "PATCH", "/v1/admin/drops/q", "", `{"rate":10}`), 401, dibs.EUNAUTHORIZED)
	if len(got) != 2 || len(log.all()) != 2 {
		t.Errorf("refused changes reached the service or the log: %d, %d", len(got), len(log.all()))
	}
}

// TestActionLabels: each admin action is logged under the label of the
// token that did it; a log that fails does not fail the action.
func TestActionLabels(t *testing.T) {
	t.Parallel()
	log := &actionLog{}
	m := &adminMocks{actions: log}
	d := couponDrop("d")
	m.drops.DropFn = knownDrop(d)
	m.drops.ViewFn = viewOf(d)
	m.drops.SetStatusFn = func(context.Context, string, dibs.Status) error { return nil }
	m.drops.CreateDropFn = func(_ context.Context, nd *dibs.Drop) error { *d = *nd; return nil }
	m.jobs = &mock.JobService{RetryFn: func(context.Context, int64) error { return nil }}
	b := serveAdmin(t, m)

	steps := []struct {
		token, method, path, body string
		status                    int
	}{
		{adminToken, "POST", "/v1/admin/drops", `{"id":"d","title":"D","kind":"coupon","stock":5}`, 201},
		{bobToken, "POST", "/v1/admin/drops/d/pause", "", 200},
		{adminToken, "POST", "/v1/admin/drops/d/resume", "", 200},
		{bobToken, "POST", "/v1/admin/drops/d/close", "", 200},
		{bobToken, "POST", "/v1/admin/webhooks/failed/7/retry", "", 202},
	}
	for _, s := range steps {
		if r := b.do(t, s.method, s.path, s.token, s.body); r.status != s.status {
			t.Fatalf("%s %s = %d %s", s.method, s.path, r.status, r.raw)
		}
	}
	want := []struct{ actor, kind, drop string }{
		{"admin", dibs.ActionDropCreated, "d"},
		{"bob", dibs.ActionDropPaused, "d"},
		{"admin", dibs.ActionDropResumed, "d"},
		{"bob", dibs.ActionDropClosed, "d"},
		{"bob", dibs.ActionWebhookRetried, ""},
	}
	got := log.all()
	if len(got) != len(want) {
		t.Fatalf("logged %d actions, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		if a := got[i]; a.Actor != w.actor || a.Kind != w.kind || a.DropID != w.drop {
			t.Errorf("action %d = %+v, want %+v", i, a, w)
		}
		if strings.Contains(string(got[i].Detail), bobToken) || strings.Contains(string(got[i].Detail), adminToken) {
			t.Errorf("action %d carries a token: %s", i, got[i].Detail)
		}
	}

	log.mu.Lock()
	log.fail = true
	log.mu.Unlock()
	if r := b.do(t, "POST", "/v1/admin/drops/d/pause", bobToken, ""); r.status != 200 {
		t.Errorf("pause with the log down = %d %s, want 200", r.status, r.raw)
	}
}

// TestListActions: newest first as NDJSON, the limit passed on, bad
// limits refused; without a log the list is empty.
func TestListActions(t *testing.T) {
	t.Parallel()
	log := &actionLog{}
	ml := log.mock()
	for i, kind := range []string{dibs.ActionDropCreated, dibs.ActionDropPaused, dibs.ActionDropResumed} {
		if err := ml.Append(context.Background(), dibs.Action{At: time.Now().UTC(), Actor: "bob", Kind: kind, DropID: "d", Detail: json.RawMessage(`{"n":` + string(rune('0'+i)) + `}`)}); err != nil {
			t.Fatal(err)
		}
	}
	b := serveAdmin(t, &adminMocks{actions: log})

	r := b.do(t, "GET", "/v1/admin/actions?limit=2", adminToken, "")
	if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "application/x-ndjson") {
		t.Fatalf("actions = %d %s %s", r.status, r.header.Get("Content-Type"), r.raw)
	}
	lines := strings.Split(strings.TrimSuffix(r.raw, "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want 2: %q", len(lines), r.raw)
	}
	var first dibs.Action
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil || first.Kind != dibs.ActionDropResumed || first.ID != 3 || first.Actor != "bob" {
		t.Errorf("first line = %s (%v), want the newest action", lines[0], err)
	}
	if r := b.do(t, "GET", "/v1/admin/actions", adminToken, ""); strings.Count(r.raw, "\n") != 3 {
		t.Errorf("default list = %q, want all 3", r.raw)
	}
	for _, q := range []string{"limit=1001", "limit=-1", "limit=x", "limit=1e3"} {
		wantProblem(t, b.do(t, "GET", "/v1/admin/actions?"+q, adminToken, ""), 400, dibs.EINVALID)
	}
	wantProblem(t, b.do(t, "GET", "/v1/admin/actions", "", ""), 401, dibs.EUNAUTHORIZED)

	none := serveAdmin(t, &adminMocks{})
	if r := none.do(t, "GET", "/v1/admin/actions", adminToken, ""); r.status != 200 || r.raw != "" {
		t.Errorf("actions without a log = %d %q, want 200 and no lines", r.status, r.raw)
	}
}

// TestAdminSplit: with SeparateAdmin the public handler answers 404 for
// the admin routes, the console, /metrics and pprof, and the admin
// handler serves them (pprof with a token only) and nothing public.
func TestAdminSplit(t *testing.T) {
	t.Parallel()
	m := &adminMocks{separate: true, console: true}
	d := couponDrop("d")
	m.drops.DropFn = knownDrop(d)
	m.drops.DropsFn = func() []*dibs.Drop { return []*dibs.Drop{d} }
	m.drops.ViewFn = viewOf(d)
	b := serveAdmin(t, m)

	for _, p := range []string{"/v1/admin/drops", "/console", "/console/assets/console.js", "/metrics", "/debug/pprof/", "/debug/pprof/heap", "/v1/admin/switches"} {
		wantProblem(t, b.do(t, "GET", p, adminToken, ""), 404, dibs.ENOTFOUND)
	}
	wantProblem(t, b.do(t, "POST", "/v1/admin/drops/d/pause", adminToken, ""), 404, dibs.ENOTFOUND)
	if r := b.do(t, "GET", "/v1/drops/d", "", ""); r.status != 200 {
		t.Errorf("public drop on the public side = %d %s", r.status, r.raw)
	}

	for _, p := range []string{"/v1/admin/drops", "/console", "/console/assets/console.js", "/metrics", "/debug/pprof/", "/debug/pprof/cmdline"} {
		if r := b.admin.do(t, "GET", p, adminToken, ""); r.status != 200 {
			t.Errorf("admin side GET %s = %d %s", p, r.status, r.raw)
		}
	}
	wantProblem(t, b.admin.do(t, "GET", "/debug/pprof/", "", ""), 401, dibs.EUNAUTHORIZED)
	wantProblem(t, b.admin.do(t, "GET", "/debug/pprof/heap", bobToken+"x", ""), 401, dibs.EUNAUTHORIZED)
	wantProblem(t, b.admin.do(t, "GET", "/v1/admin/drops", "", ""), 401, dibs.EUNAUTHORIZED)
	wantProblem(t, b.admin.do(t, "GET", "/v1/drops/d", "", ""), 404, dibs.ENOTFOUND)
	wantProblem(t, b.admin.do(t, "GET", "/healthz", "", ""), 404, dibs.ENOTFOUND)
	if r := b.admin.do(t, "DELETE", "/v1/admin/drops", adminToken, ""); r.status != 405 {
		t.Errorf("DELETE on the admin side = %d, want 405", r.status)
	}

	// One listener: everything on it, pprof behind the token.
	one := serveAdmin(t, &adminMocks{console: true})
	wantProblem(t, one.do(t, "GET", "/debug/pprof/", "", ""), 401, dibs.EUNAUTHORIZED)
	for _, p := range []string{"/debug/pprof/", "/console", "/metrics"} {
		if r := one.do(t, "GET", p, adminToken, ""); r.status != 200 {
			t.Errorf("one listener GET %s = %d %s", p, r.status, r.raw)
		}
	}
	if one.api.Admin() != http.Handler(one.api) {
		t.Error("without SeparateAdmin, Admin is not the server itself")
	}
	noConsole := serveAdmin(t, &adminMocks{})
	wantProblem(t, noConsole.do(t, "GET", "/console", "", ""), 404, dibs.ENOTFOUND)
}

// TestLiveStream: the live view streams the newest snapshot at once and
// each newer one, and ends when the server closes its streams; without a
// live service it is 404.
func TestLiveStream(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	changed := make(chan struct{})
	n := 0
	live := &mock.LiveService{
		ChangedFn: func() <-chan struct{} { mu.Lock(); defer mu.Unlock(); return changed },
		SnapshotFn: func(context.Context) (dibs.LiveSnapshot, error) {
			mu.Lock()
			defer mu.Unlock()
			n++
			return dibs.LiveSnapshot{At: time.Date(2026, 12, 7, 11, 0, n, 0, time.UTC), Drops: []dibs.LiveDrop{}}, nil
		},
	}
	b := serveAdmin(t, &adminMocks{live: live})
	wantProblem(t, b.do(t, "GET", "/v1/admin/live", "", ""), 401, dibs.EUNAUTHORIZED)

	req, _ := http.NewRequest("GET", b.srv.URL+"/v1/admin/live", nil)
	req.Header.Set("Authorization", "Bearer "+bobToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/event-stream" || res.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("live = %d %s %s", res.StatusCode, res.Header.Get("Content-Type"), res.Header.Get("Cache-Control"))
	}
	rd := bufio.NewReader(res.Body)
	next := func() dibs.LiveSnapshot {
		t.Helper()
		for {
			line, err := rd.ReadString('\n')
			if err != nil {
				t.Fatalf("stream ended: %v", err)
			}
			if data, ok := strings.CutPrefix(line, "data: "); ok {
				var s dibs.LiveSnapshot
				if err := json.Unmarshal([]byte(data), &s); err != nil {
					t.Fatalf("event %q: %v", data, err)
				}
				return s
			}
		}
	}
	if s := next(); s.At.Second() != 1 {
		t.Errorf("first snapshot at %v, want the first one", s.At)
	}
	mu.Lock()
	close(changed)
	changed = make(chan struct{})
	mu.Unlock()
	if s := next(); s.At.Second() != 2 {
		t.Errorf("second snapshot at %v, want the newer one", s.At)
	}

	b.api.CloseStreams()
	for {
		if _, err := rd.ReadString('\n'); err != nil {
			break // the stream ended
		}
	}

	none := serveAdmin(t, &adminMocks{})
	wantProblem(t, none.do(t, "GET", "/v1/admin/live", adminToken, ""), 404, dibs.ENOTFOUND)
}

// TestCreateDropPace: a drop may be created with an auto pace, which its
// JSON shows; an unknown pace is 400.
func TestCreateDropPace(t *testing.T) {
	t.Parallel()
	var created dibs.Drop
	m := &adminMocks{}
	m.drops.CreateDropFn = func(_ context.Context, d *dibs.Drop) error {
		if err := d.Admission.Validate(); err != nil {
			return err
		}
		created = *d
		return nil
	}
	m.drops.ViewFn = func(context.Context, string) (dibs.DropView, error) {
		return dibs.DropView{Drop: &created, State: dibs.StateOpen}, nil
	}
	b := serveAdmin(t, m)
	r := b.do(t, "POST", "/v1/admin/drops", adminToken,
		`{"id":"q","title":"Q","kind":"coupon","stock":5,"admission":{"mode":"queue","rate":50,"order":"fifo","pace":"auto","min_rate":10,"max_rate":100}}`)
	if r.status != 201 {
		t.Fatalf("create = %d %s", r.status, r.raw)
	}
	if a := created.Admission; a.Pace != dibs.PaceAuto || a.MinRate != 10 || a.MaxRate != 100 || a.Rate != 50 {
		t.Errorf("created admission = %+v", a)
	}
	adm, _ := r.body["admission"].(map[string]any)
	if adm["pace"] != "auto" || adm["min_rate"] != 10.0 || adm["max_rate"] != 100.0 {
		t.Errorf("answered admission = %v", adm)
	}
	wantProblem(t, b.do(t, "POST", "/v1/admin/drops", adminToken,
		`{"id":"q2","title":"Q","kind":"coupon","stock":5,"admission":{"mode":"queue","rate":50,"pace":"fast"}}`), 400, dibs.EINVALID)
}
