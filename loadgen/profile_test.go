package loadgen_test

import (
	"testing"
	"time"

	"github.com/dibs-io/dibs/loadgen"
)

func TestProfileSchedules(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		p     loadgen.Profile
		n     int
		span  time.Duration // offset of the last arrival, ±1%
		early float64       // fraction of users due within the first 10% of the span, ±0.02
	}{
		{"constant by rate", loadgen.Profile{Shape: loadgen.Constant, Rate: 1000}, 1001, time.Second, 0.1},
		{"constant by duration", loadgen.Profile{Shape: loadgen.Constant, Duration: 2 * time.Second}, 2000, 1999 * time.Millisecond, 0.1},
		// The ramp takes the first 10% at half the peak rate on average.
		{"spike", loadgen.Profile{Shape: loadgen.Spike, Duration: 2 * time.Second}, 200_000, 2 * time.Second, 0.05 / 0.825},
		{"flat spike", loadgen.Profile{Shape: loadgen.Spike, Duration: time.Second, Ramp: time.Nanosecond, Decay: time.Nanosecond}, 1000, time.Second, 0.1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			at := loadgen.Offsets(tt.p, tt.n)
			if at[0] != 0 {
				t.Errorf("first arrival at %v, want 0", at[0])
			}
			for i := 1; i < len(at); i++ {
				if at[i] < at[i-1] {
					t.Fatalf("arrival %d at %v before arrival %d at %v", i, at[i], i-1, at[i-1])
				}
			}
			last := at[len(at)-1]
			if d := last - tt.span; d < -tt.span/100 || d > tt.span/100 {
				t.Errorf("last arrival at %v, want %v ±1%%", last, tt.span)
			}
			var early int
			for _, a := range at {
				if a < tt.span/10 {
					early++
				}
			}
			if got := float64(early) / float64(tt.n); got < tt.early-0.02 || got > tt.early+0.02 {
				t.Errorf("%.3f of users in the first tenth of the span, want %.3f", got, tt.early)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	valid := func() loadgen.Config {
		return loadgen.Config{Target: "http://127.0.0.1:8080", DropID: "d", Users: 10, PassportSecret: []byte("s"), AdminToken: "t",
			Profile: loadgen.Profile{Shape: loadgen.Spike, Duration: time.Second}}
	}
	tests := []struct {
		name   string
		change func(*loadgen.Config)
		ok     bool
	}{
		{"valid", func(*loadgen.Config) {}, true},
		{"default shape", func(c *loadgen.Config) { c.Profile.Shape = "" }, true},
		{"no scheme", func(c *loadgen.Config) { c.Target = "127.0.0.1:8080" }, false},
		{"no target", func(c *loadgen.Config) { c.Target = "" }, false},
		{"several targets", func(c *loadgen.Config) { c.Target, c.Targets = "", []string{"http://a:1", "https://b:2"} }, true},
		{"target and targets", func(c *loadgen.Config) { c.Targets = []string{"http://a:1"} }, false},
		{"a bad one of several targets", func(c *loadgen.Config) { c.Target, c.Targets = "", []string{"http://a:1", "b:2"} }, false},
		{"bad drop id", func(c *loadgen.Config) { c.DropID = "Drop 1" }, false},
		{"no users", func(c *loadgen.Config) { c.Users = 0 }, false},
		{"retry fraction over 1", func(c *loadgen.Config) { c.RetryFraction = 1.5 }, false},
		{"no secret", func(c *loadgen.Config) { c.PassportSecret = nil }, false},
		{"no admin token", func(c *loadgen.Config) { c.AdminToken = "" }, false},
		{"spike without duration", func(c *loadgen.Config) { c.Profile.Duration = 0 }, false},
		{"ramp and decay too long", func(c *loadgen.Config) { c.Profile.Ramp, c.Profile.Decay = time.Second, time.Second }, false},
		{"constant without rate or duration", func(c *loadgen.Config) { c.Profile = loadgen.Profile{Shape: loadgen.Constant} }, false},
		{"unknown shape", func(c *loadgen.Config) { c.Profile.Shape = "wave" }, false},
		{"negative regular rate", func(c *loadgen.Config) { c.Regular.Rate = -1 }, false},
		{"negative timeout", func(c *loadgen.Config) { c.RequestTimeout = -time.Second }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := valid()
			tt.change(&c)
			if err := c.Validate(); (err == nil) != tt.ok {
				t.Errorf("Validate() = %v, want ok %v", err, tt.ok)
			}
		})
	}
}
