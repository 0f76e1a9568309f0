package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dibs-io/dibs/client"
)

// fake answers with the statuses of answers in turn (the last one again
// once they run out) and records the requests.
type fake struct {
	mu       sync.Mutex
	answers  []func(w http.ResponseWriter)
	requests []*http.Request
}

func (f *fake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.requests = append(f.requests, r.Clone(context.Background()))
	a := f.answers[min(len(f.requests), len(f.answers))-1]
	f.mu.Unlock()
	a(w)
}

func (f *fake) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.requests)
}

func problem(status int, code, retryAfter string) func(http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/problem+json")
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"type":"urn:dibs:problem:%s","title":%q,"status":%d,"detail":"It is so.","code":%q}`, code, http.StatusText(status), status, code)
	}
}

func answer(status int, body string) func(http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

// hangup closes the connection without an answer: a transport error.
func hangup(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err == nil {
		conn.Close()
	}
}

// setupFake returns a client of a fake server whose waits between
// attempts are recorded, not slept.
func setupFake(t *testing.T, answers ...func(http.ResponseWriter)) (*client.Client, *fake, *[]time.Duration) {
	t.Helper()
	f := &fake{answers: answers}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	c, err := client.New(client.Config{BaseURL: srv.URL, AdminToken: "admin-token-0123456789", MaxRetries: 3})
	if err != nil {
		t.Fatal(err)
	}
	var waits []time.Duration
	client.SetSleep(c, func(ctx context.Context, d time.Duration) error {
		waits = append(waits, d)
		return ctx.Err()
	})
	return c, f, &waits
}

const claimJSON = `{"claim_id":"c1","drop_id":"d","user_id":"u","slot":1,"state":"confirmed","created_at":"2026-11-11T02:00:00Z"}`

func TestErrorCarriesTheProblem(t *testing.T) {
	t.Parallel()
	c, _, _ := setupFake(t, problem(410, client.CodeSoldOut, ""))
	_, err := c.Claim(context.Background(), "pass", "d", client.ClaimOptions{})
	var e *client.Error
	if !errors.As(err, &e) {
		t.Fatalf("Claim error %v is not a *client.Error", err)
	}
	if e.Status != 410 || e.Code != "sold_out" || e.Title != "Gone" || e.Detail != "It is so." {
		t.Errorf("error = %+v", e)
	}
	if !client.IsSoldOut(err) || client.IsClosed(err) || client.Temporary(err) {
		t.Errorf("IsSoldOut %v, IsClosed %v, Temporary %v", client.IsSoldOut(err), client.IsClosed(err), client.Temporary(err))
	}
	if !client.IsSoldOut(fmt.Errorf("wrapped: %w", err)) {
		t.Error("a wrapped error loses its code")
	}
}

// A claim is retried on 503 after Retry-After, with the same
// Idempotency-Key every time.
func TestClaimRetriesWithOneKey(t *testing.T) {
	t.Parallel()
	c, f, waits := setupFake(t, problem(503, client.CodeOverloaded, "2"), problem(429, client.CodeThrottled, ""), answer(201, claimJSON))
	cl, err := c.Claim(context.Background(), "pass", "d", client.ClaimOptions{Admission: "adm"})
	if err != nil {
		t.Fatal(err)
	}
	if !cl.Created || cl.ID != "c1" {
		t.Errorf("claim = %+v, want created c1", cl)
	}
	if f.count() != 3 {
		t.Fatalf("%d requests, want 3", f.count())
	}
	key := f.requests[0].Header.Get("Idempotency-Key")
	for _, r := range f.requests {
		if got := r.Header.Get("Idempotency-Key"); key == "" || got != key {
			t.Errorf("Idempotency-Key %q, want %q every time", got, key)
		}
		if r.Header.Get("Dibs-Admission") != "adm" || r.Header.Get("Authorization") != "Bearer pass" {
			t.Errorf("headers %v", r.Header)
		}
	}
	if len(*waits) != 2 || (*waits)[0] != 2*time.Second || (*waits)[1] > client.DefaultMaxBackoff {
		t.Errorf("waits %v, want Retry-After's 2s then a backoff", *waits)
	}
}

// A request that got no answer is retried when it is safe to, and only
// then. The connection is cut on the first request, so the transport's own
// retry of requests on reused connections does not hide the client's.
func TestTransportErrors(t *testing.T) {
	t.Parallel()
	c, f, waits := setupFake(t, hangup, answer(200, claimJSON))
	if _, err := c.GetClaim(context.Background(), "pass", "c1"); err != nil {
		t.Fatalf("GetClaim after a cut connection: %v", err)
	}
	if f.count() != 2 || len(*waits) != 1 || (*waits)[0] > client.DefaultMaxBackoff {
		t.Errorf("%d requests, waits %v; want a retry after a backoff", f.count(), *waits)
	}

	c, f, _ = setupFake(t, hangup, answer(201, `{"id":"d"}`))
	_, err := c.CreateDrop(context.Background(), client.NewDrop{Title: "x", Kind: "coupon", Stock: 1})
	var e *client.Error
	if err == nil || errors.As(err, &e) || !client.Temporary(err) {
		t.Fatalf("CreateDrop after a cut connection: %v, want a transport error", err)
	}
	if f.count() != 1 {
		t.Errorf("CreateDrop sent %d times, want once", f.count())
	}
}

func TestRetriesAreBounded(t *testing.T) {
	t.Parallel()
	c, f, _ := setupFake(t, problem(503, client.CodeUnavailable, "1"))
	_, err := c.GetClaim(context.Background(), "pass", "c1")
	if !client.HasCode(err, client.CodeUnavailable) || !client.Temporary(err) {
		t.Fatalf("err = %v, want unavailable", err)
	}
	if f.count() != 4 {
		t.Errorf("%d requests, want 1 + 3 retries", f.count())
	}
}

// What is not safe to send twice is sent once.
func TestNoRetryWhenUnsafe(t *testing.T) {
	t.Parallel()
	c, f, _ := setupFake(t, problem(503, client.CodeOverloaded, "1"))
	if _, err := c.CreateDrop(context.Background(), client.NewDrop{Title: "x", Kind: "coupon", Stock: 1}); !client.HasCode(err, client.CodeOverloaded) {
		t.Fatalf("err = %v", err)
	}
	if err := c.RetryWebhook(context.Background(), 7); err == nil {
		t.Fatal("RetryWebhook succeeded")
	}
	if f.count() != 2 {
		t.Errorf("%d requests, want one per call", f.count())
	}
}

// Errors that would be answered again are not retried.
func TestNoRetryOnFinalErrors(t *testing.T) {
	t.Parallel()
	c, f, _ := setupFake(t, problem(409, client.CodeLimitReached, ""))
	if _, err := c.Claim(context.Background(), "pass", "d", client.ClaimOptions{}); !client.IsLimitReached(err) {
		t.Fatalf("err = %v", err)
	}
	if f.count() != 1 {
		t.Errorf("%d requests, want 1", f.count())
	}
}

func TestRetryStopsWithContext(t *testing.T) {
	t.Parallel()
	f := &fake{answers: []func(http.ResponseWriter){problem(503, client.CodePaused, "5")}}
	srv := httptest.NewServer(f)
	defer srv.Close()
	c, _ := client.New(client.Config{BaseURL: srv.URL})
	ctx, cancel := context.WithCancel(context.Background())
	client.SetSleep(c, func(context.Context, time.Duration) error { cancel(); return ctx.Err() })
	_, err := c.PublicDrop(ctx, "d")
	if !errors.Is(err, context.Canceled) || client.Temporary(err) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestNonProblemError(t *testing.T) {
	t.Parallel()
	c, _, _ := setupFake(t, func(w http.ResponseWriter) { http.Error(w, "bad gateway", http.StatusBadGateway) })
	_, err := c.Drops(context.Background())
	var e *client.Error
	if !errors.As(err, &e) || e.Status != 502 || e.Code != "" || e.Detail != "bad gateway" {
		t.Fatalf("err = %#v", err)
	}
}

func TestAdminCallsNeedToken(t *testing.T) {
	t.Parallel()
	c, err := client.New(client.Config{BaseURL: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Drops(context.Background()); err == nil {
		t.Fatal("an admin call without a token was sent")
	}
	if _, err := client.New(client.Config{BaseURL: "dibs.example.com"}); err == nil {
		t.Fatal("a relative base URL was accepted")
	}
}

// The winners export is decoded a line at a time: a million winners take
// no more memory than a few. The server generates the lines as it writes
// them, so the bytes never exist in full anywhere.
func TestWinnersStreamInConstantMemory(t *testing.T) {
	t.Parallel()
	lines := 1_000_000
	if raceEnabled || testing.Short() {
		lines = 100_000 // the race detector makes each line ~10x slower
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		bw := make([]byte, 0, 256)
		for i := 1; i <= lines; i++ {
			bw = fmt.Appendf(bw[:0], `{"claim_id":"01jcz8k2q3v4w5x6y7z8a9b%06d","user_id":"user-%d","slot":%d,"state":"confirmed","created_at":"2026-11-11T02:00:00.734512Z","coupon_code":"CODE-%06d"}`+"\n", i, i, i, i)
			if _, err := w.Write(bw); err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	c, err := client.New(client.Config{BaseURL: srv.URL, AdminToken: "admin-token-0123456789"})
	if err != nil {
		t.Fatal(err)
	}
	var before, during runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	peak := uint64(0)
	n := int64(0)
	err = c.Winners(context.Background(), "d", func(w *client.Winner) error {
		n++
		if w.Slot != n {
			return fmt.Errorf("line %d has slot %d", n, w.Slot)
		}
		if n%(int64(lines)/10) == 0 {
			runtime.GC() // what is live, not what awaits collection
			runtime.ReadMemStats(&during)
			peak = max(peak, during.HeapAlloc)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(lines) {
		t.Fatalf("%d winners, want %d", n, lines)
	}
	// The stream is ~150 bytes a line: 150 MB for a million. Live heap
	// growth is bounded by a few buffers; 8 MiB leaves room for the test
	// server and the runtime on any machine.
	const bound = 8 << 20
	if peak > before.HeapAlloc && peak-before.HeapAlloc > bound {
		t.Errorf("live heap grew by %d bytes over %d lines, want under %d", peak-before.HeapAlloc, lines, bound)
	}
}

func TestWinnersStopsOnCallerError(t *testing.T) {
	t.Parallel()
	c, _, _ := setupFake(t, answer(200, strings.Repeat(`{"claim_id":"c","slot":1}`+"\n", 10)))
	stop := errors.New("enough")
	seen := 0
	err := c.Winners(context.Background(), "d", func(*client.Winner) error { seen++; return stop })
	if !errors.Is(err, stop) || seen != 1 {
		t.Fatalf("err %v after %d winners, want stop after 1", err, seen)
	}
}

func TestTemporary(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  error
		want bool
	}{
		{&client.Error{Status: 429}, true},
		{&client.Error{Status: 503}, true},
		{&client.Error{Status: 410}, false},
		{errors.New("connection reset"), true},
		{context.DeadlineExceeded, false},
		{nil, false},
	}
	for _, tt := range tests {
		if got := client.Temporary(tt.err); got != tt.want {
			t.Errorf("Temporary(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}
