package console_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/dibs-io/dibs/httpapi/console"
	"github.com/dibs-io/dibs/internal/headless"
)

// token is the admin token the fake API accepts. It is long and odd
// enough that finding it in a URL cannot be a coincidence.
const token = "adm-7Qe2xZt9-console-secret"

// browser starts a headless Chromium and returns a tab's context.
func browser(t *testing.T) context.Context {
	t.Helper()
	return headless.New(t, 1440, 1000)
}

// patch is one PATCH request the fake API received.
type patch struct {
	path, auth string
	body       map[string]any
}

// fakeAPI plays the admin API: the test decides when the live stream sends
// a snapshot (frames) and when it drops the connection (hangup).
type fakeAPI struct {
	frames    chan string   // a snapshot for the open stream to send
	hangup    chan struct{} // ends the open stream
	connected chan struct{} // a stream was opened with the right token
	patches   chan patch
	refuse    atomic.Bool // answer 401 to everything

	mu   sync.Mutex
	urls []string // every request's URL, the page's and its assets' too
}

func newFakeAPI() *fakeAPI {
	return &fakeAPI{
		frames:    make(chan string),
		hangup:    make(chan struct{}),
		connected: make(chan struct{}, 100),
		patches:   make(chan patch, 10),
	}
}

func (f *fakeAPI) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/console", console.Handler())
	mux.Handle("/console/", console.Handler())
	mux.HandleFunc("GET /v1/admin/live", f.live)
	mux.HandleFunc("GET /v1/admin/actions", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		io.WriteString(w, `{"at":"2026-12-07T11:00:03Z","actor":"ops-laptop","kind":"switch.flipped","drop_id":"","detail":{"claims":"off"}}`+"\n")
		io.WriteString(w, `{"at":"2026-12-07T10:59:00Z","actor":"ops-laptop","kind":"drop.rate_changed","drop_id":"phones","detail":{"rate":200}}`+"\n")
	})
	mux.HandleFunc("PATCH /v1/admin/switches", func(w http.ResponseWriter, r *http.Request) {
		p := f.record(r)
		w.Header().Set("Content-Type", "application/json")
		sw := map[string]any{"claims": "on", "queue_joins": "on", "payments": "on", "webhooks": "on"}
		for k, v := range p.body {
			sw[k] = v
		}
		json.NewEncoder(w).Encode(sw)
	})
	mux.HandleFunc("PATCH /v1/admin/drops/{id}", func(w http.ResponseWriter, r *http.Request) {
		p := f.record(r)
		if rate, ok := p.body["rate"].(float64); ok && rate > 1000 {
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"type":"urn:dibs:problem:invalid","title":"Bad Request","status":400,"detail":"rate is over 1000 per second","code":"invalid"}`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"phones"}`)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.urls = append(f.urls, r.URL.String())
		f.mu.Unlock()
		if strings.HasPrefix(r.URL.Path, "/v1/") && (f.refuse.Load() || r.Header.Get("Authorization") != "Bearer "+token) {
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"type":"urn:dibs:problem:unauthorized","title":"Unauthorized","status":401,"detail":"Bad token.","code":"unauthorized"}`)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func (f *fakeAPI) record(r *http.Request) patch {
	p := patch{path: r.URL.Path, auth: r.Header.Get("Authorization")}
	json.NewDecoder(r.Body).Decode(&p.body)
	f.patches <- p
	return p
}

func (f *fakeAPI) live(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	rc.Flush()
	f.connected <- struct{}{}
	// A comment once a second keeps the page's watchdog from counting a
	// slow test step as a lost stream.
	keepAlive := time.NewTicker(time.Second)
	defer keepAlive.Stop()
	for {
		select {
		case <-keepAlive.C:
			io.WriteString(w, ": keep-alive\n\n")
			rc.Flush()
		case frame := <-f.frames:
			// Split across two writes: the page must join the pieces.
			half := len(frame) / 2
			fmt.Fprintf(w, "data: %s", frame[:half])
			rc.Flush()
			fmt.Fprintf(w, "%s\n\n", frame[half:])
			rc.Flush()
		case <-f.hangup:
			return
		case <-r.Context().Done():
			return
		}
	}
}

// snapshot is a live snapshot (the JSON of GET /v1/admin/live) of one
// queued drop at the n-th second with remaining slots left.
func snapshot(n, remaining int) string {
	at := time.Date(2026, 12, 7, 11, 0, 0, 0, time.UTC).Add(time.Duration(n) * time.Second)
	held := 1000 - remaining
	s := map[string]any{
		"at": at.Format(time.RFC3339),
		"drops": []any{map[string]any{
			"id": "phones", "title": "1,000 phones", "kind": "purchase", "state": "open",
			"stock": 1000, "remaining": remaining, "held": held, "confirmed": 0, "paid": held / 2, "released": 8, "expired": 2,
			"claims_per_sec": map[string]any{"won": 400 + 10*n, "existing": 3, "sold_out": 0, "limit": 1, "not_open": 0, "shed": n % 3, "error": 0},
			"latency_ms":     map[string]any{"p50": 1.8, "p99": 7.5},
			"sold_out_at":    nil,
			"queue": map[string]any{"joined": 52000, "waiting": 31000 - 200*n, "admitted_per_sec": 200, "rate": 200,
				"rate_mode": "fixed", "rate_min": 0, "rate_max": 0, "eta_last_s": 155 - n, "sold_out": false},
		}},
		"post": map[string]any{"backlog": map[string]any{"charge_payment": 12, "notify_winner": 3}, "failed_webhooks": 1,
			"breaker": "closed", "charges_per_sec": 180, "gateway_p99_ms": 120},
		"switches": map[string]any{"claims": "on", "queue_joins": "on", "payments": "on", "webhooks": "on"},
		"nodes": []any{
			map[string]any{"id": "node-a", "version": "v0.9.0", "stale": false, "last_heartbeat": at.Format(time.RFC3339),
				"inflight": map[string]any{"claim": 12, "read": 3}, "shed": map[string]any{"claim": 0}, "recorder_batch": 24,
				"commit_p99_ms": 3.1, "goroutines": 220, "heap_bytes": 48000000, "gc_pause_p99_ms": 0.4},
			map[string]any{"id": "node-b", "version": "v0.9.0", "stale": true, "last_heartbeat": at.Add(-7 * time.Second).Format(time.RFC3339),
				"inflight": map[string]any{}, "shed": map[string]any{}, "recorder_batch": 0,
				"commit_p99_ms": 0, "goroutines": 0, "heap_bytes": 0, "gc_pause_p99_ms": 0},
		},
	}
	b, _ := json.Marshal(s)
	return string(b)
}

// receive waits for the page's next step to reach the fake API.
func receive[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(time.Minute):
		t.Fatalf("the page did not %s within a minute", what)
		panic("unreachable")
	}
}

// send hands the open stream a snapshot.
func send(t *testing.T, f *fakeAPI, frame string) {
	t.Helper()
	select {
	case f.frames <- frame:
	case <-time.After(time.Minute):
		t.Fatal("no stream took the snapshot within a minute")
	}
}

// wait polls a JavaScript condition in the page for up to a minute.
func wait(t *testing.T, ctx context.Context, what, cond string) {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.Poll[chromedp.Void](cond, chromedp.WithPollingTimeout(time.Minute))); err != nil {
		body, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
		t.Fatalf("%s: %v (the page reads: %s)", what, err, body)
	}
}

func do(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// TestConsoleInChromium signs in to the console in headless Chromium
// against a fake admin API and follows an incident: the stream's numbers
// change, the stream drops and comes back, the claims switch goes off, the
// pace of a drop is set (once refused with a problem), the token is
// refused, which returns to the sign-in form, and sign-out forgets the
// token. The token never
// appears in a URL. A screenshot of the signed-in page is left in the
// test's artifact directory (go test -artifacts keeps it).
func TestConsoleInChromium(t *testing.T) {
	t.Parallel()
	f := newFakeAPI()
	srv := httptest.NewServer(f.handler())
	t.Cleanup(srv.Close)
	ctx := browser(t)

	do(t, ctx, "open the console",
		chromedp.Navigate(srv.URL+"/console"),
		chromedp.WaitVisible(chromedp.CSS(`#signin-form`)),
	)
	// Anything the policy blocks, and any script error, is collected from
	// here on: the charts are built after sign-in.
	do(t, ctx, "watch for problems", chromedp.Evaluate[chromedp.Void](`
		window.problems = [];
		document.addEventListener('securitypolicyviolation', (e) => problems.push('CSP ' + e.violatedDirective + ' ' + e.blockedURI));
		window.addEventListener('error', (e) => problems.push('error ' + e.message));
		window.addEventListener('unhandledrejection', (e) => problems.push('rejection ' + e.reason));
	`))
	do(t, ctx, "sign in",
		chromedp.SendKeys(chromedp.CSS(`#token`), token),
		chromedp.Click(chromedp.CSS(`#signin-form button`)),
	)
	receive(t, f.connected, "open the live stream")

	remaining := []int{120, 100, 80, 71, 64, 52}
	for i, r := range remaining {
		send(t, f, snapshot(i, r))
		wait(t, ctx, fmt.Sprintf("remaining %d", r), fmt.Sprintf(`document.querySelector('[data-drop=phones] [data-field=remaining]')?.textContent === '%d'`, r))
	}
	wait(t, ctx, "live", `document.getElementById('conn').textContent === 'live'`)
	wait(t, ctx, "the nodes table marks the stale node", `document.querySelector('[data-node=node-b]')?.classList.contains('stale')`)
	wait(t, ctx, "the actions list", `document.getElementById('actions').textContent.includes('switch.flipped')`)
	wait(t, ctx, "the charts", `document.querySelectorAll('[data-drop=phones] canvas').length === 2`)

	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	file := filepath.Join(t.ArtifactDir(), "console.png")
	if err := os.WriteFile(file, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", file, len(shot))

	// The stream drops: the page says so, reconnects, and is live again.
	f.hangup <- struct{}{}
	wait(t, ctx, "the reconnect notice", `document.getElementById('conn').textContent.startsWith('reconnecting…')`)
	receive(t, f.connected, "reconnect")
	send(t, f, snapshot(10, 40))
	wait(t, ctx, "remaining after the reconnect", `document.querySelector('[data-drop=phones] [data-field=remaining]').textContent === '40'`)
	wait(t, ctx, "live again", `document.getElementById('conn').textContent === 'live'`)

	// Claims off, after a confirmation.
	do(t, ctx, "turn claims off",
		chromedp.Click(chromedp.CSS(`[data-switch=claims]`)),
		chromedp.WaitVisible(chromedp.CSS(`#confirm-yes`)),
		chromedp.Click(chromedp.CSS(`#confirm-yes`)),
	)
	p := receive(t, f.patches, "send the switch")
	if want := map[string]any{"claims": "off"}; p.path != "/v1/admin/switches" || !reflect.DeepEqual(p.body, want) || p.auth != "Bearer "+token {
		t.Errorf("switch: PATCH %s %v with %q, want /v1/admin/switches %v with the bearer token", p.path, p.body, p.auth, want)
	}
	wait(t, ctx, "claims shown off", `document.querySelector('.switch[data-name=claims]').dataset.state === 'off'`)

	// The pace: a rate the API refuses shows its problem, then one it takes.
	do(t, ctx, "set a rate over the limit",
		chromedp.SendKeys(chromedp.CSS(`[data-drop=phones] .rate-input`), "5000"),
		chromedp.Click(chromedp.CSS(`[data-drop=phones] .rate-set`)),
	)
	p = receive(t, f.patches, "send the rate")
	if p.path != "/v1/admin/drops/phones" || p.body["rate"] != 5000.0 {
		t.Errorf("pace: PATCH %s %v, want /v1/admin/drops/phones rate 5000", p.path, p.body)
	}
	wait(t, ctx, "the problem banner", `!document.getElementById('banner').hidden && document.getElementById('banner-text').textContent.includes('rate is over 1000 per second')`)
	do(t, ctx, "set auto pace",
		chromedp.SendKeys(chromedp.CSS(`[data-drop=phones] [placeholder=min]`), "50"),
		chromedp.SendKeys(chromedp.CSS(`[data-drop=phones] [placeholder=max]`), "400"),
		chromedp.Click(chromedp.CSS(`[data-drop=phones] .rate-auto`)),
	)
	p = receive(t, f.patches, "send auto pace")
	if want := map[string]any{"rate": "auto", "min": 50.0, "max": 400.0}; !reflect.DeepEqual(p.body, want) || p.auth != "Bearer "+token {
		t.Errorf("auto pace: %v with %q, want %v with the bearer token", p.body, p.auth, want)
	}

	// The token is revoked: the next answer is a 401, and the page returns
	// to the sign-in form with a message and forgets the token.
	f.refuse.Store(true)
	f.hangup <- struct{}{}
	wait(t, ctx, "the sign-in form after a 401", `document.body.dataset.view === 'signin' && document.getElementById('signin-error').textContent.includes('401')`)
	if kept, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`sessionStorage.getItem('dibs-admin-token') !== null`)); err != nil || kept {
		t.Errorf("after the 401 the token is still in sessionStorage (%v)", err)
	}

	// Signed in again, then signed out: the token is kept in the tab until
	// sign-out clears it.
	f.refuse.Store(false)
	do(t, ctx, "sign in again",
		chromedp.SendKeys(chromedp.CSS(`#token`), token),
		chromedp.Click(chromedp.CSS(`#signin-form button`)),
	)
	wait(t, ctx, "the token kept in the tab", `sessionStorage.getItem('dibs-admin-token') === '`+token+`'`)
	do(t, ctx, "sign out", chromedp.Click(chromedp.CSS(`#signout`)))
	wait(t, ctx, "signed out", `document.body.dataset.view === 'signin' && sessionStorage.getItem('dibs-admin-token') === null`)

	problems, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`window.problems`))
	if err != nil || len(problems) > 0 {
		t.Errorf("the page reported problems: %q (%v)", problems, err)
	}
	href, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href`))
	f.mu.Lock()
	urls := append([]string{href}, f.urls...)
	f.mu.Unlock()
	for _, u := range urls {
		if strings.Contains(u, token) {
			t.Errorf("the token is in a URL: %s", u)
		}
	}
	if len(urls) < 10 {
		t.Errorf("only %d requests recorded, want the page, its assets and the API calls", len(urls))
	}
}
