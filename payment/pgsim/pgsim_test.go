package pgsim_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
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

// bundle is a simulator served on loopback.
type bundle struct {
	sim *pgsim.Simulator
	url string
}

func setup(t *testing.T, cfg pgsim.Config) *bundle {
	t.Helper()
	if cfg.Seed == 0 {
		cfg.Seed = 1
	}
	sim, err := pgsim.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("new simulator: %v", err)
	}
	srv := httptest.NewServer(sim)
	t.Cleanup(func() {
		sim.Close()
		srv.Close()
	})
	return &bundle{sim: sim, url: srv.URL}
}

// answer is one HTTP answer.
type answer struct {
	status int
	body   []byte
}

func (a answer) charge(t *testing.T) payment.Charge {
	t.Helper()
	if a.status != http.StatusOK {
		t.Fatalf("status = %d (%s), want 200", a.status, a.body)
	}
	var ch payment.Charge
	if err := json.Unmarshal(a.body, &ch); err != nil {
		t.Fatalf("decode charge: %v", err)
	}
	return ch
}

func (a answer) code(t *testing.T) string {
	t.Helper()
	var p payment.Problem
	if err := json.Unmarshal(a.body, &p); err != nil {
		t.Fatalf("decode problem %q: %v", a.body, err)
	}
	return p.Code
}

// do sends one request; a transport error is returned, not fatal.
func do(ctx context.Context, method, url, key string, body any) (answer, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return answer{}, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, r)
	if err != nil {
		return answer{}, err
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, body: b}, err
}

func mustDo(t *testing.T, method, url, key string, body any) answer {
	t.Helper()
	a, err := do(context.Background(), method, url, key, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return a
}

func krw(amount int64) payment.ChargeRequest {
	return payment.ChargeRequest{Amount: amount, Currency: "KRW", Reference: "test"}
}

// clock is a settable clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

func TestChargeIsIdempotent(t *testing.T) {
	t.Parallel()
	b := setup(t, pgsim.Config{Knobs: pgsim.Knobs{DeclineRate: 0.5, Latency: pgsim.Latency{Median: 5 * time.Millisecond, Sigma: 0.5}}})

	var (
		mu      sync.Mutex
		answers []payment.Charge
		wg      sync.WaitGroup
	)
	for range 10 {
		wg.Go(func() {
			a, err := do(context.Background(), "POST", b.url+"/v1/charges", "claim-1", krw(11000))
			if err != nil {
				t.Errorf("charge: %v", err)
				return
			}
			ch := a.charge(t)
			mu.Lock()
			answers = append(answers, ch)
			mu.Unlock()
		})
	}
	wg.Wait()
	for range 10 {
		answers = append(answers, mustDo(t, "POST", b.url+"/v1/charges", "claim-1", krw(11000)).charge(t))
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
	if len(ledger) != 1 {
		t.Fatalf("ledger has %d entries, want 1", len(ledger))
	}
	if got := ledger[0]; got.Key != "claim-1" || got.Amount != 11000 || got.Attempts != 20 || got.Charge != answers[0] {
		t.Errorf("ledger entry = %+v, want key claim-1, amount 11000, 20 attempts, charge %+v", got, answers[0])
	}
	if st := b.sim.Stats(); st.Charges != 1 || st.Replays != 19 {
		t.Errorf("stats charges=%d replays=%d, want 1 and 19", st.Charges, st.Replays)
	}
}

func TestChargeWithDifferentRequestConflicts(t *testing.T) {
	t.Parallel()
	b := setup(t, pgsim.Config{})
	mustDo(t, "POST", b.url+"/v1/charges", "k", krw(100)).charge(t)
	a := mustDo(t, "POST", b.url+"/v1/charges", "k", krw(200))
	if a.status != http.StatusUnprocessableEntity || a.code(t) != dibs.ECONFLICT {
		t.Errorf("status = %d %s, want 422 conflict", a.status, a.body)
	}
	if l := b.sim.Ledger(); len(l) != 1 || l[0].Amount != 100 {
		t.Errorf("ledger = %+v, want one charge of 100", l)
	}
}

func TestChargeValidation(t *testing.T) {
	t.Parallel()
	b := setup(t, pgsim.Config{})
	for _, tt := range []struct {
		name string
		key  string
		body any
	}{
		{"no key", "", krw(1)},
		{"zero amount", "k", krw(0)},
		{"bad currency", "k", payment.ChargeRequest{Amount: 1, Currency: "won"}},
		{"unknown field", "k", map[string]any{"amount": 1, "currency": "KRW", "tip": 5}},
		{"not json", "k", "amount=1"},
	} {
		a := mustDo(t, "POST", b.url+"/v1/charges", tt.key, tt.body)
		if a.status != http.StatusBadRequest || a.code(t) != dibs.EINVALID {
			t.Errorf("%s: status = %d %s, want 400 invalid", tt.name, a.status, a.body)
		}
	}
	if l := b.sim.Ledger(); len(l) != 0 {
		t.Errorf("ledger = %+v, want empty", l)
	}
}

func TestDeclineRate(t *testing.T) {
	t.Parallel()
	const n, rate = 3000, 0.1
	run := func() int64 {
		b := setup(t, pgsim.Config{Knobs: pgsim.Knobs{DeclineRate: rate}, Seed: 42})
		keys := make(chan int)
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for i := range keys {
					a, err := do(context.Background(), "POST", b.url+"/v1/charges", fmt.Sprintf("claim-%d", i), krw(1000))
					if err != nil || a.status != http.StatusOK {
						t.Errorf("charge %d: %v %d", i, err, a.status)
					}
				}
			})
		}
		for i := range n {
			keys <- i
		}
		close(keys)
		wg.Wait()

		st := b.sim.Stats()
		var declined int64
		for _, e := range b.sim.Ledger() {
			if e.Status == payment.StatusDeclined {
				declined++
				if e.DeclineReason == "" {
					t.Errorf("declined charge %s has no reason", e.Key)
				}
			}
		}
		if st.Charges != n || st.Declined != declined || st.Paid != n-declined {
			t.Errorf("stats = %+v, want %d charges, %d declined", st, n, declined)
		}
		return declined
	}

	declined := run()
	if got := float64(declined) / n; got < rate-0.03 || got > rate+0.03 {
		t.Errorf("decline rate = %.3f, want %.2f ± 0.03", got, rate)
	}
	// Every charge draws the same number of random values, so the seed
	// fixes the number of declines whatever the arrival order.
	if again := run(); again != declined {
		t.Errorf("same seed declined %d, then %d", declined, again)
	}
}

