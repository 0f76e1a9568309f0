package live

import (
	"fmt"
	"math"
	"runtime/metrics"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// The metric names a node exports that the collector reads. A metric the
// node does not export reads as zero.
const (
	MetricClaims         = "dibs_claims_total"                     // counter {drop, outcome}
	MetricRemaining      = "dibs_drop_remaining"                   // gauge {drop}
	MetricClaimLatency   = "dibs_claim_duration_seconds"           // histogram {outcome}
	MetricRecorderBatch  = "dibs_recorder_batch_claims"            // histogram
	MetricRecorderCommit = "dibs_recorder_commit_seconds"          // histogram
	MetricInflight       = "dibs_http_inflight_requests"           // gauge {class}
	MetricShed           = "dibs_http_shed_total"                  // counter {class}
	MetricPayments       = "dibs_post_payments_total"              // counter {outcome}
	MetricGateway        = "dibs_payment_attempt_duration_seconds" // histogram {op}; charges only
	runtimeGoroutines    = "/sched/goroutines:goroutines"          //
	runtimeHeap          = "/memory/classes/heap/objects:bytes"    //
	runtimeGCPauses      = "/sched/pauses/total/gc:seconds"        //
)

// Window is how far back latency percentiles look.
const Window = 10 * time.Second

// NodeReport is what a node publishes of itself each second: its health
// and its share of the drops' claims. It travels as JSON on the Bus.
type NodeReport struct {
	Node    string    `json:"node"`
	Version string    `json:"version"`
	At      time.Time `json:"at"`
	// Seq grows by one per report: a reader that sees it change knows the
	// node is alive without trusting the node's clock.
	Seq uint64 `json:"seq"`
	// Claims are claim answers per second by drop and outcome (the
	// engine's outcome names).
	Claims map[string]map[string]float64 `json:"claims"`
	// Remaining is the gate's count of free slots by drop.
	Remaining map[string]int64 `json:"remaining"`
	// Latency is the claim latency of the last Window, every outcome,
	// in seconds.
	Latency       Buckets            `json:"latency"`
	Inflight      map[string]int64   `json:"inflight"`
	Shed          map[string]float64 `json:"shed"`
	RecorderBatch float64            `json:"recorder_batch"`
	CommitP99MS   float64            `json:"commit_p99_ms"`
	Goroutines    int64              `json:"goroutines"`
	HeapBytes     uint64             `json:"heap_bytes"`
	GCPauseP99MS  float64            `json:"gc_pause_p99_ms"`
	ChargesPerSec float64            `json:"charges_per_sec"`
	// Gateway is the payment gateway's charge latency of the last Window,
	// in seconds.
	Gateway Buckets `json:"gateway"`
	Breaker string  `json:"breaker,omitempty"`
}

// sample is one reading of the node's metrics: counters and cumulative
// histograms as they stood at at.
type sample struct {
	at        time.Time
	claims    map[string]map[string]float64
	remaining map[string]int64
	latency   Buckets
	batch     Buckets
	batchSum  float64
	commit    Buckets
	gateway   Buckets
	inflight  map[string]int64
	shed      map[string]float64
	paid      float64
	routines  int64
	heap      uint64
	gcPauses  Buckets
}

// Collector reads a node's metrics and turns the last readings into a
// NodeReport: rates from the change of counters since the previous
// reading, percentiles from the change of histograms over Window. Call
// Collect about once a second, from one goroutine.
type Collector struct {
	gatherer prometheus.Gatherer
	node     string
	version  string
	breaker  func() string
	runtime  []metrics.Sample

	seq     uint64
	samples []sample // the last readings, oldest first; the window's start and every second since
}

// CollectorOptions name the node a Collector reports on.
type CollectorOptions struct {
	Node    string
	Version string
	// Breaker returns the state of the node's payment circuit breaker
	// ("closed", "half-open", "open"); none if nil.
	Breaker func() string
}

// NewCollector returns a collector of the metrics g gathers (the node's
// registry).
func NewCollector(g prometheus.Gatherer, o CollectorOptions) *Collector {
	return &Collector{
		gatherer: g, node: o.Node, version: o.Version, breaker: o.Breaker,
		runtime: []metrics.Sample{{Name: runtimeGoroutines}, {Name: runtimeHeap}, {Name: runtimeGCPauses}},
	}
}

// Collect reads the metrics at now and returns the node's report. The
// first report has no rates (there is nothing to compare with).
func (c *Collector) Collect(now time.Time) (NodeReport, error) {
	cur, err := c.read(now)
	if err != nil {
		return NodeReport{}, err
	}
	// Keep the readings of the last Window, and one before it so that
	// the window is whole.
	c.samples = append(c.samples, cur)
	for len(c.samples) > 2 && !c.samples[1].at.After(now.Add(-Window)) {
		c.samples = c.samples[1:]
	}
	prev, first := cur, c.samples[0]
	if n := len(c.samples); n > 1 {
		prev = c.samples[n-2]
	}
	c.seq++
	r := NodeReport{
		Node: c.node, Version: c.version, At: now, Seq: c.seq,
		Claims:       map[string]map[string]float64{},
		Remaining:    cur.remaining,
		Latency:      cur.latency.Sub(first.latency),
		Inflight:     cur.inflight,
		Shed:         map[string]float64{},
		Goroutines:   cur.routines,
		HeapBytes:    cur.heap,
		GCPauseP99MS: cur.gcPauses.Sub(first.gcPauses).Quantile(0.99) * 1000,
		CommitP99MS:  cur.commit.Sub(first.commit).Quantile(0.99) * 1000,
		Gateway:      cur.gateway.Sub(first.gateway),
	}
	if c.breaker != nil {
		r.Breaker = c.breaker()
	}
	if n := cur.batch.Sub(first.batch).Total(); n > 0 {
		r.RecorderBatch = (cur.batchSum - first.batchSum) / float64(n)
	}
	secs := cur.at.Sub(prev.at).Seconds()
	rate := func(now, was float64) float64 {
		if secs <= 0 {
			return 0
		}
		if now < was { // the counter restarted
			was = 0
		}
		return (now - was) / secs
	}
	for drop, outcomes := range cur.claims {
		m := map[string]float64{}
		for outcome, n := range outcomes {
			m[outcome] = rate(n, prev.claims[drop][outcome])
		}
		r.Claims[drop] = m
	}
	for class, n := range cur.shed {
		r.Shed[class] = rate(n, prev.shed[class])
	}
	r.ChargesPerSec = rate(cur.paid, prev.paid)
	return r, nil
}

func (c *Collector) read(now time.Time) (sample, error) {
	s := sample{
		at:        now,
		claims:    map[string]map[string]float64{},
		remaining: map[string]int64{},
		inflight:  map[string]int64{},
		shed:      map[string]float64{},
	}
	families, err := c.gatherer.Gather()
	if err != nil && len(families) == 0 {
		return sample{}, fmt.Errorf("gather metrics: %w", err)
	}
	// A partial gather (one collector failing) still reports the rest.
	for _, f := range families {
		switch f.GetName() {
		case MetricClaims:
			for _, m := range f.GetMetric() {
				drop, outcome := label(m, "drop"), label(m, "outcome")
				if s.claims[drop] == nil {
					s.claims[drop] = map[string]float64{}
				}
				s.claims[drop][outcome] += m.GetCounter().GetValue()
			}
		case MetricRemaining:
			for _, m := range f.GetMetric() {
				s.remaining[label(m, "drop")] = int64(m.GetGauge().GetValue())
			}
		case MetricClaimLatency:
			var hs []Buckets
			for _, m := range f.GetMetric() {
				hs = append(hs, fromProm(m.GetHistogram()))
			}
			s.latency = Merge(hs...)
		case MetricRecorderBatch:
			if ms := f.GetMetric(); len(ms) > 0 {
				s.batch, s.batchSum = fromProm(ms[0].GetHistogram()), ms[0].GetHistogram().GetSampleSum()
			}
		case MetricRecorderCommit:
			if ms := f.GetMetric(); len(ms) > 0 {
				s.commit = fromProm(ms[0].GetHistogram())
			}
		case MetricGateway:
			for _, m := range f.GetMetric() {
				if label(m, "op") == "charge" {
					s.gateway = fromProm(m.GetHistogram())
				}
			}
		case MetricInflight:
			for _, m := range f.GetMetric() {
				s.inflight[label(m, "class")] = int64(m.GetGauge().GetValue())
			}
		case MetricShed:
			for _, m := range f.GetMetric() {
				s.shed[label(m, "class")] = m.GetCounter().GetValue()
			}
		case MetricPayments:
			for _, m := range f.GetMetric() {
				if label(m, "outcome") == "paid" {
					s.paid += m.GetCounter().GetValue()
				}
			}
		}
	}
	metrics.Read(c.runtime)
	for _, rs := range c.runtime {
		switch rs.Value.Kind() {
		case metrics.KindUint64:
			if rs.Name == runtimeGoroutines {
				s.routines = int64(rs.Value.Uint64())
			} else {
				s.heap = rs.Value.Uint64()
			}
		case metrics.KindFloat64Histogram:
			h := rs.Value.Float64Histogram()
			s.gcPauses = fromRuntime(h.Buckets, h.Counts)
		}
	}
	return s, nil
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// fromProm converts a client histogram (cumulative buckets without +Inf)
// to Buckets.
func fromProm(h *dto.Histogram) Buckets {
	var b Buckets
	for _, bk := range h.GetBucket() {
		if math.IsInf(bk.GetUpperBound(), +1) {
			continue
		}
		b.Bounds = append(b.Bounds, bk.GetUpperBound())
		b.Counts = append(b.Counts, bk.GetCumulativeCount())
	}
	b.Counts = append(b.Counts, h.GetSampleCount())
	return b
}
