package payment_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"

	"github.com/dibs-io/dibs/payment"
	"github.com/dibs-io/dibs/payment/pgsim"
)

// A winner pays for a held slot. The claim id is the idempotency key, so a
// retry after a lost answer can never charge twice.
func ExampleClient_Charge() {
	sim, _ := pgsim.New(pgsim.Config{Seed: 1}, slog.New(slog.DiscardHandler))
	defer sim.Close()
	srv := httptest.NewServer(sim)
	defer srv.Close()

	pg, err := payment.New(payment.Config{BaseURL: srv.URL}, slog.New(slog.DiscardHandler))
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	req := payment.ChargeRequest{Amount: 11000, Currency: "KRW", Reference: "pepero-day/clm_42"}

	ch, err := pg.Charge(ctx, "clm_42", req)
	switch {
	case err == nil && ch.Status == payment.StatusPaid:
		fmt.Println("paid", ch.Amount, ch.Currency)
	case err == nil && ch.Status == payment.StatusDeclined:
		fmt.Println("declined: release the slot")
	case payment.Retryable(err):
		fmt.Println("unknown or unavailable: retry later with the same key")
	default:
		fmt.Println("permanent failure:", err)
	}

	again, _ := pg.Charge(ctx, "clm_42", req)
	fmt.Println("same charge:", again.ChargeID == ch.ChargeID, "ledger entries:", len(sim.Ledger()))

	_, err = pg.Lookup(ctx, "clm_43")
	fmt.Println("never charged:", errors.Is(err, payment.ErrNotFound))
	// Output:
	// paid 11000 KRW
	// same charge: true ledger entries: 1
	// never charged: true
}
