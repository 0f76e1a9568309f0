package webhook_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dibs-io/dibs/webhook"
)

// claimData is the data of a coupon win, as the workers send it.
type claimData struct {
	ClaimID    string `json:"claim_id"`
	DropID     string `json:"drop_id"`
	UserID     string `json:"user_id"`
	Slot       int64  `json:"slot"`
	State      string `json:"state"`
	CouponCode string `json:"coupon_code,omitempty"`
}

var winner = webhook.Event{
	ID:   "notify_winner:01j9zq4",
	Type: webhook.TypeNotifyWinner,
	// Not UTC, to see it sent in UTC.
	Time: time.Date(2026, 11, 11, 20, 0, 0, 500_000_000, time.FixedZone("KST", 9*3600)),
	Data: claimData{ClaimID: "01j9zq4", DropID: "pepero-day", UserID: "u-42", Slot: 7, State: "confirmed", CouponCode: "PEPERO-7F3K"},
}

// serve starts a server answering with h and returns its URL.
func serve(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

func mustSender(t *testing.T, cfg webhook.Config) *webhook.Sender {
	t.Helper()
	if cfg.Secret == nil {
		cfg.Secret = secret
	}
	s, err := webhook.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

// status answers every request with code and the given headers.
func status(code int, header ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		w.WriteHeader(code)
	}
}

// hang answers only after 5 s, or never if the client gives up first. The
// body is read so that the server notices the client leaving.
func hang(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	select {
	case <-r.Context().Done():
	case <-time.After(5 * time.Second):
	}
}

func deliveryError(t *testing.T, err error) *webhook.DeliveryError {
	t.Helper()
	var de *webhook.DeliveryError
	if !errors.As(err, &de) {
		t.Fatalf("error %v (%T) is not a *DeliveryError", err, err)
	}
	return de
}

func TestNew(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  webhook.Config
		ok   bool
	}{
		{"http", webhook.Config{URL: "http://127.0.0.1:9000/hooks", Secret: secret}, true},
		{"https", webhook.Config{URL: "https://shop.example/dibs", Secret: secret, Timeout: time.Second}, true},
		{"no URL", webhook.Config{Secret: secret}, false},
		{"relative URL", webhook.Config{URL: "/hooks", Secret: secret}, false},
		{"no host", webhook.Config{URL: "http:///hooks", Secret: secret}, false},
		{"other scheme", webhook.Config{URL: "ftp://shop.example/", Secret: secret}, false},
		{"unparsable", webhook.Config{URL: "http://[::1", Secret: secret}, false},
		{"no secret", webhook.Config{URL: "http://127.0.0.1:9000/"}, false},
		{"empty secret", webhook.Config{URL: "http://127.0.0.1:9000/", Secret: []byte{}}, false},
		{"negative timeout", webhook.Config{URL: "http://127.0.0.1:9000/", Secret: secret, Timeout: -time.Second}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := webhook.New(tt.cfg)
			if (err == nil) != tt.ok {
				t.Errorf("New(%+v) error = %v, want ok %v", tt.cfg, err, tt.ok)
			}
		})
	}
}

func TestSendRequest(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 11, 11, 0, 3, 0, time.UTC)
	type request struct {
		method string
		header http.Header
		body   []byte
	}
	got := make(chan request, 1)
	url := serve(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got <- request{r.Method, r.Header, body}
	})
	s := mustSender(t, webhook.Config{URL: url, Now: func() time.Time { return now }})
	if err := s.Send(context.Background(), winner); err != nil {
		t.Fatalf("Send: %v", err)
	}
	r := <-got

	wantBody := `{"id":"notify_winner:01j9zq4","type":"notify_winner","created_at":"2026-11-11T11:00:00.5Z",` +
		`"data":{"claim_id":"01j9zq4","drop_id":"pepero-day","user_id":"u-42","slot":7,"state":"confirmed","coupon_code":"PEPERO-7F3K"}}`
	if string(r.body) != wantBody {
		t.Errorf("body\n got %s\nwant %s", r.body, wantBody)
	}
	if r.method != http.MethodPost {
		t.Errorf("method %s, want POST", r.method)
	}
	for name, want := range map[string]string{
		"Content-Type":          "application/json",
		"User-Agent":            "dibs-webhook/1",
		webhook.IDHeader:        "notify_winner:01j9zq4",
		webhook.EventHeader:     "notify_winner",
		webhook.SignatureHeader: webhook.Sign(secret, now, []byte(wantBody)),
	} {
		if v := r.header.Get(name); v != want {
			t.Errorf("%s: %q, want %q", name, v, want)
		}
	}
	if err := webhook.Verify(secret, r.header.Get(webhook.SignatureHeader), r.body, now.Add(time.Minute), 0); err != nil {
		t.Errorf("Verify: %v", err)
	}
}

