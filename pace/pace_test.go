package pace_test

import (
	"testing"
	"time"

	"github.com/dibs-io/dibs"
	"github.com/dibs-io/dibs/pace"
	"pgregory.net/rapid"
)

// healthy is a tick on which every signal is well within its target and
// people wait.
var healthy = pace.Health{
	ChargeBacklog: 10, BacklogTarget: 100,
	GatewayP99: 100 * time.Millisecond, LatencyTarget: 500 * time.Millisecond,
	Remaining: 1_000_000, Waiting: 50_000,
}

func mustNew(tb testing.TB, cfg pace.Config) *pace.Controller {
	tb.Helper()
	c, err := pace.New(cfg)
	if err != nil {
		tb.Fatalf("New(%+v): %v", cfg, err)
	}
	return c
}

// at returns a controller whose rate was driven to rate by healthy ticks.
func at(tb testing.TB, cfg pace.Config, rate int) *pace.Controller {
	tb.Helper()
	c := mustNew(tb, cfg)
	for c.Rate() < rate {
		c.Next(healthy)
	}
	if c.Rate() != rate {
		tb.Fatalf("ramped to %d, want %d (pick a rate on the ramp)", c.Rate(), rate)
	}
	return c
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	got := mustNew(t, pace.Config{Min: 10, Max: 1000}).Config()
	if got.Increase != 50 || got.Decrease != 0.5 || got.Tick != time.Second {
		t.Errorf("defaults: increase %d, decrease %g, tick %s; want 50, 0.5, 1s", got.Increase, got.Decrease, got.Tick)
	}
	if got := mustNew(t, pace.Config{Max: 5}).Config().Increase; got != 1 {
		t.Errorf("increase for max 5 = %d, want 1 (never a step of 0)", got)
	}
}

func TestInvalidConfig(t *testing.T) {
	t.Parallel()
	for _, cfg := range []pace.Config{
		{Min: -1, Max: 10},
		{Max: 0},
		{Min: 20, Max: 10},
		{Max: 10, Increase: -1},
		{Max: 10, Decrease: 1},
		{Max: 10, Decrease: 1.5},
		{Max: 10, Decrease: -0.5},
		{Max: 10, Tick: -time.Second},
	} {
		if _, err := pace.New(cfg); dibs.ErrorCode(err) != dibs.EINVALID {
			t.Errorf("New(%+v) = %v, want code %s", cfg, err, dibs.EINVALID)
		}
	}
}

func TestStartsAtMin(t *testing.T) {
	t.Parallel()
	if got := mustNew(t, pace.Config{Min: 25, Max: 500}).Rate(); got != 25 {
		t.Errorf("first rate %d, want min 25", got)
	}
}

func TestAdditiveIncreaseWhenHealthy(t *testing.T) {
	t.Parallel()
	c := mustNew(t, pace.Config{Min: 10, Max: 100, Increase: 7})
	for _, want := range []int{17, 24, 31} {
		if got, why := c.Next(healthy); got != want || why != pace.ReasonIncrease {
			t.Fatalf("Next(healthy) = %d %s, want %d %s", got, why, want, pace.ReasonIncrease)
		}
	}
}

func TestEachSignalCutsTheRate(t *testing.T) {
	t.Parallel()
	sick := map[pace.Reason]func(h *pace.Health){
		pace.ReasonBacklog: func(h *pace.Health) { h.ChargeBacklog = h.BacklogTarget + 1 },
		pace.ReasonLatency: func(h *pace.Health) { h.GatewayP99 = h.LatencyTarget + time.Millisecond },
		pace.ReasonBreaker: func(h *pace.Health) { h.BreakerOpen = true },
	}
	for reason, sicken := range sick {
		t.Run(string(reason), func(t *testing.T) {
			t.Parallel()
			c := at(t, pace.Config{Min: 10, Max: 1000, Increase: 100, Decrease: 0.25}, 810)
			h := healthy
			sicken(&h)
			if got, why := c.Next(h); got != 202 || why != reason {
				t.Errorf("Next = %d %s, want 202 (810 × 0.25, rounded down) %s", got, why, reason)
			}
		})
	}
}

