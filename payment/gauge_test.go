package payment_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dibs-io/dibs/payment"
)

func TestGaugeP99OverTheLastSeconds(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	g := payment.NewGauge(func() time.Time { return now })
	reg := prometheus.NewRegistry()
	if err := g.Register(reg); err != nil {
		t.Fatal(err)
	}
	if p, n := g.P99(); p != 0 || n != 0 {
		t.Fatalf("empty: %s from %d", p, n)
	}
	for i := 1; i <= 100; i++ {
		g.Attempt("charge", "paid", time.Duration(i)*time.Millisecond)
	}
	if p, n := g.P99(); p != 99*time.Millisecond || n != 100 {
		t.Fatalf("p99 %s from %d, want 99ms from 100", p, n)
	}
	g.Attempt("charge", "circuit_open", 0) // never sent
	if _, n := g.P99(); n != 100 {
		t.Fatalf("an unsent attempt counted: %d", n)
	}
	now = now.Add(5 * time.Second)
	g.Attempt("charge", "paid", time.Second)
	if p, n := g.P99(); p != 100*time.Millisecond || n != 101 { // the 100th of 101
		t.Fatalf("five seconds on: %s from %d", p, n)
	}
	now = now.Add(6 * time.Second) // the first second has left the window
	if p, n := g.P99(); p != time.Second || n != 1 {
		t.Fatalf("eleven seconds on: %s from %d, want 1s from 1", p, n)
	}
	now = now.Add(time.Hour)
	if _, n := g.P99(); n != 0 {
		t.Fatalf("an hour on: %d samples", n)
	}
	if got := testutil.ToFloat64(g.Attempts("charge", "paid")); got != 101 {
		t.Fatalf("attempts counted %v, want 101", got)
	}
}

func TestGaugeBreaker(t *testing.T) {
	g := payment.NewGauge(nil)
	if g.Breaker() != payment.BreakerClosed {
		t.Fatal("a new gauge's breaker is not closed")
	}
	g.BreakerChanged(payment.BreakerClosed, payment.BreakerOpen)
	if g.Breaker() != payment.BreakerOpen {
		t.Fatal("breaker not open")
	}
}
