package payment_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/internal/testenv"
	"github.com/dibs-io/dibs/payment"
	"github.com/dibs-io/dibs/payment/internal/inproc"
	"github.com/dibs-io/dibs/payment/pgsim"
)

// bundle is a client talking to a simulator on loopback.
type bundle struct {
	sim    *pgsim.Simulator
	client *payment.Client
	url    string
}

// setup serves a simulator for sim and returns a client for cfg pointed at
// it. Unless the test says otherwise, the client neither rate-limits nor
// retries, so each call is one request.
func setup(t *testing.T, sim pgsim.Config, cfg payment.Config) *bundle {
	t.Helper()
	s := mustSim(t, sim)
	srv := httptest.NewServer(s)
	t.Cleanup(func() {
		s.Close()
		srv.Close()
	})
	cfg.BaseURL = srv.URL
	return &bundle{sim: s, client: mustClient(t, testConfig(cfg)), url: srv.URL}
}

// setupInProcess is setup without a network, for a test that runs in a
// testing/synctest bubble: the client calls the simulator in-process, so
// the client's timeouts, the simulator's hangs and latencies and the
// breaker's delay all run on the bubble's fake clock. A timeout then fires
// after the gateway took the request, never before it, however starved the
// machine is.
func setupInProcess(t *testing.T, sim pgsim.Config, cfg payment.Config) *bundle {
	t.Helper()
	s := mustSim(t, sim)
	cfg.BaseURL = "http://pgsim.invalid"
	cfg.HTTPClient = &http.Client{Transport: inproc.Transport{Handler: s}}
	return &bundle{sim: s, client: mustClient(t, testConfig(cfg)), url: cfg.BaseURL}
}

func mustSim(t *testing.T, cfg pgsim.Config) *pgsim.Simulator {
	t.Helper()
	if cfg.Seed == 0 {
		cfg.Seed = 1
	}
	s, err := pgsim.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("new simulator: %v", err)
	}
	return s
}

// testConfig is cfg with the tests' defaults: no rate limit, one attempt.
func testConfig(cfg payment.Config) payment.Config {
	if cfg.RateLimit == 0 {
		cfg.RateLimit = -1
	}
	if cfg.MaxAttempts == 0 {
		cfg.MaxAttempts = 1
	}
	return cfg
}

func mustClient(t *testing.T, cfg payment.Config) *payment.Client {
	t.Helper()
	c, err := payment.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("new client: %v", err)
	}
	return c
}

func krw(amount int64) payment.ChargeRequest {
	return payment.ChargeRequest{Amount: amount, Currency: "KRW", Reference: "drop-1/claim"}
}

// metrics records what the client reports.
type metrics struct {
	mu       sync.Mutex
	attempts map[string]int // "op/outcome"
	changes  []payment.BreakerState
	onTry    func(op, outcome string)
}

func (m *metrics) Attempt(op, outcome string, _ time.Duration) {
	m.mu.Lock()
	if m.attempts == nil {
		m.attempts = make(map[string]int)
	}
	m.attempts[op+"/"+outcome]++
	f := m.onTry
	m.mu.Unlock()
	if f != nil {
		f(op, outcome)
	}
}

func (m *metrics) BreakerChanged(_, to payment.BreakerState) {
	m.mu.Lock()
	m.changes = append(m.changes, to)
	m.mu.Unlock()
}

func (m *metrics) count(key string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.attempts[key]
}

func TestChargeIsIdempotent(t *testing.T) {
	t.Parallel()
	b := setup(t, pgsim.Config{Knobs: pgsim.Knobs{DeclineRate: 0.5, Latency: pgsim.Latency{Median: 5 * time.Millisecond, Sigma: 0.5}}}, payment.Config{})
	ctx := context.Background()

	var (
		mu      sync.Mutex
		answers []payment.Charge
		wg      sync.WaitGroup
	)
	for range 10 {
		wg.Go(func() {
			ch, err := b.client.Charge(ctx, "claim-1", krw(11000))
			if err != nil {
				t.Errorf("charge: %v", err)
				return
			}
			mu.Lock()
			answers = append(answers, *ch)
			mu.Unlock()
		})
	}
	wg.Wait()
	for range 10 {
		ch, err := b.client.Charge(ctx, "claim-1", krw(11000))
		if err != nil {
			t.Fatalf("charge: %v", err)
		}
		answers = append(answers, *ch)
	}

	if len(answers) != 20 {
		t.Fatalf("got %d answers, want 20", len(answers))
	}
	for i, ch := range answers {
		if ch != answers[0] {
			t.Errorf("answer %d = %+v, want %+v", i, ch, answers[0])
		}
	}
	ledger := b.sim.Ledger()
	if len(ledger) != 1 || ledger[0].Charge != answers[0] || ledger[0].Attempts != 20 {
		t.Fatalf("ledger = %+v, want the one charge %+v seen 20 times", ledger, answers[0])
	}
}

func TestChargeOutcomes(t *testing.T) {
	t.Parallel()
	b := setup(t, pgsim.Config{}, payment.Config{})
	ctx := context.Background()

	paid, err := b.client.Charge(ctx, "paid", krw(100))
	if err != nil || paid.Status != payment.StatusPaid || paid.Amount != 100 || paid.ChargeID == "" {
		t.Fatalf("charge = %+v, %v; want paid 100", paid, err)
	}
	if err := b.sim.SetKnobs(pgsim.Knobs{DeclineRate: 1}); err != nil {
		t.Fatal(err)
	}
	declined, err := b.client.Charge(ctx, "declined", krw(100))
	if err != nil || declined.Status != payment.StatusDeclined || declined.DeclineReason == "" {
		t.Fatalf("charge = %+v, %v; want declined with a reason", declined, err)
	}

	got, err := b.client.Lookup(ctx, "paid")
	if err != nil || *got != *paid {
		t.Errorf("lookup = %+v, %v; want %+v", got, err, paid)
	}
	if _, err := b.client.Lookup(ctx, "never"); !errors.Is(err, payment.ErrNotFound) || payment.Retryable(err) {
		t.Errorf("lookup of an unknown key: %v, want ErrNotFound, not retryable", err)
	}

	refunded, err := b.client.Refund(ctx, "paid")
	if err != nil || refunded.Status != payment.StatusRefunded || refunded.ChargeID != paid.ChargeID {
		t.Errorf("refund = %+v, %v; want %s refunded", refunded, err, paid.ChargeID)
	}
	if l := b.sim.Ledger(); l[0].Key != "paid" || l[0].RefundKey != payment.RefundKey("paid") {
		t.Errorf("ledger = %+v, want paid refunded under %s", l[0], payment.RefundKey("paid"))
	}
	if _, err := b.client.Refund(ctx, "declined"); !errors.Is(err, payment.ErrConflict) {
		t.Errorf("refund of a declined charge: %v, want ErrConflict", err)
	}
	if _, err := b.client.Refund(ctx, "never"); !errors.Is(err, payment.ErrNotFound) {
		t.Errorf("refund of an unknown key: %v, want ErrNotFound", err)
	}
}

func TestChargeRejectsBadRequests(t *testing.T) {
	t.Parallel()
	b := setup(t, pgsim.Config{}, payment.Config{})
	ctx := context.Background()
	for _, tt := range []struct {
		name string
		key  string
		req  payment.ChargeRequest
	}{
		{"empty key", "", krw(1)},
		{"zero amount", "k", krw(0)},
		{"no currency", "k", payment.ChargeRequest{Amount: 1}},
	} {
		if _, err := b.client.Charge(ctx, tt.key, tt.req); !errors.Is(err, payment.ErrInvalid) || payment.Retryable(err) {
			t.Errorf("%s: %v, want ErrInvalid, not retryable", tt.name, err)
		}
	}
	if st := b.sim.Stats(); st.Requests != 0 {
		t.Errorf("gateway saw %d requests, want none", st.Requests)
	}

	if _, err := b.client.Charge(ctx, "k", krw(1)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.client.Charge(ctx, "k", krw(2)); !errors.Is(err, payment.ErrConflict) || payment.Retryable(err) {
		t.Errorf("same key, other amount: %v, want ErrConflict, not retryable", err)
	}
}

func TestTimeoutLeavesOutcomeUnknownAndLookupFindsIt(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		b := setupInProcess(t,
			pgsim.Config{Knobs: pgsim.Knobs{TimeoutRate: 1, FaultApplied: 1, Hang: time.Minute}},
			payment.Config{Timeout: 100 * time.Millisecond, MaxAttempts: 1})
		ctx := context.Background()

		_, err := b.client.Charge(ctx, "claim-7", krw(5000))
		if !errors.Is(err, payment.ErrOutcomeUnknown) || !errors.Is(err, dibs.ErrOutcomeUnknown) ||
			!errors.Is(err, context.DeadlineExceeded) || !payment.Retryable(err) {
			t.Fatalf("charge: %v, want an unknown outcome from a timeout", err)
		}
		got, err := b.client.Lookup(ctx, "claim-7")
		if err != nil || got.Status != payment.StatusPaid || got.Amount != 5000 {
			t.Fatalf("lookup = %+v, %v; want the charge the gateway applied", got, err)
		}

		// The gateway recovers; charging again answers the first charge.
		if err := b.sim.SetKnobs(pgsim.Knobs{}); err != nil {
			t.Fatal(err)
		}
		again, err := b.client.Charge(ctx, "claim-7", krw(5000))
		if err != nil || *again != *got {
			t.Fatalf("charge again = %+v, %v; want %+v", again, err, got)
		}
		ledger := b.sim.Ledger()
		if len(ledger) != 1 || ledger[0].Attempts != 2 {
			t.Errorf("ledger = %+v, want one charge seen twice (timed out, answered)", ledger)
		}
	})
}

// Within one call, a charge whose attempt timed out is looked up before it
// is sent again: the lookup finds what the gateway applied, and the charge
// goes out once.
func TestRetryLooksUpBeforeCharging(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		m := &metrics{}
		b := setupInProcess(t,
			pgsim.Config{Knobs: pgsim.Knobs{TimeoutRate: 1, FaultApplied: 1, Hang: time.Minute}},
			payment.Config{Timeout: 100 * time.Millisecond, MaxAttempts: 3, Backoff: time.Millisecond, BreakerMinCalls: 100, Metrics: m})
		got, err := b.client.Charge(context.Background(), "claim-9", krw(5000))
		if err != nil || got.Status != payment.StatusPaid {
			t.Fatalf("charge = %+v, %v; want the charge the lookup found", got, err)
		}
		if m.count("charge/unknown") != 1 || m.count("lookup/paid") != 1 || len(m.attempts) != 2 {
			t.Errorf("attempts = %v, want one unknown charge, then one lookup", m.attempts)
		}
		if l := b.sim.Ledger(); len(l) != 1 || l[0].Attempts != 1 {
			t.Errorf("ledger = %+v, want one charge sent once", l)
		}
	})
}

func TestTimeoutNotAppliedIsNotFound(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		b := setupInProcess(t,
			pgsim.Config{Knobs: pgsim.Knobs{TimeoutRate: 1, Hang: time.Minute}},
			payment.Config{Timeout: 50 * time.Millisecond})
		ctx := context.Background()

		if _, err := b.client.Charge(ctx, "claim-8", krw(5000)); !errors.Is(err, payment.ErrOutcomeUnknown) {
			t.Fatalf("charge: %v, want ErrOutcomeUnknown", err)
		}
		if _, err := b.client.Lookup(ctx, "claim-8"); !errors.Is(err, payment.ErrNotFound) {
			t.Fatalf("lookup: %v, want ErrNotFound", err)
		}
		if err := b.sim.SetKnobs(pgsim.Knobs{}); err != nil {
			t.Fatal(err)
		}
		if ch, err := b.client.Charge(ctx, "claim-8", krw(5000)); err != nil || ch.Status != payment.StatusPaid {
			t.Fatalf("retry = %+v, %v; want paid", ch, err)
		}
		if l := b.sim.Ledger(); len(l) != 1 {
			t.Errorf("ledger = %+v, want one charge", l)
		}
	})
}

func TestLostAnswersAreUnknown(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name  string
		knobs pgsim.Knobs
	}{
		{"reset", pgsim.Knobs{ResetRate: 1}},
		{"500", pgsim.Knobs{ErrorRate: 1}},
		{"504", pgsim.Knobs{TimeoutRate: 1, Hang: time.Millisecond}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, pgsim.Config{Knobs: tt.knobs}, payment.Config{MaxAttempts: 2, Backoff: time.Millisecond})
			_, err := b.client.Charge(context.Background(), "k", krw(1))
			if !errors.Is(err, payment.ErrOutcomeUnknown) || errors.Is(err, payment.ErrUnavailable) {
				t.Errorf("charge: %v, want ErrOutcomeUnknown only", err)
			}
			_, err = b.client.Refund(context.Background(), "k")
			if !errors.Is(err, payment.ErrOutcomeUnknown) {
				t.Errorf("refund: %v, want ErrOutcomeUnknown", err)
			}
			if l := b.sim.Ledger(); len(l) > 1 {
				t.Errorf("ledger = %+v, want at most one charge", l)
			}
		})
	}
}

func TestRefusalsAreUnavailable(t *testing.T) {
	t.Parallel()
	b := setup(t, pgsim.Config{}, payment.Config{BreakerMinCalls: 100})
	b.sim.SetOutage(true, 0)
	_, err := b.client.Charge(context.Background(), "k", krw(1))
	if !errors.Is(err, payment.ErrUnavailable) || errors.Is(err, payment.ErrOutcomeUnknown) || !payment.Retryable(err) {
		t.Errorf("charge during an outage: %v, want ErrUnavailable only", err)
	}
	if _, err := b.client.Lookup(context.Background(), "k"); !errors.Is(err, payment.ErrUnavailable) {
		t.Errorf("lookup during an outage: %v, want ErrUnavailable", err)
	}

	// Nobody listens: the request never left.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c := mustClient(t, payment.Config{BaseURL: "http://" + addr, MaxAttempts: 1})
	if _, err := c.Charge(context.Background(), "k", krw(1)); !errors.Is(err, payment.ErrUnavailable) || errors.Is(err, payment.ErrOutcomeUnknown) {
		t.Errorf("charge to a closed port: %v, want ErrUnavailable only", err)
	}
}

// An attempt that may have been applied must not be forgotten because a
// later attempt was refused outright.
func TestUnknownOutcomeSurvivesLaterRefusal(t *testing.T) {
	t.Parallel()
	m := &metrics{}
	b := setup(t,
		pgsim.Config{Knobs: pgsim.Knobs{ErrorRate: 1, FaultApplied: 1}},
		payment.Config{MaxAttempts: 2, Backoff: time.Millisecond, BreakerMinCalls: 100, Metrics: m})
	m.onTry = func(_, outcome string) {
		if outcome == "unknown" {
			b.sim.SetOutage(true, 0) // the retry meets a clean 503
		}
	}
	_, err := b.client.Charge(context.Background(), "k", krw(1))
	if !errors.Is(err, payment.ErrOutcomeUnknown) {
		t.Fatalf("charge: %v, want ErrOutcomeUnknown", err)
	}
	if m.count("charge/unknown") != 1 || m.count("lookup/unavailable") != 1 {
		t.Errorf("attempts = %v, want one unknown charge, then a lookup refused", m.attempts)
	}
	if l := b.sim.Ledger(); len(l) != 1 {
		t.Errorf("ledger = %+v, want the first attempt's charge", l)
	}
}

func TestOverloadedGatewayAnswersExcessAtOnce(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const limit = 3
		b := setupInProcess(t,
			pgsim.Config{Knobs: pgsim.Knobs{MaxConcurrency: limit, TimeoutRate: 1, Hang: time.Minute}},
			payment.Config{MaxConcurrent: 20, Timeout: time.Minute, BreakerMinCalls: 100})

		ctx, cancel := context.WithCancel(context.Background())
		errs := make(chan error, limit)
		for i := range limit {
			go func() {
				_, err := b.client.Charge(ctx, fmt.Sprintf("hang-%d", i), krw(1))
				errs <- err
			}()
		}
		testenv.WaitFor(t, "the gateway to fill", func() bool { return b.sim.Stats().InFlight == limit })

		for i := range 7 {
			_, err := b.client.Charge(context.Background(), fmt.Sprintf("excess-%d", i), krw(1))
			if !errors.Is(err, payment.ErrUnavailable) || errors.Is(err, payment.ErrOutcomeUnknown) {
				t.Errorf("excess charge %d: %v, want ErrUnavailable (overloaded)", i, err)
			}
		}
		cancel()
		for range limit {
			if err := <-errs; !errors.Is(err, payment.ErrOutcomeUnknown) || !errors.Is(err, context.Canceled) {
				t.Errorf("cancelled hanging charge: %v, want ErrOutcomeUnknown from cancellation", err)
			}
		}
		if st := b.sim.Stats(); st.Overloaded != 7 || st.MaxInFlight != limit {
			t.Errorf("overloaded = %d, max in flight = %d; want 7 and %d", st.Overloaded, st.MaxInFlight, limit)
		}
	})
}

func TestBulkheadBoundsConcurrency(t *testing.T) {
	t.Parallel()
	const limit = 4
	b := setup(t,
		pgsim.Config{Knobs: pgsim.Knobs{Latency: pgsim.Latency{Base: 10 * time.Millisecond}}},
		payment.Config{MaxConcurrent: limit, QueueTimeout: time.Minute})

	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			if _, err := b.client.Charge(context.Background(), fmt.Sprintf("k%d", i), krw(1)); err != nil {
				t.Errorf("charge %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	if st := b.sim.Stats(); st.MaxInFlight > limit || st.Charges != 40 {
		t.Errorf("gateway saw %d at once and %d charges, want ≤ %d and 40", st.MaxInFlight, st.Charges, limit)
	}
}

func TestBulkheadQueueTimeout(t *testing.T) {
	t.Parallel()
	b := setup(t,
		pgsim.Config{Knobs: pgsim.Knobs{TimeoutRate: 1, Hang: time.Minute}},
		payment.Config{MaxConcurrent: 1, QueueTimeout: 20 * time.Millisecond, Timeout: time.Minute})

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.client.Charge(ctx, "hang", krw(1))
	}()
	testenv.WaitFor(t, "the slot to fill", func() bool { return b.sim.Stats().InFlight == 1 })

	if _, err := b.client.Charge(context.Background(), "queued", krw(1)); !errors.Is(err, payment.ErrUnavailable) || errors.Is(err, payment.ErrOutcomeUnknown) {
		t.Errorf("charge with no free slot: %v, want ErrUnavailable, unsent", err)
	}
	cancel()
	<-done
	if st := b.sim.Stats(); st.Requests != 1 {
		t.Errorf("gateway saw %d requests, want 1", st.Requests)
	}
}

func TestRateLimit(t *testing.T) {
	t.Parallel()
	const rate, n = 50, 11
	b := setup(t, pgsim.Config{}, payment.Config{RateLimit: rate, RateBurst: 1, QueueTimeout: time.Minute})
	start := time.Now()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if _, err := b.client.Charge(context.Background(), fmt.Sprintf("k%d", i), krw(1)); err != nil {
				t.Errorf("charge: %v", err)
			}
		})
	}
	wg.Wait()
	// n requests at 50/s with a burst of 1 need at least (n-1)/50 s.
	if took, least := time.Since(start), time.Duration(n-1)*time.Second/rate; took < least*9/10 {
		t.Errorf("%d charges took %s, want at least %s", n, took, least)
	}

	// A token that would come after the deadline fails at once, unsent.
	c := mustClient(t, payment.Config{BaseURL: b.url, RateLimit: 0.001, RateBurst: 1, QueueTimeout: 50 * time.Millisecond, MaxAttempts: 1})
	if _, err := c.Charge(context.Background(), "first", krw(1)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Charge(context.Background(), "second", krw(1)); !errors.Is(err, payment.ErrUnavailable) {
		t.Errorf("charge over the rate: %v, want ErrUnavailable", err)
	}
}