// A signal at its target is healthy; only past it does the rate fall.
func TestTargetIsHealthy(t *testing.T) {
	t.Parallel()
	c := mustNew(t, pace.Config{Max: 100, Increase: 10})
	h := healthy
	h.ChargeBacklog, h.GatewayP99 = h.BacklogTarget, h.LatencyTarget
	if got, why := c.Next(h); got != 10 || why != pace.ReasonIncrease {
		t.Errorf("Next at the targets = %d %s, want 10 %s", got, why, pace.ReasonIncrease)
	}
}

// A target of zero turns its signal off.
func TestZeroTargetIgnored(t *testing.T) {
	t.Parallel()
	c := mustNew(t, pace.Config{Max: 100, Increase: 10})
	h := pace.Health{ChargeBacklog: 1e9, GatewayP99: time.Hour, Remaining: 1000, Waiting: 1}
	if got, why := c.Next(h); got != 10 || why != pace.ReasonIncrease {
		t.Errorf("Next without targets = %d %s, want 10 %s", got, why, pace.ReasonIncrease)
	}
}

func TestIdleRoomHolds(t *testing.T) {
	t.Parallel()
	c := at(t, pace.Config{Max: 100, Increase: 10}, 40)
	h := healthy
	h.Waiting = 0
	if got, why := c.Next(h); got != 40 || why != pace.ReasonIdle {
		t.Errorf("Next with nobody waiting = %d %s, want 40 %s", got, why, pace.ReasonIdle)
	}
	h.BreakerOpen = true
	if got, why := c.Next(h); got != 20 || why != pace.ReasonBreaker {
		t.Errorf("an idle room with an open breaker = %d %s, want 20 %s", got, why, pace.ReasonBreaker)
	}
}

func TestClampedToMinAndMax(t *testing.T) {
	t.Parallel()
	c := mustNew(t, pace.Config{Min: 30, Max: 95, Increase: 40})
	for _, want := range []int{70, 95, 95} {
		if got, _ := c.Next(healthy); got != want {
			t.Fatalf("Next(healthy) = %d, want %d", got, want)
		}
	}
	sick := healthy
	sick.BreakerOpen = true
	for _, want := range []int{47, 30, 30} {
		if got, _ := c.Next(sick); got != want {
			t.Fatalf("Next(breaker open) = %d, want %d", got, want)
		}
	}
}

func TestNeverBeyondStock(t *testing.T) {
	t.Parallel()
	c := at(t, pace.Config{Min: 5, Max: 1000, Increase: 100}, 505)
	h := healthy
	h.Remaining = 120
	if got, _ := c.Next(h); got != 120 {
		t.Errorf("Next with 120 left = %d, want 120", got)
	}
	h.Remaining = 2
	if got, _ := c.Next(h); got != 5 {
		t.Errorf("Next with 2 left = %d, want min 5", got)
	}
	h.Remaining = 0
	if got, _ := c.Next(h); got != 5 {
		t.Errorf("Next sold out = %d, want min 5", got)
	}
	// Stock that comes back lets the rate grow again from where it was.
	h.Remaining = 1000
	if got, _ := c.Next(h); got != 105 {
		t.Errorf("Next with stock back = %d, want 105", got)
	}
}

