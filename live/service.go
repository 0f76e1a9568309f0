// Package live builds the operator console's live snapshot
// (dibs.LiveSnapshot) of the whole cluster, once a second.
//
// Each node runs a Service. Its Collector reads the node's own metrics
// (its Prometheus registry and the Go runtime's) into a NodeReport, which
// the Service publishes on a Bus (MemoryBus for one node, Redis for a
// cluster) and merges with the other nodes' reports: claims per second are
// summed, claim latency percentiles come from the sum of the nodes'
// histogram changes over the last ten seconds. The drops' own numbers
// (stock, claim states, the waiting room, post-processing) are the
// cluster's already and are read through the small interfaces declared
// here, which the root package's services satisfy.
package live

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/internal/startstop"
)

// Timing of the reports.
const (
	DefaultInterval = time.Second
	// StaleAfter: a node whose report has not changed for this long is
	// shown stale. Reports come every DefaultInterval, so a live node
	// misses two in a row before it shows stale, and a stopped one shows
	// stale within three seconds (its last report was seen within one,
	// and the next step after StaleAfter marks it).
	StaleAfter = 2 * time.Second
	// ForgetAfter: a node whose report has not changed for this long
	// leaves the snapshot.
	ForgetAfter = time.Minute
	// MaxNodes bounds the nodes a snapshot lists (the freshest first).
	MaxNodes = 256
	// WatchWindow: the drops' numbers that cost a query of the record
	// (claim states, jobs) are read each step only while someone has
	// asked for a snapshot within this long. The nodes' reports are
	// published each step whoever watches.
	WatchWindow = 10 * time.Second
)

// Drops is where the drops' numbers come from; a dibs.DropService is one.
type Drops interface {
	Drops() []*dibs.Drop
	Stats(ctx context.Context, id string) (dibs.DropStats, error)
}

// Queue is where the waiting rooms' numbers come from; a
// dibs.QueueService is one.
type Queue interface {
	Info(ctx context.Context, d *dibs.Drop) (dibs.QueueInfo, error)
}

// Jobs is where the post-processing backlog comes from; a
// dibs.JobService is one.
type Jobs interface {
	JobCounts(ctx context.Context, dropID string) ([]dibs.JobCount, error)
}

// Config is what a Service reads and where it publishes. Gatherer and
// Drops are required.
type Config struct {
	Node    string // this node's id, unique in the cluster
	Version string
	// Gatherer is the node's metrics registry.
	Gatherer prometheus.Gatherer
	// Bus carries the reports between nodes; a MemoryBus if nil.
	Bus   Bus
	Drops Drops
	Queue Queue // nil: queued drops show no waiting room
	Jobs  Jobs  // nil: no backlog
	// WebhookKinds are the job kinds that deliver webhooks: their
	// discarded and cancelled jobs count as failed webhooks.
	WebhookKinds []string
	// Switches returns the operator's switches by name; none if nil.
	Switches func() map[string]string
	// Breaker returns the state of this node's payment circuit breaker;
	// none if nil.
	Breaker  func() string
	Interval time.Duration    // between snapshots; DefaultInterval if zero
	Now      func() time.Time // time.Now if nil
	Logger   *slog.Logger     // discarded if nil
	Ticks    <-chan time.Time // replaces the ticker of Interval, for tests
}

// Service publishes this node's report and builds the cluster's snapshot
// once a second. It implements dibs.LiveService and dibs.Background; its
// methods are safe for concurrent use.
type Service struct {
	cfg       Config
	collector *Collector
	bg        startstop.Service

	stepMu  sync.Mutex // one step at a time; guards what follows
	seen    map[string]seenNode
	soldOut map[string]time.Time
	served  map[string]servedAt

	mu      sync.Mutex
	snap    dibs.LiveSnapshot
	ready   bool // a snapshot was taken
	full    bool // the newest snapshot read the record's numbers
	watched time.Time
	changed chan struct{}
}

type seenNode struct {
	report NodeReport
	since  time.Time // when this node's newest report was first seen, by our clock
}

type servedAt struct {
	n  uint64
	at time.Time
}

var (
	_ dibs.LiveService = (*Service)(nil)
	_ dibs.Background  = (*Service)(nil)
)

