package pgsim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/dibs-io/dibs"
)

// Latency is how long the simulator takes to answer a request:
//
//	delay = Base + Median·exp(Sigma·Z),  Z ~ N(0,1)
//
// that is a fixed floor plus a log-normal tail whose median is Median. With
// Sigma 0 the tail is the constant Median; with Sigma 0.5 its 90th
// percentile is 1.9×Median and its 99th 3.2×Median; with Sigma 1, 3.6× and
// 10×. Zero Median means no tail.
type Latency struct {
	Base   time.Duration
	Median time.Duration
	Sigma  float64
}

// Sample draws one delay using r. It always draws exactly two values from r
// (Z by Box–Muller), whatever the knobs, so that the sequence of choices a
// seed gives does not shift when latency is switched on or off.
func (l Latency) Sample(r *rand.Rand) time.Duration {
	u1, u2 := r.Float64(), r.Float64()
	if l.Median <= 0 {
		return l.Base
	}
	z := math.Sqrt(-2*math.Log(1-u1)) * math.Cos(2*math.Pi*u2) // 1-u1 is in (0, 1]
	return l.Base + time.Duration(float64(l.Median)*math.Exp(l.Sigma*z))
}

// Outage modes: how the simulator behaves during an outage.
const (
	// OutageUnavailable answers 503 with code "unavailable" at once.
	OutageUnavailable = "unavailable"
	// OutageTimeout hangs like a timeout fault (never applying the request).
	OutageTimeout = "timeout"
	// OutageReset resets the connection at once.
	OutageReset = "reset"
)

// Knobs are the simulator's behaviour, changeable while it runs (SetKnobs,
// PUT /admin/knobs). The zero Knobs is a perfect gateway: instant, never
// declining, never failing.
type Knobs struct {
	// Latency of every /v1 answer, faults included.
	Latency Latency
	// DeclineRate is the fraction of new charges declined.
	DeclineRate float64
	// TimeoutRate is the fraction of charges and refunds that hang for Hang
	// (or until the client leaves) instead of answering.
	TimeoutRate float64
	// ResetRate is the fraction of charges and refunds whose connection is
	// reset after the latency, with no answer.
	ResetRate float64
	// ErrorRate is the fraction of charges and refunds answered 500 after
	// the latency.
	ErrorRate float64
	// FaultApplied is the probability that a request hit by a timeout,
	// reset or 500 fault was applied anyway, as a real gateway may have done
	// before failing. A later lookup finds such a charge.
	FaultApplied float64
	// Hang is how long a timeout fault hangs before answering 504. It should
	// outlast any client timeout.
	Hang time.Duration
	// MaxConcurrency caps the /v1 requests in progress; the excess is
	// answered 503 "overloaded" at once, like a gateway past its capacity.
	// Zero means no cap.
	MaxConcurrency int
	// OutageMode is how outages behave: OutageUnavailable (default),
	// OutageTimeout or OutageReset.
	OutageMode string
}

// DefaultKnobs is what `dibs pgsim` starts with: answers in about 50 ms, a
// few declines, no faults.
func DefaultKnobs() Knobs {
	return Knobs{
		Latency:      Latency{Base: 20 * time.Millisecond, Median: 30 * time.Millisecond, Sigma: 0.5},
		DeclineRate:  0.05,
		FaultApplied: 0.5,
		Hang:         time.Minute,
		OutageMode:   OutageUnavailable,
	}
}

// Validate reports the first thing wrong with k as an EINVALID *dibs.Error.
func (k Knobs) Validate() error {
	rate := func(name string, v float64) error {
		if v < 0 || v > 1 || math.IsNaN(v) {
			return dibs.Errorf(dibs.EINVALID, "%s must be between 0 and 1", name)
		}
		return nil
	}
	for _, r := range []struct {
		name string
		v    float64
	}{
		{"decline rate", k.DeclineRate},
		{"timeout rate", k.TimeoutRate},
		{"reset rate", k.ResetRate},
		{"error rate", k.ErrorRate},
		{"fault applied", k.FaultApplied},
	} {
		if err := rate(r.name, r.v); err != nil {
			return err
		}
	}
	switch {
	case k.TimeoutRate+k.ResetRate+k.ErrorRate > 1:
		return dibs.Errorf(dibs.EINVALID, "timeout, reset and error rates must add up to at most 1")
	case k.Latency.Base < 0 || k.Latency.Median < 0 || k.Hang < 0:
		return dibs.Errorf(dibs.EINVALID, "durations must not be negative")
	case k.Latency.Sigma < 0 || k.Latency.Sigma > 3 || math.IsNaN(k.Latency.Sigma):
		return dibs.Errorf(dibs.EINVALID, "latency sigma must be between 0 and 3")
	case k.MaxConcurrency < 0:
		return dibs.Errorf(dibs.EINVALID, "max concurrency must not be negative")
	case k.OutageMode != "" && k.OutageMode != OutageUnavailable && k.OutageMode != OutageTimeout && k.OutageMode != OutageReset:
		return dibs.Errorf(dibs.EINVALID, "outage mode must be %s, %s or %s", OutageUnavailable, OutageTimeout, OutageReset)
	}
	return nil
}

// String describes the knobs for logs.
func (k Knobs) String() string {
	return fmt.Sprintf("latency=%s+%s(sigma=%g) decline=%g timeout=%g reset=%g error=%g applied=%g hang=%s cap=%d outage=%s",
		k.Latency.Base, k.Latency.Median, k.Latency.Sigma,
		k.DeclineRate, k.TimeoutRate, k.ResetRate, k.ErrorRate, k.FaultApplied, k.Hang, k.MaxConcurrency, k.OutageMode)
}

// knobsJSON is Knobs on the wire, with durations as Go duration strings.
type knobsJSON struct {
	LatencyBase    string  `json:"latency"`
	LatencyMedian  string  `json:"latency_median"`
	LatencySigma   float64 `json:"latency_sigma"`
	DeclineRate    float64 `json:"decline_rate"`
	TimeoutRate    float64 `json:"timeout_rate"`
	ResetRate      float64 `json:"reset_rate"`
	ErrorRate      float64 `json:"error_rate"`
	FaultApplied   float64 `json:"fault_applied"`
	Hang           string  `json:"hang"`
	MaxConcurrency int     `json:"max_concurrency"`
	OutageMode     string  `json:"outage_mode"`
}

// MarshalJSON writes k with durations such as "20ms".
func (k Knobs) MarshalJSON() ([]byte, error) {
	return json.Marshal(knobsJSON{
		LatencyBase:    k.Latency.Base.String(),
		LatencyMedian:  k.Latency.Median.String(),
		LatencySigma:   k.Latency.Sigma,
		DeclineRate:    k.DeclineRate,
		TimeoutRate:    k.TimeoutRate,
		ResetRate:      k.ResetRate,
		ErrorRate:      k.ErrorRate,
		FaultApplied:   k.FaultApplied,
		Hang:           k.Hang.String(),
		MaxConcurrency: k.MaxConcurrency,
		OutageMode:     k.OutageMode,
	})
}

// UnmarshalJSON reads what MarshalJSON writes. Members left out keep the
// value k had, so a client may send only the knobs it changes; unknown
// members are an error, so a misspelt knob is not silently ignored.
func (k *Knobs) UnmarshalJSON(data []byte) error {
	var j knobsJSON
	if err := json.Unmarshal(mustMarshal(*k), &j); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return fmt.Errorf("parse knobs: %w", err)
	}
	var out Knobs
	for _, d := range []struct {
		s   string
		dst *time.Duration
	}{
		{j.LatencyBase, &out.Latency.Base},
		{j.LatencyMedian, &out.Latency.Median},
		{j.Hang, &out.Hang},
	} {
		v, err := time.ParseDuration(d.s)
		if err != nil {
			return fmt.Errorf("parse knobs: %w", err)
		}
		*d.dst = v
	}
	out.Latency.Sigma = j.LatencySigma
	out.DeclineRate = j.DeclineRate
	out.TimeoutRate = j.TimeoutRate
	out.ResetRate = j.ResetRate
	out.ErrorRate = j.ErrorRate
	out.FaultApplied = j.FaultApplied
	out.MaxConcurrency = j.MaxConcurrency
	out.OutageMode = j.OutageMode
	*k = out
	return nil
}

func mustMarshal(k Knobs) []byte {
	b, err := k.MarshalJSON()
	if err != nil {
		panic(err) // only strings and numbers: cannot fail
	}
	return b
}

// Window is a scheduled outage: from Start after the simulator started, for
// Duration.
type Window struct {
	Start    time.Duration
	Duration time.Duration
}

// String formats w as ParseWindow reads it.
func (w Window) String() string { return w.Start.String() + "+" + w.Duration.String() }

// ParseWindow reads an outage window written START+DURATION, e.g. "30s+10s":
// from 30 s after start, for 10 s.
func ParseWindow(s string) (Window, error) {
	start, dur, ok := strings.Cut(s, "+")
	if !ok {
		return Window{}, dibs.Errorf(dibs.EINVALID, "outage %q: want START+DURATION, e.g. 30s+10s", s)
	}
	var w Window
	var err1, err2 error
	w.Start, err1 = time.ParseDuration(strings.TrimSpace(start))
	w.Duration, err2 = time.ParseDuration(strings.TrimSpace(dur))
	if err1 != nil || err2 != nil || w.Start < 0 || w.Duration <= 0 {
		return Window{}, dibs.Errorf(dibs.EINVALID, "outage %q: want START+DURATION, e.g. 30s+10s", s)
	}
	return w, nil
}

// Config configures a Simulator.
type Config struct {
	Knobs
	// Outages are scheduled outage windows, relative to New.
	Outages []Window
	// APIKey, when set, is required as "Authorization: Bearer <APIKey>" on
	// /v1 requests.
	APIKey string
	// Seed seeds the simulator's randomness. Zero picks a seed from the
	// clock; Stats reports the seed in use, so a run can be replayed.
	Seed uint64
	// Now tells the time. Default: time.Now.
	Now func() time.Time
}

// Validate reports the first thing wrong with c as an EINVALID *dibs.Error.
func (c Config) Validate() error {
	if err := c.Knobs.Validate(); err != nil {
		return err
	}
	for _, w := range c.Outages {
		if w.Start < 0 || w.Duration <= 0 {
			return dibs.Errorf(dibs.EINVALID, "outage %s: start must not be negative, duration must be positive", w)
		}
	}
	return nil
}