func TestSendNilData(t *testing.T) {
	t.Parallel()
	got := make(chan string, 1)
	url := serve(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got <- string(body)
	})
	e := winner
	e.Data = nil
	if err := mustSender(t, webhook.Config{URL: url}).Send(context.Background(), e); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if body := <-got; !strings.HasSuffix(body, `"data":{}}`) {
		t.Errorf("body %s, want an empty data object", body)
	}
}

func TestSendStatus(t *testing.T) {
	t.Parallel()
	tests := []struct {
		code      int
		ok        bool
		permanent bool
	}{
		{200, true, false},
		{201, true, false},
		{202, true, false},
		{204, true, false},
		{408, false, false},
		{425, false, false},
		{429, false, false},
		{500, false, false},
		{502, false, false},
		{503, false, false},
		{504, false, false},
		{301, false, true},
		{302, false, true},
		{307, false, true},
		{400, false, true},
		{401, false, true},
		{403, false, true},
		{404, false, true},
		{409, false, true},
		{410, false, true},
		{413, false, true},
		{422, false, true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.code), func(t *testing.T) {
			t.Parallel()
			url := serve(t, status(tt.code, "Location", "/elsewhere"))
			err := mustSender(t, webhook.Config{URL: url}).Send(context.Background(), winner)
			if tt.ok {
				if err != nil {
					t.Errorf("Send = %v, want nil", err)
				}
				return
			}
			de := deliveryError(t, err)
			if de.Status != tt.code || de.Permanent != tt.permanent || webhook.Permanent(err) != tt.permanent {
				t.Errorf("Send = %+v, want status %d, permanent %v", de, tt.code, tt.permanent)
			}
		})
	}
}

func TestSendRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 11, 11, 0, 0, 0, time.UTC)
	tests := []struct {
		name  string
		code  int
		value string
		want  time.Duration
	}{
		{"429 seconds", 429, "120", 2 * time.Minute},
		{"503 seconds", 503, "7", 7 * time.Second},
		{"429 date", 429, now.Add(30 * time.Second).Format(http.TimeFormat), 30 * time.Second},
		{"503 date", 503, now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{"date past", 503, now.Add(-time.Minute).Format(http.TimeFormat), 0},
		{"zero", 429, "0", 0},
		{"capped", 429, "86400", webhook.MaxRetryAfter},
		{"date capped", 429, now.Add(48 * time.Hour).Format(http.TimeFormat), webhook.MaxRetryAfter},
		{"negative", 429, "-5", 0},
		{"junk", 429, "soon", 0},
		{"absent", 429, "", 0},
		{"not read on 500", 500, "120", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			url := serve(t, status(tt.code, "Retry-After", tt.value))
			err := mustSender(t, webhook.Config{URL: url, Now: func() time.Time { return now }}).Send(context.Background(), winner)
			de := deliveryError(t, err)
			if de.RetryAfter != tt.want || de.Permanent {
				t.Errorf("Retry-After %q on %d: RetryAfter %v, permanent %v; want %v, retryable", tt.value, tt.code, de.RetryAfter, de.Permanent, tt.want)
			}
		})
	}
}

func TestSendTimeout(t *testing.T) {
	t.Parallel()
	url := serve(t, hang)
	err := mustSender(t, webhook.Config{URL: url, Timeout: 50 * time.Millisecond}).Send(context.Background(), winner)
	de := deliveryError(t, err)
	if de.Permanent || de.Status != 0 || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Send = %+v, want a retryable deadline error without status", de)
	}
}

func TestSendCanceled(t *testing.T) {
	t.Parallel()
	url := serve(t, hang)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	err := mustSender(t, webhook.Config{URL: url}).Send(ctx, winner)
	if webhook.Permanent(err) || !errors.Is(err, context.Canceled) {
		t.Errorf("Send = %v, want a retryable cancellation", err)
	}
}

func TestSendConnectionReset(t *testing.T) {
	t.Parallel()
	url := serve(t, func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		_ = conn.(*net.TCPConn).SetLinger(0)
		conn.Close()
	})
	err := mustSender(t, webhook.Config{URL: url}).Send(context.Background(), winner)
	if de := deliveryError(t, err); de.Permanent || de.Status != 0 {
		t.Errorf("Send = %+v, want retryable without status", de)
	}
}

func TestSendConnectionRefused(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	err = mustSender(t, webhook.Config{URL: "http://" + addr + "/hooks"}).Send(context.Background(), winner)
	if de := deliveryError(t, err); de.Permanent {
		t.Errorf("Send = %+v, want retryable", de)
	}
}

