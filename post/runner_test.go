package post_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/internal/testenv"
	"github.com/dibs-io/dibs/post"
)

// The Runner's River side against a stand-in client: what it asks of
// River, the pump, the admin calls. Jobs running on a real River client
// are the stores' tests.

type pumpStore struct {
	post.Store // nil: the Runner must call nothing else

	mu      sync.Mutex
	pending int // flagged claims
	fail    int // calls still to fail
	calls   int // PumpOutbox calls
	cfg     *river.Config
	client  *fakeClient
	emptied sync.Once
	empty   chan struct{} // closed once the outbox is empty
}

func newPumpStore(pending, fail int) *pumpStore {
	return &pumpStore{pending: pending, fail: fail, empty: make(chan struct{}), client: &fakeClient{}}
}

func (s *pumpStore) PumpOutbox(ctx context.Context, limit int, _ post.Pump) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if s.fail > 0 {
		s.fail--
		return 0, errors.New("record down")
	}
	n := min(s.pending, limit)
	s.pending -= n
	if s.pending == 0 {
		s.emptied.Do(func() { close(s.empty) })
	}
	return n, nil
}

func (s *pumpStore) NewJobClient(cfg *river.Config) (post.JobClient, error) {
	s.cfg = cfg
	return s.client, nil
}

type fakeClient struct {
	mu               sync.Mutex
	started, stopped int
	rows             []*rivertype.JobRow
	retried          []int64
}

func (c *fakeClient) Start(context.Context) error {
	c.mu.Lock()
	c.started++
	c.mu.Unlock()
	return nil
}
func (c *fakeClient) Stop(context.Context) error { c.mu.Lock(); c.stopped++; c.mu.Unlock(); return nil }

// JobList answers every list with the rows in the order given: the
// parameters are River's to apply.
func (c *fakeClient) JobList(context.Context, *river.JobListParams) (*river.JobListResult, error) {
	return &river.JobListResult{Jobs: c.rows}, nil
}

func (c *fakeClient) JobRetry(_ context.Context, id int64) (*rivertype.JobRow, error) {
	c.retried = append(c.retried, id)
	return &rivertype.JobRow{ID: id}, nil
}

