package post

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"golang.org/x/time/rate"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/internal/startstop"
)

// Limit bounds the jobs of one queue toward the downstream they call (the
// payment gateway, the record, the operator's main service).
type Limit struct {
	// Concurrency is how many jobs of the queue run at once on this node
	// (the queue's MaxWorkers). 0: the queue's default.
	Concurrency int
	// Rate is how many calls per second the queue's jobs make toward their
	// downstream on this node; 0: no limit.
	Rate float64
	// Burst is how many calls may go at once after a quiet spell; 0 with a
	// Rate: 1.
	Burst int
}

// DefaultLimits returns the limits of the queues a Config does not name:
//
//	charge_payment  16 at once, no rate limit of its own: payment.Client
//	                has its own (100/s, 16 in flight by default)
//	expire_hold     10 at once, no rate limit (the record is the downstream)
//	webhook         16 at once, 200/s, bursts of 16, for every webhook
//	                kind together (one downstream); the notices of failures
//	                go before the winners' (River priorities)
func DefaultLimits() map[string]Limit {
	return map[string]Limit{
		QueueCharge:  {Concurrency: 16},
		QueueExpire:  {Concurrency: 10},
		QueueWebhook: {Concurrency: 16, Rate: 200, Burst: 16},
	}
}

// Kinds are all job kinds, in the order of the life of a claim.
var Kinds = []string{KindChargePayment, KindExpireHold, KindNotifyWinner, KindPaymentFailed, KindHoldExpired,
	KindRefundPayment, KindPaymentRefunded}

// Defaults of Config.
const (
	DefaultRetryMin     = time.Second
	DefaultRetryMax     = 5 * time.Minute
	DefaultPollInterval = time.Second

	// fetchCooldown caps River's pause between two fetches of a queue.
	fetchCooldown = 10 * time.Millisecond

	// PumpBatch is how many claims one PumpOutbox call moves.
	PumpBatch = 512
	// While claims keep the record busy (Config.Busy), the pump moves
	// BusyBatch claims every BusyEvery (by default): 512 a second, which
	// keeps up with any steady flow of claims below that, and costs a spike
	// a few milliseconds of the record's writer four times a second.
	BusyBatch        = PumpBatch / 4
	DefaultBusyEvery = 250 * time.Millisecond

	// maxSnooze caps the wait of a charge while the gateway is down, so
	// that the jobs resume within seconds of its return.
	maxSnooze = 30 * time.Second
	// DefaultRescueAfter is when River hands a job whose worker died (a
	// node killed mid-job) to another worker. One run of a job is bounded
	// by three quarters of it (River's JobTimeout), and every downstream
	// call well below.
	DefaultRescueAfter = 30 * time.Second
	// DefaultStopTimeout is how long Stop waits for running jobs.
	DefaultStopTimeout = 30 * time.Second
	// maxPumpBackoff caps the wait between pump attempts while the record
	// fails.
	maxPumpBackoff = 5 * time.Second
)

