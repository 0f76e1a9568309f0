package redis_test

import (
	"context"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/rueidis"

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
func MustClient(tb testing.TB, url string) rueidis.Client {
	tb.Helper()
	c, err := redis.NewClient(url, redis.ClientOptions{ConnWriteTimeout: 30 * time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(c.Close)
	return c
}

// NewPrefix returns a key prefix no other test uses, and deletes its keys
// when tb ends.
func NewPrefix(tb testing.TB, c rueidis.Client) string {
	tb.Helper()
	prefix := "dibs-test:" + strings.ToLower(rand.Text()[:10]) + ":"
	tb.Cleanup(func() { deleteKeys(c, prefix) })
	return prefix
}

func deleteKeys(c rueidis.Client, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var cursor uint64
	for {
		e, err := c.Do(ctx, c.B().Scan().Cursor(cursor).Match(prefix+"*").Count(1000).Build()).AsScanEntry()
		if err != nil {
			return
		}
		if len(e.Elements) > 0 {
			c.Do(ctx, c.B().Unlink().Key(e.Elements...).Build())
		}
		if cursor = e.Cursor; cursor == 0 {
			return
		}
	}
}

// MustGate returns a started gate on client under a fresh prefix.
func MustGate(tb testing.TB, client rueidis.Client, opts redis.GateOptions) *redis.Gate {
	tb.Helper()
	if opts.Prefix == "" {
		opts.Prefix = NewPrefix(tb, client)
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
