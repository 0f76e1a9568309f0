package pace

import (
	"context"
	"sync"
	"time"

	"github.com/dibs-io/dibs"
)

// HealthSource measures what admitted people of a drop go on to load:
// its charge backlog, the payment gateway's latency and breaker, with the
// targets they are judged by. Pacer fills in Waiting and Remaining.
type HealthSource interface {
	Health(ctx context.Context, d *dibs.Drop) (Health, error)
}

// RateSetter records the rate chosen for an auto-paced drop; the engine
// implements it (only while the drop's pace is auto, clamped to its
// bounds).
type RateSetter interface {
	SetPacedRate(ctx context.Context, id string, rate int) error
}

// Pacer steers the rates of auto-paced drops, one Controller per drop,
// stepped at most once per tick by the leader of the drop's room
// (room.Pacer). A controller starts from the drop's current rate, so a
// new leader carries on where the last one left off.
//
// Safe for concurrent use.
type Pacer struct {
	health HealthSource
	rates  RateSetter
	tick   time.Duration

	mu    sync.Mutex
	drops map[string]*paced
}

type paced struct {
	ctl      *Controller
	min, max int
	at       time.Time // last step
	reason   Reason
}

// NewPacer returns a Pacer stepping each drop every tick (DefaultTick if
// zero).
func NewPacer(health HealthSource, rates RateSetter, tick time.Duration) *Pacer {
	if tick <= 0 {
		tick = DefaultTick
	}
	return &Pacer{health: health, rates: rates, tick: tick, drops: make(map[string]*paced)}
}

// Pace implements room.Pacer: once a tick it measures the drop's health,
// steps its controller and records the rate if it changed.
func (p *Pacer) Pace(ctx context.Context, d *dibs.Drop, waiting, remaining int64, now time.Time) error {
	a := d.Admission
	if a.Pace != dibs.PaceAuto {
		return nil
	}
	p.mu.Lock()
	st := p.drops[d.ID]
	if st == nil || st.min != a.MinRate || st.max != a.MaxRate {
		ctl, err := New(Config{Min: a.MinRate, Max: a.MaxRate, Tick: p.tick})
		if err != nil {
			p.mu.Unlock()
			return err
		}
		st = &paced{ctl: ctl, min: a.MinRate, max: a.MaxRate}
		p.drops[d.ID] = st
	}
	if !st.at.IsZero() && now.Sub(st.at) < p.tick {
		p.mu.Unlock()
		return nil
	}
	st.at = now
	st.ctl.rate = min(max(a.Rate, a.MinRate), a.MaxRate) // the rate as the record has it
	p.mu.Unlock()

	h, err := p.health.Health(ctx, d)
	if err != nil {
		return err
	}
	h.Waiting, h.Remaining = waiting, remaining
	p.mu.Lock()
	rate, why := st.ctl.Next(h)
	st.reason = why
	p.mu.Unlock()
	if rate == a.Rate {
		return nil
	}
	return p.rates.SetPacedRate(ctx, d.ID, rate)
}

// Reason returns why the drop's rate last changed or held ("" if the
// drop was never paced here).
func (p *Pacer) Reason(dropID string) Reason {
	p.mu.Lock()
	defer p.mu.Unlock()
	if st := p.drops[dropID]; st != nil {
		return st.reason
	}
	return ""
}