func TestLatencySample(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(7, 7))
	for _, tt := range []struct {
		l        pgsim.Latency
		p50, p90 time.Duration
	}{
		{pgsim.Latency{Base: 10 * time.Millisecond}, 10 * time.Millisecond, 10 * time.Millisecond},
		{pgsim.Latency{Base: 10 * time.Millisecond, Median: 20 * time.Millisecond}, 30 * time.Millisecond, 30 * time.Millisecond},
		// exp(0.5 × 1.2816) = 1.898
		{pgsim.Latency{Base: 10 * time.Millisecond, Median: 20 * time.Millisecond, Sigma: 0.5}, 30 * time.Millisecond, 10*time.Millisecond + 37960*time.Microsecond},
	} {
		s := make([]time.Duration, 20000)
		for i := range s {
			s[i] = tt.l.Sample(r)
			if s[i] < tt.l.Base {
				t.Fatalf("%+v: sample %s below base", tt.l, s[i])
			}
		}
		slices.Sort(s)
		near := func(got, want time.Duration) bool {
			return got >= want*95/100 && got <= want*105/100
		}
		if p50, p90 := s[len(s)/2], s[len(s)*9/10]; !near(p50, tt.p50) || !near(p90, tt.p90) {
			t.Errorf("%+v: p50 = %s, p90 = %s, want %s, %s (±5%%)", tt.l, p50, p90, tt.p50, tt.p90)
		}
	}
}

// TestLatencyIsHonoured runs in a synctest bubble with the simulator
// called in-process: the latency is waited on the bubble's fake clock, so
// every round trip takes the knob exactly, however busy the machine is.
func TestLatencyIsHonoured(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const base = 40 * time.Millisecond
		sim, err := pgsim.New(pgsim.Config{Seed: 1, Knobs: pgsim.Knobs{Latency: pgsim.Latency{Base: base}}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		hc := &http.Client{Transport: inproc.Transport{Handler: sim}}
		for i := range 10 {
			body, _ := json.Marshal(krw(1))
			req, _ := http.NewRequest("POST", "http://pgsim.invalid/v1/charges", bytes.NewReader(body))
			req.Header.Set("Idempotency-Key", fmt.Sprintf("k%d", i))
			start := time.Now()
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if took := time.Since(start); resp.StatusCode != http.StatusOK || took != base {
				t.Errorf("charge %d: %d after %s, want 200 after %s", i, resp.StatusCode, took, base)
			}
		}
	})
}