// Config is what a Runner needs. Store, JobClient and Release are
// required.
type Config struct {
	Store Store
	// JobClient makes the River client the jobs run on, over the store's
	// database.
	JobClient JobClientFunc
	Release   Releaser
	// Payer charges held claims. nil: no gateway; charges of priced drops
	// wait (snoozed, spending no attempt) for a node that has one, free
	// drops are settled without it.
	Payer Payer
	// Notifier delivers webhooks. nil: webhook jobs complete at once.
	Notifier Notifier

	// Switches are the kill switches (nil: every switch on). With
	// dibs.SwitchPayments off no call reaches the gateway: charges and
	// refunds wait, and so does the expiry of holds whose owner asked to
	// pay; with dibs.SwitchWebhooks off deliveries wait. A job that waits
	// snoozes, spending no attempt, and looks again every SwitchRecheck.
	// Only Switches() is called, on every such job.
	Switches dibs.SwitchService
	// SwitchRecheck is how often a job held by an off switch looks again
	// (default DefaultSwitchRecheck).
	SwitchRecheck time.Duration

	// PaymentGrace is how long past its hold's deadline a payment asked
	// for in time may stay pending (the gateway slow, down, or its answer
	// lost) before the hold expires anyway and the slot goes back. A
	// charge the gateway applies after that is money taken late: it is
	// refunded (refund_payment). 0: none, the hold ends at its deadline as
	// an unpaid one does; negative: a pending payment keeps its hold until
	// it settles, however long that takes.
	PaymentGrace time.Duration

	// Limits per queue (QueueCharge, QueueExpire, QueueWebhook); a queue
	// missing here takes DefaultLimits.
	Limits map[string]Limit

	// Busy, if set, reports whether claims keep the record busy (the
	// engine's recorder committed moments ago). While it does, the pump
	// moves BusyBatch claims per BusyEvery: winners are answered first,
	// and what they won follows as soon as the spike lets the record
	// breathe.
	Busy func() bool
	// BusyEvery is that pace (default DefaultBusyEvery).
	BusyEvery time.Duration

	// RetryMin and RetryMax bound River's retry policy: the n-th retry of
	// a failed job waits a random time in the upper half of
	// min(RetryMin·2^(n−1), RetryMax). Defaults 1 s and 5 min. A charge
	// snoozed while the gateway is down waits the same way, capped at 30 s.
	RetryMin, RetryMax time.Duration

	// PollInterval is how often River looks for jobs in each queue when
	// it found none (default 1 s, River's own; on SQLite a look costs about
	// a millisecond of CPU, and River cannot be told of jobs inserted in
	// another client's transaction) and a quarter of how often the outbox
	// pump runs without a Kick (every commit kicks it). A queue with jobs
	// fetches again after a cooldown of a fifth of it, 10 ms at most, so a
	// queue of quick jobs never waits on its own fetches.
	PollInterval time.Duration

	// RescueAfter is how long a job may run before River takes it for
	// lost and runs it again (default DefaultRescueAfter): a node killed
	// mid-job delays its jobs by about this much. It also bounds one run.
	RescueAfter time.Duration

	// StopTimeout bounds how long Stop waits for the running jobs
	// (default DefaultStopTimeout); past it, Stop returns an error and
	// may be called again.
	StopTimeout time.Duration

	Logger *slog.Logger
	Now    func() time.Time
	// NewCode draws a coupon code (default NewCode).
	NewCode func() (string, error)
	// Rand draws the jitter of backoffs (default: seeded from
	// crypto/rand). The Runner uses it under a lock.
	Rand *rand.Rand

	// Registerer receives the counters of job outcomes, payments and
	// webhook deliveries; none if nil.
	Registerer prometheus.Registerer
}

var (
	_ dibs.Background = (*Runner)(nil)
	_ dibs.JobService = (*Runner)(nil)
)

// Runner runs the post-processing jobs: a River client with one queue per
// downstream and one worker per job kind, and the pump that moves new
// claims from the record's outbox on. It is a dibs.Background and serves
// the jobs to operators (dibs.JobService). Its methods are safe for
// concurrent use.
type Runner struct {
	store    Store
	newJobs  JobClientFunc
	release  Releaser
	payer    Payer
	notifier Notifier
	grace    time.Duration // Config.PaymentGrace
	switches dibs.SwitchService
	paused   paused // charges waiting on the payments switch
	limits   map[string]Limit
	limiters map[string]*rate.Limiter

	retryMin, retryMax, snoozeMax time.Duration
	poll, rescue, busyEvery       time.Duration
	stopTimeout, switchRecheck    time.Duration
	busy                          func() bool

	log     *slog.Logger
	now     func() time.Time
	newCode func() (string, error)
	rngMu   sync.Mutex
	rng     *rand.Rand
	metrics *metrics

	kick chan struct{}

	pump startstop.Service // the outbox pump's loop

	mu     sync.Mutex
	client JobClient // once started
}