// A sale told tick by tick: the room ramps while healthy, the gateway slows
// and the rate halves until it recovers, then ramps again.
func TestScenario(t *testing.T) {
	t.Parallel()
	slow := healthy
	slow.GatewayP99 = 2 * time.Second
	backlog := healthy
	backlog.ChargeBacklog = 5000
	open := healthy
	open.BreakerOpen = true
	low := healthy
	low.Remaining = 150

	c := mustNew(t, pace.Config{Min: 50, Max: 400, Increase: 50})
	for i, step := range []struct {
		what string
		h    pace.Health
		want int
		why  pace.Reason
	}{
		{"healthy", healthy, 100, pace.ReasonIncrease},
		{"healthy", healthy, 150, pace.ReasonIncrease},
		{"healthy", healthy, 200, pace.ReasonIncrease},
		{"healthy", healthy, 250, pace.ReasonIncrease},
		{"healthy", healthy, 300, pace.ReasonIncrease},
		{"gateway slows", slow, 150, pace.ReasonLatency},
		{"gateway still slow", slow, 75, pace.ReasonLatency},
		{"charges pile up", backlog, 50, pace.ReasonBacklog},
		{"breaker opens", open, 50, pace.ReasonBreaker},
		{"recovered", healthy, 100, pace.ReasonIncrease},
		{"recovered", healthy, 150, pace.ReasonIncrease},
		{"recovered", healthy, 200, pace.ReasonIncrease},
		{"stock runs low", low, 150, pace.ReasonIncrease},
		{"healthy", healthy, 200, pace.ReasonIncrease},
		{"healthy", healthy, 250, pace.ReasonIncrease},
		{"healthy", healthy, 300, pace.ReasonIncrease},
		{"healthy", healthy, 350, pace.ReasonIncrease},
		{"healthy", healthy, 400, pace.ReasonIncrease},
		{"at max", healthy, 400, pace.ReasonIncrease},
	} {
		if got, why := c.Next(step.h); got != step.want || why != step.why {
			t.Fatalf("tick %d (%s): %d %s, want %d %s", i+1, step.what, got, why, step.want, step.why)
		}
	}
}

// Whatever the config and the signals, the rate stays within [Min, Max]
// and within max(Min, Remaining), and a cut never raises it.
func TestRateStaysInBounds(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(t *rapid.T) {
		hi := rapid.IntRange(1, 1_000_000).Draw(t, "max")
		cfg := pace.Config{
			Min:      rapid.IntRange(0, hi).Draw(t, "min"),
			Max:      hi,
			Increase: rapid.IntRange(0, 2*hi).Draw(t, "increase"),
			Decrease: rapid.Float64Range(0, 0.99).Draw(t, "decrease"),
		}
		c, err := pace.New(cfg)
		if err != nil {
			t.Fatalf("New(%+v): %v", cfg, err)
		}
		for tick := range rapid.IntRange(1, 200).Draw(t, "ticks") {
			h := pace.Health{
				ChargeBacklog: rapid.Int64Range(0, 1000).Draw(t, "backlog"),
				BacklogTarget: rapid.Int64Range(-1, 1000).Draw(t, "backlog_target"),
				GatewayP99:    time.Duration(rapid.Int64Range(0, int64(time.Second)).Draw(t, "p99")),
				LatencyTarget: time.Duration(rapid.Int64Range(-1, int64(time.Second)).Draw(t, "latency_target")),
				BreakerOpen:   rapid.Bool().Draw(t, "breaker"),
				Remaining:     rapid.Int64Range(-10, 2_000_000).Draw(t, "remaining"),
				Waiting:       rapid.Int64Range(0, 10).Draw(t, "waiting"),
			}
			before := c.Rate()
			got, why := c.Next(h)
			if got < cfg.Min || got > cfg.Max {
				t.Fatalf("tick %d: rate %d outside [%d, %d]", tick, got, cfg.Min, cfg.Max)
			}
			if int64(got) > h.Remaining && got > cfg.Min {
				t.Fatalf("tick %d: rate %d beyond remaining %d and min %d", tick, got, h.Remaining, cfg.Min)
			}
			switch why {
			case pace.ReasonBacklog, pace.ReasonLatency, pace.ReasonBreaker:
				if got > before {
					t.Fatalf("tick %d: cut (%s) from %d to %d", tick, why, before, got)
				}
			}
			if got != c.Rate() {
				t.Fatalf("tick %d: Next returned %d, Rate says %d", tick, got, c.Rate())
			}
		}
	})
}
