package webhook_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dibs-io/dibs/webhook"
)

var handlerSecret = []byte("whsec_handler_test")

// handlerSetup serves a Handler whose function records events and returns
// what fail says.
type handlerBundle struct {
	srv    *httptest.Server
	mu     sync.Mutex
	events []webhook.Event
	fail   error
}

func handlerSetup(t *testing.T, cfg webhook.HandlerConfig) *handlerBundle {
	t.Helper()
	b := &handlerBundle{}
	if cfg.Secret == nil {
		cfg.Secret = handlerSecret
	}
	h, err := webhook.NewHandler(cfg, func(ctx context.Context, e webhook.Event) error {
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.fail != nil {
			return b.fail
		}
		b.events = append(b.events, e)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	b.srv = httptest.NewServer(h)
	t.Cleanup(b.srv.Close)
	return b
}

func (b *handlerBundle) handled() []webhook.Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]webhook.Event(nil), b.events...)
}

func handlerSender(t *testing.T, url string, secret []byte, now func() time.Time) *webhook.Sender {
	t.Helper()
	s, err := webhook.New(webhook.Config{URL: url, Secret: secret, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var hookWinner = webhook.Event{
	ID: "notify_winner:01jcz8k2q3v4w5x6y7z8a9b0cd", Type: webhook.TypeNotifyWinner,
	Time: time.Date(2026, 11, 11, 2, 0, 0, 0, time.UTC),
	Data: map[string]any{"claim_id": "01jcz8k2q3v4w5x6y7z8a9b0cd", "drop_id": "pepero-day", "user_id": "u-1", "slot": 17, "state": "confirmed", "coupon_code": "PEPERO-7F3KQ2", "later": true},
}

func TestHandlerHandlesOnce(t *testing.T) {
	t.Parallel()
	b := handlerSetup(t, webhook.HandlerConfig{})
	s := handlerSender(t, b.srv.URL, handlerSecret, nil)
	for range 3 {
		if err := s.Send(context.Background(), hookWinner); err != nil {
			t.Fatalf("Send: %v", err)
		}
	}
	got := b.handled()
	if len(got) != 1 {
		t.Fatalf("handled %d events, want 1 (repeats dropped)", len(got))
	}
	e := got[0]
	d, ok := e.Data.(webhook.ClaimData)
	if !ok {
		t.Fatalf("Data is %T, want webhook.ClaimData", e.Data)
	}
	if e.ID != hookWinner.ID || e.Type != hookWinner.Type || !e.Time.Equal(hookWinner.Time) {
		t.Errorf("event = %s %s %v, want %s %s %v", e.ID, e.Type, e.Time, hookWinner.ID, hookWinner.Type, hookWinner.Time)
	}
	if d.ClaimID != "01jcz8k2q3v4w5x6y7z8a9b0cd" || d.Slot != 17 || d.CouponCode != "PEPERO-7F3KQ2" || d.State != "confirmed" {
		t.Errorf("data = %+v", d)
	}
	if !bytes.Contains(d.Raw, []byte(`"later":true`)) {
		t.Errorf("Raw = %s, want the members ClaimData does not know", d.Raw)
	}
}

// A failing function answers 5xx, so dibs sends again; the next delivery
// is handled.
func TestHandlerErrorIsRetried(t *testing.T) {
	t.Parallel()
	b := handlerSetup(t, webhook.HandlerConfig{})
	b.fail = errors.New("coupon service down")
	s := handlerSender(t, b.srv.URL, handlerSecret, nil)
	err := s.Send(context.Background(), hookWinner)
	var de *webhook.DeliveryError
	if !errors.As(err, &de) || de.Permanent || de.Status != http.StatusInternalServerError {
		t.Fatalf("Send = %v, want a retryable 500", err)
	}
	b.mu.Lock()
	b.fail = nil
	b.mu.Unlock()
	if err := s.Send(context.Background(), hookWinner); err != nil {
		t.Fatalf("second Send: %v", err)
	}
	if n := len(b.handled()); n != 1 {
		t.Fatalf("handled %d, want 1", n)
	}
}

func TestHandlerRefuses(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 11, 2, 0, 0, 0, time.UTC)
	b := handlerSetup(t, webhook.HandlerConfig{Tolerance: time.Minute, Now: func() time.Time { return now }})
	tests := []struct {
		name   string
		sender *webhook.Sender
		status int
	}{
		{"wrong secret", handlerSender(t, b.srv.URL, []byte("someone else"), func() time.Time { return now }), http.StatusUnauthorized},
		{"stale", handlerSender(t, b.srv.URL, handlerSecret, func() time.Time { return now.Add(-2 * time.Minute) }), http.StatusBadRequest},
		{"from the future", handlerSender(t, b.srv.URL, handlerSecret, func() time.Time { return now.Add(2 * time.Minute) }), http.StatusBadRequest},
	}
	for _, tt := range tests {
		err := tt.sender.Send(context.Background(), hookWinner)
		var de *webhook.DeliveryError
		if !errors.As(err, &de) || de.Status != tt.status || !de.Permanent {
			t.Errorf("%s: Send = %v, want a permanent %d", tt.name, err, tt.status)
		}
	}
	within := handlerSender(t, b.srv.URL, handlerSecret, func() time.Time { return now.Add(-50 * time.Second) })
	if err := within.Send(context.Background(), hookWinner); err != nil {
		t.Errorf("within tolerance: %v", err)
	}

	for _, r := range []struct {
		method, body, sig string
		status            int
	}{
		{http.MethodGet, "", "", http.StatusMethodNotAllowed},
		{http.MethodPost, strings.Repeat("x", webhook.MaxBody+1), "", http.StatusRequestEntityTooLarge},
		{http.MethodPost, "{}", "", http.StatusBadRequest},
		{http.MethodPost, "{}", webhook.Sign(handlerSecret, now, []byte("{}")), http.StatusBadRequest},
		{http.MethodPost, "not json", webhook.Sign(handlerSecret, now, []byte("not json")), http.StatusBadRequest},
	} {
		req, _ := http.NewRequest(r.method, b.srv.URL, strings.NewReader(r.body))
		if r.sig != "" {
			req.Header.Set(webhook.SignatureHeader, r.sig)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != r.status {
			t.Errorf("%s %.20q: status %d, want %d", r.method, r.body, resp.StatusCode, r.status)
		}
	}
	if n := len(b.handled()); n != 1 {
		t.Errorf("handled %d, want only the delivery within tolerance", n)
	}
}

// A secret being rotated: deliveries signed with either are accepted.
func TestHandlerPreviousSecret(t *testing.T) {
	t.Parallel()
	old := []byte("whsec_old")
	b := handlerSetup(t, webhook.HandlerConfig{PreviousSecret: old})
	if err := handlerSender(t, b.srv.URL, old, nil).Send(context.Background(), hookWinner); err != nil {
		t.Fatalf("signed with the previous secret: %v", err)
	}
}

// The same event delivered while it is being handled waits its turn.
func TestHandlerConcurrentRepeat(t *testing.T) {
	t.Parallel()
	entered, release := make(chan struct{}), make(chan struct{})
	calls := 0
	h, err := webhook.NewHandler(webhook.HandlerConfig{Secret: handlerSecret}, func(ctx context.Context, e webhook.Event) error {
		calls++
		close(entered)
		<-release
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	s := handlerSender(t, srv.URL, handlerSecret, nil)
	first := make(chan error, 1)
	go func() { first <- s.Send(context.Background(), hookWinner) }()
	<-entered
	err = s.Send(context.Background(), hookWinner)
	var de *webhook.DeliveryError
	if !errors.As(err, &de) || de.Status != http.StatusServiceUnavailable || de.Permanent || de.RetryAfter != time.Second {
		t.Errorf("repeat during handling: %v, want a retryable 503 with Retry-After 1", err)
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := s.Send(context.Background(), hookWinner); err != nil {
		t.Fatal(err)
	}
	if calls != 1 {
		t.Errorf("handled %d times, want 1", calls)
	}
}

func TestMemoryDedupIsBounded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := webhook.NewMemoryDedup(2)
	for _, id := range []string{"a", "b", "b", "c"} {
		d.Done(ctx, id)
	}
	for id, want := range map[string]bool{"a": false, "b": true, "c": true, "d": false} {
		if got, _ := d.Seen(ctx, id); got != want {
			t.Errorf("Seen(%s) = %v, want %v", id, got, want)
		}
	}
}