// NewRunner checks cfg and returns a Runner that is not started yet; its
// Work and Pump can be used at once.
func NewRunner(cfg Config) (*Runner, error) {
	switch {
	case cfg.Store == nil:
		return nil, errors.New("post: Config.Store is required")
	case cfg.JobClient == nil:
		return nil, errors.New("post: Config.JobClient is required")
	case cfg.Release == nil:
		return nil, errors.New("post: Config.Release is required")
	case cfg.RetryMin < 0 || cfg.RetryMax < 0 || cfg.PollInterval < 0 || cfg.RescueAfter < 0 || cfg.BusyEvery < 0 || cfg.StopTimeout < 0 || cfg.SwitchRecheck < 0:
		return nil, errors.New("post: negative retry bound, poll interval, rescue time, busy pace, stop timeout or switch recheck")
	}
	r := &Runner{
		store:         cfg.Store,
		newJobs:       cfg.JobClient,
		release:       cfg.Release,
		payer:         cfg.Payer,
		notifier:      cfg.Notifier,
		grace:         cfg.PaymentGrace,
		switches:      cfg.Switches,
		limits:        DefaultLimits(),
		limiters:      make(map[string]*rate.Limiter),
		retryMin:      cmpOr(cfg.RetryMin, DefaultRetryMin),
		retryMax:      cmpOr(cfg.RetryMax, DefaultRetryMax),
		poll:          cmpOr(cfg.PollInterval, DefaultPollInterval),
		rescue:        cmpOr(cfg.RescueAfter, DefaultRescueAfter),
		busyEvery:     cmpOr(cfg.BusyEvery, DefaultBusyEvery),
		stopTimeout:   cmpOr(cfg.StopTimeout, DefaultStopTimeout),
		switchRecheck: cmpOr(cfg.SwitchRecheck, DefaultSwitchRecheck),
		busy:          cfg.Busy,
		log:           cfg.Logger,
		now:           cfg.Now,
		newCode:       cfg.NewCode,
		rng:           cfg.Rand,
		kick:          make(chan struct{}, 1),
		metrics:       newMetrics(),
	}
	if r.retryMax < r.retryMin {
		return nil, fmt.Errorf("post: RetryMax %s is below RetryMin %s", r.retryMax, r.retryMin)
	}
	r.snoozeMax = max(r.retryMin, min(r.retryMax, maxSnooze))
	for queue, l := range cfg.Limits {
		def, ok := r.limits[queue]
		switch {
		case !ok:
			return nil, fmt.Errorf("post: limit for unknown queue %q", queue)
		case l.Concurrency < 0 || l.Rate < 0 || l.Burst < 0:
			return nil, fmt.Errorf("post: negative limit for %s", queue)
		}
		if l.Concurrency == 0 {
			l.Concurrency = def.Concurrency
		}
		r.limits[queue] = l
	}
	for queue, l := range r.limits {
		if l.Rate > 0 {
			r.limiters[queue] = rate.NewLimiter(rate.Limit(l.Rate), max(l.Burst, 1))
		}
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.now == nil {
		r.now = time.Now
	}
	if r.newCode == nil {
		r.newCode = NewCode
	}
	if r.rng == nil {
		var seed [16]byte
		_, _ = crand.Read(seed[:])
		r.rng = rand.New(rand.NewPCG(binary.LittleEndian.Uint64(seed[:8]), binary.LittleEndian.Uint64(seed[8:])))
	}
	if cfg.Registerer != nil {
		if err := r.metrics.register(cfg.Registerer); err != nil {
			return nil, fmt.Errorf("post: register metrics: %w", err)
		}
	}
	return r, nil
}

func cmpOr(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// Limit returns the limit the Runner applies to a queue.
func (r *Runner) Limit(queue string) Limit { return r.limits[queue] }

// backoff is the wait before the n-th retry (n ≥ 1): a random time in the
// upper half of min(RetryMin·2^(n−1), limit), so that jobs that failed
// together spread out.
func (r *Runner) backoff(n int, limit time.Duration) time.Duration {
	d := limit
	if n >= 1 && n <= 40 {
		if x := r.retryMin << (n - 1); x > 0 && x < limit {
			d = x
		}
	}
	half := d / 2
	r.rngMu.Lock()
	j := time.Duration(r.rng.Int64N(int64(half) + 1))
	r.rngMu.Unlock()
	return d - half + j
}

// retryPolicy is River's retry policy for every kind.
type retryPolicy struct{ r *Runner }

func (p retryPolicy) NextRetry(job *rivertype.JobRow) time.Time {
	return p.r.now().Add(p.r.backoff(len(job.Errors)+1, p.r.retryMax))
}

// Start starts the River client (Config.JobClient) with a worker and a
// queue for every job kind, and the outbox pump. It returns at once; the
// jobs run until Stop. Cancelling ctx stops them abruptly, as River does:
// the running jobs see their context cancelled. A second Start does
// nothing.
func (r *Runner) Start(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.client != nil {
		return nil
	}
	workers := river.NewWorkers()
	river.AddWorker(workers, &worker[ChargePaymentArgs]{r: r})
	river.AddWorker(workers, &worker[ExpireHoldArgs]{r: r})
	river.AddWorker(workers, &worker[NotifyWinnerArgs]{r: r})
	river.AddWorker(workers, &worker[PaymentFailedArgs]{r: r})
	river.AddWorker(workers, &worker[HoldExpiredArgs]{r: r})
	river.AddWorker(workers, &worker[RefundPaymentArgs]{r: r})
	river.AddWorker(workers, &worker[PaymentRefundedArgs]{r: r})
	queues := make(map[string]river.QueueConfig, len(r.limits))
	for queue, l := range r.limits {
		queues[queue] = river.QueueConfig{MaxWorkers: l.Concurrency}
	}
	client, err := r.newJobs(&river.Config{
		FetchCooldown:     max(min(r.poll/5, fetchCooldown), time.Millisecond),
		FetchPollInterval: r.poll,
		// A run ends before it could be taken for lost: a job is never
		// rescued while it still runs.
		JobTimeout:           r.rescue * 3 / 4,
		RescueStuckJobsAfter: r.rescue,
		Logger:               r.log,
		Queues:               queues,
		RetryPolicy:          retryPolicy{r},
		Workers:              workers,
	})
	if err != nil {
		return fmt.Errorf("post: job client: %w", err)
	}
	if err := client.Start(ctx); err != nil {
		return fmt.Errorf("post: start jobs: %w", err)
	}
	r.client = client
	return r.pump.Start(ctx, func(ctx context.Context) error {
		r.pumpLoop(ctx)
		return nil
	})
}

// Stop stops the pump and the River client, which waits for the jobs that
// are running, StopTimeout at most (then it returns an error and may be
// called again). Stopping a Runner that is stopped or never started does
// nothing.
func (r *Runner) Stop() error {
	pumpErr := r.pump.Stop()
	r.mu.Lock()
	client := r.client
	r.mu.Unlock()
	if client == nil {
		return pumpErr
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.stopTimeout)
	defer cancel()
	if err := client.Stop(ctx); err != nil {
		return errors.Join(pumpErr, fmt.Errorf("post: stop jobs: %w", err))
	}
	return pumpErr
}

// Kick wakes the pump now: the engine calls it after it committed new
// claims. It never blocks.
func (r *Runner) Kick() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Pump moves every claim the outbox holds on now, in batches of PumpBatch,
// and returns how many it moved. The pump loop calls it; a failed batch
// leaves its claims flagged for the next call.
func (r *Runner) Pump(ctx context.Context) (int, error) {
	total := 0
	for {
		n, err := r.pumpBatch(ctx, PumpBatch)
		total += n
		if err != nil {
			return total, err
		}
		if n < PumpBatch {
			return total, nil
		}
	}
}

// pumpBatch moves up to size claims of the outbox on.
func (r *Runner) pumpBatch(ctx context.Context, size int) (int, error) {
	n, err := r.store.PumpOutbox(ctx, size, Pump{Now: r.now(), NewCode: r.newCode, Notify: r.notifier != nil})
	r.metrics.pumped.Add(float64(n))
	if err != nil {
		return n, fmt.Errorf("pump outbox: %w", err)
	}
	return n, nil
}

// pumpLoop pumps after every Kick and every poll interval. While claims
// keep the record busy it moves BusyBatch claims per busyEvery, so that
// the group commits of a spike never queue behind a long pump.
func (r *Runner) pumpLoop(ctx context.Context) {
	idle := 4 * r.poll // kicks come with every commit; the timer is for what they miss
	t := time.NewTimer(idle)
	defer t.Stop()
	failures := 0
	pacing := false // claims keep the record busy: the timer alone paces the pump
	for {
		kick := r.kick
		if failures > 0 || pacing {
			kick = nil // wait out the backoff or the pace, kicks or not
		}
		select {
		case <-ctx.Done():
			return
		case <-kick:
		case <-t.C:
		}
		var err error
		if pacing = r.busy != nil && r.busy(); pacing {
			r.metrics.pumpPaced.Inc()
			_, err = r.pumpBatch(ctx, BusyBatch)
		} else {
			_, err = r.Pump(ctx)
		}
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			pacing = false
			failures++
			r.metrics.pumpErrors.Inc()
			r.log.Warn("outbox pump failed; retrying", "failures", failures, "err", err)
			t.Reset(min(r.poll<<min(failures, 20), maxPumpBackoff))
		case pacing:
			failures = 0
			t.Reset(r.busyEvery)
		default:
			failures = 0
			t.Reset(idle)
		}
	}
}

// FailedJob is dibs.FailedJob.
//
// Deprecated: use dibs.FailedJob.
type FailedJob = dibs.FailedJob

// JobCounts counts the drop's jobs by kind and state (Store.JobCounts).
func (r *Runner) JobCounts(ctx context.Context, dropID string) ([]dibs.JobCount, error) {
	return r.store.JobCounts(ctx, dropID)
}

// failedStates are the states of jobs River will not run again.
var failedStates = []rivertype.JobState{rivertype.JobStateDiscarded, rivertype.JobStateCancelled}

// MaxFailedList bounds FailedWebhooks's limit.
const MaxFailedList = 1000

// FailedWebhooks lists up to limit (default 100, at most MaxFailedList)
// webhook jobs that were discarded or cancelled, of dropID or of every drop
// if dropID is "", the most recently failed first. River keeps them for its
// discarded and cancelled job retention (7 days and 24 hours by default).
// EUNAVAILABLE before Start.
func (r *Runner) FailedWebhooks(ctx context.Context, dropID string, limit int) ([]dibs.FailedJob, error) {
	client, err := r.jobClient()
	if err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, MaxFailedList)
	// The drop is in the job's args, which the two databases query
	// differently; failed webhooks are few, so they are filtered here.
	// Ordered by "time", which for finalized states is finalized_at:
	// River 0.31 refuses JobListOrderByFinalizedAt when every state asked
	// for is a finalized one.
	params := river.NewJobListParams().Kinds(WebhookKinds...).States(failedStates...).
		OrderBy(river.JobListOrderByTime, river.SortOrderDesc).First(100)
	out := []dibs.FailedJob{}
	for {
		res, err := client.JobList(ctx, params)
		if err != nil {
			return nil, fmt.Errorf("list failed webhooks: %w", err)
		}
		for _, row := range res.Jobs {
			f := failedJob(row)
			if dropID == "" || f.DropID == dropID {
				out = append(out, f)
				if len(out) == limit {
					return out, nil
				}
			}
		}
		if len(res.Jobs) < 100 || res.LastCursor == nil {
			return out, nil
		}
		params = params.After(res.LastCursor)
	}
}

