package live

import (
	"math"
	"sort"
)

// Buckets is a histogram as Prometheus keeps one: Counts[i] observations
// were at most Bounds[i] (cumulative), and Counts[len(Bounds)] is every
// observation (the +Inf bucket, which JSON cannot spell as a bound).
// Bounds are increasing.
type Buckets struct {
	Bounds []float64 `json:"bounds"`
	Counts []uint64  `json:"counts"`
}

// Total is the number of observations.
func (b Buckets) Total() uint64 {
	if len(b.Counts) == 0 {
		return 0
	}
	return b.Counts[len(b.Counts)-1]
}

// at is the cumulative count at bound x: the count of the largest bound at
// most x. Exact when x is one of b's bounds.
func (b Buckets) at(x float64) uint64 {
	i := sort.SearchFloat64s(b.Bounds, x) // first bound >= x
	if i < len(b.Bounds) && b.Bounds[i] == x {
		return b.Counts[i]
	}
	if i == 0 {
		return 0
	}
	return b.Counts[i-1]
}

// Sub returns the observations of b that old had not seen: b minus old,
// bucket by bucket. A histogram that restarted (a count went down) is
// taken whole, as Prometheus's rate() takes a counter reset.
func (b Buckets) Sub(old Buckets) Buckets {
	out := Buckets{Bounds: b.Bounds, Counts: make([]uint64, len(b.Counts))}
	for i, n := range b.Counts {
		var was uint64
		if i < len(b.Bounds) {
			was = old.at(b.Bounds[i])
		} else {
			was = old.Total()
		}
		if n < was {
			copy(out.Counts, b.Counts)
			return out
		}
		out.Counts[i] = n - was
	}
	return out
}

// Merge adds histograms up. Where their bounds differ, each one's count at
// a bound it lacks is its count at its next lower bound, which is exact
// for histograms that share their bounds (every node of one build).
func Merge(hs ...Buckets) Buckets {
	var bounds []float64
	seen := map[float64]bool{}
	for _, h := range hs {
		for _, x := range h.Bounds {
			if !seen[x] {
				seen[x] = true
				bounds = append(bounds, x)
			}
		}
	}
	sort.Float64s(bounds)
	out := Buckets{Bounds: bounds, Counts: make([]uint64, len(bounds)+1)}
	for _, h := range hs {
		for i, x := range bounds {
			out.Counts[i] += h.at(x)
		}
		out.Counts[len(bounds)] += h.Total()
	}
	return out
}

// Quantile estimates the q-quantile (0 <= q <= 1) the way Prometheus's
// histogram_quantile does: it finds the bucket the rank falls in and
// interpolates linearly within it, the first bucket starting at 0 (if its
// bound is positive). A rank in the +Inf bucket answers the highest
// finite bound. No observations: 0.
func (b Buckets) Quantile(q float64) float64 {
	total := b.Total()
	if total == 0 || len(b.Bounds) == 0 {
		return 0
	}
	rank := q * float64(total)
	i := sort.Search(len(b.Counts), func(i int) bool { return float64(b.Counts[i]) >= rank })
	if i >= len(b.Bounds) {
		return b.Bounds[len(b.Bounds)-1]
	}
	start, below := 0.0, uint64(0)
	if i > 0 {
		start, below = b.Bounds[i-1], b.Counts[i-1]
	} else if b.Bounds[0] <= 0 {
		return b.Bounds[0]
	}
	end := b.Bounds[i]
	in := b.Counts[i] - below
	if in == 0 {
		return end
	}
	return start + (end-start)*(rank-float64(below))/float64(in)
}

// fromRuntime converts a runtime/metrics histogram (per-bucket counts,
// bucket i spanning Buckets[i] to Buckets[i+1]) to cumulative Buckets with
// finite bounds.
func fromRuntime(bounds []float64, counts []uint64) Buckets {
	var out Buckets
	var cum uint64
	for i, n := range counts {
		cum += n
		upper := bounds[i+1]
		if math.IsInf(upper, +1) {
			continue
		}
		out.Bounds = append(out.Bounds, upper)
		out.Counts = append(out.Counts, cum)
	}
	out.Counts = append(out.Counts, cum)
	return out
}