func TestBreakerOpensDuringOutageAndClosesAfter(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		t0 := time.Date(2026, 11, 11, 12, 0, 0, 0, time.UTC)
		var clk struct {
			sync.Mutex
			now time.Time
		}
		clk.now = t0
		now := func() time.Time { clk.Lock(); defer clk.Unlock(); return clk.now }
		set := func(t time.Time) { clk.Lock(); clk.now = t; clk.Unlock() }

		m := &metrics{}
		b := setupInProcess(t,
			pgsim.Config{Outages: []pgsim.Window{{Start: time.Second, Duration: 2 * time.Second}}, Now: now},
			payment.Config{
				BreakerFailureRate: 0.5, BreakerMinCalls: 4, BreakerWindow: time.Minute,
				BreakerOpenFor: 100 * time.Millisecond, BreakerProbes: 2, Metrics: m,
			})
		ctx := context.Background()
		charge := func(key string) error { _, err := b.client.Charge(ctx, key, krw(1)); return err }

		if err := charge("before"); err != nil {
			t.Fatalf("charge before the outage: %v", err)
		}
		set(t0.Add(1500 * time.Millisecond)) // in the window

		// Failures open the breaker; then calls fail fast without reaching the
		// gateway.
		var opened bool
		for i := range 10 {
			err := charge(fmt.Sprintf("outage-%d", i))
			if !payment.Retryable(err) {
				t.Fatalf("charge during the outage: %v, want retryable", err)
			}
			if errors.Is(err, payment.ErrCircuitOpen) {
				opened = true
				break
			}
		}
		if !opened || b.client.Breaker() != payment.BreakerOpen {
			t.Fatalf("breaker = %s after 10 failing calls, want open", b.client.Breaker())
		}
		seen := b.sim.Stats().Requests
		for i := range 5 {
			if err := charge(fmt.Sprintf("fast-%d", i)); !errors.Is(err, payment.ErrCircuitOpen) || !errors.Is(err, payment.ErrUnavailable) {
				t.Fatalf("charge with the breaker open: %v, want ErrCircuitOpen", err)
			}
		}
		if got := b.sim.Stats().Requests; got != seen {
			t.Errorf("gateway saw %d requests while the breaker was open, want none", got-seen)
		}

		// Still down when the breaker half-opens: the probe fails, it reopens.
		testenv.WaitFor(t, "a probe during the outage", func() bool {
			return !errors.Is(charge("probe-down"), payment.ErrCircuitOpen)
		})
		if got := b.client.Breaker(); got != payment.BreakerOpen {
			t.Errorf("breaker after a failed probe = %s, want open", got)
		}

		// The outage ends; probes succeed and the breaker closes.
		set(t0.Add(3 * time.Second))
		testenv.WaitFor(t, "the breaker to let a probe through", func() bool { return charge("probe-up-1") == nil })
		if err := charge("probe-up-2"); err != nil {
			t.Fatalf("second probe: %v", err)
		}
		if got := b.client.Breaker(); got != payment.BreakerClosed {
			t.Fatalf("breaker after the outage = %s, want closed", got)
		}
		if err := charge("after"); err != nil {
			t.Errorf("charge after the outage: %v", err)
		}

		m.mu.Lock()
		defer m.mu.Unlock()
		if n := len(m.changes); n < 3 || m.changes[0] != payment.BreakerOpen || m.changes[n-1] != payment.BreakerClosed {
			t.Errorf("breaker transitions = %v, want open … closed", m.changes)
		}
		if m.attempts["charge/circuit_open"] < 5 {
			t.Errorf("attempts = %v, want the fast failures counted as circuit_open", m.attempts)
		}
	})
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		cfg  payment.Config
		ok   bool
	}{
		{"only the URL", payment.Config{BaseURL: "http://127.0.0.1:8090"}, true},
		{"defaults", func() payment.Config { c := payment.DefaultConfig(); c.BaseURL = "https://pg.example"; return c }(), true},
		{"no URL", payment.Config{}, false},
		{"relative URL", payment.Config{BaseURL: "/v1"}, false},
		{"other scheme", payment.Config{BaseURL: "ftp://pg"}, false},
		{"negative timeout", payment.Config{BaseURL: "http://pg", Timeout: -1}, false},
		{"max backoff below backoff", payment.Config{BaseURL: "http://pg", Backoff: time.Second, MaxBackoff: time.Millisecond}, false},
		{"failure rate over 1", payment.Config{BaseURL: "http://pg", BreakerFailureRate: 2}, false},
		{"negative concurrency", payment.Config{BaseURL: "http://pg", MaxConcurrent: -1}, false},
	} {
		err := tt.cfg.Validate()
		if (err == nil) != tt.ok {
			t.Errorf("%s: Validate() = %v, want ok %v", tt.name, err, tt.ok)
		}
		if err != nil && dibs.ErrorCode(err) != dibs.EINVALID {
			t.Errorf("%s: code %s, want %s", tt.name, dibs.ErrorCode(err), dibs.EINVALID)
		}
		if _, nerr := payment.New(tt.cfg, slog.New(slog.DiscardHandler)); (nerr == nil) != tt.ok {
			t.Errorf("%s: New() = %v, want ok %v", tt.name, nerr, tt.ok)
		}
	}
}

// TestRetryUntilDefiniteChargesOnce is the payment worker's loop against a
// gateway that loses answers: charge, and on a retryable error charge again
// with the same key until the answer is definite. Every key must end with
// one charge in the ledger, the one the caller was finally told about.
func TestRetryUntilDefiniteChargesOnce(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const keys = 200
		b := setupInProcess(t,
			pgsim.Config{Knobs: pgsim.Knobs{
				Latency:     pgsim.Latency{Median: 2 * time.Millisecond, Sigma: 0.5},
				DeclineRate: 0.05, ResetRate: 0.1, TimeoutRate: 0.1, ErrorRate: 0.05,
				FaultApplied: 0.5, Hang: time.Minute,
			}, Seed: 7},
			payment.Config{Timeout: 50 * time.Millisecond, MaxAttempts: 3, Backoff: time.Millisecond, MaxConcurrent: 8, BreakerOpenFor: 20 * time.Millisecond})

		var (
			mu   sync.Mutex
			told = make(map[string]payment.Charge)
			work = make(chan string)
			wg   sync.WaitGroup
		)
		for range 16 {
			wg.Go(func() {
				for key := range work {
					for try := 0; ; try++ {
						ch, err := b.client.Charge(context.Background(), key, krw(1000))
						if err == nil {
							mu.Lock()
							told[key] = *ch
							mu.Unlock()
							break
						}
						if !payment.Retryable(err) || try == 100 {
							t.Errorf("charge %s: %v", key, err)
							break
						}
						time.Sleep(2 * time.Millisecond)
					}
				}
			})
		}
		for i := range keys {
			work <- fmt.Sprintf("claim-%03d", i)
		}
		close(work)
		wg.Wait()

		ledger := b.sim.Ledger()
		if len(ledger) != keys {
			t.Fatalf("ledger has %d charges, want %d", len(ledger), keys)
		}
		for _, e := range ledger {
			if got, ok := told[e.Key]; !ok || got != e.Charge {
				t.Errorf("key %s: caller was told %+v, ledger holds %+v", e.Key, got, e.Charge)
			}
		}
		st := b.sim.Stats()
		if st.Charges != keys || st.Timeouts+st.Resets+st.Errors == 0 {
			t.Errorf("stats = %+v, want %d charges and some faults", st, keys)
		}
	})
}
