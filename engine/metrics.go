package engine

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the engine's Prometheus collectors. Per-drop numbers (claims
// by outcome, remaining slots) are read from the engine at scrape time, so
// the hot path only bumps atomic counters it keeps anyway.
type Metrics struct {
	claimLatency     *prometheus.HistogramVec
	claimLatencyBy   [len(outcomeNames)]prometheus.Observer // resolved once: no label lookup per claim
	recorderBatch    prometheus.Histogram
	recorderCommit   prometheus.Histogram
	recorderFailures prometheus.Counter
	recorderRejected prometheus.Counter
	recordConflicts  prometheus.Counter

	reconcilePasses   prometheus.Counter
	reconcileReleased prometheus.Counter
	reconcileRestored prometheus.Counter
	reconcileErrors   prometheus.Counter
}

// NewMetrics makes the engine's collectors. Register them with Register.
func NewMetrics() *Metrics {
	m := &Metrics{
		claimLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "dibs_claim_duration_seconds",
			Help:    "Time to decide a claim, from gate to durable record, by outcome.",
			Buckets: prometheus.ExponentialBucketsRange(50e-6, 5, 16),
		}, []string{"outcome"}),
		recorderBatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "dibs_recorder_batch_claims",
			Help:    "Claims per group-commit transaction.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11),
		}),
		recorderCommit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "dibs_recorder_commit_seconds",
			Help:    "Duration of one group-commit transaction.",
			Buckets: prometheus.ExponentialBucketsRange(100e-6, 10, 16),
		}),
		recorderFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dibs_recorder_failures_total",
			Help: "Group-commit transactions that failed; their claims were answered 503.",
		}),
		recorderRejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dibs_recorder_rejected_total",
			Help: "Claims refused because the recorder queue was full.",
		}),
		recordConflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dibs_record_conflicts_total",
			Help: "Claims the gate gave out that the record refused (slot or user place already taken). Should stay 0.",
		}),
		reconcilePasses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dibs_reconcile_passes_total",
			Help: "Passes of the reconciler over a drop.",
		}),
		reconcileReleased: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dibs_reconcile_released_total",
			Help: "Gate holds with no record, past the grace period, whose slots the reconciler returned.",
		}),
		reconcileRestored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dibs_reconcile_restored_total",
			Help: "Active claims of the record the gate had lost, put back by the reconciler.",
		}),
		reconcileErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dibs_reconcile_errors_total",
			Help: "Reconciler passes that could not finish (gate or record unavailable).",
		}),
	}
	for i, name := range outcomeNames {
		m.claimLatencyBy[i] = m.claimLatency.WithLabelValues(name)
	}
	return m
}

func (m *Metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.claimLatency, m.recorderBatch, m.recorderCommit, m.recorderFailures, m.recorderRejected, m.recordConflicts,
		m.reconcilePasses, m.reconcileReleased, m.reconcileRestored, m.reconcileErrors}
}

var (
	claimsDesc    = prometheus.NewDesc("dibs_claims_total", "Claim requests by drop and outcome.", []string{"drop", "outcome"}, nil)
	remainingDesc = prometheus.NewDesc("dibs_drop_remaining", "Free slots of a drop, as the gate sees them.", []string{"drop"}, nil)
)

// Describe implements prometheus.Collector for the per-drop numbers.
func (e *Engine) Describe(ch chan<- *prometheus.Desc) {
	ch <- claimsDesc
	ch <- remainingDesc
}

// Collect implements prometheus.Collector for the per-drop numbers.
func (e *Engine) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, ent := range e.entries() {
		id := ent.drop.Load().ID
		for i, name := range outcomeNames {
			ch <- prometheus.MustNewConstMetric(claimsDesc, prometheus.CounterValue, float64(ent.outcomes[i].Load()), id, name)
		}
		if left, err := e.gate.Remaining(ctx, id); err == nil {
			ch <- prometheus.MustNewConstMetric(remainingDesc, prometheus.GaugeValue, float64(left), id)
		}
	}
}

// Register registers the engine's collectors with reg.
func (e *Engine) Register(reg prometheus.Registerer) error {
	for _, c := range append(e.metrics.collectors(), e) {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
