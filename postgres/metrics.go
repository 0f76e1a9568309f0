package postgres

import (
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// Collector returns a Prometheus collector of the store's pool statistics,
// labelled by pool (record, background, read), for the caller to register.
// It reads the pools at scrape time.
func (s *Store) Collector() prometheus.Collector {
	return poolCollector{"record": s.record, "background": s.background, "read": s.read}
}

type poolCollector map[string]*pgxpool.Pool

var (
	poolConnsDesc = prometheus.NewDesc("dibs_postgres_pool_connections",
		"Connections of a pool by state: acquired (in use), idle, constructing.", []string{"pool", "state"}, nil)
	poolMaxDesc = prometheus.NewDesc("dibs_postgres_pool_max_connections",
		"The bound of a pool.", []string{"pool"}, nil)
	poolAcquiresDesc = prometheus.NewDesc("dibs_postgres_pool_acquires_total",
		"Connections acquired from a pool.", []string{"pool"}, nil)
	poolWaitsDesc = prometheus.NewDesc("dibs_postgres_pool_acquire_waits_total",
		"Acquires that found no idle connection and waited for one (or for a new one).", []string{"pool"}, nil)
	poolWaitDesc = prometheus.NewDesc("dibs_postgres_pool_acquire_seconds_total",
		"Time spent acquiring connections from a pool.", []string{"pool"}, nil)
	poolCanceledDesc = prometheus.NewDesc("dibs_postgres_pool_canceled_acquires_total",
		"Acquires abandoned because their context ended.", []string{"pool"}, nil)
	poolNewDesc = prometheus.NewDesc("dibs_postgres_pool_new_connections_total",
		"Connections a pool opened (reconnects after a restart or failover show here).", []string{"pool"}, nil)
)

func (c poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{poolConnsDesc, poolMaxDesc, poolAcquiresDesc, poolWaitsDesc, poolWaitDesc, poolCanceledDesc, poolNewDesc} {
		ch <- d
	}
}

func (c poolCollector) Collect(ch chan<- prometheus.Metric) {
	for name, p := range c {
		st := p.Stat()
		ch <- prometheus.MustNewConstMetric(poolConnsDesc, prometheus.GaugeValue, float64(st.AcquiredConns()), name, "acquired")
		ch <- prometheus.MustNewConstMetric(poolConnsDesc, prometheus.GaugeValue, float64(st.IdleConns()), name, "idle")
		ch <- prometheus.MustNewConstMetric(poolConnsDesc, prometheus.GaugeValue, float64(st.ConstructingConns()), name, "constructing")
		ch <- prometheus.MustNewConstMetric(poolMaxDesc, prometheus.GaugeValue, float64(st.MaxConns()), name)
		ch <- prometheus.MustNewConstMetric(poolAcquiresDesc, prometheus.CounterValue, float64(st.AcquireCount()), name)
		ch <- prometheus.MustNewConstMetric(poolWaitsDesc, prometheus.CounterValue, float64(st.EmptyAcquireCount()), name)
		ch <- prometheus.MustNewConstMetric(poolWaitDesc, prometheus.CounterValue, st.AcquireDuration().Seconds(), name)
		ch <- prometheus.MustNewConstMetric(poolCanceledDesc, prometheus.CounterValue, float64(st.CanceledAcquireCount()), name)
		ch <- prometheus.MustNewConstMetric(poolNewDesc, prometheus.CounterValue, float64(st.NewConnsCount()), name)
	}
}
