package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/loadgen"
	"github.com/dibs-io/dibs/payment/pgsim"
	"github.com/dibs-io/dibs/post"
	"github.com/dibs-io/dibs/webhook"
)

// The phone drop of the demo: a purchase drop through a waiting room, more
// buyers than phones, a payment gateway that declines some charges.
const (
	phoneStock       = 1000
	phoneBuyers      = 3000
	phoneQueueRate   = 500
	phonePrice       = 1_250_000
	phoneDeclineRate = 0.1
	phoneHoldTTL     = time.Minute
	// settleWait bounds how long the demo waits for the jobs after a
	// scenario's spike: coupons issued, payments settled, webhooks sent.
	settleWait = 45 * time.Second
)

// downstream is what the demo's node talks to after a win: a simulated
// payment gateway and a webhook receiver standing in for the main service.
type downstream struct {
	pg       *pgsim.Simulator
	pgURL    string
	hooks    *hookReceiver
	hooksURL string
	servers  []*http.Server
}

func startDownstream(secret []byte, seed int64) (*downstream, error) {
	knobs := pgsim.DefaultKnobs()
	knobs.DeclineRate = phoneDeclineRate
	pg, err := pgsim.New(pgsim.Config{Knobs: knobs, Seed: uint64(seed)}, nil)
	if err != nil {
		return nil, err
	}
	d := &downstream{pg: pg, hooks: &hookReceiver{secret: secret, seen: map[string]int{}, byType: map[string]int{}}}
	if d.pgURL, err = d.serve(pg); err != nil {
		return nil, err
	}
	if d.hooksURL, err = d.serve(d.hooks); err != nil {
		d.close()
		return nil, err
	}
	return d, nil
}

func (d *downstream) serve(h http.Handler) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	d.servers = append(d.servers, srv)
	go srv.Serve(ln)
	return "http://" + ln.Addr().String(), nil
}

func (d *downstream) close() {
	for _, s := range d.servers {
		s.Close()
	}
	d.pg.Close()
}

// hookReceiver verifies and counts webhooks, once per id.
type hookReceiver struct {
	secret []byte
	mu     sync.Mutex
	seen   map[string]int // deliveries per webhook id
	byType map[string]int // distinct webhooks per type
	bad    int            // deliveries whose signature did not verify
}

func (h *hookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, webhook.MaxBody))
	if err != nil {
		http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := webhook.Verify(h.secret, r.Header.Get(webhook.SignatureHeader), body, time.Now(), 0); err != nil {
		h.bad++
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	id := r.Header.Get(webhook.IDHeader)
	if h.seen[id] == 0 {
		h.byType[r.Header.Get(webhook.EventHeader)]++
	}
	h.seen[id]++
	w.WriteHeader(http.StatusNoContent)
}

// counts returns the distinct webhooks of type typ, the repeated
// deliveries of all types, and the deliveries that failed verification.
func (h *hookReceiver) counts(typ string) (distinct, repeats, bad int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, n := range h.seen {
		repeats += n - 1
	}
	return h.byType[typ], repeats, h.bad
}

// phone plays the phone drop: 1,000 phones at noon through the waiting
// room, three buyers for each, every winner paying at once, a gateway that
// declines a tenth of the charges. Declined holds go back on sale.
func (d *demo) phone(ctx context.Context) (*demoScenario, error) {
	const id = "phone-drop"
	client := &http.Client{Timeout: 10 * time.Second}
	spec := loadgen.DropSpec{
		ID: id, Title: "1,000 phones at noon", Kind: dibs.KindPurchase, Stock: phoneStock,
		QueueRate: phoneQueueRate, HoldTTL: phoneHoldTTL, Price: phonePrice, Currency: "KRW",
	}
	if err := loadgen.CreateDrop(ctx, client, d.node.URL(), d.admin, spec); err != nil {
		return nil, err
	}
	fmt.Fprintf(d.stdout, "\n== Phone drop: %d phones, %d buyers through the waiting room at %d/s, %.0f%% of charges declined ==\n",
		spec.Stock, phoneBuyers, spec.QueueRate, phoneDeclineRate*100)
	rep, err := loadgen.Run(ctx, loadgen.Config{
		Target: d.node.URL(), DropID: id, Users: phoneBuyers,
		Profile:        loadgen.Profile{Shape: loadgen.Spike, Duration: 2 * time.Second},
		PassportSecret: []byte(d.secret), AdminToken: d.admin,
		Seed:     d.cfg.Seed + 1,
		PayWait:  settleWait,
		Progress: progressWriter(d.stderr),
		Logger:   d.log,
	})
	if err != nil {
		return nil, err
	}
	if err := rep.Summary(d.stdout); err != nil {
		return nil, err
	}
	return &demoScenario{Name: id, Story: spec.Title, Report: rep}, nil
}

// adminStats is the part of GET /v1/admin/drops/{id} the demo reads.
type adminStats struct {
	Stock     int64 `json:"stock"`
	Held      int64 `json:"held"`
	Confirmed int64 `json:"confirmed"`
	Paid      int64 `json:"paid"`
	Released  int64 `json:"released"`
	Expired   int64 `json:"expired"`
}

// adminGet reads an admin endpoint of the node; the caller closes the body.
func (d *demo) adminGet(ctx context.Context, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", d.node.URL()+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+d.admin)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", path, err)
	}
	if res.StatusCode != http.StatusOK {
		res.Body.Close()
		return nil, fmt.Errorf("GET %s: %s", path, res.Status)
	}
	return res, nil
}

