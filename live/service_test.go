package live_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/live"
)

// clock is a time tests move by hand.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2026, 12, 7, 11, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// drops is a drop source whose numbers tests set.
type drops struct {
	mu    sync.Mutex
	drops []*dibs.Drop
	stats map[string]dibs.DropStats
}

func (d *drops) Drops() []*dibs.Drop {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]*dibs.Drop(nil), d.drops...)
}

func (d *drops) Stats(_ context.Context, id string) (dibs.DropStats, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	st, ok := d.stats[id]
	if !ok {
		return dibs.DropStats{}, dibs.Errorf(dibs.ENOTFOUND, "no drop %s", id)
	}
	return st, nil
}

func (d *drops) set(id string, st dibs.DropStats) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stats[id] = st
}

type queue struct{ info dibs.QueueInfo }

func (q *queue) Info(context.Context, *dibs.Drop) (dibs.QueueInfo, error) { return q.info, nil }

type jobs struct{}

func (jobs) JobCounts(_ context.Context, dropID string) ([]dibs.JobCount, error) {
	return []dibs.JobCount{
		{Kind: "charge_payment", State: "available", Count: 10},
		{Kind: "charge_payment", State: "retryable", Count: 2},
		{Kind: "charge_payment", State: "completed", Count: 500},
		{Kind: "notify_winner", State: "running", Count: 3},
		{Kind: "notify_winner", State: "discarded", Count: 4},
		{Kind: "charge_payment", State: "discarded", Count: 5}, // not a webhook
	}, nil
}

var phones = &dibs.Drop{ID: "phones", Title: "1,000 phones", Kind: dibs.KindPurchase, Stock: 1000,
	Admission: dibs.Admission{Mode: dibs.AdmissionQueue, Rate: 200, Order: dibs.OrderFIFO}}

func newDrops() *drops {
	d := &drops{drops: []*dibs.Drop{phones}, stats: map[string]dibs.DropStats{}}
	d.set("phones", dibs.DropStats{
		DropView: dibs.DropView{Drop: phones, State: dibs.StateOpen, Remaining: 120},
		Claims:   dibs.ClaimCounts{Held: 600, Paid: 270, Released: 8, Expired: 2},
	})
	return d
}

// newService returns a service of node id on bus whose drops, metrics and
// clock the test holds.
func newService(tb testing.TB, id string, bus live.Bus, clk *clock, d *drops, q *queue, opts ...func(*live.Config)) (*live.Service, *nodeMetrics) {
	tb.Helper()
	m := newNodeMetrics(tb)
	cfg := live.Config{
		Node: id, Version: "v0.9.0", Gatherer: m.reg, Bus: bus, Drops: d, Jobs: jobs{},
		WebhookKinds: []string{"notify_winner"},
		Switches:     func() map[string]string { return map[string]string{"claims": "on"} },
		Now:          clk.Now,
	}
	if q != nil {
		cfg.Queue = q
	}
	for _, o := range opts {
		o(&cfg)
	}
	s, err := live.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return s, m
}

