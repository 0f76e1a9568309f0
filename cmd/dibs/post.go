package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/engine"
	"github.com/dibs-io/dibs/payment"
	"github.com/dibs-io/dibs/post"
	"github.com/dibs-io/dibs/postgres"
	"github.com/dibs-io/dibs/sqlite"
	"github.com/dibs-io/dibs/webhook"
)

// PostConfig is the configuration of post-processing: the payment gateway,
// the main service's webhook endpoint, and the limits toward each.
type PostConfig struct {
	PaymentGateway string        // base URL of the payment gateway; empty: purchase drops cannot be paid
	PaymentKey     string        // DIBS_PAYMENT_KEY: bearer token for the gateway
	PaymentTimeout time.Duration // one attempt toward the gateway
	PaymentRate    float64       // charges per second at most
	PaymentConns   int           // charges in flight at most
	PaymentGrace   time.Duration // how long a pending payment keeps its hold past the deadline; 0: none; negative: until it settles
	WebhookURL     string        // where webhooks go; empty: none are sent
	WebhookSecret  string        // DIBS_WEBHOOK_SECRET: signs webhooks
	WebhookRate    float64       // webhooks per second at most
	WebhookConns   int           // webhooks in flight at most
	RetryMin       time.Duration // first retry of a failed job
	RetryMax       time.Duration // longest wait between retries
	RescueAfter    time.Duration // when a job whose node died runs again

	// Switches are the kill switches the jobs obey (payments, webhooks);
	// not a flag: serve sets it to its switches service. nil: all on.
	Switches dibs.SwitchService
}

// MinWebhookSecretLen keeps webhook signatures out of guessing range.
const MinWebhookSecretLen = 16

func defaultPostConfig() PostConfig {
	return PostConfig{
		PaymentTimeout: payment.DefaultConfig().Timeout,
		PaymentRate:    payment.DefaultConfig().RateLimit,
		PaymentConns:   payment.DefaultConfig().MaxConcurrent,
		WebhookRate:    200,
		WebhookConns:   16,
		RetryMin:       time.Second,
		RetryMax:       5 * time.Minute,
		RescueAfter:    post.DefaultRescueAfter,
	}
}

func (c *PostConfig) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.PaymentGateway, "payment-gateway", c.PaymentGateway, "base URL of the payment gateway (docs/payments.md); without it purchase drops cannot be paid")
	fs.DurationVar(&c.PaymentTimeout, "payment-timeout", c.PaymentTimeout, "how long one call to the payment gateway may take; past it the outcome is unknown and the charge is looked up before it is retried")
	fs.Float64Var(&c.PaymentRate, "payment-rate", c.PaymentRate, "charges per second sent to the payment gateway at most")
	fs.IntVar(&c.PaymentConns, "payment-conns", c.PaymentConns, "charges in flight to the payment gateway at most")
	fs.DurationVar(&c.PaymentGrace, "payment-grace", c.PaymentGrace, "how long past its hold's deadline a payment asked for in time may stay pending before the hold expires and the slot goes back; a charge the gateway applies after that is refunded (0: none, the hold ends at its deadline; negative: the hold waits for the payment however long it takes)")
	fs.StringVar(&c.WebhookURL, "webhook-url", c.WebhookURL, "URL of the main service's webhook endpoint (docs/webhooks.md); signed with DIBS_WEBHOOK_SECRET")
	fs.Float64Var(&c.WebhookRate, "webhook-rate", c.WebhookRate, "webhooks per second sent at most")
	fs.IntVar(&c.WebhookConns, "webhook-conns", c.WebhookConns, "webhooks in flight at most")
	fs.DurationVar(&c.RetryMin, "job-retry-min", c.RetryMin, "wait before the first retry of a failed job; it doubles per attempt")
	fs.DurationVar(&c.RetryMax, "job-retry-max", c.RetryMax, "longest wait between retries of a failed job")
	fs.DurationVar(&c.RescueAfter, "job-rescue-after", c.RescueAfter, "how long a job may run before it is taken for lost (its node died) and run again; also bounds one run")
}

// Validate reports the first thing wrong with c.
func (c *PostConfig) Validate() error {
	for _, u := range []struct{ flag, value string }{{"--payment-gateway", c.PaymentGateway}, {"--webhook-url", c.WebhookURL}} {
		if u.value == "" {
			continue
		}
		if p, err := url.Parse(u.value); err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return fmt.Errorf("%s must be an http or https URL", u.flag)
		}
	}
	switch {
	case c.WebhookURL != "" && len(c.WebhookSecret) < MinWebhookSecretLen:
		return fmt.Errorf("DIBS_WEBHOOK_SECRET must be set to at least %d bytes when --webhook-url is", MinWebhookSecretLen)
	case c.PaymentTimeout <= 0:
		return errors.New("--payment-timeout must be positive")
	case c.PaymentRate <= 0 || c.WebhookRate <= 0:
		return errors.New("--payment-rate and --webhook-rate must be positive")
	case c.PaymentConns < 1 || c.WebhookConns < 1:
		return errors.New("--payment-conns and --webhook-conns must be at least 1")
	case c.RetryMin <= 0 || c.RetryMax < c.RetryMin:
		return errors.New("--job-retry-min must be positive and at most --job-retry-max")
	case c.RescueAfter < time.Second:
		return errors.New("--job-rescue-after must be at least 1s")
	}
	return nil
}

// openPost builds the job runner over the record: the payment client with
// its circuit breaker, the webhook sender, and the limits per job kind. Its
// Stop waits stopTimeout at most for the running jobs.
func openPost(cfg PostConfig, store record, e *engine.Engine, gauge *payment.Gauge, stopTimeout time.Duration, reg prometheus.Registerer, log *slog.Logger) (*post.Runner, error) {
	pc := post.Config{
		Store: store, JobClient: jobClientOf(store), Release: e, StopTimeout: stopTimeout, Logger: log, Registerer: reg, Busy: e.RecordBusy,
		RetryMin: cfg.RetryMin, RetryMax: cfg.RetryMax, RescueAfter: cfg.RescueAfter,
		PaymentGrace: cfg.PaymentGrace, Switches: cfg.Switches,
		Limits: map[string]post.Limit{
			post.QueueCharge:  {Concurrency: cfg.PaymentConns},
			post.QueueWebhook: {Concurrency: cfg.WebhookConns, Rate: cfg.WebhookRate, Burst: cfg.WebhookConns},
		},
	}
	if cfg.PaymentGateway != "" {
		pcfg := payment.Config{
			BaseURL: cfg.PaymentGateway, APIKey: cfg.PaymentKey, Timeout: cfg.PaymentTimeout,
			RateLimit: cfg.PaymentRate, MaxConcurrent: cfg.PaymentConns,
		}
		if gauge != nil {
			pcfg.Metrics = gauge
		}
		pg, err := payment.New(pcfg, log)
		if err != nil {
			return nil, err
		}
		pc.Payer = pg
	}
	if cfg.WebhookURL != "" {
		s, err := webhook.New(webhook.Config{URL: cfg.WebhookURL, Secret: []byte(cfg.WebhookSecret)})
		if err != nil {
			return nil, err
		}
		pc.Notifier = notifier{s}
	}
	return post.NewRunner(pc)
}

// notifier sends post's notices as signed webhooks.
type notifier struct{ s *webhook.Sender }

func (n notifier) Notify(ctx context.Context, no post.Notice) error {
	err := n.s.Send(ctx, webhook.Event{ID: no.ID, Type: no.Type, Time: no.Time, Data: no.Data})
	if err != nil && webhook.Permanent(err) {
		return fmt.Errorf("%w: %w", post.ErrPermanent, err)
	}
	return err
}

// postServices are what the HTTP API asks of post-processing: the payment
// requests (the rule in post.Payments) and the jobs (the Runner).
func postServices(cfg PostConfig, store post.Store, runner *post.Runner) (dibs.PaymentService, dibs.JobService) {
	return &post.Payments{Store: store, Gateway: cfg.PaymentGateway != "", Now: time.Now}, runner
}

// jobClientOf is the River job client constructor of the record's database.
func jobClientOf(store record) post.JobClientFunc {
	switch s := store.(type) {
	case *postgres.Store:
		return func(cfg *river.Config) (post.JobClient, error) { return postgres.NewJobClient(s, cfg) }
	case *sqlite.Store:
		return func(cfg *river.Config) (post.JobClient, error) { return sqlite.NewJobClient(s, cfg) }
	}
	return func(*river.Config) (post.JobClient, error) {
		return nil, fmt.Errorf("no job queue for a record of type %T", store)
	}
}