// adminJSON reads an admin endpoint's JSON into v.
func (d *demo) adminJSON(ctx context.Context, path string, v any) error {
	res, err := d.adminGet(ctx, path)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	return json.NewDecoder(res.Body).Decode(v)
}

// settled waits until the drop's jobs that lead somewhere now have run:
// nothing available, running or retrying, except expiries scheduled for
// holds that are already paid (they find nothing to do at their deadline).
func (d *demo) settled(ctx context.Context, drop string) error {
	deadline := time.Now().Add(settleWait)
	for {
		var jobs struct {
			Jobs []dibs.JobCount `json:"jobs"`
		}
		if err := d.adminJSON(ctx, "/v1/admin/drops/"+drop+"/jobs", &jobs); err != nil {
			return err
		}
		var st adminStats
		if err := d.adminJSON(ctx, "/v1/admin/drops/"+drop, &st); err != nil {
			return err
		}
		busy := st.Held
		for _, j := range jobs.Jobs {
			switch j.State {
			case "available", "running", "retryable", "pending":
				busy += j.Count
			}
		}
		if busy == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("drop %s: %d holds or jobs still pending after %s", drop, busy, settleWait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// couponChecks: every winner has a unique coupon and was told once.
func (d *demo) couponChecks(ctx context.Context, drop string, stock int) ([]loadgen.Check, error) {
	if err := d.settled(ctx, drop); err != nil {
		return nil, err
	}
	lines, err := d.winners(ctx, drop)
	if err != nil {
		return nil, err
	}
	var codes []string
	for _, l := range lines {
		var w struct {
			CouponCode string `json:"coupon_code"`
		}
		if err := json.Unmarshal([]byte(l), &w); err != nil {
			return nil, err
		}
		if w.CouponCode != "" {
			codes = append(codes, w.CouponCode)
		}
	}
	slices.Sort(codes)
	unique := len(slices.Compact(codes))
	coupons := check("coupons_issued", len(lines) == stock && unique == stock,
		"%d winners, %d with a coupon, %d distinct codes", len(lines), len(codes), unique)
	told, repeats, bad := d.down.hooks.counts(post.KindNotifyWinner)
	hooks := check("winners_notified", told == stock && bad == 0,
		"%d notify_winner webhooks received, verified and distinct; %d repeated deliveries (deduplicated by id); %d bad signatures", told, repeats, bad)
	return []loadgen.Check{coupons, hooks}, nil
}

// paymentChecks: exactly the stock paid, nobody charged twice, every
// decline gave its slot back, and the slots given back were sold again.
func (d *demo) paymentChecks(ctx context.Context, drop string, stock int64) ([]loadgen.Check, error) {
	if err := d.settled(ctx, drop); err != nil {
		return nil, err
	}
	var st adminStats
	if err := d.adminJSON(ctx, "/v1/admin/drops/"+drop, &st); err != nil {
		return nil, err
	}
	ledger := d.down.pg.Ledger()
	var paidCharges, declined int64
	perClaim := map[string]int{} // by the claim the charge's reference names, whatever its key
	for _, e := range ledger {
		perClaim[strings.TrimPrefix(e.Reference, drop+"/")]++
		switch e.Status {
		case "paid":
			paidCharges++
		case "declined":
			declined++
		}
	}
	maxPerClaim := 0
	for _, n := range perClaim {
		maxPerClaim = max(maxPerClaim, n)
	}
	won := st.Paid + st.Released + st.Expired + st.Held
	failed, _, bad := d.down.hooks.counts(post.KindPaymentFailed)
	return []loadgen.Check{
		check("paid_equals_stock", st.Paid == stock && st.Held == 0,
			"%d of %d phones paid, %d holds left", st.Paid, stock, st.Held),
		check("one_charge_per_claim", maxPerClaim <= 1 && paidCharges == st.Paid,
			"%d charges at the gateway for %d claims, at most %d per claim; %d paid charges for %d paid claims",
			len(ledger), len(perClaim), maxPerClaim, paidCharges, st.Paid),
		check("declines_released", declined == st.Released && int64(failed) == st.Released && bad == 0,
			"%d charges declined, %d holds released, %d payment_failed webhooks", declined, st.Released, failed),
		check("released_resold", won-stock == st.Released+st.Expired,
			"%d wins for %d phones: %d slots released or expired and sold again", won, stock, st.Released+st.Expired),
	}, nil
}

func check(name string, ok bool, format string, args ...any) loadgen.Check {
	c := loadgen.Check{Name: name, Status: loadgen.CheckPass, Detail: fmt.Sprintf(format, args...)}
	if !ok {
		c.Status = loadgen.CheckFail
	}
	return c
}
