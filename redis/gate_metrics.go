package redis

import (
	"github.com/prometheus/client_golang/prometheus"
)

// op names a kind of Redis call, for dibs_gate_redis_calls_total.
type op int

const (
	opReserve op = iota
	opConfirm
	opRelease
	opStatus
	opPrepare
	opRebuild
	opRestore
	opHolds
	opRemaining
	opRoster
	opPoll
	opIdentity
	opPing
	numOps
)

var opNames = [numOps]string{"reserve", "confirm", "release", "status", "prepare", "rebuild", "restore", "holds", "remaining", "roster", "poll", "identity", "ping"}

type gateMetrics struct {
	calls        *prometheus.CounterVec
	byOp         [numOps]prometheus.Counter
	soldOutLocal prometheus.Counter
}

func newGateMetrics() *gateMetrics {
	m := &gateMetrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dibs_gate_redis_calls_total",
			Help: "Redis calls the gate made, by operation. Reserve calls stay flat while losers hammer a sold-out drop.",
		}, []string{"op"}),
		soldOutLocal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dibs_gate_sold_out_local_total",
			Help: "Reserve requests this node answered sold out from memory, without Redis.",
		}),
	}
	for i, name := range opNames {
		m.byOp[i] = m.calls.WithLabelValues(name)
	}
	return m
}

func (m *gateMetrics) call(o op)       { m.byOp[o].Inc() }
func (m *gateMetrics) add(o op, n int) { m.byOp[o].Add(float64(n)) }

// Describe implements prometheus.Collector.
func (g *Gate) Describe(ch chan<- *prometheus.Desc) {
	g.metrics.calls.Describe(ch)
	g.metrics.soldOutLocal.Describe(ch)
}

// Collect implements prometheus.Collector: dibs_gate_redis_calls_total by
// op, and dibs_gate_sold_out_local_total.
func (g *Gate) Collect(ch chan<- prometheus.Metric) {
	g.metrics.calls.Collect(ch)
	g.metrics.soldOutLocal.Collect(ch)
}
