package live_test

import (
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dibs-io/dibs/live"
)

// nodeMetrics are collectors shaped like a node's: the names, labels and
// kinds the engine, the HTTP server and post-processing export.
type nodeMetrics struct {
	reg      *prometheus.Registry
	claims   *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	batch    prometheus.Histogram
	commit   prometheus.Histogram
	inflight *prometheus.GaugeVec
	shed     *prometheus.CounterVec
	payments *prometheus.CounterVec
	left     *prometheus.GaugeVec
}

// newNodeMetrics registers them on a fresh registry. The claim latency
// buckets are 1, 2, 4 and 8 ms so that percentiles are easy to check.
func newNodeMetrics(tb testing.TB) *nodeMetrics {
	tb.Helper()
	m := &nodeMetrics{
		reg:      prometheus.NewRegistry(),
		claims:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dibs_claims_total", Help: "h"}, []string{"drop", "outcome"}),
		latency:  prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "dibs_claim_duration_seconds", Help: "h", Buckets: []float64{0.001, 0.002, 0.004, 0.008}}, []string{"outcome"}),
		batch:    prometheus.NewHistogram(prometheus.HistogramOpts{Name: "dibs_recorder_batch_claims", Help: "h", Buckets: prometheus.ExponentialBuckets(1, 2, 11)}),
		commit:   prometheus.NewHistogram(prometheus.HistogramOpts{Name: "dibs_recorder_commit_seconds", Help: "h", Buckets: []float64{0.001, 0.01, 0.1}}),
		inflight: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "dibs_http_inflight_requests", Help: "h"}, []string{"class"}),
		shed:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dibs_http_shed_total", Help: "h"}, []string{"class"}),
		payments: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dibs_post_payments_total", Help: "h"}, []string{"outcome"}),
		left:     prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "dibs_drop_remaining", Help: "h"}, []string{"drop"}),
	}
	m.reg.MustRegister(m.claims, m.latency, m.batch, m.commit, m.inflight, m.shed, m.payments, m.left)
	return m
}

func near(got, want float64) bool { return math.Abs(got-want) < 1e-9 }

func TestCollectorRates(t *testing.T) {
	t.Parallel()
	m := newNodeMetrics(t)
	c := live.NewCollector(m.reg, live.CollectorOptions{Node: "node-a", Version: "v1", Breaker: func() string { return "closed" }})
	t0 := time.Date(2026, 12, 7, 11, 0, 0, 0, time.UTC)

	m.claims.WithLabelValues("phones", "won").Add(100) // before the first reading: no rate
	r, err := c.Collect(t0)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Claims["phones"]["won"]; got != 0 {
		t.Fatalf("first report: won %v/s, want 0 (nothing to compare with)", got)
	}

	m.claims.WithLabelValues("phones", "won").Add(410)
	m.claims.WithLabelValues("phones", "sold_out").Add(3)
	m.shed.WithLabelValues("claim").Add(7)
	m.payments.WithLabelValues("paid").Add(180)
	m.payments.WithLabelValues("declined").Add(9)
	m.inflight.WithLabelValues("claim").Set(12)
	m.left.WithLabelValues("phones").Set(120)
	for range 10 {
		m.batch.Observe(24)
	}
	r, err = c.Collect(t0.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		got, want float64
	}{
		{"won/s", r.Claims["phones"]["won"], 410},
		{"sold_out/s", r.Claims["phones"]["sold_out"], 3},
		{"shed claim/s", r.Shed["claim"], 7},
		{"charges/s", r.ChargesPerSec, 180},
		{"inflight claim", float64(r.Inflight["claim"]), 12},
		{"remaining", float64(r.Remaining["phones"]), 120},
		{"recorder batch", r.RecorderBatch, 24},
		{"seq", float64(r.Seq), 2},
	} {
		if !near(tc.got, tc.want) {
			t.Errorf("%s = %v, want %v", tc.name, tc.got, tc.want)
		}
	}
	if r.Node != "node-a" || r.Version != "v1" || r.Breaker != "closed" || !r.At.Equal(t0.Add(time.Second)) {
		t.Errorf("report names %q %q %q at %s, want node-a v1 closed at %s", r.Node, r.Version, r.Breaker, r.At, t0.Add(time.Second))
	}
	if r.Goroutines <= 0 || r.HeapBytes == 0 {
		t.Errorf("runtime: %d goroutines, %d heap bytes; want both positive", r.Goroutines, r.HeapBytes)
	}

	// Two seconds later: the rate is per second of the time that passed.
	m.claims.WithLabelValues("phones", "won").Add(50)
	if r, _ = c.Collect(t0.Add(3 * time.Second)); !near(r.Claims["phones"]["won"], 25) {
		t.Errorf("won over 2 s: %v/s, want 25", r.Claims["phones"]["won"])
	}
	if got := r.Claims["phones"]["sold_out"]; got != 0 {
		t.Errorf("sold_out/s with no new answers: %v, want 0", got)
	}
}

// TestCollectorLatencyWindow: percentiles cover the observations of the
// last ten seconds, across outcomes, interpolated within buckets.
func TestCollectorLatencyWindow(t *testing.T) {
	t.Parallel()
	m := newNodeMetrics(t)
	c := live.NewCollector(m.reg, live.CollectorOptions{Node: "n"})
	t0 := time.Date(2026, 12, 7, 11, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }

	m.latency.WithLabelValues("won").Observe(0.5) // before the window
	mustCollect(t, c, at(0))
	for range 50 {
		m.latency.WithLabelValues("won").Observe(0.0015)
		m.latency.WithLabelValues("sold_out").Observe(0.0015)
		m.commit.Observe(0.005)
	}
	// 100 observations in (1 ms, 2 ms]: p50 1.5 ms, p99 1.99 ms.
	for s := 1; s <= 10; s++ {
		r := mustCollect(t, c, at(s))
		if p50, p99 := r.Latency.Quantile(0.5)*1000, r.Latency.Quantile(0.99)*1000; !near(p50, 1.5) || !near(p99, 1.99) {
			t.Fatalf("at +%ds: p50 %v ms, p99 %v ms; want 1.5 and 1.99", s, p50, p99)
		}
		if r.Latency.Total() != 100 {
			t.Fatalf("at +%ds: %d observations in the window, want 100", s, r.Latency.Total())
		}
		if want := 1 + 9*0.99; !near(r.CommitP99MS, want) {
			t.Fatalf("at +%ds: commit p99 %v ms, want %v", s, r.CommitP99MS, want)
		}
	}
	// Eleven seconds on they have left the window; ten new ones in
	// (4 ms, 8 ms] make it.
	for range 10 {
		m.latency.WithLabelValues("won").Observe(0.006)
	}
	r := mustCollect(t, c, at(11))
	if r.Latency.Total() != 10 {
		t.Fatalf("at +11s: %d observations in the window, want 10", r.Latency.Total())
	}
	if p50 := r.Latency.Quantile(0.5) * 1000; !near(p50, 6) {
		t.Fatalf("at +11s: p50 %v ms, want 6", p50)
	}
	if r.CommitP99MS != 0 {
		t.Fatalf("at +11s: commit p99 %v ms, want 0 (no commits in the window)", r.CommitP99MS)
	}
}

func mustCollect(tb testing.TB, c *live.Collector, now time.Time) live.NodeReport {
	tb.Helper()
	r, err := c.Collect(now)
	if err != nil {
		tb.Fatal(err)
	}
	return r
}