func failedJob(row *rivertype.JobRow) dibs.FailedJob {
	var ref ClaimRef
	_ = json.Unmarshal(row.EncodedArgs, &ref) // a row River cannot decode still shows up, without its claim
	f := dibs.FailedJob{ID: row.ID, Kind: row.Kind, ClaimID: ref.ClaimID, DropID: ref.DropID, Attempts: row.Attempt}
	if n := len(row.Errors); n > 0 {
		f.LastError = row.Errors[n-1].Error
	}
	if row.FinalizedAt != nil {
		f.FinalizedAt = *row.FinalizedAt
	}
	return f
}

// Retry makes the failed webhook job jobID available again, for one more
// attempt if it had spent them all. ENOTFOUND if there is no discarded or
// cancelled webhook job jobID; EUNAVAILABLE before Start.
func (r *Runner) Retry(ctx context.Context, jobID int64) error {
	client, err := r.jobClient()
	if err != nil {
		return err
	}
	res, err := client.JobList(ctx, river.NewJobListParams().IDs(jobID).Kinds(WebhookKinds...).States(failedStates...))
	if err != nil {
		return fmt.Errorf("find job %d: %w", jobID, err)
	}
	if !slices.ContainsFunc(res.Jobs, func(row *rivertype.JobRow) bool { return row.ID == jobID }) {
		return dibs.Errorf(dibs.ENOTFOUND, "no failed webhook job %d", jobID)
	}
	if _, err := client.JobRetry(ctx, jobID); err != nil {
		if errors.Is(err, rivertype.ErrNotFound) {
			return dibs.Errorf(dibs.ENOTFOUND, "no failed webhook job %d", jobID)
		}
		return fmt.Errorf("retry job %d: %w", jobID, err)
	}
	return nil
}

func (r *Runner) jobClient() (JobClient, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.client == nil {
		return nil, dibs.Errorf(dibs.EUNAVAILABLE, "post-processing is not running")
	}
	return r.client, nil
}

// claimArgs are the args of every job kind: each carries its claim.
type claimArgs interface {
	river.JobArgs
	claim() ClaimRef
}

func (c ClaimRef) claim() ClaimRef { return c }

// worker is the River worker of one kind: it hands the job to Runner.Work.
type worker[T claimArgs] struct {
	river.WorkerDefaults[T]
	r *Runner
}

func (w *worker[T]) Work(ctx context.Context, job *river.Job[T]) error {
	var meta struct {
		Snoozes int `json:"snoozes"`
	}
	_ = json.Unmarshal(job.Metadata, &meta) // River's own bookkeeping; 0 if absent
	return w.r.Work(ctx, Job{Kind: job.Kind, Claim: job.Args.claim(), Attempt: job.Attempt, Snoozes: meta.Snoozes})
}
