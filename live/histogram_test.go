package live_test

import (
	"math"
	"slices"
	"testing"

	"github.com/dibs-io/dibs/live"
)

func TestQuantile(t *testing.T) {
	t.Parallel()
	// 10 observations at most 1, 30 more at most 2, 60 more at most 4,
	// none above.
	h := live.Buckets{Bounds: []float64{1, 2, 4}, Counts: []uint64{10, 40, 100, 100}}
	for _, tc := range []struct {
		name string
		h    live.Buckets
		q    float64
		want float64
	}{
		{"first bucket starts at 0", h, 0.05, 0.5},
		{"bucket edge", h, 0.1, 1},
		{"within the second bucket", h, 0.25, 1.5},
		{"median in the third", h, 0.5, 2 + 2*10.0/60},
		{"p99", h, 0.99, 2 + 2*59.0/60},
		{"rank in +Inf answers the highest bound", live.Buckets{Bounds: []float64{1, 2}, Counts: []uint64{1, 2, 10}}, 0.99, 2},
		{"no observations", live.Buckets{Bounds: []float64{1}, Counts: []uint64{0, 0}}, 0.5, 0},
		{"no buckets", live.Buckets{}, 0.5, 0},
		{"empty bucket skipped", live.Buckets{Bounds: []float64{1, 2, 3}, Counts: []uint64{0, 0, 4, 4}}, 0.5, 2.5},
	} {
		if got := tc.h.Quantile(tc.q); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("%s: Quantile(%v) = %v, want %v", tc.name, tc.q, got, tc.want)
		}
	}
}

func TestSubAndMerge(t *testing.T) {
	t.Parallel()
	old := live.Buckets{Bounds: []float64{1, 2}, Counts: []uint64{5, 7, 8}}
	cur := live.Buckets{Bounds: []float64{1, 2}, Counts: []uint64{6, 10, 15}}
	d := cur.Sub(old)
	if want := []uint64{1, 3, 7}; !slices.Equal(d.Counts, want) {
		t.Fatalf("Sub: %v, want %v", d.Counts, want)
	}
	if d := old.Sub(cur); !slices.Equal(d.Counts, old.Counts) {
		t.Fatalf("Sub of a restarted histogram: %v, want it whole %v", d.Counts, old.Counts)
	}
	if d := cur.Sub(live.Buckets{}); !slices.Equal(d.Counts, cur.Counts) {
		t.Fatalf("Sub of nothing: %v, want %v", d.Counts, cur.Counts)
	}
	m := live.Merge(old, cur, live.Buckets{Bounds: []float64{1.5}, Counts: []uint64{2, 3}})
	if want := []float64{1, 1.5, 2}; !slices.Equal(m.Bounds, want) {
		t.Fatalf("Merge bounds %v, want %v", m.Bounds, want)
	}
	// At 1: 5+6+0; at 1.5: 5+6+2; at 2: 7+10+2; all: 8+15+3.
	if want := []uint64{11, 13, 19, 26}; !slices.Equal(m.Counts, want) {
		t.Fatalf("Merge counts %v, want %v", m.Counts, want)
	}
}