func mustStep(tb testing.TB, s *live.Service) dibs.LiveSnapshot {
	tb.Helper()
	if err := s.Step(context.Background()); err != nil {
		tb.Fatal(err)
	}
	snap, err := s.Snapshot(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return snap
}

func nodesOf(snap dibs.LiveSnapshot) map[string]dibs.LiveNode {
	out := map[string]dibs.LiveNode{}
	for _, n := range snap.Nodes {
		out[n.ID] = n
	}
	return out
}

func TestSnapshotSumsTheNodes(t *testing.T) {
	t.Parallel()
	bus, clk, d := live.NewMemoryBus(), newClock(), newDrops()
	q := &queue{info: dibs.QueueInfo{Rate: 200, Joined: 52000, Serving: 20000, Measured: 190}}
	a, ma := newService(t, "node-a", bus, clk, d, q)
	b, mb := newService(t, "node-b", bus, clk, d, q)
	if _, err := a.Snapshot(context.Background()); dibs.ErrorCode(err) != dibs.EUNAVAILABLE {
		t.Fatalf("Snapshot before the first step: %v, want %s", err, dibs.EUNAVAILABLE)
	}
	mustStep(t, a)
	mustStep(t, b)

	clk.Add(time.Second)
	ma.claims.WithLabelValues("phones", "won").Add(300)
	mb.claims.WithLabelValues("phones", "won").Add(110)
	mb.claims.WithLabelValues("phones", "unavailable").Add(4)
	mb.claims.WithLabelValues("phones", "limit_reached").Add(1)
	for range 99 {
		ma.latency.WithLabelValues("won").Observe(0.0015)
	}
	mb.latency.WithLabelValues("won").Observe(0.006)
	q.info.Serving = 20200
	mustStep(t, b)
	snap := mustStep(t, a)

	if len(snap.Drops) != 1 {
		t.Fatalf("%d drops, want 1", len(snap.Drops))
	}
	got := snap.Drops[0]
	wantRates := dibs.LiveClaimRates{Won: 410, Shed: 4, Limit: 1}
	if got.ClaimsPerSec != wantRates {
		t.Errorf("claims_per_sec %+v, want %+v", got.ClaimsPerSec, wantRates)
	}
	// 99 at 1.5 ms on a, one at 6 ms on b: the 99th of 100 is a's last.
	if !near(got.LatencyMS.P50, 1+50.0/99) {
		t.Errorf("p50 %v ms, want %v", got.LatencyMS.P50, 1+50.0/99)
	}
	if !near(got.LatencyMS.P99, 2) {
		t.Errorf("p99 %v ms, want 2 (rank 99 closes the (1, 2] bucket)", got.LatencyMS.P99)
	}
	if got.Remaining != 120 || got.Held != 600 || got.Paid != 270 || got.Released != 8 || got.Expired != 2 || got.State != dibs.StateOpen || got.SoldOutAt != nil {
		t.Errorf("drop numbers %+v", got)
	}
	wantQ := dibs.LiveQueue{Joined: 52000, Waiting: 31800, AdmittedPerSec: 200, Rate: 200, RateMode: "fixed", ETALastS: 159}
	if got.Queue == nil || *got.Queue != wantQ {
		t.Errorf("queue %+v, want %+v", got.Queue, wantQ)
	}
	wantBacklog := map[string]int64{"charge_payment": 12, "notify_winner": 3}
	if len(snap.Post.Backlog) != 2 || snap.Post.Backlog["charge_payment"] != 12 || snap.Post.Backlog["notify_winner"] != 3 {
		t.Errorf("backlog %v, want %v", snap.Post.Backlog, wantBacklog)
	}
	if snap.Post.FailedWebhooks != 4 {
		t.Errorf("failed webhooks %d, want 4", snap.Post.FailedWebhooks)
	}
	if snap.Switches["claims"] != "on" {
		t.Errorf("switches %v", snap.Switches)
	}
	nodes := nodesOf(snap)
	if len(nodes) != 2 || nodes["node-a"].Stale || nodes["node-b"].Stale || nodes["node-b"].Version != "v0.9.0" {
		t.Errorf("nodes %+v, want node-a and node-b, both fresh", snap.Nodes)
	}

	// The JSON has the console's members.
	raw, err := json.Marshal(snap)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	drop := doc["drops"].([]any)[0].(map[string]any)
	for _, k := range []string{"id", "title", "kind", "state", "stock", "remaining", "held", "confirmed", "paid", "released", "expired", "claims_per_sec", "latency_ms", "sold_out_at", "queue"} {
		if _, ok := drop[k]; !ok {
			t.Errorf("drop JSON lacks %q: %s", k, raw)
		}
	}
	node := doc["nodes"].([]any)[0].(map[string]any)
	for _, k := range []string{"id", "version", "stale", "last_heartbeat", "inflight", "shed", "recorder_batch", "commit_p99_ms", "goroutines", "heap_bytes", "gc_pause_p99_ms"} {
		if _, ok := node[k]; !ok {
			t.Errorf("node JSON lacks %q: %s", k, raw)
		}
	}
}

// TestStaleAndForgotten: a node whose report stops changing is stale after
// three seconds and gone after a minute, by the reader's clock.
func TestStaleAndForgotten(t *testing.T) {
	t.Parallel()
	bus, clkA, clkB, d := live.NewMemoryBus(), newClock(), newClock(), newDrops()
	clkB.Add(-time.Hour) // b's clock is an hour behind: staleness must not care
	a, _ := newService(t, "node-a", bus, clkA, d, nil)
	b, _ := newService(t, "node-b", bus, clkB, d, nil)
	mustStep(t, b)
	mustStep(t, a)
	for s := 1; s <= 3; s++ {
		clkA.Add(time.Second)
		clkB.Add(time.Second)
		if s < 3 {
			mustStep(t, b)
		}
		if n, ok := nodesOf(mustStep(t, a))["node-b"]; !ok || n.Stale {
			t.Fatalf("+%ds: node-b %+v (listed %v), want fresh (last report %d s ago)", s, n, ok, max(0, s-2))
		}
	}
	clkA.Add(live.StaleAfter - time.Second) // b's last report came StaleAfter ago
	if n, ok := nodesOf(mustStep(t, a))["node-b"]; !ok || n.Stale {
		t.Fatalf("StaleAfter after its last report: node-b %+v (listed %v), want fresh still", n, ok)
	}
	clkA.Add(100 * time.Millisecond)
	if n, ok := nodesOf(mustStep(t, a))["node-b"]; !ok || !n.Stale {
		t.Fatalf("StaleAfter + 0.1 s after its last report: node-b %+v (listed %v), want stale", n, ok)
	}
	clkA.Add(live.ForgetAfter)
	if snap := mustStep(t, a); len(snap.Nodes) != 1 || snap.Nodes[0].ID != "node-a" {
		t.Fatalf("a minute later: nodes %+v, want node-a alone", snap.Nodes)
	}
	mustStep(t, b) // it comes back
	if n, ok := nodesOf(mustStep(t, a))["node-b"]; !ok || n.Stale {
		t.Fatalf("after node-b reported again: %+v (listed %v), want fresh", n, ok)
	}
}

func TestSoldOutAtIsTheFirstSnapshotAtZero(t *testing.T) {
	t.Parallel()
	clk, d := newClock(), newDrops()
	s, _ := newService(t, "node-a", live.NewMemoryBus(), clk, d, nil)
	if snap := mustStep(t, s); snap.Drops[0].SoldOutAt != nil {
		t.Fatalf("sold_out_at %v with 120 left, want null", snap.Drops[0].SoldOutAt)
	}
	clk.Add(time.Second)
	soldAt := clk.Now()
	d.set("phones", dibs.DropStats{DropView: dibs.DropView{Drop: phones, State: dibs.StateSoldOut, Remaining: 0}})
	if snap := mustStep(t, s); snap.Drops[0].SoldOutAt == nil || !snap.Drops[0].SoldOutAt.Equal(soldAt) {
		t.Fatalf("sold_out_at %v, want %s", snap.Drops[0].SoldOutAt, soldAt)
	}
	clk.Add(5 * time.Second)
	if snap := mustStep(t, s); snap.Drops[0].SoldOutAt == nil || !snap.Drops[0].SoldOutAt.Equal(soldAt) {
		t.Fatalf("later: sold_out_at %v, want it kept at %s", snap.Drops[0].SoldOutAt, soldAt)
	}
}

// TestChangedWakesReaders: a reader waiting on Changed wakes on the next
// snapshot; nobody reading never holds a step up.
func TestChangedWakesReaders(t *testing.T) {
	t.Parallel()
	clk := newClock()
	ticks := make(chan time.Time)
	m := newNodeMetrics(t)
	s, err := live.New(live.Config{Node: "node-a", Gatherer: m.reg, Drops: newDrops(), Now: clk.Now, Ticks: ticks})
	if err != nil {
		t.Fatal(err)
	}
	changed := s.Changed()
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop() })
	<-changed // the first snapshot is taken at once
	first, err := s.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for range 3 { // nobody waits on these
		clk.Add(time.Second)
		ticks <- clk.Now()
	}
	changed = s.Changed()
	clk.Add(time.Second)
	ticks <- clk.Now()
	<-changed
	snap, err := s.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !snap.At.After(first.At) {
		t.Fatalf("snapshot at %s after Changed, want later than the first, %s", snap.At, first.At)
	}
	if err := s.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := s.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
}