func TestTimeoutHangsAndMayApply(t *testing.T) {
	t.Parallel()
	for _, applied := range []bool{true, false} {
		t.Run(fmt.Sprintf("applied=%v", applied), func(t *testing.T) {
			t.Parallel()
			k := pgsim.Knobs{TimeoutRate: 1, Hang: time.Minute}
			if applied {
				k.FaultApplied = 1
			}
			b := setup(t, pgsim.Config{Knobs: k})

			// The client gives up once the simulator holds the request
			// (it counts the timeout after applying it or not), never
			// on a clock: a starved machine may take any time to
			// deliver the request.
			ctx, cancel := context.WithCancel(context.Background())
			errc := make(chan error, 1)
			go func() {
				a, err := do(ctx, "POST", b.url+"/v1/charges", "k", krw(5))
				if err == nil {
					err = fmt.Errorf("charge answered %d %s, want the client to give up", a.status, a.body)
				} else {
					err = nil
				}
				errc <- err
			}()
			testenv.WaitFor(t, "the charge to hang", func() bool { return b.sim.Stats().Timeouts == 1 })
			cancel()
			if err := <-errc; err != nil {
				t.Fatal(err)
			}

			a := mustDo(t, "GET", b.url+"/v1/charges/k", "", nil)
			if applied {
				if ch := a.charge(t); ch.Key != "k" || ch.Status != payment.StatusPaid {
					t.Errorf("lookup = %+v, want paid charge k", ch)
				}
			} else if a.status != http.StatusNotFound || a.code(t) != dibs.ENOTFOUND {
				t.Errorf("lookup = %d %s, want 404", a.status, a.body)
			}
			if st := b.sim.Stats(); st.Timeouts != 1 {
				t.Errorf("timeouts = %d, want 1", st.Timeouts)
			}
		})
	}
}

func TestHangEndsWith504(t *testing.T) {
	t.Parallel()
	b := setup(t, pgsim.Config{Knobs: pgsim.Knobs{TimeoutRate: 1, Hang: 20 * time.Millisecond}})
	if a := mustDo(t, "POST", b.url+"/v1/charges", "k", krw(5)); a.status != http.StatusGatewayTimeout {
		t.Errorf("status = %d, want 504", a.status)
	}
}

func TestResetAndErrorFaults(t *testing.T) {
	t.Parallel()
	b := setup(t, pgsim.Config{Knobs: pgsim.Knobs{ResetRate: 1}})
	if a, err := do(context.Background(), "POST", b.url+"/v1/charges", "k", krw(5)); err == nil {
		t.Errorf("reset fault answered %d %s, want a transport error", a.status, a.body)
	}
	if st := b.sim.Stats(); st.Resets < 1 {
		t.Errorf("resets = %d, want ≥ 1", st.Resets)
	}

	b = setup(t, pgsim.Config{Knobs: pgsim.Knobs{ErrorRate: 1}})
	if a := mustDo(t, "POST", b.url+"/v1/charges", "k", krw(5)); a.status != http.StatusInternalServerError {
		t.Errorf("error fault answered %d, want 500", a.status)
	}
	if st := b.sim.Stats(); st.Errors != 1 {
		t.Errorf("errors = %d, want 1", st.Errors)
	}
}

func TestConcurrencyCap(t *testing.T) {
	t.Parallel()
	const limit = 3
	b := setup(t, pgsim.Config{Knobs: pgsim.Knobs{MaxConcurrency: limit, TimeoutRate: 1, Hang: time.Minute}})

	// Fill the gateway with requests that hang until we let go.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range limit {
		wg.Go(func() { do(ctx, "POST", b.url+"/v1/charges", fmt.Sprintf("hang-%d", i), krw(1)) })
	}
	testenv.WaitFor(t, "the cap to fill", func() bool { return b.sim.Stats().InFlight == limit })

	for i := range 5 {
		a := mustDo(t, "POST", b.url+"/v1/charges", fmt.Sprintf("excess-%d", i), krw(1))
		if a.status != http.StatusServiceUnavailable || a.code(t) != dibs.EOVERLOADED {
			t.Errorf("excess request %d = %d %s, want 503 overloaded", i, a.status, a.body)
		}
	}
	cancel()
	wg.Wait()
	testenv.WaitFor(t, "the hanging requests to end", func() bool { return b.sim.Stats().InFlight == 0 })

	st := b.sim.Stats()
	if st.Overloaded != 5 || st.MaxInFlight != limit {
		t.Errorf("overloaded = %d, max in flight = %d, want 5 and %d", st.Overloaded, st.MaxInFlight, limit)
	}
	for _, e := range b.sim.Ledger() {
		if strings.HasPrefix(e.Key, "excess") {
			t.Errorf("overloaded request %s reached the ledger", e.Key)
		}
	}
}

