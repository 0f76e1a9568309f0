package loadgen

import "time"

// Offsets exposes the schedule of p for n users to the black-box tests.
func Offsets(p Profile, n int) []time.Duration {
	s := newSchedule(p, n)
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = s.at(i)
	}
	return out
}
