package main_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dibs-io/dibs/passport"
	"github.com/dibs-io/dibs/postgres/pgtest"
	"github.com/dibs-io/dibs/webhook"
)

// TestPaymentsSurviveFaultsAndKills: post-processing pays each claim exactly
// once through gateway faults and node kills, on the embedded default.
func TestPaymentsSurviveFaultsAndKills(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("end-to-end crash test")
	}
	testPaymentsSurvive(t)
}

// TestPaymentsSurviveFaultsAndKillsPostgres is the same with the record
// and the job queue in PostgreSQL.
func TestPaymentsSurviveFaultsAndKillsPostgres(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("end-to-end crash test")
	}
	testPaymentsSurvive(t, "--postgres", pgtest.SchemaURL(t))
}

// testPaymentsSurvive: winners of a purchase drop pay while the payment
// gateway resets a tenth of the connections, hangs past the client's
// timeout on some charges (applying half of those anyway) and declines 5%,
// and while the node is killed with SIGKILL again and again. Once the
// faults stop, within 60 s every claim is paid or released, the gateway
// charged each claim at most once, every paid claim has its paid charge and
// every released one its declined charge, each released slot is sold again
// exactly once, and the main service heard of each outcome.
func testPaymentsSurvive(t *testing.T, extra ...string) {
	const (
		stock  = 150
		users  = 300
		kills  = 4
		drop   = "phones"
		hookTo = "0123456789abcdef-hook"
	)
	pg := startPgsim(t, "--decline-rate", "0.05", "--reset-rate", "0.10", "--timeout-rate", "0.05",
		"--hang", "2s", "--fault-applied", "0.5", "--latency", "2ms", "--latency-median", "0")
	hooks := newHookCounter(t, []byte(hookTo))

	data := t.TempDir()
	args := append([]string{
		"--payment-gateway", pg, "--payment-timeout", "300ms",
		"--webhook-url", hooks.url, "--job-retry-min", "50ms", "--job-retry-max", "500ms", "--job-rescue-after", "3s",
	}, extra...)
	env := []string{"DIBS_WEBHOOK_SECRET=" + hookTo}
	n := startNodeEnv(t, data, env, args...)
	createDrop(t, n.url, fmt.Sprintf(`{"id":%q,"title":"phones","kind":"purchase","stock":%d,"hold_ttl":"10m","price":990000}`, drop, stock))

	tokens := make([]string, users)
	for i := range tokens {
		tok, err := passport.Issue([]byte(e2eSecret), fmt.Sprintf("buyer%d", i), time.Now(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		tokens[i] = tok
	}
	var (
		mu    sync.Mutex
		base  = n.url
		owner = map[string]string{} // acknowledged claim id → its owner's passport
	)
	getBase := func() string { mu.Lock(); defer mu.Unlock(); return base }
	client := &http.Client{Timeout: 5 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Each buyer claims until answered, then pays until the payment is
	// recorded, whatever node incarnation answers.
	var wg sync.WaitGroup
	var next atomic.Int64
	for range 8 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= users || ctx.Err() != nil {
					return
				}
				var a claimAnswer
				for ctx.Err() == nil {
					var err error
					if a, err = claimAt(ctx, client, getBase(), drop, tokens[i]); err == nil && a.status != http.StatusServiceUnavailable {
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
				if a.status != http.StatusCreated && a.status != http.StatusOK {
					continue
				}
				mu.Lock()
				owner[a.ClaimID] = tokens[i]
				mu.Unlock()
				for ctx.Err() == nil {
					status, _ := call(ctx, client, "POST", getBase()+"/v1/claims/"+a.ClaimID+"/pay", tokens[i])
					if status == http.StatusAccepted {
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
		})
	}
	for k := range kills { // while buyers claim and pay and the jobs charge them
		time.Sleep(1500 * time.Millisecond)
		n.kill()
		n = startNodeEnv(t, data, env, args...)
		mu.Lock()
		base = n.url
		t.Logf("kill %d: restarted with %d claims acknowledged", k+1, len(owner))
		mu.Unlock()
	}
	wg.Wait()

	// The faults stop; declines go on, as they would.
	if status, body := call(ctx, client, "PUT", pg+"/admin/knobs", "", `{"reset_rate":0,"timeout_rate":0}`); status != http.StatusOK {
		t.Fatalf("pgsim knobs: %d %s", status, body)
	}
	stopped := time.Now()
	var st struct{ Held, Paid, Released, Expired, Remaining int64 }
	for {
		getJSON(t, n.url+"/v1/admin/drops/"+drop, &st)
		busy := unfinishedJobs(t, n.url, drop)
		if st.Held == 0 && len(busy) == 0 && hooks.distinct("notify_winner")+hooks.distinct("payment_failed") == int(st.Paid+st.Released) {
			break
		}
		if time.Since(stopped) > 60*time.Second {
			t.Fatalf("60 s after the faults stopped: %+v, jobs not done %v, webhooks %v", st, busy, hooks.summary())
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("drained %s after the faults stopped: %+v", time.Since(stopped).Round(time.Millisecond), st)

	// Every acknowledged claim is in exactly one terminal state.
	states := map[string]string{}
	for id, tok := range owner {
		status, body := call(ctx, client, "GET", n.url+"/v1/claims/"+id, tok)
		var c struct{ State string }
		if status != http.StatusOK || json.Unmarshal(body, &c) != nil {
			t.Fatalf("claim %s: %d %s", id, status, body)
		}
		if c.State != "paid" && c.State != "released" {
			t.Errorf("claim %s ended %s, want paid or released", id, c.State)
		}
		states[id] = c.State
	}
	if int64(len(owner)) != st.Paid+st.Released+st.Expired {
		t.Errorf("%d claims acknowledged, the record has %d paid + %d released + %d expired", len(owner), st.Paid, st.Released, st.Expired)
	}

	// The gateway charged each claim at most once, under the claim's id,
	// and agrees with the record. Charges are counted by the reference
	// they carry (drop/claim), not by key: a second key for one claim
	// would be a second charge.
	var ledger []struct {
		Key, Status, Reference string
		Attempts               int
	}
	getJSON(t, pg+"/ledger", &ledger)
	charged := map[string]string{}
	for _, e := range ledger {
		claim := strings.TrimPrefix(e.Reference, drop+"/")
		if claim != e.Key {
			t.Errorf("charge under key %s is for %q", e.Key, e.Reference)
		}
		if _, dup := charged[claim]; dup {
			t.Errorf("claim %s charged twice", claim)
		}
		charged[claim] = e.Status
		want := map[string]string{"paid": "paid", "declined": "released"}[e.Status]
		if states[claim] != want {
			t.Errorf("charge %s is %s but its claim is %q", claim, e.Status, states[claim])
		}
	}
	for id, s := range states {
		want := map[string]string{"paid": "paid", "released": "declined"}[s]
		if charged[id] != want {
			t.Errorf("claim %s is %s but its charge is %q", id, s, charged[id])
		}
	}

	// Each released slot came back exactly once: what the gate has free
	// is what is not paid, and new buyers win exactly that.
	if st.Paid+st.Remaining != stock {
		t.Errorf("%d paid and %d remaining of %d after %d releases", st.Paid, st.Remaining, stock, st.Released)
	}
	won := 0
	for i := range st.Remaining + 5 {
		tok, _ := passport.Issue([]byte(e2eSecret), fmt.Sprintf("late%d", i), time.Now(), time.Hour)
		a, err := claimAt(ctx, client, n.url, drop, tok)
		if err != nil {
			t.Fatal(err)
		}
		if a.status == http.StatusCreated {
			won++
		}
	}
	if int64(won) != st.Remaining {
		t.Errorf("late buyers won %d slots, want the %d remaining", won, st.Remaining)
	}

	// The main service heard of every outcome, each verified, each once
	// after deduplication by id.
	if hooks.distinct("notify_winner") != int(st.Paid) || hooks.distinct("payment_failed") != int(st.Released) || hooks.bad.Load() != 0 {
		t.Errorf("webhooks %v for %d paid and %d released", hooks.summary(), st.Paid, st.Released)
	}
	t.Logf("%d claims: %d paid, %d released; %d charges; webhooks %v", len(owner), st.Paid, st.Released, len(ledger), hooks.summary())
}

// TestLateChargesAreRefunded: money a charge takes after its hold ended
// goes back, once, on the embedded default.
func TestLateChargesAreRefunded(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("end-to-end crash test")
	}
	testLateChargesRefunded(t)
}

// TestLateChargesAreRefundedPostgres is the same with the record and the
// job queue in PostgreSQL.
func TestLateChargesAreRefundedPostgres(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("end-to-end crash test")
	}
	testLateChargesRefunded(t, "--postgres", pgtest.SchemaURL(t))
}

// testLateChargesRefunded: winners of two purchase drops pay at once; the
// gateway applies every charge on arrival but answers only 15 s later. The
// holds of "late" (4 s, a payment grace of 1 ms) expire before their
// charges are answered, so their money arrives late; those of "live" (10
// minutes) are paid. While the refunds of the late charges are in flight,
// the node is killed with SIGKILL and restarted. In the end every charge of
// an expired claim is refunded exactly once, under refund:<claim id>,
// though a third of the refund requests are reset (retried), no
// charge of a paid claim is refunded, and the main service heard one
// payment_refunded per refund and none for a paid claim.
func testLateChargesRefunded(t *testing.T, extra ...string) {
	const (
		lateDrop, liveDrop = "late", "live"
		lateN, liveN       = 6, 3
		hookTo             = "0123456789abcdef-hook"
	)
	// A 15 s answer against holds of 4 s: the charge goes out within the
	// hold (River fetches a new job within a second), and the expiry runs
	// within River's scheduler interval (5 s) of the deadline, well before
	// the answer. A charge answered first makes a paid claim, checked as
	// such; one sent after the expiry is never sent, a claim that expired
	// unpaid.
	pg := startPgsim(t, "--decline-rate", "0", "--latency", "15s", "--latency-median", "0")
	hooks := newHookCounter(t, []byte(hookTo))
	data := t.TempDir()
	env := []string{"DIBS_WEBHOOK_SECRET=" + hookTo}
	args := func(rescueAfter string) []string {
		return append([]string{
			"--payment-gateway", pg, "--payment-timeout", "20s", "--payment-grace", "1ms",
			"--webhook-url", hooks.url, "--job-retry-min", "50ms", "--job-retry-max", "500ms",
			"--job-rescue-after", rescueAfter,
		}, extra...)
	}
	// A run of the first node may wait 15 s for a lookup and 15 s for a
	// charge: it takes a job for lost only after 45 s.
	n := startNodeEnv(t, data, env, args("45s")...)
	createDrop(t, n.url, fmt.Sprintf(`{"id":%q,"title":"late","kind":"purchase","stock":%d,"hold_ttl":"4s","price":1000}`, lateDrop, lateN))
	createDrop(t, n.url, fmt.Sprintf(`{"id":%q,"title":"live","kind":"purchase","stock":%d,"hold_ttl":"10m","price":1000}`, liveDrop, liveN))

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	client := &http.Client{Timeout: 10 * time.Second}
	owner := map[string]string{} // claim id → its owner's passport
	var lateIDs, liveIDs []string
	for _, d := range []struct {
		id  string
		n   int
		ids *[]string
	}{{lateDrop, lateN, &lateIDs}, {liveDrop, liveN, &liveIDs}} {
		for i := range d.n {
			tok, err := passport.Issue([]byte(e2eSecret), fmt.Sprintf("%s-buyer%d", d.id, i), time.Now(), time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			a, err := claimAt(ctx, client, n.url, d.id, tok)
			if err != nil || a.status != http.StatusCreated {
				t.Fatalf("claim %s: %v %d", d.id, err, a.status)
			}
			owner[a.ClaimID] = tok
			// A late hold may run out before its owner pays on a slow
			// machine: it then expires unpaid, with no charge.
			if status, body := call(ctx, client, "POST", n.url+"/v1/claims/"+a.ClaimID+"/pay", tok); status == http.StatusAccepted {
				*d.ids = append(*d.ids, a.ClaimID)
			} else if d.id == liveDrop {
				t.Fatalf("pay %s: %d %s", a.ClaimID, status, body)
			}
		}
	}
	if len(lateIDs) == 0 {
		t.Fatal("no late hold was paid for in time")
	}

	// Once the late holds have ended, the gateway answers within 1 s and
	// resets a third of the refunds (applying half of those anyway), so
	// refunds are retried; the node is killed while some are in flight.
	var st struct{ Held, Paid, Released, Expired, Remaining int64 }
	waitUntil(t, ctx, "the late holds to end", func() bool {
		getJSON(t, n.url+"/v1/admin/drops/"+lateDrop, &st)
		return st.Held == 0
	})
	if status, body := call(ctx, client, "PUT", pg+"/admin/knobs", "", `{"latency":"1s","reset_rate":0.3,"fault_applied":0.5}`); status != http.StatusOK {
		t.Fatalf("pgsim knobs: %d %s", status, body)
	}
	var pgst struct{ Refunds int64 }
	waitUntil(t, ctx, "a refund to reach the gateway", func() bool {
		getJSON(t, pg+"/stats", &pgst)
		return pgst.Refunds > 0
	}, func() string {
		var stats map[string]any
		var l []map[string]any
		getJSON(t, pg+"/stats", &stats)
		getJSON(t, pg+"/ledger", &l)
		return fmt.Sprintf("pgsim stats %v, ledger %v, late jobs %v, late drop %+v", stats, l, unfinishedJobs(t, n.url, lateDrop), st)
	})
	n.kill()
	t.Logf("killed with %d refunds applied by the gateway", pgst.Refunds)
	// The gateway answers within 1 s now: runs are short, and a job the
	// killed node held is run again 5 s after it started (plus River's
	// rescuer interval).
	n = startNodeEnv(t, data, env, args("5s")...)

	// Drained: no job left to run, and every refund the gateway made is
	// reported.
	var ledger []struct {
		Key, Status    string
		RefundKey      string `json:"refund_key"`
		RefundAttempts int    `json:"refund_attempts"`
		RefundsRefused int    `json:"refunds_refused"`
	}
	refunded := func() int {
		k := 0
		for _, e := range ledger {
			if e.Status == "refunded" {
				k++
			}
		}
		return k
	}
	waitUntil(t, ctx, "the jobs to drain", func() bool {
		getJSON(t, pg+"/ledger", &ledger)
		return len(unfinishedJobs(t, n.url, lateDrop)) == 0 && len(unfinishedJobs(t, n.url, liveDrop)) == 0 &&
			len(ledger) == len(lateIDs)+len(liveIDs) && hooks.distinct("payment_refunded") == refunded()
	})

	states := map[string]string{}
	for id, tok := range owner {
		status, body := call(ctx, client, "GET", n.url+"/v1/claims/"+id, tok)
		var c struct{ State string }
		if status != http.StatusOK || json.Unmarshal(body, &c) != nil {
			t.Fatalf("claim %s: %d %s", id, status, body)
		}
		states[id] = c.State
	}
	for _, id := range liveIDs {
		if states[id] != "paid" {
			t.Errorf("live claim %s is %s, want paid", id, states[id])
		}
	}
	lateCount, refundAsks := 0, 0
	for _, e := range ledger {
		refundAsks += e.RefundAttempts
		switch state := states[e.Key]; {
		case state == "paid":
			if e.Status != "paid" || e.RefundKey != "" {
				t.Errorf("charge of paid claim %s: %+v, want paid, never refunded", e.Key, e)
			}
		case state == "expired" || state == "released":
			lateCount++
			if e.Status != "refunded" || e.RefundKey != "refund:"+e.Key || e.RefundsRefused != 0 {
				t.Errorf("charge of %s claim %s: %+v, want refunded under refund:%s, no other refund asked", state, e.Key, e, e.Key)
			}
		default:
			t.Errorf("charge %+v is for a claim that is %q", e, state)
		}
	}
	if lateCount == 0 {
		t.Errorf("no charge arrived after its hold ended (states %v): the test proved nothing", states)
	}
	getJSON(t, pg+"/stats", &pgst)
	if int(pgst.Refunds) != lateCount {
		t.Errorf("the gateway made %d refunds for %d late charges", pgst.Refunds, lateCount)
	}

	// One payment_refunded per refunded claim, none for a paid one, each
	// verified; a repeat delivery (at least once) is deduplicated by id.
	for _, e := range ledger {
		id := "payment_refunded:" + e.Key
		if got, want := hooks.delivered(id), e.Status == "refunded"; got != want {
			t.Errorf("%s delivered: %v, want %v", id, got, want)
		}
	}
	if hooks.distinct("payment_refunded") != lateCount || hooks.bad.Load() != 0 {
		t.Errorf("webhooks %v for %d refunds", hooks.summary(), lateCount)
	}
	// More refund requests than refunds: runs cut by the kill asked again,
	// under the same key, and were answered with the refund already made.
	t.Logf("%d late charges refunded (%d refund requests), %d live claims paid; webhooks %v", lateCount, refundAsks, len(liveIDs), hooks.summary())
}

// waitUntil polls cond every 50 ms until it holds or ctx ends; then it
// fails with what detail says, if given.
func waitUntil(t *testing.T, ctx context.Context, what string, cond func() bool, detail ...func() string) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			var d string
			for _, f := range detail {
				d += "\n" + f()
			}
			t.Fatalf("gave up waiting for %s%s", what, d)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// unfinishedJobs lists the drop's jobs that still wait, run or retry, and
// those that gave up, as "kind/state: count". The expiries of holds that
// were settled first stay scheduled (each a no-op at its deadline) and are
// not listed.
func unfinishedJobs(t *testing.T, base, drop string) []string {
	t.Helper()
	var jobs struct {
		Jobs []struct {
			Kind, State string
			Count       int64
		}
	}
	getJSON(t, base+"/v1/admin/drops/"+drop+"/jobs", &jobs)
	var out []string
	for _, j := range jobs.Jobs {
		if j.State == "completed" || (j.Kind == "expire_hold" && j.State == "scheduled") {
			continue
		}
		out = append(out, fmt.Sprintf("%s/%s: %d", j.Kind, j.State, j.Count))
	}
	return out
}

// startPgsim runs `dibs pgsim` as a process of its own, so that it outlives
// the nodes killed around it, and returns its URL.
func startPgsim(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"pgsim", "--addr", "127.0.0.1:0", "--seed", "1"}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := make(chan string, 1)
	go func() {
		re := regexp.MustCompile(`msg="pgsim started" addr=(\S+)`)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				addr <- m[1]
			}
		}
	}()
	select {
	case a := <-addr:
		return "http://" + a
	case <-time.After(30 * time.Second):
		t.Fatal("dibs pgsim did not start")
		return ""
	}
}

// hookCounter is the main service's webhook endpoint: it verifies every
// signature and counts deliveries by id.
type hookCounter struct {
	url    string
	secret []byte
	bad    atomic.Int64
	mu     sync.Mutex
	seen   map[string]int    // deliveries per id
	types  map[string]string // id → type
}

func newHookCounter(t *testing.T, secret []byte) *hookCounter {
	h := &hookCounter{secret: secret, seen: map[string]int{}, types: map[string]string{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if webhook.Verify(h.secret, r.Header.Get(webhook.SignatureHeader), body, time.Now(), 0) != nil {
			h.bad.Add(1)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		id := r.Header.Get(webhook.IDHeader)
		h.mu.Lock()
		h.seen[id]++
		h.types[id] = r.Header.Get(webhook.EventHeader)
		h.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	h.url = srv.URL
	return h
}

func (h *hookCounter) distinct(typ string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, ty := range h.types {
		if ty == typ {
			n++
		}
	}
	return n
}

// delivered reports whether the event id arrived (verified) at least once.
func (h *hookCounter) delivered(id string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.seen[id] > 0
}

func (h *hookCounter) summary() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	by, repeats := map[string]int{}, 0
	for id, n := range h.seen {
		by[h.types[id]]++
		repeats += n - 1
	}
	return fmt.Sprintf("%v (%d repeated deliveries, %d bad signatures)", by, repeats, h.bad.Load())
}

// call sends a request with an optional bearer token and JSON body and
// returns the status and body; status 0 if no answer came.
func call(ctx context.Context, c *http.Client, method, url, token string, body ...string) (int, []byte) {
	var rd io.Reader
	if len(body) > 0 {
		rd = strings.NewReader(body[0])
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return 0, nil
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := c.Do(req)
	if err != nil {
		return 0, nil
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, b
}

// getJSON reads an admin endpoint (or the simulator's) into v.
func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	res := admin(t, "GET", url)
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("GET %s: %d %s", url, res.StatusCode, b)
	}
	if err := json.NewDecoder(res.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}