// New returns a Service. Start it to take snapshots.
func New(cfg Config) (*Service, error) {
	if cfg.Gatherer == nil || cfg.Drops == nil {
		return nil, fmt.Errorf("live: a gatherer and a drop source are required")
	}
	if cfg.Node == "" {
		return nil, fmt.Errorf("live: the node needs an id")
	}
	if cfg.Bus == nil {
		cfg.Bus = NewMemoryBus()
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Service{
		cfg:       cfg,
		collector: NewCollector(cfg.Gatherer, CollectorOptions{Node: cfg.Node, Version: cfg.Version, Breaker: cfg.Breaker}),
		seen:      map[string]seenNode{},
		soldOut:   map[string]time.Time{},
		served:    map[string]servedAt{},
		changed:   make(chan struct{}),
	}, nil
}

// Start takes a snapshot at once and then every Interval until ctx ends
// or Stop is called.
func (s *Service) Start(ctx context.Context) error {
	return s.bg.Start(ctx, func(ctx context.Context) error {
		ticks := s.cfg.Ticks
		if ticks == nil {
			t := time.NewTicker(s.cfg.Interval)
			defer t.Stop()
			ticks = t.C
		}
		for {
			// A source that hangs costs a few snapshots, not the loop.
			stepCtx, cancel := context.WithTimeout(ctx, 5*s.cfg.Interval)
			err := s.Step(stepCtx)
			cancel()
			if err != nil && ctx.Err() == nil {
				s.cfg.Logger.Warn("live snapshot", "err", err)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-ticks:
			}
		}
	})
}

// Stop ends the snapshots and waits for the one under way.
func (s *Service) Stop() error { return s.bg.Stop() }

// Snapshot implements dibs.LiveService. EUNAVAILABLE before the first
// step. Snapshots share their maps: callers must not change them. Asking keeps the steps reading the record's numbers for
// WatchWindow; the first ask after nobody watched reads them at once.
func (s *Service) Snapshot(ctx context.Context) (dibs.LiveSnapshot, error) {
	s.mu.Lock()
	s.watched = s.cfg.Now()
	snap, ready, full := s.snap, s.ready, s.full
	s.mu.Unlock()
	switch {
	case !ready:
		return dibs.LiveSnapshot{}, dibs.Errorf(dibs.EUNAVAILABLE, "The live view has no snapshot yet; retry in a second.")
	case full:
		return snap, nil
	}
	s.stepMu.Lock()
	defer s.stepMu.Unlock()
	s.mu.Lock()
	snap, full = s.snap, s.full
	s.mu.Unlock()
	if full { // a step read them while this waited
		return snap, nil
	}
	snap = s.build(ctx, s.cfg.Now(), true)
	s.publish(snap, true)
	return snap, nil
}

// Changed returns a channel that is closed when a newer snapshot than the
// one Snapshot returns now is ready. Take the channel before reading the
// snapshot so that none is missed. A reader that is slow only skips
// snapshots: the step never waits for it.
func (s *Service) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// Step takes one snapshot: it collects this node's report, publishes it,
// reads the other nodes' and the drops' numbers, and makes the result the
// newest snapshot. Start calls it every Interval; tests call it directly.
// What cannot be read (the Bus, a drop's stats) is logged and left out;
// only a failure to read the node's own metrics is returned.
func (s *Service) Step(ctx context.Context) error {
	s.stepMu.Lock()
	defer s.stepMu.Unlock()
	now := s.cfg.Now()
	own, err := s.collector.Collect(now)
	if err != nil {
		return err
	}
	if b, err := json.Marshal(own); err != nil {
		return fmt.Errorf("encode node report: %w", err)
	} else if err := s.cfg.Bus.Publish(ctx, s.cfg.Node, b); err != nil {
		s.cfg.Logger.Warn("live: publish node report", "err", err)
	}
	reports, err := s.cfg.Bus.Reports(ctx)
	if err != nil {
		s.cfg.Logger.Warn("live: read node reports", "err", err)
	}
	s.see(now, own)
	for node, b := range reports {
		if node == s.cfg.Node {
			continue
		}
		var r NodeReport
		if err := json.Unmarshal(b, &r); err != nil {
			s.cfg.Logger.Warn("live: undecodable node report", "node", node, "err", err)
			continue
		}
		r.Node = node
		s.see(now, r)
	}
	s.mu.Lock()
	full := now.Sub(s.watched) <= WatchWindow
	s.mu.Unlock()
	s.publish(s.build(ctx, now, full), full)
	return nil
}

// publish makes snap the newest snapshot and wakes the readers waiting on
// Changed. The caller holds stepMu.
func (s *Service) publish(snap dibs.LiveSnapshot, full bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.snap, s.ready, s.full = snap, true, full
	close(s.changed)
	s.changed = make(chan struct{})
}

// see records a node's report. A report is fresh when its sequence number
// changed since the last one seen: staleness is judged by this node's
// clock alone, so clocks that disagree between nodes do not matter. A node
// seen for the first time counts as fresh from now on (a node that had
// stopped just before shows stale StaleAfter later).
func (s *Service) see(now time.Time, r NodeReport) {
	if old, ok := s.seen[r.Node]; ok && old.report.Seq == r.Seq && old.report.At.Equal(r.At) {
		return
	}
	s.seen[r.Node] = seenNode{report: r, since: now}
}

// build assembles the snapshot at now from the nodes seen and the drops'
// sources; the record's numbers only if full.
func (s *Service) build(ctx context.Context, now time.Time, full bool) dibs.LiveSnapshot {
	snap := dibs.LiveSnapshot{At: now, Drops: []dibs.LiveDrop{}, Switches: map[string]string{}, Nodes: []dibs.LiveNode{}}
	if s.cfg.Switches != nil {
		snap.Switches = s.cfg.Switches()
	}

	// The nodes, freshest first; only live ones count in the sums.
	var live []NodeReport
	for id, n := range s.seen {
		if now.Sub(n.since) > ForgetAfter {
			delete(s.seen, id)
		}
	}
	ids := slices.SortedFunc(maps.Keys(s.seen), func(a, b string) int {
		if c := s.seen[b].since.Compare(s.seen[a].since); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	for _, id := range ids[:min(len(ids), MaxNodes)] {
		n := s.seen[id]
		stale := now.Sub(n.since) > StaleAfter
		if !stale {
			live = append(live, n.report)
		}
		snap.Nodes = append(snap.Nodes, liveNode(n.report, stale))
	}
	slices.SortFunc(snap.Nodes, func(a, b dibs.LiveNode) int { return cmp.Compare(a.ID, b.ID) })

	var latency, gateway []Buckets
	breaker := ""
	for _, r := range live {
		latency = append(latency, r.Latency)
		gateway = append(gateway, r.Gateway)
		snap.Post.ChargesPerSec += r.ChargesPerSec
		breaker = worseBreaker(breaker, r.Breaker)
	}
	snap.Post.Breaker = breaker
	snap.Post.GatewayP99MS = Merge(gateway...).Quantile(0.99) * 1000
	lat := Merge(latency...)
	latencyMS := dibs.LiveLatency{P50: lat.Quantile(0.5) * 1000, P99: lat.Quantile(0.99) * 1000}

	snap.Post.Backlog = map[string]int64{}
	drops := s.cfg.Drops.Drops()
	slices.SortFunc(drops, func(a, b *dibs.Drop) int { return cmp.Compare(a.ID, b.ID) })
	for _, d := range drops {
		ld := s.drop(ctx, now, d, live, full)
		ld.LatencyMS = latencyMS
		snap.Drops = append(snap.Drops, ld)
		if full {
			s.jobs(ctx, d.ID, &snap.Post)
		}
	}
	return snap
}

// drop reads one drop's numbers: the rates and the gate's count from the
// nodes' reports, the claim states from the record if full (State then
// comes from the drop and the gate's count alone).
func (s *Service) drop(ctx context.Context, now time.Time, d *dibs.Drop, live []NodeReport, full bool) dibs.LiveDrop {
	ld := dibs.LiveDrop{ID: d.ID, Title: d.Title, Kind: d.Kind, Stock: d.Stock, Remaining: d.Stock}
	known := false // whether anyone told how many slots are left
	for _, r := range live {
		addRates(&ld.ClaimsPerSec, r.Claims[d.ID])
		if left, ok := r.Remaining[d.ID]; ok && (!known || left < ld.Remaining) {
			ld.Remaining, known = left, true
		}
	}
	ld.State = d.StateAt(d.Status, now, ld.Remaining)
	if full {
		if st, err := s.cfg.Drops.Stats(ctx, d.ID); err != nil {
			s.cfg.Logger.Warn("live: drop stats", "drop", d.ID, "err", err)
		} else {
			ld.State, ld.Remaining, known = st.State, st.Remaining, true
			ld.Held, ld.Confirmed, ld.Paid = st.Claims.Held, st.Claims.Confirmed, st.Claims.Paid
			ld.Released, ld.Expired = st.Claims.Released, st.Claims.Expired
			if st.Drop != nil {
				ld.Title, ld.Stock = st.Drop.Title, st.Drop.Stock
			}
		}
	}
	ld.Remaining = max(ld.Remaining, 0)
	if at, ok := s.soldOut[d.ID]; ok {
		ld.SoldOutAt = &at
	} else if known && ld.Remaining == 0 && ld.State != dibs.StateUpcoming {
		s.soldOut[d.ID] = now
		ld.SoldOutAt = &now
	}
	if d.Admission.Mode == dibs.AdmissionQueue && s.cfg.Queue != nil {
		ld.Queue = s.queue(ctx, now, d)
	}
	return ld
}

// queue reads a queued drop's waiting room. Admissions per second are the
// change of the positions served since the last step; after a gap (the
// first step, a step that failed) they are the room leader's measure.
func (s *Service) queue(ctx context.Context, now time.Time, d *dibs.Drop) *dibs.LiveQueue {
	info, err := s.cfg.Queue.Info(ctx, d)
	if err != nil {
		s.cfg.Logger.Warn("live: waiting room", "drop", d.ID, "err", err)
		return nil
	}
	q := &dibs.LiveQueue{
		Joined: info.Joined, Waiting: info.Joined - min(info.Serving, info.Joined),
		Rate: info.Rate, RateMode: "fixed", SoldOut: info.SoldOut, AdmittedPerSec: info.Measured,
	}
	if a := d.Admission; a.Pace == dibs.PaceAuto {
		q.RateMode, q.RateMin, q.RateMax = dibs.PaceAuto, a.MinRate, a.MaxRate
	}
	prev, ok := s.served[d.ID]
	switch since := now.Sub(prev.at); {
	case ok && since < s.cfg.Interval/2:
		// Too soon after the last reading (a Snapshot's own read) for a
		// rate: keep the last reading for the next step.
		return withETA(q)
	case ok && since <= 3*s.cfg.Interval && info.Serving >= prev.n:
		q.AdmittedPerSec = float64(info.Serving-prev.n) / since.Seconds()
	}
	s.served[d.ID] = servedAt{n: info.Serving, at: now}
	return withETA(q)
}

// withETA fills in how long the last person in line still waits.
func withETA(q *dibs.LiveQueue) *dibs.LiveQueue {
	pace := q.AdmittedPerSec
	if pace <= 0 {
		pace = float64(q.Rate)
	}
	if q.Waiting > 0 && pace > 0 {
		q.ETALastS = float64(q.Waiting) / pace
	}
	return q
}

// jobs adds a drop's unfinished jobs and failed webhooks to p.
func (s *Service) jobs(ctx context.Context, dropID string, p *dibs.LivePost) {
	if s.cfg.Jobs == nil {
		return
	}
	counts, err := s.cfg.Jobs.JobCounts(ctx, dropID)
	if err != nil {
		s.cfg.Logger.Warn("live: job counts", "drop", dropID, "err", err)
		return
	}
	for _, c := range counts {
		switch c.State {
		case "available", "pending", "retryable", "running", "scheduled":
			p.Backlog[c.Kind] += c.Count
		case "discarded", "cancelled":
			if slices.Contains(s.cfg.WebhookKinds, c.Kind) {
				p.FailedWebhooks += c.Count
			}
		}
	}
}

func liveNode(r NodeReport, stale bool) dibs.LiveNode {
	n := dibs.LiveNode{
		ID: r.Node, Version: r.Version, Stale: stale, LastHeartbeat: r.At,
		Inflight: r.Inflight, Shed: r.Shed,
		RecorderBatch: r.RecorderBatch, CommitP99MS: r.CommitP99MS,
		Goroutines: r.Goroutines, HeapBytes: r.HeapBytes, GCPauseP99MS: r.GCPauseP99MS,
	}
	if n.Inflight == nil {
		n.Inflight = map[string]int64{}
	}
	if n.Shed == nil {
		n.Shed = map[string]float64{}
	}
	return n
}

// addRates adds a node's claim answers per second, by the engine's
// outcome names, to r.
func addRates(r *dibs.LiveClaimRates, outcomes map[string]float64) {
	for name, v := range outcomes {
		switch name {
		case "won":
			r.Won += v
		case "existing":
			r.Existing += v
		case "sold_out":
			r.SoldOut += v
		case "limit_reached":
			r.Limit += v
		case "not_open":
			r.NotOpen += v
		case "unavailable":
			r.Shed += v
		case "closed":
			r.Closed += v
		case "paused":
			r.Paused += v
		case "admission":
			r.Admission += v
		default:
			r.Error += v
		}
	}
}

// worseBreaker returns the worse of two breaker states: open, then
// half-open, then closed; "" is no breaker.
func worseBreaker(a, b string) string {
	rank := func(s string) int {
		switch s {
		case "open":
			return 3
		case "half-open":
			return 2
		case "closed":
			return 1
		}
		return 0
	}
	if rank(b) > rank(a) {
		return b
	}
	return a
}
