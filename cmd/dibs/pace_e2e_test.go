package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/internal/testenv"
	"github.com/dibs-io/dibs/loadgen"
	"github.com/dibs-io/dibs/pace"
	"github.com/dibs-io/dibs/passport"
	"github.com/dibs-io/dibs/payment/pgsim"
	"github.com/dibs-io/dibs/post"
)

// TestPaceAutoSlowsForASlowGateway: an auto-paced purchase drop whose
// payment gateway slows down mid-event admits slower, and ends with every
// charge asked for paid, once, and none shed by the gateway.
//
// The gateway takes 16 requests at once (more are answered 503
// "overloaded") and answers in 2 ms; the node sends at most 16 charges at
// once. A crowd joins the waiting room, claims as it is admitted and pays.
// While the gateway is fast the pace grows from its minimum; once it is
// well on its way the gateway answers in 500 ms, two and a half times
// --pace-latency, and the pace must fall to half its best or less, for
// that reason. The crowd still waiting
// then leaves, and every charge asked for must settle paid.
func TestPaceAutoSlowsForASlowGateway(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("end-to-end pace test")
	}
	const (
		drop    = "paced"
		stock   = 300
		users   = 450
		conns   = 16
		minRate = 5
		maxRate = 200
		// The pace starts at minRate and grows by maxRate/20 a healthy
		// second: the gateway slows once it reached this.
		slowAt = 35
	)
	fast := pgsim.Knobs{Latency: pgsim.Latency{Base: 2 * time.Millisecond}, MaxConcurrency: conns, Hang: time.Minute}
	sim, err := pgsim.New(pgsim.Config{Seed: 1, Knobs: fast}, nil)
	if err != nil {
		t.Fatal(err)
	}
	gw := httptest.NewServer(sim)
	t.Cleanup(func() { sim.Close(); gw.Close() })

	cfg := testConfig(t)
	cfg.Post.PaymentGateway = gw.URL
	cfg.Post.PaymentConns = conns
	cfg.Post.PaymentTimeout = 5 * time.Second // well above the slowed gateway: no charge times out
	cfg.Post.RetryMin, cfg.Post.RetryMax = 50*time.Millisecond, 500*time.Millisecond
	cfg.Pace = PaceConfig{Latency: 200 * time.Millisecond, Backlog: 500}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	m := NewMain(cfg, slog.New(slog.DiscardHandler))
	if err := m.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := loadgen.CreateDrop(ctx, nil, m.URL(), testAdminToken, loadgen.DropSpec{
		ID: drop, Kind: dibs.KindPurchase, Stock: stock, HoldTTL: time.Hour, Price: 1000, QueueRate: minRate,
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.engine.SetAdmission(ctx, drop, dibs.Admission{Rate: minRate, Pace: dibs.PaceAuto, MinRate: minRate, MaxRate: maxRate}); err != nil {
		t.Fatal(err)
	}

	// The crowd: each user joins, polls as advised until admitted, claims
	// and pays. Those still waiting leave once leave is closed; one that
	// was admitted goes on to pay.
	leave := make(chan struct{})
	var (
		wg    sync.WaitGroup
		asked atomic.Int64
	)
	client := &http.Client{Timeout: 30 * time.Second}
	for i := range users {
		tok, err := passport.Issue([]byte(testPassportSecret), fmt.Sprintf("buyer%d", i), time.Now(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			if paceBuyer(ctx, client, m.URL(), drop, tok, leave) {
				asked.Add(1)
			}
		})
	}
	stopCrowd := sync.OnceFunc(func() { close(leave); wg.Wait() })
	t.Cleanup(stopCrowd)

	rate := func() int {
		var q struct{ Rate int }
		if status := paceCall(ctx, client, "GET", m.URL()+"/v1/drops/"+drop+"/queue", "", nil, &q); status != http.StatusOK {
			t.Fatalf("GET queue: %d", status)
		}
		return q.Rate
	}
	before := 0
	testenv.WaitFor(t, fmt.Sprintf("the pace to reach %d/s while the gateway is fast", slowAt), func() bool {
		before = max(before, rate())
		return before >= slowAt
	})
	slow := fast
	slow.Latency.Base = 500 * time.Millisecond
	if err := sim.SetKnobs(slow); err != nil {
		t.Fatal(err)
	}
	slowed := time.Now()
	// The pace also never exceeds the free stock: the cut must be the
	// gateway's latency's doing.
	after := before
	took := testenv.WaitFor(t, fmt.Sprintf("the pace to fall from %d/s to half of it for the gateway's latency", before), func() bool {
		after = min(after, rate())
		return after <= before/2 && m.pacer.Reason(drop) == pace.ReasonLatency
	})
	t.Logf("pace: %d/s at best while the gateway was fast, %d/s %s after it slowed", before, after, took.Round(time.Millisecond))
	if d, err := m.engine.Drop(drop); err != nil || d.Admission.Pace != dibs.PaceAuto {
		t.Fatalf("the drop's admission after pacing: %+v, %v", d, err)
	}

	stopCrowd()
	if ctx.Err() != nil {
		t.Fatalf("the crowd ran out of time: %d asked to pay", asked.Load())
	}
	want := asked.Load()
	if want == 0 {
		t.Fatal("nobody asked to pay")
	}
	var st struct{ Held, Paid, Released, Expired, Remaining int64 }
	testenv.WaitFor(t, fmt.Sprintf("the %d charges asked for to be paid", want), func() bool {
		if status := paceCall(ctx, client, "GET", m.URL()+"/v1/admin/drops/"+drop, testAdminToken, nil, &st); status != http.StatusOK {
			t.Fatalf("GET drop stats: %d", status)
		}
		return st.Paid >= want && paceChargesDone(t, ctx, client, m.URL(), drop)
	})
	settled := time.Since(slowed)

	if st.Paid != want || st.Held != 0 || st.Released != 0 || st.Expired != 0 {
		t.Errorf("the record has %d paid, %d held, %d released, %d expired; want the %d that asked to pay, paid", st.Paid, st.Held, st.Released, st.Expired, want)
	}
	charges := map[string]int{}
	for _, e := range sim.Ledger() {
		charges[e.Reference]++
		if e.Status != "paid" {
			t.Errorf("charge %s (%s) is %s, want paid", e.Key, e.Reference, e.Status)
		}
	}
	for ref, n := range charges {
		if n != 1 {
			t.Errorf("%s charged %d times", ref, n)
		}
	}
	if int64(len(charges)) != want {
		t.Errorf("the gateway charged %d claims, want the %d that asked to pay", len(charges), want)
	}
	stats := sim.Stats()
	if stats.Overloaded != 0 {
		t.Errorf("the gateway shed %d requests as overloaded (at most %d in flight at once)", stats.Overloaded, stats.MaxInFlight)
	}
	t.Logf("%d asked to pay, %d paid; gateway: %d charges, %d requests, %d overloaded, %d in flight at most; settled %s after the slowdown",
		want, st.Paid, stats.Charges, stats.Requests, stats.Overloaded, stats.MaxInFlight, settled.Round(time.Millisecond))
}

// paceBuyer joins the drop's waiting room, polls until admitted, claims
// with the admission and asks to pay; it reports whether the payment was
// asked for. A buyer still waiting when leave is closed gives up.
func paceBuyer(ctx context.Context, c *http.Client, base, drop, token string, leave <-chan struct{}) bool {
	var tk struct {
		Ticket      string `json:"ticket"`
		State       string `json:"state"`
		PollAfterMS int64  `json:"poll_after_ms"`
		Admission   string `json:"admission"`
	}
	retry := func() bool { // false: give up
		select {
		case <-ctx.Done():
			return false
		case <-leave:
			return false
		case <-time.After(100 * time.Millisecond):
			return true
		}
	}
	for {
		if status := paceCall(ctx, c, "POST", base+"/v1/drops/"+drop+"/queue", token, nil, &tk); status < 300 && tk.Ticket != "" {
			break
		}
		if !retry() {
			return false
		}
	}
	ticket := tk.Ticket
	for tk.State != string(dibs.QueueAdmitted) {
		switch tk.State {
		case string(dibs.QueueSoldOut), string(dibs.QueueClosed), string(dibs.QueueExpired), string(dibs.QueueWon):
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-leave:
			return false
		case <-time.After(time.Duration(max(tk.PollAfterMS, 50)) * time.Millisecond):
		}
		tk.State = ""
		if paceCall(ctx, c, "GET", base+"/v1/drops/"+drop+"/queue/"+ticket, token, nil, &tk) != http.StatusOK {
			tk.State = ""
		}
	}
	// Admitted: from here the buyer finishes whatever leave says.
	var claim struct {
		ClaimID string `json:"claim_id"`
	}
	for {
		status := paceCall(ctx, c, "POST", base+"/v1/drops/"+drop+"/claims", token, http.Header{"Dibs-Admission": {tk.Admission}}, &claim)
		if status == http.StatusCreated || status == http.StatusOK {
			break
		}
		if ctx.Err() != nil || (status >= 400 && status < 500 && status != http.StatusTooManyRequests) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	for paceCall(ctx, c, "POST", base+"/v1/claims/"+claim.ClaimID+"/pay", token, nil, nil) != http.StatusAccepted {
		if ctx.Err() != nil {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

// paceChargesDone reports whether the drop has no charge job left to run.
func paceChargesDone(t *testing.T, ctx context.Context, c *http.Client, base, drop string) bool {
	t.Helper()
	var jobs struct{ Jobs []dibs.JobCount }
	if status := paceCall(ctx, c, "GET", base+"/v1/admin/drops/"+drop+"/jobs", testAdminToken, nil, &jobs); status != http.StatusOK {
		t.Fatalf("GET jobs: %d", status)
	}
	for _, j := range jobs.Jobs {
		if j.Kind == post.KindChargePayment && j.State != "completed" && j.Count > 0 {
			return false
		}
	}
	return true
}

// paceCall sends a request with token as its bearer and decodes a JSON
// answer into out (if not nil); it returns the status, 0 if none came.
func paceCall(ctx context.Context, c *http.Client, method, url, token string, h http.Header, out any) int {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(nil))
	if err != nil {
		return 0
	}
	for k, v := range h {
		req.Header[k] = v
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := c.Do(req)
	if err != nil {
		return 0
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if out != nil && res.StatusCode < 300 {
		json.Unmarshal(body, out)
	}
	return res.StatusCode
}