func TestScheduledOutage(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 11, 11, 11, 0, 0, 0, time.UTC)
	clk := &clock{now: t0}
	w, err := pgsim.ParseWindow("1s+2s")
	if err != nil {
		t.Fatal(err)
	}
	b := setup(t, pgsim.Config{Outages: []pgsim.Window{w}, Now: clk.Now})

	for _, tt := range []struct {
		at   time.Duration
		down bool
	}{{500 * time.Millisecond, false}, {time.Second, true}, {2900 * time.Millisecond, true}, {3 * time.Second, false}} {
		clk.Set(t0.Add(tt.at))
		a := mustDo(t, "POST", b.url+"/v1/charges", fmt.Sprintf("k-%s", tt.at), krw(1))
		switch {
		case tt.down && (a.status != http.StatusServiceUnavailable || a.code(t) != dibs.EUNAVAILABLE):
			t.Errorf("at %s: %d %s, want 503 unavailable", tt.at, a.status, a.body)
		case !tt.down && a.status != http.StatusOK:
			t.Errorf("at %s: %d %s, want 200", tt.at, a.status, a.body)
		}
		if got := b.sim.InOutage(); got != tt.down {
			t.Errorf("at %s: InOutage = %v, want %v", tt.at, got, tt.down)
		}
	}
	if got := len(b.sim.Ledger()); got != 2 {
		t.Errorf("ledger has %d entries, want 2 (outage requests never applied)", got)
	}
}

func TestOutageToggle(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 11, 11, 11, 0, 0, 0, time.UTC)
	clk := &clock{now: t0}
	b := setup(t, pgsim.Config{Now: clk.Now})

	lookup := func() int { return mustDo(t, "GET", b.url+"/v1/charges/none", "", nil).status }
	if a := mustDo(t, "POST", b.url+"/admin/outage", "", map[string]any{"down": true}); a.status != http.StatusOK {
		t.Fatalf("toggle: %d %s", a.status, a.body)
	}
	if got := lookup(); got != http.StatusServiceUnavailable {
		t.Errorf("during outage lookup = %d, want 503", got)
	}
	mustDo(t, "POST", b.url+"/admin/outage", "", map[string]any{"down": false})
	if got := lookup(); got != http.StatusNotFound {
		t.Errorf("after outage lookup = %d, want 404", got)
	}

	mustDo(t, "POST", b.url+"/admin/outage", "", map[string]any{"down": true, "for": "10s"})
	clk.Set(t0.Add(9 * time.Second))
	if got := lookup(); got != http.StatusServiceUnavailable {
		t.Errorf("9s into a 10s outage lookup = %d, want 503", got)
	}
	clk.Set(t0.Add(10 * time.Second))
	if got := lookup(); got != http.StatusNotFound {
		t.Errorf("10s into a 10s outage lookup = %d, want 404", got)
	}
	if a := mustDo(t, "POST", b.url+"/admin/outage", "", map[string]any{"down": true, "for": "soon"}); a.status != http.StatusBadRequest {
		t.Errorf("bad duration: %d, want 400", a.status)
	}
}

func TestOutageModes(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{pgsim.OutageReset, pgsim.OutageTimeout} {
		b := setup(t, pgsim.Config{Knobs: pgsim.Knobs{OutageMode: mode, Hang: time.Minute}})
		b.sim.SetOutage(true, 0)
		// The client gives up once the outage holds its request, not on a
		// clock; a reset ends the request by itself.
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { _, err := do(ctx, "POST", b.url+"/v1/charges", "k", krw(1)); errc <- err }()
		testenv.WaitFor(t, "the request to meet the outage", func() bool { return b.sim.Stats().OutageHits == 1 })
		if mode == pgsim.OutageTimeout {
			cancel()
		}
		if err := <-errc; err == nil {
			t.Errorf("%s outage answered, want a transport error", mode)
		}
		cancel()
		if l := b.sim.Ledger(); len(l) != 0 {
			t.Errorf("%s outage applied %+v", mode, l)
		}
	}
}