// TestSendRefusesEvent: an event that cannot be sent fails for good,
// without a request.
func TestSendRefusesEvent(t *testing.T) {
	t.Parallel()
	var requests atomic.Int32
	url := serve(t, func(w http.ResponseWriter, r *http.Request) { requests.Add(1) })
	s := mustSender(t, webhook.Config{URL: url})
	with := func(f func(e *webhook.Event)) webhook.Event {
		e := winner
		f(&e)
		return e
	}
	tests := map[string]webhook.Event{
		"no id":           with(func(e *webhook.Event) { e.ID = "" }),
		"id with newline": with(func(e *webhook.Event) { e.ID = "notify_winner:1\r\nX-Evil: 1" }),
		"id with space":   with(func(e *webhook.Event) { e.ID = "notify winner:1" }),
		"id too long":     with(func(e *webhook.Event) { e.ID = strings.Repeat("a", webhook.MaxIDLen+1) }),
		"no type":         with(func(e *webhook.Event) { e.Type = "" }),
		"no time":         with(func(e *webhook.Event) { e.Time = time.Time{} }),
		"data not JSON":   with(func(e *webhook.Event) { e.Data = make(chan int) }),
		"body too large":  with(func(e *webhook.Event) { e.Data = map[string]string{"x": strings.Repeat("a", webhook.MaxBody)} }),
	}
	for name, e := range tests {
		err := s.Send(context.Background(), e)
		if !webhook.Permanent(err) {
			t.Errorf("%s: Send = %v, want a permanent error", name, err)
		}
	}
	if n := requests.Load(); n != 0 {
		t.Errorf("%d requests sent, want none", n)
	}

	// Just under the limit goes out.
	fits := with(func(e *webhook.Event) { e.Data = map[string]string{"x": strings.Repeat("a", webhook.MaxBody-200)} })
	if err := s.Send(context.Background(), fits); err != nil {
		t.Errorf("Send of a body under MaxBody: %v", err)
	}
}

// TestSendNoRedirect: a redirect is reported, not followed, with the
// Sender's own client and with one the caller passed.
func TestSendNoRedirect(t *testing.T) {
	t.Parallel()
	var followed atomic.Int32
	target := serve(t, func(w http.ResponseWriter, r *http.Request) { followed.Add(1) })
	url := serve(t, status(http.StatusTemporaryRedirect, "Location", target))
	for _, client := range []*http.Client{nil, {}} {
		err := mustSender(t, webhook.Config{URL: url, Client: client}).Send(context.Background(), winner)
		if de := deliveryError(t, err); !de.Permanent || de.Status != 307 || !strings.Contains(err.Error(), target) {
			t.Errorf("Send = %v, want a permanent 307 naming its target", err)
		}
	}
	if n := followed.Load(); n != 0 {
		t.Errorf("redirect followed %d times", n)
	}
}

// TestSendReusesConnection: response bodies are drained, so one connection
// carries every delivery.
func TestSendReusesConnection(t *testing.T) {
	t.Parallel()
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(strings.Repeat("thanks ", 300)))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)

	s := mustSender(t, webhook.Config{URL: srv.URL})
	for range 10 {
		if err := s.Send(context.Background(), winner); err != nil {
			t.Fatalf("Send: %v", err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections for 10 sequential deliveries, want 1", n)
	}
}

func TestSendErrorQuotesAnswer(t *testing.T) {
	t.Parallel()
	url := serve(t, func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "unknown claim\n"+strings.Repeat("x", 10_000), http.StatusUnprocessableEntity)
	})
	err := mustSender(t, webhook.Config{URL: url}).Send(context.Background(), winner)
	if msg := err.Error(); !strings.Contains(msg, "422") || !strings.Contains(msg, `"unknown claim\n`) || len(msg) > 500 {
		t.Errorf("error %q, want the status and the start of the answer, briefly", msg)
	}
}

// TestSendPreviousSecret: during a rotation both secrets sign, so a
// receiver holding either verifies.
func TestSendPreviousSecret(t *testing.T) {
	t.Parallel()
	got := make(chan [2]string, 1)
	url := serve(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got <- [2]string{r.Header.Get(webhook.SignatureHeader), string(body)}
	})
	s := mustSender(t, webhook.Config{URL: url, Secret: newSecret, PreviousSecret: secret})
	if err := s.Send(context.Background(), winner); err != nil {
		t.Fatalf("Send: %v", err)
	}
	r := <-got
	if n := strings.Count(r[0], "v1="); n != 2 {
		t.Errorf("header %q has %d v1 signatures, want 2", r[0], n)
	}
	for _, key := range [][]byte{secret, newSecret} {
		if err := webhook.Verify(key, r[0], []byte(r[1]), time.Now(), 0); err != nil {
			t.Errorf("Verify with %s: %v", key, err)
		}
	}
}

func TestPermanent(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{errors.New("boom"), false},
		{&webhook.DeliveryError{Status: 503}, false},
		{&webhook.DeliveryError{Status: 404, Permanent: true}, true},
		{fmt.Errorf("notify: %w", &webhook.DeliveryError{Status: 410, Permanent: true}), true},
	}
	for _, tt := range tests {
		if got := webhook.Permanent(tt.err); got != tt.want {
			t.Errorf("Permanent(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}
