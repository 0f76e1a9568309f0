// Package pace steers a waiting room's admission rate by the health of
// what admitted people go on to load: the payment backlog, the payment
// gateway's latency and its circuit breaker, and the stock left.
//
// The controller is AIMD (additive increase, multiplicative decrease), the
// rule TCP congestion control uses: while every signal is healthy the rate
// grows by a fixed step per tick, and as soon as one is not it is cut by a
// factor. Many rooms (or nodes) that share one bottleneck, such as one
// payment gateway, each running AIMD on the signals of that bottleneck,
// converge to a fair share of it and stay stable around it: the slow
// increase probes for room, the sharp decrease drains a queue faster than
// it builds.
//
// The controller reads no clock and starts no goroutine: the caller ticks
// it every Config.Tick with the signals it measured over that tick.
package pace

import (
	"math"
	"time"

	"github.com/dibs-io/dibs"
)

// Config bounds and shapes the rate. Rates are admissions per second.
type Config struct {
	// Min and Max bound the rate. Max must be positive and at least Min.
	Min, Max int
	// Increase is added to the rate on a healthy tick; 0 means
	// max(1, Max/20), a ramp from 0 to Max in twenty healthy ticks.
	Increase int
	// Decrease multiplies the rate on an unhealthy tick; 0 means 0.5. It
	// must be below 1 and above 0.
	Decrease float64
	// Tick is how often the caller calls Next; 0 means one second. The
	// controller does not read it: the ramp is Increase per Tick.
	Tick time.Duration
}

// Defaults of Config's zero fields.
const (
	DefaultDecrease = 0.5
	DefaultTick     = time.Second
)

// WithDefaults returns c with its zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.Increase == 0 {
		c.Increase = max(1, c.Max/20)
	}
	if c.Decrease == 0 {
		c.Decrease = DefaultDecrease
	}
	if c.Tick == 0 {
		c.Tick = DefaultTick
	}
	return c
}

// Validate reports a config the controller cannot run with, as a dibs
// error with code EINVALID.
func (c Config) Validate() error {
	switch {
	case c.Min < 0:
		return dibs.Errorf(dibs.EINVALID, "pace: min rate %d is negative", c.Min)
	case c.Max <= 0:
		return dibs.Errorf(dibs.EINVALID, "pace: max rate %d must be positive", c.Max)
	case c.Max < c.Min:
		return dibs.Errorf(dibs.EINVALID, "pace: max rate %d is below min rate %d", c.Max, c.Min)
	case c.Increase < 0:
		return dibs.Errorf(dibs.EINVALID, "pace: increase %d is negative", c.Increase)
	case c.Decrease < 0 || c.Decrease >= 1 || math.IsNaN(c.Decrease):
		return dibs.Errorf(dibs.EINVALID, "pace: decrease factor %g must be above 0 and below 1", c.Decrease)
	case c.Tick < 0:
		return dibs.Errorf(dibs.EINVALID, "pace: tick %s is negative", c.Tick)
	}
	return nil
}

// Health is what the caller measured over the last tick.
//
// A target of zero or less turns its signal off: a coupon drop has no
// payments to watch.
type Health struct {
	// ChargeBacklog is the number of charges queued and not yet sent to the
	// payment gateway; BacklogTarget the most the caller accepts.
	ChargeBacklog, BacklogTarget int64
	// GatewayP99 is the payment gateway's 99th percentile latency;
	// LatencyTarget the most the caller accepts.
	GatewayP99, LatencyTarget time.Duration
	// BreakerOpen is true while the payment client's circuit breaker is
	// open (or half-open): the gateway is failing.
	BreakerOpen bool
	// Remaining is the free stock: slots nobody holds.
	Remaining int64
	// Waiting is the number of people in the room not admitted yet.
	Waiting int64
}

// Reason says why Next chose its rate.
type Reason string

const (
	ReasonIncrease Reason = "increase" // every signal healthy: the rate grew
	ReasonIdle     Reason = "idle"     // nobody waits: the rate held
	ReasonBacklog  Reason = "backlog"  // charge backlog over its target: the rate was cut
	ReasonLatency  Reason = "latency"  // gateway p99 over its target: the rate was cut
	ReasonBreaker  Reason = "breaker"  // the breaker is open: the rate was cut
)

// Controller holds the current rate. It is not safe for concurrent use:
// one goroutine ticks it.
type Controller struct {
	cfg  Config
	rate int
}

// New returns a controller at cfg.Min, so that a room opens slowly and
// earns its rate, or an EINVALID error.
func New(cfg Config) (*Controller, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Controller{cfg: cfg, rate: cfg.Min}, nil
}

// Config returns the controller's config with its defaults applied.
func (c *Controller) Config() Config { return c.cfg }

// Rate returns the current rate.
func (c *Controller) Rate() int { return c.rate }

// Next takes the signals of the last tick and returns the rate for the
// next one, and why.
//
// The rules, in order:
//   - the breaker is open, the gateway's p99 is over its target or the
//     charge backlog is over its target: the rate is multiplied by
//     Decrease;
//   - nobody waits: the rate holds, since a rate nobody used says nothing
//     about whether the system can take it (TCP does not grow an idle
//     window either);
//   - otherwise the rate grows by Increase.
//
// The result is clamped to [Min, Max] and never exceeds max(Min,
// Remaining): admitting more people a second than there are free slots
// only makes them wait to be told sold out. Slots held and not yet paid
// may come back; counting them in is the caller's choice, by what it
// passes as Remaining.
func (c *Controller) Next(h Health) (int, Reason) {
	why := c.judge(h)
	rate := c.rate
	switch why {
	case ReasonIncrease:
		if rate > c.cfg.Max-c.cfg.Increase { // saturate at Max, never overflow
			rate = c.cfg.Max
		} else {
			rate += c.cfg.Increase
		}
	case ReasonIdle:
	default:
		rate = int(math.Floor(float64(rate) * c.cfg.Decrease))
	}
	rate = min(max(rate, c.cfg.Min), c.cfg.Max)
	if ceiling := max(int64(c.cfg.Min), h.Remaining); int64(rate) > ceiling {
		rate = int(ceiling)
	}
	c.rate = rate
	return rate, why
}

// judge names the first unhealthy signal, or what a healthy tick does.
func (c *Controller) judge(h Health) Reason {
	switch {
	case h.BreakerOpen:
		return ReasonBreaker
	case h.LatencyTarget > 0 && h.GatewayP99 > h.LatencyTarget:
		return ReasonLatency
	case h.BacklogTarget > 0 && h.ChargeBacklog > h.BacklogTarget:
		return ReasonBacklog
	case h.Waiting <= 0:
		return ReasonIdle
	}
	return ReasonIncrease
}