func TestRefund(t *testing.T) {
	t.Parallel()
	b := setup(t, pgsim.Config{})
	paid := mustDo(t, "POST", b.url+"/v1/charges", "k", krw(7)).charge(t)

	r1 := mustDo(t, "POST", b.url+"/v1/charges/k/refund", "refund:k", nil).charge(t)
	r2 := mustDo(t, "POST", b.url+"/v1/charges/k/refund", "refund:k", nil).charge(t)
	r3 := mustDo(t, "POST", b.url+"/v1/charges/k/refund", "", nil).charge(t)
	if r1.Status != payment.StatusRefunded || r1.RefundedAt.IsZero() || r1.ChargeID != paid.ChargeID || r2 != r1 || r3 != r1 {
		t.Errorf("refunds = %+v, %+v, %+v; want the paid charge %s refunded once", r1, r2, r3, paid.ChargeID)
	}
	// A refund under another key would be a second refund of the charge.
	if a := mustDo(t, "POST", b.url+"/v1/charges/k/refund", "refund:other", nil); a.status != http.StatusConflict {
		t.Errorf("refund under another key = %d, want 409", a.status)
	}
	if e := b.sim.Ledger()[0]; e.RefundKey != "refund:k" || e.RefundAttempts != 3 || e.RefundsRefused != 1 {
		t.Errorf("ledger entry = %+v, want refunded under refund:k, asked 3 times, 1 other key refused", e)
	}
	if a := mustDo(t, "POST", b.url+"/v1/charges/nope/refund", "", nil); a.status != http.StatusNotFound {
		t.Errorf("refund of unknown key = %d, want 404", a.status)
	}
	if err := b.sim.SetKnobs(pgsim.Knobs{DeclineRate: 1}); err != nil {
		t.Fatal(err)
	}
	mustDo(t, "POST", b.url+"/v1/charges", "declined", krw(7))
	if a := mustDo(t, "POST", b.url+"/v1/charges/declined/refund", "", nil); a.status != http.StatusConflict {
		t.Errorf("refund of a declined charge = %d, want 409", a.status)
	}
	if st := b.sim.Stats(); st.Refunds != 1 {
		t.Errorf("refunds = %d, want 1", st.Refunds)
	}
}

func TestLedgerEndpoint(t *testing.T) {
	t.Parallel()
	b := setup(t, pgsim.Config{})
	for i := range 3 {
		mustDo(t, "POST", b.url+"/v1/charges", fmt.Sprintf("claim-%d", i), krw(int64(1000*(i+1))))
	}
	mustDo(t, "POST", b.url+"/v1/charges", "claim-0", krw(1000))
	mustDo(t, "POST", b.url+"/v1/charges/claim-2/refund", "", nil)

	a := mustDo(t, "GET", b.url+"/ledger", "", nil)
	var got []map[string]any
	if err := json.Unmarshal(a.body, &got); err != nil {
		t.Fatalf("decode ledger %s: %v", a.body, err)
	}
	want := []struct {
		key      string
		amount   float64
		status   string
		attempts float64
	}{{"claim-0", 1000, "paid", 2}, {"claim-1", 2000, "paid", 1}, {"claim-2", 3000, "refunded", 1}}
	if len(got) != len(want) {
		t.Fatalf("ledger has %d entries, want %d: %s", len(got), len(want), a.body)
	}
	for i, w := range want {
		e := got[i]
		if e["key"] != w.key || e["amount"] != w.amount || e["status"] != w.status || e["attempts"] != w.attempts ||
			e["charge_id"] == "" || e["created_at"] == nil || e["updated_at"] == nil || e["currency"] != "KRW" {
			t.Errorf("entry %d = %v, want key %s amount %v status %s attempts %v", i, e, w.key, w.amount, w.status, w.attempts)
		}
	}
}