// countingDrops counts the reads of the record's numbers.
type countingDrops struct {
	*drops
	mu    sync.Mutex
	stats int
}

func (c *countingDrops) Stats(ctx context.Context, id string) (dibs.DropStats, error) {
	c.mu.Lock()
	c.stats++
	c.mu.Unlock()
	return c.drops.Stats(ctx, id)
}

func (c *countingDrops) reads() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

// TestRecordReadOnlyWhileWatched: steps read the record's numbers only
// while someone asked for a snapshot within WatchWindow; the first ask
// after a quiet spell reads them at once.
func TestRecordReadOnlyWhileWatched(t *testing.T) {
	t.Parallel()
	clk, d := newClock(), &countingDrops{drops: newDrops()}
	m := newNodeMetrics(t)
	s, err := live.New(live.Config{Node: "node-a", Gatherer: m.reg, Drops: d, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	step := func() {
		t.Helper()
		clk.Add(time.Second)
		if err := s.Step(ctx); err != nil {
			t.Fatal(err)
		}
	}
	step()
	step()
	if n := d.reads(); n != 0 {
		t.Fatalf("%d reads of the record before anyone asked, want 0", n)
	}
	snap, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := d.reads(); n != 1 || snap.Drops[0].Held != 600 {
		t.Fatalf("first Snapshot: %d reads, held %d; want 1 read and the record's 600", n, snap.Drops[0].Held)
	}
	if _, err := s.Snapshot(ctx); err != nil || d.reads() != 1 {
		t.Fatalf("second Snapshot: %v, %d reads; want the same snapshot, no new read", err, d.reads())
	}
	for range 10 {
		step()
	}
	if n := d.reads(); n != 11 {
		t.Fatalf("%d reads after ten watched steps, want 11", n)
	}
	step() // 11 s after the last ask
	if n := d.reads(); n != 11 {
		t.Fatalf("%d reads after a step nobody watched, want 11", n)
	}
	snap, err = s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := d.reads(); n != 12 || snap.Drops[0].State != dibs.StateOpen || snap.Drops[0].Remaining != 120 {
		t.Fatalf("Snapshot after a quiet spell: %d reads, %+v; want 12 reads and the record's numbers", n, snap.Drops[0])
	}
}

func TestSnapshotShowsAnAutoPace(t *testing.T) {
	t.Parallel()
	auto := *phones
	auto.Admission.Pace, auto.Admission.MinRate, auto.Admission.MaxRate = dibs.PaceAuto, 20, 400
	d := &drops{drops: []*dibs.Drop{&auto}, stats: map[string]dibs.DropStats{}}
	d.set("phones", dibs.DropStats{DropView: dibs.DropView{Drop: &auto, State: dibs.StateOpen, Remaining: 120}})
	q := &queue{info: dibs.QueueInfo{Rate: 200, Joined: 10, Serving: 5}}
	s, _ := newService(t, "node-a", live.NewMemoryBus(), newClock(), d, q)
	mustStep(t, s)
	snap, err := s.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got := snap.Drops[0].Queue; got == nil || got.RateMode != dibs.PaceAuto || got.RateMin != 20 || got.RateMax != 400 {
		t.Fatalf("queue %+v, want the auto pace between 20 and 400", got)
	}
}
