package redis_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/gatetest"
	"github.com/dibs-io/dibs/internal/testenv"
	"github.com/dibs-io/dibs/redis"
)

// MustClient connects to url and closes the client when tb ends. Its
// connections wait 30 s for an answer where production's wait 3 s: on two
// cores shared with other work, Redis or the test's reader can go seconds
// without running, and the calls would fail with an i/o timeout that says
// nothing of the code under test.
func MustClient(tb testing.TB, url string) redis.Client {
	tb.Helper()
	c, err := redis.NewClient(url, redis.ClientOptions{ConnWriteTimeout: 30 * time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(c.Close)
	return c
}

// MustGate returns a started gate on client under a fresh prefix.
func MustGate(tb testing.TB, client redis.Client, opts redis.GateOptions) *redis.Gate {
	tb.Helper()
	if opts.Prefix == "" {
		opts.Prefix = testenv.RedisPrefix(tb, client)
	}
	if opts.Timeout == 0 {
		// Tests share two cores under the race detector; production keeps
		// the default.
		opts.Timeout = 10 * time.Second
	}
	g := redis.NewGate(client, opts)
	if err := g.Start(context.Background()); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(g.Stop)
	return g
}

// calls reads a counter of the gate's metrics.
func calls(tb testing.TB, g *redis.Gate, name, op string) float64 {
	tb.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(g)
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if op == "" && len(m.GetLabel()) == 0 {
				return m.GetCounter().GetValue()
			}
			for _, l := range m.GetLabel() {
				if l.GetName() == "op" && l.GetValue() == op {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func TestGateConformance(t *testing.T) {
	t.Parallel()
	client := MustClient(t, testenv.RedisURL(t))
	gatetest.Run(t, func(t *testing.T) dibs.Gate { return MustGate(t, client, redis.GateOptions{}) })
}