func TestKnobsEndpoint(t *testing.T) {
	t.Parallel()
	b := setup(t, pgsim.Config{Knobs: pgsim.DefaultKnobs()})
	a := mustDo(t, "PUT", b.url+"/admin/knobs", "", map[string]any{"decline_rate": 1, "latency": "1ms"})
	if a.status != http.StatusOK {
		t.Fatalf("put knobs: %d %s", a.status, a.body)
	}
	want := pgsim.DefaultKnobs()
	want.DeclineRate = 1
	want.Latency.Base = time.Millisecond
	if got := b.sim.Knobs(); got != want {
		t.Errorf("knobs = %v, want %v", got, want)
	}
	var echoed pgsim.Knobs
	if err := json.Unmarshal(mustDo(t, "GET", b.url+"/admin/knobs", "", nil).body, &echoed); err != nil || echoed != want {
		t.Errorf("GET knobs = %v (%v), want %v", echoed, err, want)
	}
	for _, body := range []map[string]any{{"decline_rate": 2}, {"timeout_rate": 0.6, "reset_rate": 0.6}, {"hang": "forever"}, {"decline-rate": 0.5}} {
		if a := mustDo(t, "PUT", b.url+"/admin/knobs", "", body); a.status != http.StatusBadRequest {
			t.Errorf("put %v = %d, want 400", body, a.status)
		}
	}
	if got := b.sim.Knobs(); got != want {
		t.Errorf("after bad puts knobs = %v, want %v", got, want)
	}
}

func TestAPIKey(t *testing.T) {
	t.Parallel()
	b := setup(t, pgsim.Config{APIKey: "s3cret"})
	if a := mustDo(t, "GET", b.url+"/v1/charges/k", "", nil); a.status != http.StatusUnauthorized {
		t.Errorf("without key = %d, want 401", a.status)
	}
	req, _ := http.NewRequest("GET", b.url+"/v1/charges/k", nil)
	req.Header.Set("Authorization", "Bearer s3cret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("with key = %d, want 404", resp.StatusCode)
	}
}

func TestCloseAbortsHeldRequests(t *testing.T) {
	t.Parallel()
	b := setup(t, pgsim.Config{Knobs: pgsim.Knobs{TimeoutRate: 1, Hang: time.Hour}})
	errc := make(chan error, 1)
	go func() {
		_, err := do(context.Background(), "POST", b.url+"/v1/charges", "k", krw(1))
		errc <- err
	}()
	testenv.WaitFor(t, "the request to hang", func() bool { return b.sim.Stats().InFlight == 1 })
	b.sim.Close()
	select {
	case err := <-errc:
		if err == nil {
			t.Error("held request got an answer, want its connection dropped")
		}
	case <-time.After(time.Minute): // ends a hung test; never reached on a starved machine
		t.Fatal("Close did not release the held request")
	}
}

func TestParseWindow(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in   string
		want pgsim.Window
		ok   bool
	}{
		{"30s+10s", pgsim.Window{Start: 30 * time.Second, Duration: 10 * time.Second}, true},
		{"0s+500ms", pgsim.Window{Duration: 500 * time.Millisecond}, true},
		{" 1m + 1s ", pgsim.Window{Start: time.Minute, Duration: time.Second}, true},
		{"30s", pgsim.Window{}, false},
		{"30s+0s", pgsim.Window{}, false},
		{"-1s+1s", pgsim.Window{}, false},
		{"x+1s", pgsim.Window{}, false},
	} {
		got, err := pgsim.ParseWindow(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseWindow(%q) = %v, %v; want %v, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
		if tt.ok {
			if again, _ := pgsim.ParseWindow(got.String()); again != got {
				t.Errorf("ParseWindow(%q.String()) = %v, want %v", tt.in, again, got)
			}
		}
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		cfg  pgsim.Config
		ok   bool
	}{
		{"zero", pgsim.Config{}, true},
		{"defaults", pgsim.Config{Knobs: pgsim.DefaultKnobs()}, true},
		{"rate over 1", pgsim.Config{Knobs: pgsim.Knobs{DeclineRate: 1.5}}, false},
		{"faults over 1", pgsim.Config{Knobs: pgsim.Knobs{TimeoutRate: 0.5, ErrorRate: 0.6}}, false},
		{"negative latency", pgsim.Config{Knobs: pgsim.Knobs{Latency: pgsim.Latency{Base: -1}}}, false},
		{"bad outage mode", pgsim.Config{Knobs: pgsim.Knobs{OutageMode: "meteor"}}, false},
		{"bad window", pgsim.Config{Outages: []pgsim.Window{{Start: time.Second}}}, false},
	} {
		err := tt.cfg.Validate()
		if (err == nil) != tt.ok {
			t.Errorf("%s: Validate() = %v, want ok %v", tt.name, err, tt.ok)
		}
		if err != nil && dibs.ErrorCode(err) != dibs.EINVALID {
			t.Errorf("%s: code = %s, want %s", tt.name, dibs.ErrorCode(err), dibs.EINVALID)
		}
	}
}
