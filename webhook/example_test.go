package webhook_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"time"

	"github.com/dibs-io/dibs/webhook"
)

// A receiver checks the signature on the body as received, then drops
// repeats by the event id: delivery is at least once.
func ExampleVerify() {
	secret := []byte("whsec_5a8f") // DIBS_WEBHOOK_SECRET, shared with dibs

	var (
		mu   sync.Mutex
		seen = map[string]bool{} // in a real service: a unique key in its database
	)
	receiver := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, webhook.MaxBody))
		if err != nil {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		if err := webhook.Verify(secret, r.Header.Get(webhook.SignatureHeader), body, time.Now(), 0); err != nil {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		var event struct {
			ID   string `json:"id"`
			Type string `json:"type"`
			Data struct {
				ClaimID    string `json:"claim_id"`
				CouponCode string `json:"coupon_code"`
			} `json:"data"`
		}
		if err := json.Unmarshal(body, &event); err != nil {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if seen[event.ID] {
			fmt.Println("repeat of", event.ID, "ignored")
			return // 200: dibs stops sending it
		}
		seen[event.ID] = true
		fmt.Println(event.Type, event.Data.ClaimID, event.Data.CouponCode)
	})
	srv := httptest.NewServer(receiver)
	defer srv.Close()

	sender, err := webhook.New(webhook.Config{URL: srv.URL, Secret: secret})
	if err != nil {
		panic(err)
	}
	e := webhook.Event{
		ID:   "notify_winner:01j9zq4",
		Type: webhook.TypeNotifyWinner,
		Time: time.Date(2026, 11, 11, 11, 0, 0, 0, time.UTC),
		Data: map[string]any{"claim_id": "01j9zq4", "drop_id": "pepero-day", "coupon_code": "PEPERO-7F3K"},
	}
	for range 2 { // a retry after a lost answer looks like this
		if err := sender.Send(context.Background(), e); err != nil {
			fmt.Println("failed; retry later:", !webhook.Permanent(err))
		}
	}
	// Output:
	// notify_winner 01j9zq4 PEPERO-7F3K
	// repeat of notify_winner:01j9zq4 ignored
}

// The main service mounts a Handler where dibs sends its webhooks: it
// verifies, drops repeats, and calls the function once per event.
func ExampleHandler() {
	secret := []byte("whsec_5a8f") // DIBS_WEBHOOK_SECRET
	h, err := webhook.NewHandler(webhook.HandlerConfig{Secret: secret}, func(ctx context.Context, e webhook.Event) error {
		d := e.Data.(webhook.ClaimData)
		switch e.Type {
		case webhook.TypeNotifyWinner:
			fmt.Println("ship", d.CouponCode, "to", d.UserID)
		case webhook.TypePaymentFailed, webhook.TypeHoldExpired:
			fmt.Println("tell", d.UserID, "the slot is gone:", e.Type)
		}
		return nil // an error answers 500: dibs sends the event again
	})
	if err != nil {
		panic(err)
	}
	srv := httptest.NewServer(h) // in the main service: mux.Handle("POST /hooks/dibs", h)
	defer srv.Close()

	sender, _ := webhook.New(webhook.Config{URL: srv.URL, Secret: secret})
	e := webhook.Event{
		ID: "notify_winner:01jcz8k2q3", Type: webhook.TypeNotifyWinner, Time: time.Now(),
		Data: map[string]any{"claim_id": "01jcz8k2q3", "user_id": "u-20931", "coupon_code": "PEPERO-7F3KQ2"},
	}
	sender.Send(context.Background(), e)
	sender.Send(context.Background(), e) // a repeat: answered 200, not handled again
	// Output: ship PEPERO-7F3KQ2 to u-20931
}