func newPumpRunner(t *testing.T, s *pumpStore, opts ...func(*post.Config)) *post.Runner {
	t.Helper()
	cfg := post.Config{Store: s, JobClient: s.NewJobClient, Release: simGate{}, PollInterval: time.Hour}
	for _, o := range opts {
		o(&cfg)
	}
	r, err := post.NewRunner(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestNewRunnerConfig(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cfg  post.Config
	}{
		{"no store", post.Config{Release: simGate{}}},
		{"no releaser", post.Config{Store: simStore{}, JobClient: noJobs}},
		{"no job client", post.Config{Store: simStore{}, Release: simGate{}}},
		{"negative stop timeout", post.Config{Store: simStore{}, JobClient: noJobs, Release: simGate{}, StopTimeout: -time.Second}},
		{"unknown queue", post.Config{Store: simStore{}, JobClient: noJobs, Release: simGate{}, Limits: map[string]post.Limit{post.KindNotifyWinner: {}}}},
		{"negative rate", post.Config{Store: simStore{}, JobClient: noJobs, Release: simGate{}, Limits: map[string]post.Limit{post.QueueWebhook: {Rate: -1}}}},
		{"negative busy pace", post.Config{Store: simStore{}, JobClient: noJobs, Release: simGate{}, BusyEvery: -time.Second}},
		{"max below min", post.Config{Store: simStore{}, JobClient: noJobs, Release: simGate{}, RetryMin: time.Minute, RetryMax: time.Second}},
	} {
		if _, err := post.NewRunner(tc.cfg); err == nil {
			t.Errorf("%s: NewRunner accepted it", tc.name)
		}
	}
	r, err := post.NewRunner(post.Config{Store: simStore{}, JobClient: noJobs, Release: simGate{}, Limits: map[string]post.Limit{
		post.QueueCharge: {Rate: 5},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := r.Limit(post.QueueCharge), (post.Limit{Concurrency: 16, Rate: 5}); got != want {
		t.Errorf("charge_payment limit %+v, want %+v (default concurrency)", got, want)
	}
	if got, want := r.Limit(post.QueueWebhook), post.DefaultLimits()[post.QueueWebhook]; got != want {
		t.Errorf("webhook limit %+v, want the default %+v", got, want)
	}
}

func TestRunnerStartStop(t *testing.T) {
	t.Parallel()
	s := newPumpStore(1000, 0)
	r := newPumpRunner(t, s, func(c *post.Config) {
		c.PollInterval = 20 * time.Millisecond
		c.Limits = map[string]post.Limit{post.QueueExpire: {Concurrency: 3}}
	})
	ctx := context.Background()
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx); err != nil {
		t.Errorf("a second Start: %v", err)
	}
	r.Kick()
	select {
	case <-s.empty:
	case <-time.After(testenv.WaitTimeout):
		t.Fatal("the pump did not empty the outbox")
	}
	if err := r.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := r.Stop(); err != nil {
		t.Errorf("a second Stop: %v", err)
	}
	if s.client.started != 1 || s.client.stopped == 0 {
		t.Errorf("client started %d, stopped %d times; want once, at least once", s.client.started, s.client.stopped)
	}

	cfg := s.cfg
	if len(cfg.Queues) != len(post.Queues) {
		t.Errorf("%d queues, want %d", len(cfg.Queues), len(post.Queues))
	}
	for _, queue := range post.Queues {
		want := post.DefaultLimits()[queue].Concurrency
		if queue == post.QueueExpire {
			want = 3
		}
		if got := cfg.Queues[queue].MaxWorkers; got != want {
			t.Errorf("queue %s: %d workers, want %d", queue, got, want)
		}
	}
	for _, kind := range post.Kinds {
		if _, ok := cfg.Queues[post.QueueOf(kind)]; !ok {
			t.Errorf("kind %s has no queue", kind)
		}
	}
	if cfg.FetchPollInterval != 20*time.Millisecond || cfg.FetchCooldown != 4*time.Millisecond {
		t.Errorf("fetch poll %s, cooldown %s; want 20ms, 4ms", cfg.FetchPollInterval, cfg.FetchCooldown)
	}
	if cfg.Workers == nil || cfg.RetryPolicy == nil {
		t.Error("no workers or no retry policy")
	}
	// The wait is next less the policy's now, which lies between before and
	// after: only a wait that is out of range whatever the scheduler did
	// between them fails.
	before := time.Now()
	next := cfg.RetryPolicy.NextRetry(&rivertype.JobRow{Errors: make([]rivertype.AttemptError, 2)})
	after := time.Now()
	if most, least := next.Sub(before), next.Sub(after); most < 1500*time.Millisecond || least > 4*time.Second {
		t.Errorf("third attempt in %s..%s, want 2s..4s", least, most)
	}
}

func TestPumpRetriesFailures(t *testing.T) {
	t.Parallel()
	s := newPumpStore(10, 2)
	r := newPumpRunner(t, s, func(c *post.Config) { c.PollInterval = 5 * time.Millisecond })
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	select {
	case <-s.empty:
	case <-time.After(testenv.WaitTimeout):
		t.Fatal("the pump gave up after failures")
	}
}

func TestPumpBatches(t *testing.T) {
	t.Parallel()
	s := newPumpStore(2*post.PumpBatch+1, 0)
	r := newPumpRunner(t, s)
	n, err := r.Pump(context.Background())
	if err != nil || n != 2*post.PumpBatch+1 || s.calls != 3 {
		t.Errorf("Pump: %d, %v in %d calls; want %d in 3", n, err, s.calls, 2*post.PumpBatch+1)
	}
	r.Kick() // never blocks, started or not
	r.Kick()
}

// While group commits keep the record busy, the pump moves BusyBatch
// claims per BusyEvery, kicks or not (and some, so nothing starves); once
// the record calms down, it empties the outbox.
func TestPumpYieldsToClaims(t *testing.T) {
	t.Parallel()
	const every = 100 * time.Millisecond
	s := newPumpStore(100*post.PumpBatch, 0)
	var busy atomic.Bool
	busy.Store(true)
	r := newPumpRunner(t, s, func(c *post.Config) {
		c.PollInterval = 5 * time.Millisecond
		c.BusyEvery = every
		c.Busy = busy.Load
	})
	start := time.Now()
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	moved := func() int {
		s.mu.Lock()
		defer s.mu.Unlock()
		return 100*post.PumpBatch - s.pending
	}
	// Group commits go on for six BusyEvery at least, and until the pump
	// has moved its first busy batch: on a starved machine the pump may
	// not have run at all in the first 600 ms, which says nothing of it.
	for i := 0; i < 30 || moved() < post.BusyBatch; i++ {
		if time.Since(start) > testenv.WaitTimeout {
			t.Fatalf("%d claims moved in %s while busy, want %d at least: the busy pump starves the outbox", moved(), time.Since(start), post.BusyBatch)
		}
		r.Kick()
		time.Sleep(20 * time.Millisecond)
	}
	s.mu.Lock()
	n, elapsed := 100*post.PumpBatch-s.pending, time.Since(start)
	s.mu.Unlock()
	if most := (int(elapsed/every) + 1) * post.BusyBatch; n > most || n < post.BusyBatch {
		t.Errorf("%d claims moved in %s while busy, want %d..%d", n, elapsed.Round(time.Millisecond), post.BusyBatch, most)
	}
	busy.Store(false)
	select {
	case <-s.empty:
	case <-time.After(testenv.WaitTimeout):
		t.Fatal("the pump did not catch up once the record was idle")
	}
}

func TestFailedWebhooks(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 11, 12, 0, 0, 0, time.UTC)
	row := func(id int64, drop string) *rivertype.JobRow {
		return &rivertype.JobRow{
			ID: id, Kind: post.KindNotifyWinner, Attempt: 20, FinalizedAt: &at,
			EncodedArgs: fmt.Appendf(nil, `{"claim_id":"c%d","drop_id":%q}`, id, drop),
			Errors:      []rivertype.AttemptError{{Error: "502"}, {Error: "connection reset"}},
		}
	}
	s := newPumpStore(0, 0)
	s.client.rows = []*rivertype.JobRow{row(1, "a"), row(2, "b"), row(3, "a")}
	r := newPumpRunner(t, s)
	ctx := context.Background()
	if _, err := r.FailedWebhooks(ctx, "", 10); dibs.ErrorCode(err) != dibs.EUNAVAILABLE {
		t.Errorf("before Start: %v, want %s", err, dibs.EUNAVAILABLE)
	}
	if err := r.Retry(ctx, 1); dibs.ErrorCode(err) != dibs.EUNAVAILABLE {
		t.Errorf("Retry before Start: %v, want %s", err, dibs.EUNAVAILABLE)
	}
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer r.Stop()

	got, err := r.FailedWebhooks(ctx, "a", 10)
	if err != nil {
		t.Fatal(err)
	}
	want := []post.FailedJob{
		{ID: 1, Kind: post.KindNotifyWinner, ClaimID: "c1", DropID: "a", Attempts: 20, LastError: "connection reset", FinalizedAt: at},
		{ID: 3, Kind: post.KindNotifyWinner, ClaimID: "c3", DropID: "a", Attempts: 20, LastError: "connection reset", FinalizedAt: at},
	}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("drop a: got %+v, want %+v", got, want)
	}
	if got, _ := r.FailedWebhooks(ctx, "", 2); len(got) != 2 {
		t.Errorf("all drops, limit 2: %d jobs", len(got))
	}

	if err := r.Retry(ctx, 3); err != nil || len(s.client.retried) != 1 || s.client.retried[0] != 3 {
		t.Errorf("Retry(3): %v, retried %v", err, s.client.retried)
	}
	if err := r.Retry(ctx, 9); dibs.ErrorCode(err) != dibs.ENOTFOUND {
		t.Errorf("Retry(9): %v, want %s", err, dibs.ENOTFOUND)
	}
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	b := setup(t, func(c *post.Config) { c.Registerer = reg })
	c := b.hold(t, true)
	if err := b.work(post.KindChargePayment, c, 1); err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := make(map[string]float64)
	for _, f := range families {
		for _, m := range f.GetMetric() {
			name := f.GetName()
			for _, l := range m.GetLabel() {
				name += " " + l.GetValue()
			}
			got[name] = m.GetCounter().GetValue()
		}
	}
	for _, name := range []string{"dibs_post_jobs_total charge_payment done", "dibs_post_payments_total paid"} {
		if got[name] != 1 {
			t.Errorf("%s = %v, want 1 (all: %v)", name, got[name], got)
		}
	}
	if _, err := post.NewRunner(post.Config{Store: simStore{}, JobClient: noJobs, Release: simGate{}, Registerer: reg}); err == nil {
		t.Error("a second Runner registered the same metrics")
	}
}
