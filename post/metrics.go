package post

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river"
)

// metrics are the Runner's counters. They count even when nothing scrapes
// them (no Registerer), which keeps the workers free of nil checks.
type metrics struct {
	jobs        *prometheus.CounterVec
	payments    *prometheus.CounterVec
	webhooks    *prometheus.CounterVec
	switchedOff *prometheus.CounterVec
	pumped      prometheus.Counter
	pumpErrors  prometheus.Counter
	pumpPaced   prometheus.Counter
}

func newMetrics() *metrics {
	return &metrics{
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dibs_post_jobs_total",
			Help: "Runs of post-processing jobs by kind and outcome: done, snoozed (run again later, no attempt spent), cancelled (never again), retry (failed, retried with backoff until its attempts run out).",
		}, []string{"kind", "outcome"}),
		payments: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dibs_post_payments_total",
			Help: "Answers the charge and refund workers acted on: paid, declined, free (price 0, no gateway call), unknown (retried, looked up first), unavailable (snoozed), rejected (refused for good, slot released), late (paid after the claim ended: a refund follows), refunded, refund_unknown, refund_unavailable, refund_rejected.",
		}, []string{"outcome"}),
		webhooks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dibs_post_webhooks_total",
			Help: "Webhook deliveries by kind and outcome: delivered, failed (retried), rejected (refused for good), skipped (no notifier).",
		}, []string{"kind", "outcome"}),
		switchedOff: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dibs_post_switched_off_total",
			Help: "Runs of post-processing jobs snoozed (no attempt spent) because a kill switch was off, by queue: charge_payment (payments: charges and refunds), expire_hold (payments: the expiry of holds whose owner asked to pay), webhook (webhooks).",
		}, []string{"queue"}),
		pumped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dibs_post_outbox_pumped_total",
			Help: "Claims the outbox pump moved on (coupon codes issued, jobs queued).",
		}),
		pumpErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dibs_post_outbox_errors_total",
			Help: "Outbox pump passes that failed; their claims stay flagged for the next pass.",
		}),
		pumpPaced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dibs_post_outbox_paced_total",
			Help: "Outbox pump passes made at the busy pace (128 claims every 250 ms) because group commits kept the record busy.",
		}),
	}
}

func (m *metrics) register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.jobs, m.payments, m.webhooks, m.switchedOff, m.pumped, m.pumpErrors, m.pumpPaced} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// job counts one run of a job of kind by what Work returned.
func (m *metrics) job(kind string, err error) {
	outcome := "retry"
	var snooze *river.JobSnoozeError
	var cancel *river.JobCancelError
	switch {
	case err == nil:
		outcome = "done"
	case errors.As(err, &snooze):
		outcome = "snoozed"
	case errors.As(err, &cancel):
		outcome = "cancelled"
	}
	m.jobs.WithLabelValues(kind, outcome).Inc()
}

func (m *metrics) payment(outcome string) { m.payments.WithLabelValues(outcome).Inc() }

func (m *metrics) webhook(kind, outcome string) { m.webhooks.WithLabelValues(kind, outcome).Inc() }
