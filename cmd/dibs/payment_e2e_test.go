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

// TestPaymentsSurviveFaultsAndKills is TESTPLAN B6 on the embedded default.
func TestPaymentsSurviveFaultsAndKills(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("end-to-end crash test")
	}
	testPaymentsSurvive(t)
}

// TestPaymentsSurviveFaultsAndKillsPostgres is TESTPLAN B6 with the record
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
