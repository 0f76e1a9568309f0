package webhooktest_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dibs-io/dibs/webhook"
	"github.com/dibs-io/dibs/webhook/webhooktest"
)

var secret = []byte("whsec_receiver")

// setup starts a receiver and a Sender pointed at it.
func setup(tb testing.TB, cfg webhook.Config) (*webhooktest.Receiver, *webhook.Sender) {
	tb.Helper()
	r := webhooktest.NewReceiver(tb, secret)
	cfg.URL = r.URL
	if cfg.Secret == nil {
		cfg.Secret = secret
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 2 * time.Second
	}
	s, err := webhook.New(cfg)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	return r, s
}

func event(typ, claimID string) webhook.Event {
	return webhook.Event{
		ID:   typ + ":" + claimID,
		Type: typ,
		Time: time.Date(2026, 11, 11, 11, 0, 0, 0, time.UTC),
		Data: map[string]any{"claim_id": claimID, "drop_id": "pepero-day", "slot": 3},
	}
}

func TestReceiverRecordsAndDedups(t *testing.T) {
	t.Parallel()
	r, s := setup(t, webhook.Config{})
	ctx := context.Background()
	sends := []webhook.Event{
		event(webhook.TypeNotifyWinner, "c1"),
		event(webhook.TypePaymentFailed, "c2"),
		event(webhook.TypeNotifyWinner, "c1"), // a retry
		event(webhook.TypeHoldExpired, "c3"),
		event(webhook.TypeNotifyWinner, "c4"),
	}
	var wg sync.WaitGroup
	for _, e := range sends {
		wg.Go(func() {
			if err := s.Send(ctx, e); err != nil {
				t.Errorf("Send %s: %v", e.ID, err)
			}
		})
	}
	wg.Wait()

	got := r.WaitFor(4, time.Second)
	if len(got) != 4 {
		t.Fatalf("%d events, want 4", len(got))
	}
	if d := r.Duplicates(); d != 1 {
		t.Errorf("Duplicates = %d, want 1", d)
	}
	if n := r.Requests(); n != 5 {
		t.Errorf("Requests = %d, want 5", n)
	}
	for typ, want := range map[string]int{webhook.TypeNotifyWinner: 2, webhook.TypePaymentFailed: 1, webhook.TypeHoldExpired: 1} {
		if n := r.Count(typ); n != want {
			t.Errorf("Count(%s) = %d, want %d", typ, n, want)
		}
	}
	for _, e := range got {
		var data struct {
			ClaimID string `json:"claim_id"`
			Slot    int    `json:"slot"`
		}
		if err := json.Unmarshal(e.Data, &data); err != nil || e.ID != e.Type+":"+data.ClaimID || data.Slot != 3 {
			t.Errorf("event %+v: data %+v (%v)", e, data, err)
		}
		if !e.CreatedAt.Equal(time.Date(2026, 11, 11, 11, 0, 0, 0, time.UTC)) || e.Received.IsZero() {
			t.Errorf("event %s: created_at %v, received %v", e.ID, e.CreatedAt, e.Received)
		}
	}
}

// TestReceiverDown: while down, deliveries fail in a retryable way and are
// not recorded; afterwards the retry goes through.
func TestReceiverDown(t *testing.T) {
	t.Parallel()
	r, s := setup(t, webhook.Config{})
	ctx := context.Background()
	e := event(webhook.TypeHoldExpired, "c9")

	r.Down(true)
	err := s.Send(ctx, e)
	var de *webhook.DeliveryError
	if !asDelivery(err, &de) || de.Status != http.StatusServiceUnavailable || de.Permanent {
		t.Fatalf("Send while down = %v, want a retryable 503", err)
	}
	r.Down(false)
	r.Hangup(true)
	if err := s.Send(ctx, e); err == nil || webhook.Permanent(err) || !asDelivery(err, &de) || de.Status != 0 {
		t.Fatalf("Send while hanging up = %v, want retryable without status", err)
	}
	r.Hangup(false)
	if n := len(r.Events()); n != 0 {
		t.Fatalf("%d events recorded while failing, want 0", n)
	}
	if err := s.Send(ctx, e); err != nil {
		t.Fatalf("Send after recovery: %v", err)
	}
	r.WaitFor(1, time.Second)
	if d := r.Duplicates(); d != 0 {
		t.Errorf("Duplicates = %d, want 0: failed deliveries are not receipts", d)
	}
}

func TestReceiverAnswer(t *testing.T) {
	t.Parallel()
	r, s := setup(t, webhook.Config{})
	r.Answer(http.StatusGone)
	if err := s.Send(context.Background(), event(webhook.TypeNotifyWinner, "c1")); !webhook.Permanent(err) {
		t.Errorf("Send = %v, want permanent", err)
	}
}

// TestReceiverClock: a Sender on a test clock far from the wall clock is
// verified against the same clock.
func TestReceiverClock(t *testing.T) {
	t.Parallel()
	now := func() time.Time { return time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC) }
	r, s := setup(t, webhook.Config{Now: now})
	r.SetNow(now)
	if err := s.Send(context.Background(), event(webhook.TypeNotifyWinner, "c1")); err != nil {
		t.Errorf("Send: %v", err)
	}
}

// TestReceiverRejects: a delivery that does not verify fails the test that
// owns the receiver.
func TestReceiverRejects(t *testing.T) {
	t.Parallel()
	tests := map[string]webhook.Config{
		"wrong secret": {Secret: []byte("whsec_wrong")},
		"stale":        {Now: func() time.Time { return time.Now().Add(-time.Hour) }},
	}
	for name, cfg := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			tb := &recorder{TB: t}
			r, s := setup(tb, cfg)
			err := s.Send(context.Background(), event(webhook.TypeNotifyWinner, "c1"))
			var de *webhook.DeliveryError
			if !asDelivery(err, &de) || de.Status != http.StatusUnauthorized {
				t.Errorf("Send = %v, want 401", err)
			}
			if msgs := tb.messages(); len(msgs) != 1 || !strings.Contains(msgs[0], "webhooktest: webhook:") {
				t.Errorf("test failures %q, want one about the signature", msgs)
			}
			if n := len(r.Events()); n != 0 {
				t.Errorf("%d events recorded, want 0", n)
			}
		})
	}
}

func TestReceiverWaitForTimesOut(t *testing.T) {
	t.Parallel()
	tb := &recorder{TB: t}
	r := webhooktest.NewReceiver(tb, secret)
	start := time.Now()
	if got := r.WaitFor(1, 50*time.Millisecond); got != nil {
		t.Errorf("WaitFor = %v, want nil", got)
	}
	if time.Since(start) < 50*time.Millisecond {
		t.Errorf("WaitFor returned early")
	}
	if msgs := tb.messages(); len(msgs) != 1 || !strings.Contains(msgs[0], "got 0 events") {
		t.Errorf("test failures %q, want one about the wait", msgs)
	}
}

func asDelivery(err error, de **webhook.DeliveryError) bool { return errors.As(err, de) }

// recorder is a testing.TB whose failures are collected instead of failing
// the test, so that the receiver's own complaints can be checked.
type recorder struct {
	testing.TB
	mu   sync.Mutex
	msgs []string
}

func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, fmt.Sprintf(format, args...))
}

func (r *recorder) Fatalf(format string, args ...any) { r.Errorf(format, args...) }

func (r *recorder) messages() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.msgs...)
}
