package loadgen

import (
	"fmt"
	"math"
	"time"
)

// Shape names an arrival profile.
type Shape string

const (
	// Spike ramps the arrival rate from zero to a peak, holds it, and lets it
	// decay to zero, all within Profile.Duration: the first minute of a drop.
	Spike Shape = "spike"
	// Constant keeps the arrival rate at Profile.Rate.
	Constant Shape = "constant"
)

// Profile says when users arrive. Arrivals follow the schedule whether or
// not earlier users got an answer (an open model): the arrival of user i
// depends only on i.
type Profile struct {
	Shape Shape

	// Duration is the span within which every user arrives (spike), or the
	// span over which users arrive at a constant rate when Rate is zero.
	Duration time.Duration

	// Rate is the arrival rate of the constant shape, in users per second.
	// When set it wins over Duration.
	Rate float64

	// Ramp is how long the spike takes from zero to its peak rate (default
	// Duration/10); Decay how long it takes from the peak back to zero
	// (default Duration/4). The peak holds in between.
	Ramp, Decay time.Duration
}

// withDefaults fills the ramp and decay of a spike.
func (p Profile) withDefaults() Profile {
	if p.Shape == "" {
		p.Shape = Spike
	}
	if p.Shape == Spike {
		if p.Ramp == 0 {
			p.Ramp = p.Duration / 10
		}
		if p.Decay == 0 {
			p.Decay = p.Duration / 4
		}
	}
	return p
}

// Validate reports the first thing wrong with p.
func (p Profile) Validate() error {
	p = p.withDefaults()
	switch p.Shape {
	case Spike:
		if p.Duration <= 0 {
			return fmt.Errorf("spike profile: duration must be positive")
		}
		if p.Ramp < 0 || p.Decay < 0 || p.Ramp+p.Decay > p.Duration {
			return fmt.Errorf("spike profile: ramp and decay must fit in the duration")
		}
	case Constant:
		if p.Rate < 0 || math.IsNaN(p.Rate) || math.IsInf(p.Rate, 0) {
			return fmt.Errorf("constant profile: rate must be a positive number")
		}
		if p.Rate == 0 && p.Duration <= 0 {
			return fmt.Errorf("constant profile: set a rate or a duration")
		}
	default:
		return fmt.Errorf("profile shape must be %q or %q", Spike, Constant)
	}
	return nil
}

// schedule is a profile applied to n users: it maps a user's index to the
// offset of its arrival from the start. It computes each offset on demand,
// so its size does not grow with n.
type schedule struct {
	n int
	// constant
	interval float64 // seconds between arrivals
	// spike, in seconds and users per second
	ramp, hold, decay, peak float64
}

func newSchedule(p Profile, n int) schedule {
	p = p.withDefaults()
	s := schedule{n: n}
	if p.Shape == Constant {
		rate := p.Rate
		if rate == 0 {
			rate = float64(n) / p.Duration.Seconds()
		}
		s.interval = 1 / rate
		return s
	}
	s.ramp, s.decay = p.Ramp.Seconds(), p.Decay.Seconds()
	s.hold = p.Duration.Seconds() - s.ramp - s.decay
	// The rate is a trapezoid whose area is n users.
	s.peak = float64(n) / (s.ramp/2 + s.hold + s.decay/2)
	return s
}

// at is the offset at which user i arrives: the time by which the profile's
// cumulative arrivals reach i.
func (s schedule) at(i int) time.Duration {
	c := float64(i)
	if s.interval > 0 {
		return seconds(c * s.interval)
	}
	rampUsers := s.peak * s.ramp / 2
	holdUsers := s.peak * s.hold
	switch {
	case c < rampUsers:
		// Users during the ramp: peak*t²/(2*ramp).
		return seconds(math.Sqrt(2 * s.ramp * c / s.peak))
	case c < rampUsers+holdUsers:
		return seconds(s.ramp + (c-rampUsers)/s.peak)
	}
	// Users during the decay: peak*(x - x²/(2*decay)) after the hold.
	u := (c - rampUsers - holdUsers) / s.peak
	d := s.decay*s.decay - 2*s.decay*u
	x := s.decay - math.Sqrt(max(d, 0))
	return seconds(s.ramp + s.hold + x)
}

// span is the offset of the last arrival.
func (s schedule) span() time.Duration {
	if s.n == 0 {
		return 0
	}
	return s.at(s.n - 1)
}

// peakRate is the highest arrival rate, in users per second.
func (s schedule) peakRate() float64 {
	if s.interval > 0 {
		return 1 / s.interval
	}
	return s.peak
}

func seconds(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }
