package payment

import (
	"math"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Gauge is a Metrics that exports what a Client observes to Prometheus
// and keeps what a waiting room's auto pace reads of the gateway: its
// recent latency and whether its breaker is open.
//
// Metrics: dibs_payment_attempts_total{op,outcome},
// dibs_payment_attempt_duration_seconds{op} and
// dibs_payment_breaker_state (0 closed, 1 half-open, 2 open).
type Gauge struct {
	attempts *prometheus.CounterVec
	duration *prometheus.HistogramVec
	breaker  prometheus.Gauge

	now func() time.Time

	mu      sync.Mutex
	state   BreakerState
	window  [gaugeWindow]second // attempts of the last seconds, by second
	samples []time.Duration     // scratch for P99
}

// gaugeWindow is how many seconds of attempts P99 looks at.
const gaugeWindow = 10

// maxPerSecond bounds the latencies kept per second; beyond it one in
// every few is kept, which is as good for a percentile.
const maxPerSecond = 2048

type second struct {
	at   int64 // unix second
	seen int
	lat  []time.Duration
}

// NewGauge returns a Gauge; now is time.Now if nil.
func NewGauge(now func() time.Time) *Gauge {
	if now == nil {
		now = time.Now
	}
	return &Gauge{
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dibs_payment_attempts_total", Help: "Attempts sent (or refused before sending) to the payment gateway, by operation and outcome.",
		}, []string{"op", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "dibs_payment_attempt_duration_seconds", Help: "Duration of attempts sent to the payment gateway, by operation.",
			Buckets: prometheus.ExponentialBucketsRange(1e-3, 30, 16),
		}, []string{"op"}),
		breaker: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dibs_payment_breaker_state", Help: "The payment client's circuit breaker: 0 closed, 1 half-open, 2 open.",
		}),
		now:   now,
		state: BreakerClosed,
	}
}

// Register registers the gauge's metrics with reg.
func (g *Gauge) Register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{g.attempts, g.duration, g.breaker} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// Attempt implements Metrics.
func (g *Gauge) Attempt(op, outcome string, elapsed time.Duration) {
	g.attempts.WithLabelValues(op, outcome).Inc()
	if outcome == "circuit_open" || outcome == "unavailable" && elapsed == 0 {
		return // never sent: says nothing of the gateway's latency
	}
	g.duration.WithLabelValues(op).Observe(elapsed.Seconds())
	at := g.now().Unix()
	g.mu.Lock()
	defer g.mu.Unlock()
	s := &g.window[at%gaugeWindow]
	if s.at != at {
		s.at, s.seen, s.lat = at, 0, s.lat[:0]
	}
	s.seen++
	if len(s.lat) < maxPerSecond {
		s.lat = append(s.lat, elapsed)
	} else if s.seen%(s.seen/maxPerSecond+1) == 0 {
		s.lat[s.seen%maxPerSecond] = elapsed
	}
}

// Attempts returns the counter of attempts of op with outcome.
func (g *Gauge) Attempts(op, outcome string) prometheus.Counter {
	return g.attempts.WithLabelValues(op, outcome)
}

// BreakerChanged implements Metrics.
func (g *Gauge) BreakerChanged(_, to BreakerState) {
	g.mu.Lock()
	g.state = to
	g.mu.Unlock()
	switch to {
	case BreakerOpen:
		g.breaker.Set(2)
	case BreakerHalfOpen:
		g.breaker.Set(1)
	default:
		g.breaker.Set(0)
	}
}

// Breaker returns the breaker's state as last reported.
func (g *Gauge) Breaker() BreakerState {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.state
}

// P99 returns the 99th percentile latency of the attempts of the last ten
// seconds, and how many attempts it is drawn from.
func (g *Gauge) P99() (time.Duration, int) {
	now := g.now().Unix()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.samples = g.samples[:0]
	for i := range g.window {
		if s := &g.window[i]; now-s.at < gaugeWindow && s.at <= now {
			g.samples = append(g.samples, s.lat...)
		}
	}
	if len(g.samples) == 0 {
		return 0, 0
	}
	slices.Sort(g.samples)
	i := int(math.Ceil(0.99*float64(len(g.samples)))) - 1
	return g.samples[max(i, 0)], len(g.samples)
}
